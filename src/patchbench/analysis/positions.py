"""ROME's token-position categories, and MLP patching effects aggregated over them (§4.1).

Meng et al. (2022, ``notebooks/average_causal_effects.ipynb``) average causal effects over six
groups of token positions, which the paper's Figure 4 and Appendix G.2 reuse:

==========================  ======================================================
category                    positions of a prompt (subject span [a, e), last token n-1)
==========================  ======================================================
First subject token         a
Middle subject tokens       a+1 .. e-2 (none for subjects of one or two tokens)
Last subject token          e-1
First subsequent token      e
Further tokens              e+1 .. n-2
Last token                  n-1
==========================  ======================================================

As in ROME, a position can fall in two groups (a one-token subject is both its first and last
token; a subject right before the last token makes ``e`` both the first subsequent and the last
token), and tokens before the subject are in no group.

The engine's ``position: each`` sweep patches absolute positions, which mean different things in
different prompts; so the per-category effects are computed from the raw sweep frame (one row per
prompt) with the PromptSet's per-prompt subject span, using the metric definitions of
``docs/architecture.md``: probability = mean P_pt(r) - mean P_*(r); logit difference normalised as
a ratio of means, (LD_pt - LD_*) / (LD_cl - LD_*); KL = mean KL_* - mean KL_pt. Within a prompt the
positions of one category are averaged first (ROME), GN samples before that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from patchbench.analysis.frames import FrameError, validate_sweep

__all__ = ["ROME_CATEGORIES", "categories_from_promptset", "category_effects", "rome_position_categories"]

ROME_CATEGORIES: tuple[str, ...] = (
    "First subject token",
    "Middle subject tokens",
    "Last subject token",
    "First subsequent token",
    "Further tokens",
    "Last token",
)


def rome_position_categories(
    subject_first: np.ndarray, subject_last: np.ndarray, last_token: np.ndarray
) -> pd.DataFrame:
    """Frame (prompt, position, category) from per-prompt subject span and last position.

    ``subject_first`` / ``subject_last`` are the first and last subject token (inclusive; the
    PromptSet's ``positions['subject_first']`` / ``['subject_last']``), ``last_token`` the position
    whose logits are read (``answer_pos``).
    """
    a = np.asarray(subject_first, dtype=np.int64)
    z = np.asarray(subject_last, dtype=np.int64)
    n1 = np.asarray(last_token, dtype=np.int64)
    if not (len(a) == len(z) == len(n1)):
        raise ValueError("subject_first, subject_last and last_token need one entry per prompt")
    rows: list[tuple[int, int, str]] = []
    for i, (s, e1, last) in enumerate(zip(a, z, n1, strict=True)):
        if s < 0 or e1 < s or last <= e1:
            raise ValueError(
                f"prompt {i}: subject span [{s}, {e1}] and last token {last} are inconsistent; "
                "need 0 <= subject_first <= subject_last < last token"
            )
        rows.append((i, s, ROME_CATEGORIES[0]))
        rows += [(i, p, ROME_CATEGORIES[1]) for p in range(s + 1, e1)]
        rows.append((i, e1, ROME_CATEGORIES[2]))
        rows.append((i, e1 + 1, ROME_CATEGORIES[3]))
        rows += [(i, p, ROME_CATEGORIES[4]) for p in range(e1 + 2, last)]
        rows.append((i, last, ROME_CATEGORIES[5]))
    return pd.DataFrame(rows, columns=["prompt", "position", "category"])


def categories_from_promptset(prompts) -> pd.DataFrame:
    """:func:`rome_position_categories` for a factual ``PromptSet`` (positions subject_first / _last)."""
    missing = [k for k in ("subject_first", "subject_last") if k not in prompts.positions]
    if missing:
        raise ValueError(
            f"PromptSet of task {prompts.task!r} lacks positions {missing}; it is not a factual task"
        )
    return rome_position_categories(
        prompts.positions["subject_first"], prompts.positions["subject_last"], prompts.answer_pos
    )


def category_effects(
    raw: pd.DataFrame, categories: pd.DataFrame, metrics=("prob", "logit_diff", "kl")
) -> pd.DataFrame:
    """Per-category MLP patching effects from a raw ``position: each`` sweep.

    ``raw`` is the raw sweep frame (optionally with extra label columns such as ``model`` and
    ``corruption``, which are kept as grouping keys); ``categories`` the output of
    :func:`rome_position_categories`. Returns one row per (labels, window, layer, category,
    metric) with ``effect``, ``effect_sd`` (the SD over prompts of the per-prompt terms whose mean is
    the effect) and ``n_prompts``.
    """
    raw = validate_sweep(raw)
    labels = [c for c in ("model", "task", "corruption") if c in raw.columns]
    base = raw[raw["run"] != "patched"]
    # per-prompt baselines, GN samples averaged
    base = base.assign(ld=base["logit_ans"] - base["logit_wrong"])
    per = base.groupby(labels + ["prompt", "run"], as_index=False)[["prob_ans", "ld", "kl"]].mean()
    clean = (
        per[per["run"] == "clean"]
        .drop(columns="run")
        .rename(columns=lambda c: c + "_cl" if c in {"prob_ans", "ld", "kl"} else c)
    )
    corr = (
        per[per["run"] == "corrupted"]
        .drop(columns="run")
        .rename(columns=lambda c: c + "_co" if c in {"prob_ans", "ld", "kl"} else c)
    )
    if corr.empty:
        raise FrameError(
            "raw sweep has no 'corrupted' rows; per-category effects need the corrupted baseline"
        )
    pt = raw[(raw["run"] == "patched") & (raw["position"] >= 0)]
    pt = pt.assign(ld=pt["logit_ans"] - pt["logit_wrong"])
    pt = pt.merge(categories, on=["prompt", "position"], how="inner")
    if pt.empty:
        raise FrameError(
            "no patched row of the raw sweep falls in a ROME position category; was it a 'position: each' sweep?"
        )
    keys = labels + ["window", "layer", "category", "prompt"]
    # samples, then the positions of a category within a prompt
    pp = pt.groupby(keys, as_index=False)[["prob_ans", "ld", "kl"]].mean()
    pp = pp.merge(corr, on=labels + ["prompt"], how="left").merge(clean, on=labels + ["prompt"], how="left")
    group = labels + ["window", "layer", "category"]
    g = pp.groupby(group)
    means = g[["prob_ans", "ld", "kl", "prob_ans_co", "ld_co", "kl_co", "ld_cl"]].mean()
    denom = means["ld_cl"] - means["ld_co"]
    # per-prompt terms whose mean is the effect (the logit difference over the dataset denominator)
    pp = pp.join(denom.where(denom != 0).rename("_den"), on=group)
    terms = {
        "prob": pp["prob_ans"] - pp["prob_ans_co"],
        "logit_diff": (pp["ld"] - pp["ld_co"]) / pp["_den"],
        "kl": pp["kl_co"] - pp["kl"],
    }
    out = []
    for metric in metrics:
        if metric not in terms:
            raise ValueError(f"metric {metric!r} is not defined per category; use prob, logit_diff or kl")
        if metric == "prob":
            eff = means["prob_ans"] - means["prob_ans_co"]
        elif metric == "logit_diff":
            eff = (means["ld"] - means["ld_co"]) / denom.where(denom != 0)
        else:
            eff = means["kl_co"] - means["kl"]
        part = eff.rename("effect").reset_index()
        part["metric"] = metric
        part["effect_sd"] = (
            terms[metric].groupby([pp[k] for k in group]).std(ddof=1).reindex(eff.index).to_numpy()
        )
        part["n_prompts"] = g.size().to_numpy()
        out.append(part)
    res = pd.concat(out, ignore_index=True)
    res["category"] = pd.Categorical(res["category"], categories=list(ROME_CATEGORIES), ordered=True)
    return res.sort_values(labels + ["metric", "window", "category", "layer"]).reset_index(drop=True)
