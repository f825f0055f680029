"""Localization robustness of every experiment run on one model (rules ``robustness_model_<model>``)."""

from pathlib import Path

from patchbench.analysis.robustness import RobustnessSettings, bootstrap_grid, read_known_circuit
from patchbench.analysis.robustness_report import analyse, write_experiment
from patchbench.frames import read_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    settings = RobustnessSettings(**sm.params.settings)
    declared = {Path(p) for p in sm.output}
    for name, plan in sm.params.plan.items():
        raws = [read_frame(p) for p in plan["raws"]]
        grid = bootstrap_grid(raws, settings, names=plan["raws"])
        circuit = read_known_circuit(plan["circuit"], plan["task"]) if plan["circuit"] else None
        written = write_experiment(analyse(name, grid, circuit), plan["stem"], plan["figures"])
        missing = {*written.values(), *map(Path, plan["figures"])} - declared
        if missing:
            raise RuntimeError(
                f"robustness wrote {sorted(map(str, missing))}, which the rule does not declare"
            )
        log.info("%s on %s:\n%s", name, sm.params.model, written["markdown"].read_text())
