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

These are the denoising forms (the patch goes into the corrupted run ``*``). A noising sweep
patches into the clean run: every metric is the same formula with the clean run as the base,
times -1 (:mod:`patchbench.interventions.directions`): ``prob`` = P_cl(r) − P_pt(r), ``logit_diff``
= (LD_cl − LD_pt) / (LD_cl − LD_*), ``kl`` = KL(P_cl ‖ P_pt), ``stolfo`` = −½[(P_pt(r) − P_cl(r)) /
P_cl(r) + (P_cl(r') − P_pt(r')) / P_pt(r')]; so in both directions 1 (for the logit difference)
means the patch moves the output across the whole clean-minus-corrupted difference, and a positive
effect means the component matters in the paper's sense.

Task metrics ride on the same columns: greater-than's answers are all years > YY and its wrong
answers all years < YY, so ``prob`` is the summed probability of the larger years and LD the
summed-logit difference.

GN rows with several noise samples are first averaged over samples per prompt (ROME averages the
noisy copies); ``effect`` is the mean over prompts, ``effect_sd`` the SD over prompts of the
per-prompt effects (normalised by the dataset denominator for ``logit_diff``, so their mean is
``effect``).

Every metric's dataset effect is a ratio of prompt sums, Σ_p num[t, p] / Σ_p den[p] (den = 1 for
the plain means, LD_cl,p − LD_*,p for ``logit_diff``): :func:`prompt_terms` returns those terms and
:func:`aggregate` forms the ratio under any prompt weights. ``effects`` uses uniform weights; a
bootstrap uses resample counts, so it recomputes the normalisation per resample with the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from patchbench.errors import InputError
from patchbench.interventions.directions import DEFAULT as DEFAULT_DIRECTION
from patchbench.interventions.directions import direction as get_direction
from patchbench.rawframe import (
    EFFECTS_COLUMNS,
    VALUE_COLUMNS,
    direction_of,
    intervention,
    metadata,
    position_mode,
)

__all__ = [
    "METRICS",
    "PromptTerms",
    "RawFrameError",
    "aggregate",
    "baselines",
    "components",
    "effects",
    "metrics_for",
    "prompt_terms",
]

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
    pat = raw.loc[raw["run"] == "patched", ["target", "site", "layer", "head", "position", "window"]]
    pat.attrs = {}  # slices must not deep-copy the file's metadata
    pos_mode = position_mode(meta)
    names = {int(k): v for k, v in (meta.get("components") or {}).items()}
    g = pat.groupby("target", sort=True)
    first = g.head(1).set_index("target").sort_index()  # the first row of each target
    single = g["position"].nunique().reindex(first.index).to_numpy() == 1
    rows = []
    for (t, site, layer, head, pos, window), one in zip(first.itertuples(), single, strict=True):
        position = int(pos) if one else -1
        if int(t) in names:
            comp = names[int(t)]
        else:
            comp = f"{int(layer)}.{int(head)}" if head >= 0 else f"{int(layer)}"
            if pos_mode not in ("all", "each"):
                comp += f"@{pos_mode}"
            elif position != -1:
                comp += f"@{position}"
        rows.append(
            dict(
                target=int(t),
                site=site,
                layer=int(layer),
                head=int(head),
                position=position,
                window=int(window),
                component=comp,
            )
        )
    return pd.DataFrame(rows, columns=["target", "site", "layer", "head", "position", "window", "component"])


def _per_row(pat: pd.DataFrame, clean: pd.DataFrame, corr: pd.DataFrame) -> pd.DataFrame:
    c = corr.set_index(["prompt", "sample"])[list(VALUE_COLUMNS)]
    cl = clean.set_index("prompt")[["logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl"]]
    df = pat.join(c.add_suffix("_c"), on=["prompt", "sample"]).join(cl.add_suffix("_cl"), on="prompt")
    if df[["logit_ans_c", "logit_ans_cl"]].isna().any().any():
        raise ValueError("patched rows without a matching clean or corrupted row (prompt / sample)")
    return df


def metrics_for(task: str) -> tuple[str, ...]:
    """The metrics a task's sweeps report: the paper's three, plus Stolfo et al.'s for arithmetic."""
    return ("prob", "logit_diff", "kl") + (("stolfo",) if task.startswith("arithmetic") else ())


@dataclass(frozen=True)
class PromptTerms:
    """One raw sweep's metrics as per-prompt terms: effect[m, t] = Σ_p w_p num[m, t, p] / Σ_p w_p den[m, p].

    ``targets`` (T,) and ``prompts`` (P,) are sorted ids; ``numerators`` (M, T, P) are sample-averaged
    per-prompt numerators, ``denominators`` (M, P) are 1 except for ``logit_diff`` (LD_cl,p − LD_*,p).
    """

    metrics: tuple[str, ...]
    targets: np.ndarray
    prompts: np.ndarray
    numerators: np.ndarray
    denominators: np.ndarray


def aggregate(terms: PromptTerms, weights: np.ndarray | None = None) -> np.ndarray:
    """Effects under prompt ``weights``: (M, T) for ``None`` (uniform) or (P,); (B, M, T) for (B, P).

    Weights are e.g. bootstrap resample counts; uniform weights give :func:`effects`' ``effect``.
    """
    m, t, p = terms.numerators.shape
    w = np.ones(p) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape[-1] != p or w.ndim > 2:
        raise ValueError(f"weights must have shape (P,) or (B, P) with P = {p} prompts; got {w.shape}")
    w2 = np.atleast_2d(w)
    num = w2 @ terms.numerators.reshape(m * t, p).T  # (B, M*T)
    den = w2 @ terms.denominators.T  # (B, M)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num.reshape(-1, m, t) / den[:, :, None]
    return out[0] if w.ndim == 1 else out


def _numerators(df: pd.DataFrame, metrics: Sequence[str], direction: str = DEFAULT_DIRECTION) -> pd.DataFrame:
    """Per (target, prompt, sample) row of ``_per_row``: each metric's numerator f(patched, base) times the
    direction's sign (logit_diff: LD_pt − LD_base); the base run is the corrupted run for denoising
    and the clean run for noising (:mod:`patchbench.interventions.directions`)."""
    d = get_direction(direction)
    b = "_c" if d.base == "corrupted" else "_cl"  # the base run's columns
    vals: dict[str, pd.Series] = {}
    for m in metrics:
        if m == "prob":
            vals[m] = df["prob_ans"] - df["prob_ans" + b]
        elif m == "kl":
            vals[m] = df["kl" + b] - df["kl"]
        elif m == "stolfo":
            vals[m] = 0.5 * (
                (df["prob_ans"] - df["prob_ans" + b]) / df["prob_ans" + b]
                + (df["prob_wrong" + b] - df["prob_wrong"]) / df["prob_wrong"]
            )
        elif m == "logit_diff":
            # per-prompt form: numerator now, divided after averaging samples
            vals[m] = (df["logit_ans"] - df["logit_wrong"]) - (df["logit_ans" + b] - df["logit_wrong" + b])
        if d.sign != 1:
            vals[m] = d.sign * vals[m]
    return pd.DataFrame(
        {
            "target": df["target"].to_numpy(),
            "prompt": df["prompt"].to_numpy(),
            **{m: v.to_numpy() for m, v in vals.items()},
        }
    )


def _prompt_denominators(clean: pd.DataFrame, corr: pd.DataFrame) -> pd.Series:
    """LD_cl,p − LD_*,p per prompt (corrupted LD averaged over noise samples), indexed by prompt."""
    ld_cl = (clean["logit_ans"] - clean["logit_wrong"]).groupby(clean["prompt"]).mean()
    ld_c = (corr["logit_ans"] - corr["logit_wrong"]).groupby(corr["prompt"]).mean()
    return ld_cl - ld_c


def _terms(per_p: pd.DataFrame, den_p: pd.Series, metrics: Sequence[str]) -> PromptTerms:
    targets = per_p.index.get_level_values("target").unique().to_numpy()
    prompts = per_p.index.get_level_values("prompt").unique().sort_values().to_numpy()
    if len(per_p) != len(targets) * len(prompts):
        raise ValueError(
            f"patched rows cover {len(per_p)} of {len(targets)} targets x {len(prompts)} prompts; every "
            "target must be patched on every prompt (an incomplete or merged sweep)"
        )
    num = np.stack([per_p[m].to_numpy(dtype=np.float64).reshape(len(targets), len(prompts)) for m in metrics])
    den = np.ones((len(metrics), len(prompts)))
    if "logit_diff" in metrics:
        den[list(metrics).index("logit_diff")] = den_p.reindex(prompts).to_numpy(dtype=np.float64)
    return PromptTerms(tuple(metrics), targets, prompts, num, den)


def _check_metrics(metrics: Sequence[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")


def _prompt_table(
    raw: pd.DataFrame, metrics: Sequence[str], direction: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Per (target, prompt, sample) numerators, their sample means per (target, prompt), and the
    per-prompt logit-difference denominators: what both :func:`effects` and :func:`prompt_terms` start
    from. ``direction`` defaults to the frame's (its metadata)."""
    _check_metrics(metrics)
    clean, corr, pat = _split(raw)
    direction = direction or direction_of(metadata(raw))
    keyed = _numerators(_per_row(pat, clean, corr), metrics, direction)
    per_p = keyed.groupby(["target", "prompt"], sort=True).mean()
    return keyed, per_p, _prompt_denominators(clean, corr)


def prompt_terms(
    raw: pd.DataFrame, metrics: Sequence[str] = ("prob", "logit_diff", "kl"), direction: str | None = None
) -> PromptTerms:
    """The per-prompt terms of ``metrics`` in a raw sweep frame (see :class:`PromptTerms`), signed by
    ``direction`` (default: the frame's metadata's; pass it for a frame whose metadata was dropped)."""
    _, per_p, den_p = _prompt_table(raw, metrics, direction)
    return _terms(per_p, den_p, metrics)


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
    meta = metadata(raw)
    model = model if model is not None else str(meta.get("model", ""))
    task = task if task is not None else str(meta.get("task", ""))
    corruption = corruption if corruption is not None else intervention(meta)
    method = method if method is not None else str(meta.get("method", "exact"))
    pos_mode = position_mode(meta)
    keyed, per_p, den_p = _prompt_table(raw, metrics)
    comps = components(raw).set_index("target")
    base = baselines(raw)
    denom = base["clean_logit_diff"] - base["corrupted_logit_diff"]
    if not per_prompt:
        mean_effect = aggregate(_terms(per_p, den_p, metrics))  # (M, T): ratio of prompt means
    if "logit_diff" in metrics:
        if per_prompt:
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
        sd, n = g.std(ddof=1), g.size()
        c = comps.loc[sd.index].reset_index(drop=True)
        for i, m in enumerate(metrics):
            rows.append(
                pd.DataFrame(
                    {
                        **_ident(c, model, task, corruption, method, pos_mode),
                        "metric": m,
                        "effect": mean_effect[i],
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
        **base,
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
