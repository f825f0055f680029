"""The paper's figures as PNG + PDF, drawn by :mod:`patchbench.plot` in one shared style.

Each public function takes frames and the output paths (a ``.png`` and a ``.pdf``) and returns
the written paths; ``circuit`` (class -> components) outlines a known circuit. Inputs are the
effects frame unless stated:

- :func:`fig_factual_mlp_last` (§3.1, Fig. 2, App. G.1): MLP effect per layer at the last subject
  token, one line per corruption, one panel per window x metric. :func:`fig_arithmetic_mlp`
  (App. C, Figs 6-8) is the same plot with one row per operator (task).
- :func:`fig_mlp_positions` (§4.1, Fig. 4, App. G.2): heatmaps layer x ROME position category,
  from :func:`patchbench.analysis.positions.category_effects`.
- :func:`fig_sliding_vs_summed` (§5, Fig. 5, App. G.3): sliding window vs summed single layers.
- :func:`fig_head_heatmaps` (App. E/F/H, Figs 9-11, 28-30): layer x head, one panel per
  corruption x metric, detected heads marked. The ABC-corruption figure is this plot on the
  ``ioi_abc`` effects.
- :func:`fig_docstring_heads` (App. D): (layer.head) x position heatmaps.
- :func:`fig_nm_attention` (§3.2, Fig. 3): name-mover attention to IO / S1 / other under clean,
  STR and GN runs and after restoring the S-inhibition heads' values, with the recovered logit
  difference; inputs in :mod:`patchbench.analysis.nm_attention`.

Every figure is titled "Task — site, model (n prompts)" with the paper's figure on a second line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from patchbench import plot
from patchbench.analysis.frames import FrameError, validate_effects
from patchbench.analysis.labels import figure_title, interventions_in_order, metric_axis_label
from patchbench.analysis.positions import ROME_CATEGORIES
from patchbench.analysis.style import (
    CIRCUIT_COLOR,
    CORRUPTION_COLORS,
    circuit_members,
    corruption_label,
    figure_legend,
    integer_axis,
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
]

log = logging.getLogger(__name__)

Outputs = Sequence[str | Path]
Circuit = Mapping[str, Sequence] | None


def _require(df: pd.DataFrame, what: str) -> None:
    if df.empty:
        raise FrameError(f"{what}: no rows to plot; check that the sweeps of this figure ran")


def _title(df: pd.DataFrame, model: str, paper: str, *, task=None, site=None, positions=None) -> str:
    """ "Task — site, model (n prompts)" from the frame (or the values given), the paper's figure below."""

    def one(col: str, given: str | None) -> str:
        if given:
            return given
        return ", ".join(plot.ordered(df[col].astype(str))) if col in df.columns else ""

    return figure_title(one("task", task), one("site", site), one("model", model or None), df["n_prompts"],
                        one("positions", positions) or "all", extra=paper)  # fmt: skip


# ----------------------------------------------------------------------------- curves over layers
def fig_factual_mlp_last(
    effects: pd.DataFrame, outputs: Outputs, model: str = "", circuit: Circuit = None
) -> list[Path]:
    """§3.1 / App. G.1: MLP patching at the last subject token, GN vs STR x metric x window."""
    df = validate_effects(effects)
    df = df[df["metric"].isin(["prob", "logit_diff"])]
    _require(df, "MLP at the last subject token")
    title = _title(df, model, "Zhang & Nanda §3.1, Fig. 2; App. G.1")
    fig = plot.layer_curves(df, metrics=("prob", "logit_diff"), circuit=circuit, title=title)
    return save_figure(fig, outputs)


def fig_arithmetic_mlp(
    effects: pd.DataFrame, outputs: Outputs, model: str = "", circuit: Circuit = None
) -> list[Path]:
    """App. C: one MLP layer at the last token, a row per operator (task), STR vs GN."""
    ops = {"arithmetic_add": "addition", "arithmetic_sub": "subtraction", "arithmetic_mul": "multiplication"}
    df = validate_effects(effects)
    _require(df, "arithmetic MLP")
    title = _title(df, model, "Zhang & Nanda App. C, Figs 6-8", task="Arithmetic (+, −, ×)")
    fig = plot.layer_curves(df, metrics=("logit_diff", "prob", "stolfo"), row="task", circuit=circuit,
                            row_label=lambda t: ops.get(t, t), title=title)  # fmt: skip
    return save_figure(fig, outputs)


def fig_sliding_vs_summed(
    effects: pd.DataFrame, outputs: Outputs, model: str = "", circuit: Circuit = None
) -> list[Path]:
    """§5 / App. G.3: sliding-window effect vs the sum of single-layer effects over the window."""
    cmp = sliding_vs_summed(effects)
    cmp = cmp[cmp["metric"].isin(["prob", "logit_diff"])]
    _require(cmp, "sliding window vs summed")
    windows = sorted(set(cmp["window"]))
    conds = interventions_in_order(cmp["corruption"])
    cols = [
        (c, m)
        for c in conds
        for m in ("prob", "logit_diff")
        if ((cmp["corruption"] == c) & (cmp["metric"] == m)).any()
    ]
    fig, axes = new_figure(len(windows), len(cols), panel=(3.0, 2.2), extra=(0, 0.9), sharex=True)
    styles = {"sliding": dict(ls="-", marker="o"), "summed": dict(ls="--", marker="s")}
    _, layers = circuit_members(circuit)
    for i, w in enumerate(windows):
        for j, (corr, metric) in enumerate(cols):
            ax = axes[i, j]
            panel = cmp[(cmp["window"] == w) & (cmp["corruption"] == corr) & (cmp["metric"] == metric)]
            for la in sorted(layers):
                ax.axvspan(la - 0.5, la + 0.5, color=CIRCUIT_COLOR, alpha=0.12, lw=0)
            for kind in ("sliding", "summed"):
                c = panel[panel["kind"] == kind].sort_values("layer")
                ax.plot(
                    c["layer"],
                    c["effect"],
                    ms=2.5,
                    lw=1.2,
                    color=CORRUPTION_COLORS.get(corr, "0.3"),
                    **styles[kind],
                )
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_title(f"{corr}, {metric_label(metric)}, window {w}")
            ax.set_ylabel(metric_axis_label(metric, wrap=True), fontsize=7)
            integer_axis(ax, "x")
            if i == len(windows) - 1:
                ax.set_xlabel("layer (window centre)")
    handles = [Line2D([], [], color="0.3", label="sliding window (the window patched at once)", **styles["sliding"]),
               Line2D([], [], color="0.3", label="summed single layers over the window", **styles["summed"])]  # fmt: skip
    if layers:
        handles.append(Patch(facecolor=CIRCUIT_COLOR, alpha=0.25, label="known circuit (layers)"))
    fig.suptitle(_title(cmp, model, "Zhang & Nanda §5, Fig. 5; App. G.3"))
    figure_legend(fig, handles)
    return save_figure(fig, outputs)


# ----------------------------------------------------------------------------- heatmaps
def fig_mlp_positions(
    cat_effects: pd.DataFrame, outputs: Outputs, model: str = "", circuit: Circuit = None
) -> list[Path]:
    """§4.1 / App. G.2: MLP effect per layer x ROME position category (rows window, columns metric x corruption)."""
    df = cat_effects.copy()
    df["corruption"] = df["corruption"].map(corruption_label) if "corruption" in df else "?"
    df = df[df["metric"].isin(["logit_diff", "prob"])]
    _require(df, "MLP patching at all positions")
    df = df.assign(_cond=df["corruption"], category=df["category"].astype(str))
    cats = [c for c in ROME_CATEGORIES if c in set(df["category"])]
    layers = list(range(int(df["layer"].max()) + 1))
    _, c_layers = circuit_members(circuit)
    # the prompts run (a category such as the middle subject tokens exists in fewer of them)
    title = figure_title("factual", "mlp", model or ", ".join(plot.ordered(df["model"])), [df["n_prompts"].max()], "each",
                         extra="ROME position categories; Zhang & Nanda §4.1, Fig. 4; App. G.2")  # fmt: skip
    fig, drawn = plot.grid_heatmap(
        df, "layer", "category", x_values=layers, y_values=cats, y_labels=cats, x_name="layer", y_name="",
        metrics=[m for m in ("logit_diff", "prob") if m in set(df["metric"])], title=title,
        outline=lambda nx, ny: [(la, (ny - 1) / 2, 1, ny) for la in sorted(c_layers) if la < nx],
        panel=(max(2.6, 0.25 * len(layers) + 1.2), 2.0),
    )  # fmt: skip
    figure_legend(
        fig,
        [Patch(facecolor="none", edgecolor=CIRCUIT_COLOR, lw=1.8, label="known circuit (layers)")]
        if drawn
        else [],
    )
    return save_figure(fig, outputs)


def fig_head_heatmaps(
    effects: pd.DataFrame,
    outputs: Outputs,
    metrics: Sequence[str] = ("logit_diff", "prob", "kl"),
    title: str = "",
    circuit: Circuit = None,
) -> list[Path]:
    """Layer x head patching effects, rows corruption, columns metric; detected heads marked.

    ``title`` is the second line (the paper's figure); the first is "Task — site, model (n prompts)".
    """
    df = validate_effects(effects)
    df = df[df["metric"].isin(metrics) & (df["head"] >= 0)]
    _require(df, title or "head heatmaps")
    fig = plot.head_heatmap(df, metrics=metrics, circuit=circuit, title=_title(df, "", title))
    return save_figure(fig, outputs)


def fig_docstring_heads(
    effects: pd.DataFrame,
    outputs: Outputs,
    position_labels: dict[int, str] | None = None,
    title: str = "",
    circuit: Circuit = None,
) -> list[Path]:
    """App. D: (layer.head) x position effects, one panel per corruption x metric."""
    df = validate_effects(effects)
    df = df[df["metric"].isin(["logit_diff", "prob", "kl"]) & (df["position"] >= 0)]
    _require(df, title or "docstring heads")
    fig = plot.position_heatmap(df, metrics=("logit_diff", "prob", "kl"), circuit=circuit,
                                position_labels=position_labels, title=_title(df, "", title))  # fmt: skip
    return save_figure(fig, outputs)


# ----------------------------------------------------------------------------- §3.2
def _se(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].mean()) if column in frame.columns and frame[column].notna().any() else np.nan


def _recovery_se(rec: pd.DataFrame) -> float:
    """The standard error of a recovery value: ``effect_se``, or ``effect_sd / sqrt(n_prompts)`` of an effects frame."""
    if "effect_se" in rec.columns:
        return _se(rec, "effect_se")
    if {"effect_sd", "n_prompts"} <= set(rec.columns):
        return _se(rec.assign(_se=rec["effect_sd"] / np.sqrt(rec["n_prompts"])), "_se")
    return np.nan


def fig_nm_attention(
    attention: pd.DataFrame, recovery: pd.DataFrame, outputs: Outputs, model: str = ""
) -> list[Path]:
    """§3.2 / Fig. 3: (a) NM attention to IO / S1 / other in clean, STR, GN runs; (b) logit
    difference recovered by restoring the S-inhibition values; (c) NM attention in that patched run.

    ``attention``: :data:`patchbench.analysis.nm_attention.ATTENTION_COLUMNS` (``attention_se``
    draws error bars, ``n_prompts`` goes into the title); ``recovery``: the effects of the S-inhibition-values sweep (one component
    per corruption) or any frame with columns corruption, metric, effect (``effect_se`` or
    ``effect_sd`` / ``n_prompts`` draw error bars).
    """
    from patchbench.analysis.nm_attention import TARGETS, validate_attention

    att = validate_attention(attention)
    counts = att["n_prompts"].dropna() if "n_prompts" in att.columns else []
    title = figure_title("ioi", "name-mover heads", model, counts, extra="Zhang & Nanda §3.2, Fig. 3")
    if att.empty:  # e.g. the classifier found no name movers in this model
        fig, axes = new_figure(1, 1, panel=(6.0, 1.5))
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, f"{model}: no name-mover heads to analyse (§3.2 needs at least one)".strip(),
                        ha="center", va="center")  # fmt: skip
        return save_figure(fig, outputs)
    fig, axes = new_figure(1, 3, panel=(3.0, 2.6), extra=(0, 0.9))
    width = 0.25
    colors = {"IO": "#2ca02c", "S1": "#ff7f0e", "other": "0.6"}
    for ax, patched, name in (
        (axes[0, 0], False, "(a) unpatched runs"),
        (axes[0, 2], True, "(c) S-inhibition values restored"),
    ):
        part = att[att["patched"] == patched]
        runs = plot.ordered(part["corruption"], ("clean", "STR", "GN"))
        for k, tgt in enumerate(TARGETS):
            sel = [part[(part["corruption"] == r) & (part["target"] == tgt)] for r in runs]
            vals = [s["attention"].mean() for s in sel]
            err = [_se(s, "attention_se") for s in sel]
            ax.bar(np.arange(len(runs)) + (k - 1) * width, vals, width, color=colors[tgt],
                   yerr=None if np.isnan(err).all() else err, capsize=2, error_kw={"lw": 0.8})  # fmt: skip
        ax.set_xticks(range(len(runs)), runs)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("NM attention from END (probability)")
        ax.set_title(name)
    ax = axes[0, 1]
    rec = recovery.copy()
    rec["corruption"] = rec["corruption"].map(corruption_label)
    rec = rec[rec["metric"] == "logit_diff"]
    runs = interventions_in_order(rec["corruption"])
    sel = [rec[rec["corruption"] == r] for r in runs]
    vals = [s["effect"].mean() for s in sel]
    err = [_recovery_se(s) for s in sel]
    ax.bar(range(len(runs)), vals, color=[CORRUPTION_COLORS.get(r, "0.5") for r in runs],
           yerr=None if np.isnan(err).all() else err, capsize=3, error_kw={"lw": 0.8})  # fmt: skip
    for x, v in enumerate(vals):
        ax.text(x + 0.06, v, f"{v:.2f}", ha="left", va="bottom", fontsize=7)  # beside the error bar
    ax.set_xticks(range(len(runs)), runs)
    ax.axhline(1.0, color="0.4", lw=0.6, ls="--")
    ax.set_ylabel(metric_axis_label("logit_diff", wrap=True), fontsize=7)
    ax.set_title("(b) S-inhibition values restored")
    handles = [Patch(color=colors[t], label=f"attention to {t}") for t in TARGETS]
    handles.append(Line2D([], [], color="k", lw=0.8, marker="|", label="±1 standard error over prompts"))
    figure_legend(fig, handles)
    fig.suptitle(title)
    return save_figure(fig, outputs)
