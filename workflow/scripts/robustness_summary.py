"""The Snakemake report's front page from every experiment's robustness JSON (rule ``robustness_summary``)."""

import json
from pathlib import Path

from patchbench.analysis.report_page import summary_rst
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    facts = [json.loads(Path(p).read_text()) for p in sm.input]
    Path(sm.output[0]).write_text(summary_rst(facts, title=sm.params.title, suite=sm.params.suite))
    log.info("front page for %d experiment(s) -> %s", len(facts), sm.output[0])
