"""Localization robustness of every experiment run on one model (rules ``robustness_model_<model>``)."""

from patchbench.analysis.robustness import RobustnessSettings, bootstrap_grid, read_known_circuit
from patchbench.analysis.robustness_report import analyse, write_experiment
from patchbench.rawframe import read_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    settings = RobustnessSettings(**sm.params.settings)
    for name, plan in sm.params.plan.items():
        grid = bootstrap_grid([read_frame(p) for p in plan["raws"]], settings, names=plan["raws"])
        circuit = read_known_circuit(plan["circuit"], plan["task"]) if plan["circuit"] else None
        written = write_experiment(analyse(name, grid, circuit), plan["files"])
        log.info("%s:\n%s", name, written["markdown"].read_text())
