"""claims.csv from every frame the config produced (rule ``claims``); absent inputs -> 'not run'."""

import pandas as pd

from patchbench.analysis.claims import build_claims, write_claims
from patchbench.analysis.frames import read_effects
from patchbench.rawframe import metadata, read_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)


def effects(paths):
    return read_effects(list(paths)) if len(paths) else None


def sweeps(paths, corruption=None):
    """Raw sweeps labelled with model / corruption from their file metadata."""
    parts = []
    for p in paths:
        raw = read_frame(p)
        meta = metadata(raw)
        raw = raw.assign(
            model=meta.get("model", ""), corruption=corruption or str(meta.get("corruption", "")).upper()
        )
        raw.attrs = {}
        parts.append(raw)
    return pd.concat(parts, ignore_index=True) if parts else None


def parquet(paths):
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


with rule_log(sm.log[0]) as log:
    ioi = effects(sm.input.ioi_effects)
    ioi_raw = sweeps(sm.input.ioi_sweeps)
    split = lambda df, c: None if df is None else df[df["corruption"].str.upper() == c]  # noqa: E731
    claims = build_claims(
        factual_last=effects(sm.input.factual_last),
        factual_categories=parquet(sm.input.factual_categories),
        ioi_effects={"STR": split(ioi, "STR"), "GN": split(ioi, "GN"), "ABC": effects(sm.input.abc_effects)},
        ioi_raws={
            "STR": split(ioi_raw, "STR"),
            "GN": split(ioi_raw, "GN"),
            "ABC": sweeps(sm.input.abc_sweeps, "ABC"),
        },
        nm_attention=parquet(sm.input.nm_attention),
        nm_recovery=parquet(sm.input.nm_recovery),
    )
    write_claims(claims, sm.output[0])
    log.info(
        "claims:\n%s",
        claims[["section", "model", "quantity", "value", "holds", "status"]].to_string(index=False),
    )
