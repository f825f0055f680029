"""Run every cell of one experiment on one model (rules ``sweep_<experiment>``, ``attribution_<experiment>``).

The model, prompts and clean cache load once; each cell (patchbench.cell.Cell, from the rule's
params) then writes its own frames and log (exact cells resume from their chunks after a kill).
"""

from patchbench.runlog import rule_log
from patchbench.sweepjob import load_job, run_cell

sm = snakemake  # noqa: F821  (injected by Snakemake)
cells = sm.params.cells
with rule_log(sm.log[0]) as log:
    model, prompts, clean = load_job(cells, sm.input.prompts, sm.input.cache, log)
for cell in cells:
    with rule_log(cell.log_path) as log:
        run_cell(cell, model, prompts, clean, log, records=sm.params.records)
