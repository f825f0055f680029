"""MLP effects per ROME position category from the raw ``position: each`` sweeps (rule ``factual_categories``)."""

import pandas as pd

from patchbench.analysis.positions import categories_from_promptset, category_effects
from patchbench.prompts import PromptSet
from patchbench.rawframe import metadata, read_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    prompts = PromptSet.from_parquet(sm.input.prompts)
    cats = categories_from_promptset(prompts)
    parts = []
    for path in sm.input.sweeps:
        raw = read_frame(path)
        meta = metadata(raw)
        raw = raw.assign(model=meta["model"], corruption=meta["corruption"])
        raw.attrs = {}
        parts.append(category_effects(raw, cats))
        log.info("%s: %d category effects", path, len(parts[-1]))
    out = pd.concat(parts, ignore_index=True)
    out["category"] = out["category"].astype(str)
    out.to_parquet(sm.output[0], index=False)
