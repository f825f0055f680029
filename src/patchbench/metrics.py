"""Metrics: from a raw sweep frame to the effects frame (paper §2.1 and App. C).

The engine stores, per (run, target, prompt, noise sample), the summed logits and probabilities
of the answers r and wrong answers r' at ``answer_pos`` and KL(P_clean ‖ P_run). Every metric is
a function of those columns, so it is computed here, after the fact, without re-running:

* ``prob``: P_pt(r) − P_*(r).
* ``logit_diff``: (LD_pt − LD_*) / (LD_cl − LD_*), LD = Σ logit(r) − Σ logit(r'); a ratio of
  dataset means (1 = fully restored, 0 = corrupted).
* ``kl``: KL(P_cl ‖ P_*) − KL(P_cl ‖ P_pt).
* ``stolfo``: ½[(P_pt(r) − P_*(r)) / P_*(r) + (P_*(r') − P_pt(r')) / P_pt(r')] per prompt, then
  averaged (Stolfo et al.'s arithmetic metric).

Task metrics ride on the same columns: greater-than's answers are all years > YY and its wrong
answers all years < YY, so ``prob`` is the summed probability of the larger years and LD the
summed-logit difference.

GN rows with several noise samples are first averaged over samples per prompt (ROME averages the
noisy copies); ``effect`` is the mean over prompts, ``effect_sd`` the SD over prompts of the
per-prompt effects (normalised by the dataset denominator for ``logit_diff``, so their mean is
``effect``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from patchbench.errors import InputError
from patchbench.rawframe import EFFECTS_COLUMNS, VALUE_COLUMNS, metadata, position_mode

__all__ = ["METRICS", "RawFrameError", "baselines", "components", "effects", "metrics_for"]

METRICS = ("prob", "logit_diff", "kl", "stolfo")


class RawFrameError(InputError, ValueError):
    """A frame given as a raw sweep frame is not one."""


def _split(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    missing = {"run", "target", "prompt", "sample", *VALUE_COLUMNS} - set(raw.columns)
    if missing:
        raise RawFrameError(
            f"not a raw sweep frame: columns {sorted(missing)} are missing. Fix: pass the raw frame a sweep "
            "wrote (patchbench sweep --out, the workflow's sweeps/ or attrib/*.raw.parquet), not an effects frame"
        )
    clean = raw[raw["run"] == "clean"]
    corr = raw[raw["run"] == "corrupted"]
    pat = raw[raw["run"] == "patched"]
    if clean.empty or corr.empty:
        raise ValueError("raw frame has no clean or no corrupted rows; metrics are relative to both")
    if clean["prompt"].duplicated().any():
        raise ValueError("raw frame has several clean rows for one prompt")
    return clean, corr, pat


def baselines(raw: pd.DataFrame) -> dict[str, float]:
    """Dataset means of the clean and corrupted runs (LD, P(r), P(r'), KL) for reports and checks."""
    clean, corr, _ = _split(raw)
    out: dict[str, float] = {}
    for name, df in (("clean", clean), ("corrupted", corr)):
        out[f"{name}_logit_diff"] = float((df["logit_ans"] - df["logit_wrong"]).mean())
        out[f"{name}_prob_ans"] = float(df["prob_ans"].mean())
        out[f"{name}_prob_wrong"] = float(df["prob_wrong"].mean())
        out[f"{name}_kl"] = float(df["kl"].mean())
    return out


def components(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per patch target: target, site, layer, head, position, window, component name."""
    meta = metadata(raw)
    pat = raw[raw["run"] == "patched"]
    pos_mode = position_mode(meta)
    names = {int(k): v for k, v in (meta.get("components") or {}).items()}
    rows = []
    for t, g in pat.groupby("target", sort=True):
        first = g.iloc[0]
        positions = g["position"].unique()
        position = int(positions[0]) if len(positions) == 1 else -1
        if int(t) in names:
            comp = names[int(t)]
        else:
            comp = (
                f"{int(first['layer'])}.{int(first['head'])}"
                if first["head"] >= 0
                else f"{int(first['layer'])}"
            )
            if pos_mode not in ("all", "each"):
                comp += f"@{pos_mode}"
            elif position != -1:
                comp += f"@{position}"
        rows.append(
            dict(
                target=int(t),
                site=first["site"],
                layer=int(first["layer"]),
                head=int(first["head"]),
                position=position,
                window=int(first["window"]),
                component=comp,
            )
        )
    return pd.DataFrame(rows, columns=["target", "site", "layer", "head", "position", "window", "component"])


def _per_row(pat: pd.DataFrame, clean: pd.DataFrame, corr: pd.DataFrame) -> pd.DataFrame:
    c = corr.set_index(["prompt", "sample"])[list(VALUE_COLUMNS)]
    cl = clean.set_index("prompt")[["logit_ans", "logit_wrong", "prob_ans", "prob_wrong"]]
    df = pat.join(c.add_suffix("_c"), on=["prompt", "sample"]).join(cl.add_suffix("_cl"), on="prompt")
    if df[["logit_ans_c", "logit_ans_cl"]].isna().any().any():
        raise ValueError("patched rows without a matching clean or corrupted row (prompt / sample)")
    return df


def metrics_for(task: str) -> tuple[str, ...]:
    """The metrics a task's sweeps report: the paper's three, plus Stolfo et al.'s for arithmetic."""
    return ("prob", "logit_diff", "kl") + (("stolfo",) if task.startswith("arithmetic") else ())


def effects(
    raw: pd.DataFrame,
    metrics: Sequence[str] = ("prob", "logit_diff", "kl"),
    *,
    per_prompt: bool = False,
    model: str | None = None,
    task: str | None = None,
    corruption: str | None = None,
    method: str | None = None,
) -> pd.DataFrame:
    """The effects frame of :mod:`patchbench.rawframe` (``detected`` empty; fill it with ``detection.detect``).

    With ``per_prompt=True`` there is one row per (component, metric, prompt) with a ``prompt``
    column; ``logit_diff`` is then normalised per prompt, (LD_pt,i − LD_*,i) / (LD_cl,i − LD_*,i).
    Model, task, corruption and method default to the frame's metadata (``raw.attrs['patchbench']``;
    a frame without a method is exact patching's). The result's metadata is the raw frame's plus
    the metrics, the logit-difference denominator and the clean / corrupted baselines.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
    meta = metadata(raw)
    model = model if model is not None else str(meta.get("model", ""))
    task = task if task is not None else str(meta.get("task", ""))
    corruption = corruption if corruption is not None else str(meta.get("corruption", ""))
    method = method if method is not None else str(meta.get("method", "exact"))
    pos_mode = position_mode(meta)
    clean, corr, pat = _split(raw)
    comps = components(raw).set_index("target")
    df = _per_row(pat, clean, corr)

    ld_pt = df["logit_ans"] - df["logit_wrong"]
    ld_c = df["logit_ans_c"] - df["logit_wrong_c"]
    ld_cl = df["logit_ans_cl"] - df["logit_wrong_cl"]
    denom = float(
        (clean["logit_ans"] - clean["logit_wrong"]).mean() - (corr["logit_ans"] - corr["logit_wrong"]).mean()
    )
    vals: dict[str, pd.Series] = {}
    for m in metrics:
        if m == "prob":
            vals[m] = df["prob_ans"] - df["prob_ans_c"]
        elif m == "kl":
            vals[m] = df["kl_c"] - df["kl"]
        elif m == "stolfo":
            vals[m] = 0.5 * (
                (df["prob_ans"] - df["prob_ans_c"]) / df["prob_ans_c"]
                + (df["prob_wrong_c"] - df["prob_wrong"]) / df["prob_wrong"]
            )
        elif m == "logit_diff":
            # per-prompt form: numerator now, divided after averaging samples (below)
            vals[m] = ld_pt - ld_c
    keyed = pd.DataFrame(
        {
            "target": df["target"].to_numpy(),
            "prompt": df["prompt"].to_numpy(),
            **{m: v.to_numpy() for m, v in vals.items()},
        }
    )
    per_p = keyed.groupby(["target", "prompt"], sort=True).mean()
    if "logit_diff" in metrics:
        if per_prompt:
            d = pd.DataFrame({"prompt": df["prompt"].to_numpy(), "d": (ld_cl - ld_c).to_numpy()})
            den_p = d.groupby("prompt")["d"].mean()
            per_p["logit_diff"] = (
                per_p["logit_diff"] / den_p.reindex(per_p.index.get_level_values("prompt")).to_numpy()
            )
        else:
            per_p["logit_diff"] = per_p["logit_diff"] / denom

    rows = []
    if per_prompt:
        sizes = keyed.groupby(["target", "prompt"], sort=True).size()
        sd_s = keyed.groupby(["target", "prompt"], sort=True).std(ddof=1) if sizes.max() > 1 else None
        if sd_s is not None and "logit_diff" in metrics:
            sd_s["logit_diff"] = (
                sd_s["logit_diff"] / den_p.reindex(sd_s.index.get_level_values("prompt")).abs().to_numpy()
            )
        for m in metrics:
            sub = per_p[m].reset_index()
            c = comps.loc[sub["target"]].reset_index(drop=True)
            rows.append(
                pd.DataFrame(
                    {
                        **_ident(c, model, task, corruption, method, pos_mode),
                        "metric": m,
                        "effect": sub[m].to_numpy(),
                        "effect_sd": np.nan if sd_s is None else sd_s[m].to_numpy(),
                        "n_prompts": 1,
                        "detected": "",
                        "prompt": sub["prompt"].to_numpy(),
                    }
                )
            )
    else:
        g = per_p.groupby(level="target", sort=True)
        mean, sd, n = g.mean(), g.std(ddof=1), g.size()
        c = comps.loc[mean.index].reset_index(drop=True)
        for m in metrics:
            rows.append(
                pd.DataFrame(
                    {
                        **_ident(c, model, task, corruption, method, pos_mode),
                        "metric": m,
                        "effect": mean[m].to_numpy(),
                        "effect_sd": sd[m].to_numpy(),
                        "n_prompts": n.to_numpy(),
                        "detected": "",
                    }
                )
            )
    out = pd.concat(rows, ignore_index=True)
    cols = [*EFFECTS_COLUMNS, *(["prompt"] if per_prompt else [])]
    out = out[cols].astype(
        {
            "window": "int64",
            "layer": "int64",
            "head": "int64",
            "position": "int64",
            "n_prompts": "int64",
            "effect": "float64",
            "effect_sd": "float64",
        }
    )
    out.attrs["patchbench"] = {
        **meta,
        "metrics": list(metrics),
        "per_prompt": per_prompt,
        "logit_diff_denominator": denom,
        **baselines(raw),
    }
    return out


def _ident(
    c: pd.DataFrame, model: str, task: str, corruption: str, method: str, pos_mode: str
) -> dict[str, Any]:
    return {
        "model": model,
        "task": task,
        "corruption": corruption,
        "site": c["site"].to_numpy(),
        "window": c["window"].to_numpy(),
        "method": method,
        "component": c["component"].to_numpy(),
        "layer": c["layer"].to_numpy(),
        "head": c["head"].to_numpy(),
        "position": c["position"].to_numpy(),
        "positions": pos_mode,
    }
