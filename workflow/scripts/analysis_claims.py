"""claims.csv and claims_applied.csv from every frame the config produced (rule ``claims``); absent inputs -> 'not run'."""

import pandas as pd

from patchbench.analysis.claims import build_claims, write_claims
from patchbench.analysis.frames import head_label, read_baselines, read_effects
from patchbench.analysis.ioi_classes import read_classes
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)


def effects(paths):
    return read_effects(list(paths)) if len(paths) else None


def parquet(paths):
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


def negative_name_movers(models, paths):
    """model -> its known negative name movers (``L.H``) from the head classes Table 1 uses."""
    out = {}
    for model, path in zip(models, paths, strict=True):
        cls = read_classes(path)
        nnm = cls[cls["class"] == "negative_name_mover"]
        out[model] = [head_label(la, h) for la, h in zip(nnm["layer"], nnm["head"], strict=True)]
    return out


with rule_log(sm.log[0]) as log:
    ioi = effects(sm.input.ioi_effects)
    split = lambda df, c: None if df is None else df[df["corruption"].str.upper() == c]  # noqa: E731
    claims = build_claims(
        factual_last=effects(sm.input.factual_last),
        factual_categories=parquet(sm.input.factual_categories),
        ioi_effects={"STR": split(ioi, "STR"), "GN": split(ioi, "GN"), "ABC": effects(sm.input.abc_effects)},
        baselines=read_baselines(list(sm.input.baseline_effects)),
        nm_attention=parquet(sm.input.nm_attention),
        nm_recovery=parquet(sm.input.nm_recovery),
        negative_name_movers=negative_name_movers(sm.params.ioi_models, sm.input.classes),
        hub_names=sm.params.hub_names,
    )
    write_claims(claims, sm.output.paper, sm.output.applied)
    log.info(
        "claims:\n%s",
        claims[["section", "model", "scope", "quantity", "value", "holds", "status"]].to_string(index=False),
    )
