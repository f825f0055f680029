"""Localization robustness of every experiment on every model (rule ``robustness_analysis``)."""

from patchbench.analysis.robustness import RobustnessSettings, bootstrap_grid, read_known_circuit
from patchbench.analysis.robustness_report import analyse, write_experiment
from patchbench.rawframe import read_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    settings = RobustnessSettings(**sm.params.settings)
    for p in sm.params.plan:
        grid = bootstrap_grid([read_frame(r) for r in p["raws"]], settings, names=p["raws"])
        circuit = read_known_circuit(p["circuit"], p["task"]) if p["circuit"] else None
        written = write_experiment(analyse(p["experiment"], grid, circuit), p["files"])
        log.info("%s on %s:\n%s", p["experiment"], p["model"], written["markdown"].read_text())
