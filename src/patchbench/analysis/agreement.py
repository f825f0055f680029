"""Agreement between exact and attribution patching on the same grid cell.

Attribution patching (:mod:`patchbench.attribution`) estimates every patch effect to first order;
exact patching (:mod:`patchbench.engine.sweep`) measures it. For every plot, i.e. one (model, task,
corruption, site, window, position mode, metric), this module pairs the two effects frames by
component and reports:

* ``spearman`` and ``pearson`` correlation of the dataset-mean effects over components;
* the 2-SD detections of each method (:func:`patchbench.detection.detect`, recomputed here on
  both frames with the same ``k``): counts, the overlap and their Jaccard index (a component is
  shared when both methods detect it with the same sign; Jaccard is 1 when neither detects any);
* the components where the two disagree most: ranked by the gap between their effects in units
  of each method's spread over components (z-scores), which is scale-free (attribution's KL, for
  one, is off by a near-constant factor and would otherwise dominate).

:func:`agreement_table` returns one row per plot; :func:`disagreements` the worst components;
:func:`agreement_figure` draws exact against attribution effects per metric, detections marked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from patchbench.detection import detect
from patchbench.metrics import METRICS

__all__ = [
    "AGREEMENT_KEYS",
    "AGREEMENT_COLUMNS",
    "paired",
    "agreement_table",
    "disagreements",
    "agreement_figure",
]

log = logging.getLogger(__name__)

#: Columns that identify one plot (``positions`` joins when both frames have it).
AGREEMENT_KEYS = ("model", "task", "corruption", "site", "window", "metric")
AGREEMENT_COLUMNS = [
    *AGREEMENT_KEYS, "positions", "n_components", "spearman", "pearson", "detected_exact",
    "detected_attribution", "detected_both", "jaccard", "top_disagreements",
]  # fmt: skip


def _keys(exact: pd.DataFrame, attribution: pd.DataFrame) -> list[str]:
    both = "positions" in exact.columns and "positions" in attribution.columns
    return [*AGREEMENT_KEYS, *(["positions"] if both else [])]


def paired(exact: pd.DataFrame, attribution: pd.DataFrame, *, k: float = 2.0) -> pd.DataFrame:
    """Exact and attribution effects side by side: one row per (plot, component).

    Columns: the plot keys, ``component``, ``layer``, ``head``, ``position``, ``effect_exact``,
    ``effect_attribution``, ``detected_exact``, ``detected_attribution`` (2-SD rule with ``k``,
    recomputed on each frame) and ``z_gap`` (|z_exact - z_attribution|). Components present in
    only one frame are an error: the two sweeps must cover the same grid.
    """
    for name, df in (("exact", exact), ("attribution", attribution)):
        missing = [c for c in (*AGREEMENT_KEYS, "component", "effect") if c not in df.columns]
        if missing:
            raise KeyError(f"{name} frame is not an effects frame: columns {missing} are missing")
        if "prompt" in df.columns:
            raise ValueError(f"{name} frame holds per-prompt effects; pass dataset-mean effects (effects())")
    keys = _keys(exact, attribution)
    ex = detect(exact.assign(method="exact"), k)
    at = detect(attribution.assign(method="attribution"), k)
    for name, df in (("exact", ex), ("attribution", at)):
        dup = df.duplicated([*keys, "component"])
        if dup.any():
            first = df.loc[dup, [*keys, "component"]].iloc[0].to_dict()
            raise ValueError(f"{name} frame has several rows for {first}; pass one sweep per plot")
    ident = [c for c in ("layer", "head", "position") if c in ex.columns]
    left = ex[[*keys, "component", *ident, "effect", "detected"]]
    right = at[[*keys, "component", "effect", "detected"]]
    merged = left.merge(
        right, on=[*keys, "component"], how="outer", suffixes=("_exact", "_attribution"), indicator=True
    )
    lonely = merged[merged["_merge"] != "both"]
    if not lonely.empty:
        r = lonely.iloc[0]
        side = "exact" if r["_merge"] == "left_only" else "attribution"
        raise ValueError(
            f"component {r['component']!r} of plot {r[list(keys)].to_dict()} is only in the {side} frame; "
            f"{len(lonely)} component(s) unmatched. Run both methods on the same sweep (site, positions, window)."
        )
    merged = merged.drop(columns="_merge")

    def z(col: str) -> pd.Series:
        g = merged.groupby(keys, sort=False, dropna=False)[col]
        sd = g.transform(lambda x: float(np.std(x.to_numpy())))
        return (merged[col] - g.transform("mean")) / sd.where(sd > 0, np.nan)

    merged["z_gap"] = (z("effect_exact") - z("effect_attribution")).abs()
    return merged.reset_index(drop=True)


def _corr(fn, x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(fn(x, y).statistic)


def disagreements(pairs: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` components per plot with the largest ``z_gap`` (from :func:`paired`)."""
    keys = [c for c in (*AGREEMENT_KEYS, "positions") if c in pairs.columns]
    ordered = pairs.sort_values(
        [*keys, "z_gap"], ascending=[True] * len(keys) + [False], kind="stable", na_position="last"
    )
    return ordered.groupby(keys, sort=False, dropna=False).head(n).reset_index(drop=True)


def agreement_table(
    exact: pd.DataFrame, attribution: pd.DataFrame, *, k: float = 2.0, top: int = 5
) -> pd.DataFrame:
    """One row per plot: correlations, 2-SD detection overlap and the ``top`` worst components."""
    pairs = paired(exact, attribution, k=k)
    keys = [c for c in (*AGREEMENT_KEYS, "positions") if c in pairs.columns]
    worst = disagreements(pairs, top)
    rows = []
    for key, g in pairs.groupby(keys, sort=True, dropna=False):
        x, y = g["effect_exact"].to_numpy(float), g["effect_attribution"].to_numpy(float)
        de = {(c, s) for c, s in zip(g["component"], g["detected_exact"], strict=True) if s}
        da = {(c, s) for c, s in zip(g["component"], g["detected_attribution"], strict=True) if s}
        union = de | da
        w = worst
        for kk, v in zip(keys, key, strict=True):
            w = w[w[kk] == v]
        top_txt = "; ".join(
            f"{c} ({a:+.3g} vs {b:+.3g})"
            for c, a, b in zip(w["component"], w["effect_exact"], w["effect_attribution"], strict=True)
        )
        row = dict(zip(keys, key, strict=True))
        row.update(
            n_components=len(g),
            spearman=_corr(spearmanr, x, y),
            pearson=_corr(pearsonr, x, y),
            detected_exact=len(de),
            detected_attribution=len(da),
            detected_both=len(de & da),
            jaccard=1.0 if not union else len(de & da) / len(union),
            top_disagreements=top_txt,
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    if "positions" not in out.columns:
        out["positions"] = ""
    return out[AGREEMENT_COLUMNS]


def agreement_figure(
    exact: pd.DataFrame,
    attribution: pd.DataFrame,
    outputs: Iterable[str | Path],
    *,
    k: float = 2.0,
    title: str = "",
) -> list[Path]:
    """Scatter of exact (x) against attribution (y) effects: one row of panels per sweep, one column per metric.

    A sweep is one (corruption, site, window, position mode). Components detected by both methods
    are filled, by one method only outlined; the dashed line is y = x. Panels carry their
    Spearman correlation.
    """
    from matplotlib.lines import Line2D

    from patchbench.analysis.style import (
        corruption_label,
        figure_legend,
        metric_label,
        new_figure,
        save_figure,
    )

    pairs = paired(exact, attribution, k=k)
    if pairs.empty:
        raise ValueError("no plots to draw: the paired frames are empty")
    if "positions" not in pairs.columns:
        pairs = pairs.assign(positions="")
    row_keys = ["corruption", "site", "window", "positions"]
    rows = sorted({tuple(r) for r in pairs[row_keys].astype(str).itertuples(index=False)})
    order = {m: i for i, m in enumerate(METRICS)}
    metrics = sorted(set(pairs["metric"]), key=lambda m: (order.get(m, len(order)), m))
    fig, axes = new_figure(len(rows), len(metrics), panel=(2.8, 2.6), extra=(0, 0.6))
    keyed = pairs.assign(**{c: pairs[c].astype(str) for c in row_keys})
    for i, (corr, site, window, positions) in enumerate(rows):
        sweep = (
            f"{site}"
            + (f"@{positions}" if positions not in ("", "all") else "")
            + (f" w{window}" if window != "1" else "")
        )
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            sel = (keyed["corruption"] == corr) & (keyed["site"] == site) & (keyed["window"] == window)
            g = pairs[sel & (keyed["positions"] == positions) & (keyed["metric"] == metric)]
            if g.empty:
                ax.set_axis_off()
                continue
            x, y = g["effect_exact"].to_numpy(float), g["effect_attribution"].to_numpy(float)
            both = ((g["detected_exact"] != "") & (g["detected_attribution"] != "")).to_numpy()
            one = ((g["detected_exact"] != "") ^ (g["detected_attribution"] != "")).to_numpy()
            ax.scatter(x[~(both | one)], y[~(both | one)], **MARKS["none"])
            ax.scatter(x[one], y[one], **MARKS["one"])
            ax.scatter(x[both], y[both], **MARKS["both"])
            lo = np.nanmin(np.concatenate([x, y]))
            hi = np.nanmax(np.concatenate([x, y]))
            ax.plot([lo, hi], [lo, hi], ls="--", lw=0.7, color="0.3")
            rho = _corr(spearmanr, x, y)
            ax.set_title(
                f"{corruption_label(corr)} {sweep}\n{metric_label(metric)}: ρ = {rho:.2f}", fontsize=7
            )
            ax.set_xlabel("exact effect")
            ax.set_ylabel("attribution estimate")
    handles = [Line2D([], [], ls="none", marker="o", markersize=4, markerfacecolor=MARKS[k].get("color", "none"),
                      markeredgecolor=MARKS[k].get("edgecolors", MARKS[k].get("color")), label=MARKS[k]["label"])
               for k in ("none", "one", "both")]  # fmt: skip
    handles.append(Line2D([], [], ls="--", lw=0.7, color="0.3", label="attribution = exact"))
    figure_legend(fig, handles)
    if title:
        fig.suptitle(title)
    return save_figure(fig, outputs)


#: Scatter styles of the agreement figure: detected by neither method, by one, by both.
MARKS = {
    "none": dict(s=8, color="0.6", lw=0, label="detected by neither"),
    "one": dict(s=18, facecolors="none", edgecolors="#d62728", lw=0.8, label="detected by one method (2 SD)"),
    "both": dict(s=18, color="#1f77b4", lw=0, label="detected by both (same sign)"),
}
