"""Agreement table and figure of exact vs attribution patching for one (model, task) (rule ``agreement``)."""

import pandas as pd

from patchbench.analysis.agreement import agreement_figure, agreement_table
from patchbench.analysis.labels import figure_title
from patchbench.atomic import write_text
from patchbench.rawframe import read_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
w = sm.wildcards
with rule_log(sm.log[0]) as log:
    exact = pd.concat([read_frame(p) for p in sm.input.exact], ignore_index=True)
    attrib = pd.concat([read_frame(p) for p in sm.input.attribution], ignore_index=True)
    table = agreement_table(exact, attrib, k=float(sm.params.k), top=int(sm.params.top))
    write_text(sm.output.csv, table.to_csv(index=False))
    shown = table.drop(columns=["model", "task"]).round({"spearman": 3, "pearson": 3, "jaccard": 3})
    caption = (
        f"Exact vs attribution patching, {w.model} / {w.task}: correlations over components, "
        f"2-SD detections (shared = same component, same sign) and the components that disagree most "
        f"(exact vs attribution effect)."
    )
    write_text(sm.output.md, caption + "\n\n" + shown.to_markdown(index=False) + "\n")
    agreement_figure(
        exact,
        attrib,
        [sm.output.png, sm.output.pdf],
        k=float(sm.params.k),
        title=figure_title(
            w.task,
            ", ".join(sorted(set(exact["site"]))),
            w.model,
            exact["n_prompts"],
            extra="exact patching vs attribution patching (first-order estimate)",
        ),  # fmt: skip
    )
    log.info("agreement %s/%s:\n%s", w.model, w.task, shown.to_string(index=False))
