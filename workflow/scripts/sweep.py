"""Run every sweep cell of one experiment on one model (rules ``sweep_<experiment>``).

The model, prompts and clean cache load once; each cell (patchbench.cell.Cell, from the rule's
params) then writes its own raw frame and log, and resumes from its own chunks directory after a kill.
"""

from safetensors.torch import load_file

from patchbench.engine.sweep import run_sweep
from patchbench.models import load_model, resolve_device
from patchbench.prompts import PromptSet
from patchbench.rawframe import write_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
cells = sm.params.cells
with rule_log(sm.log[0]) as log:
    spec = cells[0].model_spec
    model = load_model(spec)
    prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    clean = load_file(sm.input.cache, device=resolve_device(spec.device))
    log.info("%s loaded once for %d sweep cells of %s", spec.name, len(cells), cells[0].task)
for cell in cells:
    with rule_log(cell.log_path) as log:
        raw = run_sweep(model, prompts, cell.sweep_spec, clean, name=cell.model, logger=log,
                        checkpoint_dir=cell.chunks_dir)  # fmt: skip
        write_frame(raw, cell.raw_path)
        log.info("wrote %d rows to %s", len(raw), cell.raw_path)
