"""The Snakemake report's front page from the practice benchmark's verdicts and every experiment's
robustness facts and figure (rule ``report_front_page``)."""

import json
from pathlib import Path

from patchbench.analysis.report_page import summary_rst
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    facts = [
        {**json.loads(Path(f).read_text()), "key_figure": fig}
        for f, fig in zip(sm.input.facts, sm.params.figures, strict=True)
    ]
    practices = sm.params.practices
    if practices:
        practices = {**practices, **json.loads(Path(practices["facts"]).read_text())}
    page = Path(sm.output[0])
    page.write_text(summary_rst(facts, practices or None))
    log.info("front page for %d experiment(s) -> %s (%d bytes)", len(facts), page, page.stat().st_size)
