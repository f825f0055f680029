"""Localization robustness of every experiment on every model, and the report's front page
(rule ``robustness_analysis``)."""

import json
from pathlib import Path

from patchbench.analysis.report_page import summary_rst
from patchbench.analysis.robustness import RobustnessSettings, bootstrap_grid, read_known_circuit
from patchbench.analysis.robustness_report import analyse, write_experiment
from patchbench.rawframe import read_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    settings = RobustnessSettings(**sm.params.settings)
    facts = []
    for p in sm.params.plan:
        grid = bootstrap_grid([read_frame(r) for r in p["raws"]], settings, names=p["raws"])
        circuit = read_known_circuit(p["circuit"], p["task"]) if p["circuit"] else None
        written = write_experiment(analyse(p["experiment"], grid, circuit), p["files"])
        facts.append({**json.loads(written["json"].read_text()), "key_figure": p["key_figure"]})
        log.info("%s on %s:\n%s", p["experiment"], p["model"], written["markdown"].read_text())
    page = Path(sm.output.front_page)
    page.write_text(summary_rst(facts))
    log.info("front page for %d experiment(s) -> %s", len(facts), page)
