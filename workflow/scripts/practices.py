"""The practice benchmark: every practice scored against the known circuits, the advice judged (rule ``practices_analysis``)."""

from patchbench.practices.benchmark import BenchSettings
from patchbench.practices.build import run
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    plan_files = dict(zip(map(tuple, sm.params.runs), sm.input.plans, strict=True))
    settings = BenchSettings.of(sm.params.grid, sm.params.robustness)
    run(sm.params.plans, sm.params.skipped, plan_files, settings, sm.params.grid, sm.params.outputs,
        sm.output.summary, sm.output.facts, log)  # fmt: skip
