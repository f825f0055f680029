"""The paper's figures as PNG + PDF, one shared style (:mod:`patchbench.analysis.style`).

Each public function takes frames and the output paths (a ``.png`` and a ``.pdf``) and returns
the written paths. Inputs are the effects frame unless stated:

- :func:`layer_curves` / :func:`fig_factual_mlp_last` (§3.1, Fig. 2, App. G.1): MLP effect per
  layer, STR vs GN, one panel per window x metric. :func:`fig_arithmetic_mlp` (App. C, Figs 6-8)
  is the same plot with one row per operator (task).
- :func:`fig_mlp_positions` (§4.1, Fig. 4, App. G.2): heatmaps layer x ROME position category,
  from :func:`patchbench.analysis.positions.category_effects`.
- :func:`fig_sliding_vs_summed` (§5, Fig. 5, App. G.3): sliding window vs summed single layers.
- :func:`fig_head_heatmaps` (App. E/F/H, Figs 9-11, 28-30): layer x head, one panel per
  corruption x metric, detected heads marked (+ positive, - negative). The ABC-corruption figure
  is this plot on the ``ioi_abc`` effects.
- :func:`fig_docstring_heads` (App. D): (layer.head) x position heatmaps.
- :func:`fig_nm_attention` (§3.2, Fig. 3): name-mover attention to IO / S1 / other tokens under
  clean, STR and GN runs and after restoring the S-inhibition heads' values, with the recovered
  logit difference; inputs in :mod:`patchbench.analysis.nm_attention`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from patchbench.analysis.frames import FrameError, select, validate_effects
from patchbench.analysis.labels import intervention_order
from patchbench.analysis.positions import ROME_CATEGORIES
from patchbench.analysis.style import (
    CORRUPTION_COLORS,
    DIVERGING_CMAP,
    corruption_label,
    metric_label,
    new_figure,
    save_figure,
)
from patchbench.analysis.windows import sliding_vs_summed

__all__ = [
    "fig_arithmetic_mlp",
    "fig_docstring_heads",
    "fig_factual_mlp_last",
    "fig_head_heatmaps",
    "fig_mlp_positions",
    "fig_nm_attention",
    "fig_sliding_vs_summed",
    "layer_curves",
]

log = logging.getLogger(__name__)

Outputs = Sequence[str | Path]
#: The paper's corruptions (any other intervention follows them in registry order: _interventions).
CORRUPTION_ORDER = tuple(intervention_order())
METRIC_ORDER = ("logit_diff", "prob", "kl", "stolfo")


def _present(values, order) -> list:
    vals = list(dict.fromkeys(values))
    return [v for v in order if v in vals] + sorted(v for v in vals if v not in order)


def _interventions(values) -> list[str]:
    """The interventions (corruption labels) among ``values``, in table order (the paper's first)."""
    vals = set(values)
    return [v for v in intervention_order(vals) if v in vals]


def _corruption_metric_panels(df: pd.DataFrame, metrics: Sequence[str]) -> list[tuple[str, str]]:
    """(corruption, metric) of each panel: the corruptions present (STR, GN first) x ``metrics`` present."""
    present = set(df["metric"])
    return [(c, m) for c in _interventions(df["corruption"]) for m in metrics if m in present]


def _require(df: pd.DataFrame, what: str) -> None:
    if df.empty:
        raise FrameError(f"{what}: no rows to plot; check that the sweeps of this figure ran")


def _symmetric(values: np.ndarray) -> float:
    m = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    return m if m > 0 else 1.0


# ----------------------------------------------------------------------------- curves over layers
def layer_curves(
    effects: pd.DataFrame,
    outputs: Outputs,
    row: str = "window",
    metrics: Sequence[str] = ("prob", "logit_diff"),
    title: str | None = None,
    row_label=lambda v: f"window {v}",
) -> list[Path]:
    """Effect per layer, one line per corruption; rows by ``row``, columns by metric."""
    df = validate_effects(effects)
    df = df[df["metric"].isin(metrics)]
    _require(df, title or "layer curves")
    rows = _present(df[row], ())
    cols = [m for m in metrics if m in set(df["metric"])]
    fig, axes = new_figure(len(rows), len(cols), sharex=True)
    for i, rv in enumerate(rows):
        for j, metric in enumerate(cols):
            ax = axes[i, j]
            panel = df[(df[row] == rv) & (df["metric"] == metric)]
            for corr in _interventions(panel["corruption"]):
                c = panel[panel["corruption"] == corr].sort_values("layer")
                ax.plot(
                    c["layer"],
                    c["effect"],
                    marker="o",
                    ms=2.5,
                    lw=1.2,
                    color=CORRUPTION_COLORS.get(corr),
                    label=corr,
                )
                if c["effect_sd"].notna().any() and (c["n_prompts"] > 1).all():
                    se = c["effect_sd"] / np.sqrt(c["n_prompts"])
                    ax.fill_between(
                        c["layer"],
                        c["effect"] - se,
                        c["effect"] + se,
                        color=CORRUPTION_COLORS.get(corr),
                        alpha=0.15,
                        lw=0,
                    )
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_title(f"{metric_label(metric)}, {row_label(rv)}")
            if i == len(rows) - 1:
                ax.set_xlabel("layer")
            if j == 0:
                ax.set_ylabel("patching effect")
            if i == 0 and j == 0:
                ax.legend(frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, outputs)


def fig_factual_mlp_last(effects: pd.DataFrame, outputs: Outputs, model: str = "") -> list[Path]:
    """§3.1 / App. G.1: MLP patching at the last subject token, GN vs STR x metric x window."""
    return layer_curves(effects, outputs, row="window", metrics=("prob", "logit_diff"),
                        title=f"MLP at the last subject token {model}".strip())  # fmt: skip


def fig_arithmetic_mlp(effects: pd.DataFrame, outputs: Outputs, model: str = "") -> list[Path]:
    """App. C: one MLP layer at the last token, a row per operator (task), STR vs GN."""
    ops = {"arithmetic_add": "addition", "arithmetic_sub": "subtraction", "arithmetic_mul": "multiplication"}
    return layer_curves(effects, outputs, row="task", metrics=("logit_diff", "prob", "stolfo"),
                        title=f"Arithmetic, MLP at the last token {model}".strip(),
                        row_label=lambda t: ops.get(t, t))  # fmt: skip


def fig_sliding_vs_summed(effects: pd.DataFrame, outputs: Outputs, model: str = "") -> list[Path]:
    """§5 / App. G.3: sliding-window effect vs the sum of single-layer effects over the window."""
    cmp = sliding_vs_summed(effects)
    cmp = cmp[cmp["metric"].isin(["prob", "logit_diff"])]
    _require(cmp, "sliding window vs summed")
    windows = sorted(set(cmp["window"]))
    cols = _corruption_metric_panels(cmp, ("prob", "logit_diff"))
    fig, axes = new_figure(len(windows), len(cols), sharex=True)
    styles = {"sliding": dict(ls="-", marker="o"), "summed": dict(ls="--", marker="s")}
    for i, w in enumerate(windows):
        for j, (corr, metric) in enumerate(cols):
            ax = axes[i, j]
            panel = cmp[(cmp["window"] == w) & (cmp["corruption"] == corr) & (cmp["metric"] == metric)]
            for kind in ("sliding", "summed"):
                c = panel[panel["kind"] == kind].sort_values("layer")
                ax.plot(c["layer"], c["effect"], ms=2.5, lw=1.2, color=CORRUPTION_COLORS.get(corr),
                        label="sliding window" if kind == "sliding" else "summed single layers", **styles[kind])  # fmt: skip
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_title(f"{corr}, {metric_label(metric)}, window {w}")
            if i == len(windows) - 1:
                ax.set_xlabel("layer (window centre)")
            if i == 0:
                ax.legend(frameon=False, fontsize=6)
    fig.suptitle(f"Sliding window vs summed single-layer patching {model}".strip(), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, outputs)


# ----------------------------------------------------------------------------- heatmaps
def fig_mlp_positions(cat_effects: pd.DataFrame, outputs: Outputs, model: str = "") -> list[Path]:
    """§4.1 / App. G.2: MLP effect per layer x ROME position category (rows window, cols corruption x metric)."""
    df = cat_effects.copy()
    df["corruption"] = df["corruption"].map(corruption_label) if "corruption" in df else "?"
    df = df[df["metric"].isin(["logit_diff", "prob"])]
    _require(df, "MLP patching at all positions")
    windows = sorted(set(df["window"]))
    cols = _corruption_metric_panels(df, ("logit_diff", "prob"))
    fig, axes = new_figure(len(windows), len(cols), panel=(3.4, 2.2))
    cats = [c for c in ROME_CATEGORIES if c in set(df["category"].astype(str))]
    for i, w in enumerate(windows):
        for j, (corr, metric) in enumerate(cols):
            ax = axes[i, j]
            p = df[(df["window"] == w) & (df["corruption"] == corr) & (df["metric"] == metric)].copy()
            p["category"] = p["category"].astype(str)
            grid = p.pivot_table(
                index="category", columns="layer", values="effect", aggfunc="mean", observed=True
            ).reindex(cats)
            v = _symmetric(grid.to_numpy(dtype=float))
            im = ax.imshow(
                grid.to_numpy(dtype=float),
                aspect="auto",
                cmap=DIVERGING_CMAP,
                vmin=-v,
                vmax=v,
                interpolation="nearest",
            )
            ax.set_yticks(range(len(cats)), cats if j == 0 else [""] * len(cats))
            ax.set_xlabel("layer")
            ax.set_title(f"{corr}, {metric_label(metric)}, window {w}")
            ax.grid(False)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"MLP patching at every position {model}".strip(), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, outputs)


def _mark_detected(ax, plot: pd.DataFrame, x: str, y: str) -> None:
    for sign, mark in (("positive", "+"), ("negative", "_")):
        d = plot[plot["detected"] == sign]
        if len(d):
            ax.scatter(d[x], d[y], marker=mark, s=30, c="k", linewidths=1.2)


def fig_head_heatmaps(
    effects: pd.DataFrame,
    outputs: Outputs,
    metrics: Sequence[str] = ("logit_diff", "prob", "kl"),
    title: str = "",
) -> list[Path]:
    """Layer x head patching effects, rows corruption, columns metric; detected heads marked."""
    df = validate_effects(effects)
    df = df[df["metric"].isin(metrics) & (df["head"] >= 0)]
    _require(df, title or "head heatmaps")
    rows = _interventions(df["corruption"])
    cols = [m for m in metrics if m in set(df["metric"])]
    n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    fig, axes = new_figure(len(rows), len(cols), panel=(3.0, 2.6))
    for i, corr in enumerate(rows):
        for j, metric in enumerate(cols):
            ax = axes[i, j]
            plot = df[(df["corruption"] == corr) & (df["metric"] == metric)]
            grid = np.full((n_layers, n_heads), np.nan)
            grid[plot["layer"].to_numpy(), plot["head"].to_numpy()] = plot["effect"].to_numpy()
            v = _symmetric(grid)
            im = ax.imshow(
                grid,
                aspect="auto",
                cmap=DIVERGING_CMAP,
                vmin=-v,
                vmax=v,
                origin="upper",
                interpolation="nearest",
            )
            _mark_detected(ax, plot, "head", "layer")
            ax.set_title(f"{corr}, {metric_label(metric)}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # heads and layers are integers
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.grid(False)
            fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, outputs)


def fig_docstring_heads(
    effects: pd.DataFrame, outputs: Outputs, position_labels: dict[int, str] | None = None, title: str = ""
) -> list[Path]:
    """App. D: (layer.head) x position effects, one panel per corruption x metric."""
    df = validate_effects(effects)
    df = df[df["metric"].isin(["logit_diff", "prob", "kl"]) & (df["position"] >= 0)]
    _require(df, title or "docstring heads")
    panels = _corruption_metric_panels(df, ("logit_diff", "prob", "kl"))
    heads = sorted(set(zip(df["layer"], df["head"], strict=True)))
    positions = sorted(set(df["position"]))
    hi = {h: k for k, h in enumerate(heads)}
    pi = {p: k for k, p in enumerate(positions)}
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = new_figure(nrows, ncols, panel=(0.18 * len(positions) + 1.5, 0.12 * len(heads) + 1.2))
    for k, (corr, metric) in enumerate(panels):
        ax = axes[k // ncols, k % ncols]
        plot = select(df, corruption=corr, metric=metric)
        grid = np.full((len(heads), len(positions)), np.nan)
        rows = [hi[(la, h)] for la, h in zip(plot["layer"], plot["head"], strict=True)]
        cols = [pi[p] for p in plot["position"]]
        grid[rows, cols] = plot["effect"].to_numpy()
        v = _symmetric(grid)
        im = ax.imshow(grid, aspect="auto", cmap=DIVERGING_CMAP, vmin=-v, vmax=v, interpolation="nearest")
        marks = plot.assign(_r=rows, _c=cols)
        _mark_detected(ax, marks, "_c", "_r")
        ax.set_yticks(range(len(heads)), [f"{la}.{h}" for la, h in heads], fontsize=5)
        labels = [(position_labels or {}).get(p, str(p)) for p in positions]
        ax.set_xticks(range(len(positions)), labels, rotation=90, fontsize=5)
        ax.set_title(f"{corr}, {metric_label(metric)}")
        ax.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, outputs)


# ----------------------------------------------------------------------------- §3.2
def fig_nm_attention(
    attention: pd.DataFrame, recovery: pd.DataFrame, outputs: Outputs, model: str = ""
) -> list[Path]:
    """§3.2 / Fig. 3: (a) NM attention to IO / S1 / other in clean, STR, GN runs; (b) logit
    difference recovered by restoring the S-inhibition values; (c) NM attention in that patched run.

    ``attention``: :data:`patchbench.analysis.nm_attention.ATTENTION_COLUMNS`; ``recovery``: the
    effects of the S-inhibition-values sweep (one component per corruption) or any frame with
    columns corruption, metric, effect.
    """
    from patchbench.analysis.nm_attention import TARGETS, validate_attention

    att = validate_attention(attention)
    if att.empty:  # e.g. the classifier found no name movers in this model
        fig, axes = new_figure(1, 1, panel=(6.0, 1.5))
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, f"{model}: no name-mover heads to analyse (§3.2 needs at least one)".strip(),
                        ha="center", va="center")  # fmt: skip
        return save_figure(fig, outputs)
    fig, axes = new_figure(1, 3, panel=(3.0, 2.6))
    width = 0.25
    colors = {"IO": "#2ca02c", "S1": "#ff7f0e", "other": "0.6"}
    for ax, patched, name in (
        (axes[0, 0], False, "(a) unpatched runs"),
        (axes[0, 2], True, "(c) S-inhibition values restored"),
    ):
        part = att[att["patched"] == patched]
        runs = _present(part["corruption"], ("clean", "STR", "GN"))
        for k, tgt in enumerate(TARGETS):
            vals = [
                part[(part["corruption"] == r) & (part["target"] == tgt)]["attention"].mean() for r in runs
            ]
            ax.bar(np.arange(len(runs)) + (k - 1) * width, vals, width, label=tgt, color=colors[tgt])
        ax.set_xticks(range(len(runs)), runs)
        ax.set_ylim(0, 1)
        ax.set_ylabel("NM attention from END")
        ax.set_title(name)
        ax.legend(frameon=False, title="to")
    ax = axes[0, 1]
    rec = recovery.copy()
    rec["corruption"] = rec["corruption"].map(corruption_label)
    rec = rec[rec["metric"] == "logit_diff"]
    runs = _interventions(rec["corruption"])
    vals = [rec[rec["corruption"] == r]["effect"].mean() for r in runs]
    ax.bar(range(len(runs)), vals, color=[CORRUPTION_COLORS.get(r, "0.5") for r in runs])
    for x, v in enumerate(vals):
        ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(runs)), runs)
    ax.axhline(1.0, color="0.4", lw=0.6, ls="--")
    ax.set_ylabel("normalised logit difference")
    ax.set_title("(b) S-inhibition values restored")
    fig.suptitle(f"Name movers under STR and GN {model}".strip(), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, outputs)
