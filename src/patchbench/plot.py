"""Figures of any experiment from its effects frame: for notebooks, the workflow and the paper's figures.

Each function takes an effects frame in the schema of ``docs/architecture.md`` (one row per
component x metric of one sweep or several: ``model, task, corruption, site, window, component,
layer, head, position, positions, metric, effect, effect_sd, n_prompts, detected``; a
``direction`` column is used when present) and returns a :class:`matplotlib.figure.Figure`;
nothing is written (:func:`save` writes PNG / PDF). The corruptions, metrics, windows and
directions drawn are the ones in the frame, in the paper's order first (STR, GN; logit
difference, probability, KL).

- :func:`head_heatmap`: layer x head, one panel per condition (corruption, direction) x metric.
- :func:`position_heatmap`: layer x position for layer sites, (layer.head) x position for heads
  (``position: each`` sweeps), one panel per window x metric x condition.
- :func:`layer_curves`: effect per layer, one line per condition, one panel per window x metric.
- :func:`experiment_figure`: the one of the three that fits the frame.

Every figure shares one colour scale per metric across its panels, labels its colour bars with
the metric and its unit, marks the 2-SD detections (+ / −) with a legend, outlines a known
circuit (``circuit``: class -> components such as ``"3.2"`` or ``"4"``, e.g. the classes of
:func:`patchbench.analysis.robustness.read_known_circuit` or an organism's ``circuit.json``),
and is titled "Task — site, model (n prompts)".

    import patchbench.plot as pp
    fig = pp.head_heatmap(effects)          # effects: patchbench.grid(...) or an effects file
    pp.save(fig, ["heads.png"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from patchbench.analysis.frames import FrameError, validate_effects
from patchbench.analysis.labels import figure_title, interventions_in_order, metric_axis_label, metric_label
from patchbench.analysis.style import (
    CIRCUIT_COLOR,
    DETECTION_HANDLES,
    DIVERGING_CMAP,
    circuit_handle,
    circuit_members,
    colorbar,
    corruption_color,
    figure_legend,
    integer_axis,
    mark_detected,
    metric_limits,
    new_figure,
    outline_cells,
    save_figure,
)

__all__ = [
    "METRIC_ORDER",
    "experiment_figure",
    "figure_kind",
    "head_heatmap",
    "layer_curves",
    "load_circuit",
    "per_position",
    "position_heatmap",
    "save",
]

METRIC_ORDER = ("logit_diff", "prob", "kl", "stolfo")
#: Label every layer / head / position up to this many; beyond, whole-number ticks chosen by matplotlib.
ALL_TICKS = 32

Circuit = Mapping[str, Iterable] | None


def save(fig: Figure, outputs: Sequence[str | Path]) -> list[Path]:
    """Write ``fig`` to each path (``.png`` / ``.pdf``, byte-identical across runs)."""
    return save_figure(fig, outputs)


def load_circuit(path: str | Path | None, task: str | None = None) -> dict[str, list[str]] | None:
    """The classes (class -> components) of a known-circuit file for ``task``, or None when there is no
    file or the circuit is known for other tasks; any layout
    :func:`patchbench.analysis.robustness.read_known_circuit` reads (an organism's ``circuit.json`` too)."""
    if not path:
        return None
    import json

    from patchbench.analysis.robustness import read_known_circuit

    by_task = json.loads(Path(path).read_text()).get("by_task") if Path(path).is_file() else None
    if isinstance(by_task, dict) and task not in by_task:
        return None  # circuits per task, none for this one
    known = read_known_circuit(path, task)
    if task is not None and not known.applies_to(task):
        return None
    return {k: sorted(v) for k, v in known.classes.items()}


# ----------------------------------------------------------------------------- frame helpers
def ordered(values: Iterable, order: Sequence = ()) -> list:
    """The distinct values, those in ``order`` first (in its order), then the rest sorted."""
    vals = list(dict.fromkeys(values))
    return [v for v in order if v in vals] + sorted((v for v in vals if v not in order), key=str)


def _prepared(effects: pd.DataFrame, metrics: Sequence[str] | None) -> pd.DataFrame:
    """Validated rows of ``metrics`` (all present when None) with ``_cond``: the corruption, and the
    direction when the frame holds several."""
    df = validate_effects(effects)
    if metrics is not None:
        df = df[df["metric"].isin(metrics)]
    if df.empty:
        raise FrameError("no effects to plot: the frame has no rows (of the metrics asked for)")
    cond = df["corruption"].astype(str)
    if "direction" in df.columns and df["direction"].nunique() > 1:
        cond = cond + " " + df["direction"].astype(str)
    return df.assign(_cond=cond)


def per_position(df: pd.DataFrame) -> pd.Series:
    """Rows of a ``position: each`` sweep (one component per position); a named position that all
    prompts share also records its index, so the ``positions`` mode decides where the frame has it."""
    if "positions" in df.columns:
        return df["positions"].astype(str) == "each"
    return df["position"] >= 0


def _metrics(df: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    present = ordered(df["metric"], METRIC_ORDER)
    return [m for m in metrics if m in present] if metrics is not None else present


def _conditions(df: pd.DataFrame) -> list[str]:
    return interventions_in_order(df["_cond"])


def _title(df: pd.DataFrame, title: str | None) -> str:
    if title is not None:
        return title
    one = lambda col: ", ".join(map(str, ordered(df[col]))) if col in df.columns else ""  # noqa: E731
    positions = one("positions") or "all"
    return figure_title(one("task"), one("site"), one("model"), df["n_prompts"], positions)


def _legend(fig: Figure, df: pd.DataFrame, circuit_drawn: bool, extra: Sequence = ()) -> None:
    handles = list(extra)
    if "detected" in df.columns and (df["detected"] != "").any():
        handles += list(DETECTION_HANDLES)
    if circuit_drawn:
        handles.append(circuit_handle())
    figure_legend(fig, handles)


def _ticks(ax, axis: str, n: int, labels: Sequence[str] | None = None) -> None:
    if n <= ALL_TICKS or labels is not None:
        integer_axis(ax, axis, range(n), labels)
    else:
        integer_axis(ax, axis)


# ----------------------------------------------------------------------------- head heatmap
def head_heatmap(
    effects: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    circuit: Circuit = None,
    title: str | None = None,
) -> Figure:
    """Layer x head effects, rows condition (x window when several), columns metric; detected heads
    marked, the circuit's heads outlined; one colour scale and colour bar per metric."""
    df = _prepared(effects, metrics)
    df = df[(df["head"] >= 0) & ~per_position(df)]
    if df.empty:
        raise FrameError("head_heatmap needs head effects at all / named positions; per-position head "
                         "effects (position: each) are drawn by position_heatmap")  # fmt: skip
    cols = _metrics(df, metrics)
    windows = ordered(df["window"])
    rows = [(c, w) for c in _conditions(df) for w in windows]
    n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    side = min(3.2, max(2.2, 0.22 * n_heads + 1.0))
    fig, axes = new_figure(len(rows), len(cols), panel=(side, max(1.8, 0.2 * n_layers + 0.9)), extra=(0, 1.0))
    limits = metric_limits(df)
    heads, _ = circuit_members(circuit)
    drawn = False
    for j, metric in enumerate(cols):
        im = None
        for i, (cond, w) in enumerate(rows):
            ax = axes[i, j]
            plot = df[(df["_cond"] == cond) & (df["window"] == w) & (df["metric"] == metric)]
            grid = np.full((n_layers, n_heads), np.nan)
            grid[plot["layer"].to_numpy(), plot["head"].to_numpy()] = plot["effect"].to_numpy()
            v = limits[metric]
            im = ax.imshow(grid, aspect="auto", cmap=DIVERGING_CMAP, vmin=-v, vmax=v, interpolation="nearest")
            mark_detected(ax, plot, "head", "layer")
            drawn |= outline_cells(ax, [(h, la) for la, h in heads if la < n_layers and h < n_heads]) > 0
            win = f", window {w}" if len(windows) > 1 else ""
            ax.set_title(f"{cond}, {metric_label(metric)}{win}")
            _ticks(ax, "x", n_heads)
            _ticks(ax, "y", n_layers)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.grid(False)
        colorbar(fig, im, axes[:, j], metric, location="bottom")
    fig.suptitle(_title(df, title))
    _legend(fig, df, drawn)
    return fig


# ----------------------------------------------------------------------------- position heatmap
def grid_heatmap(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    x_values: Sequence,
    y_values: Sequence,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    x_name: str,
    y_name: str,
    metrics: Sequence[str],
    title: str,
    outline: Callable[[int, int], Iterable[tuple[float, float, float, float]]] | None = None,
    conditions_on_rows: bool = False,
    panel: tuple[float, float] = (3.2, 2.3),
) -> tuple[Figure, bool]:
    """Heatmaps of ``effect`` over (``y``, ``x``) of ``df`` (prepared: a ``_cond`` column).

    Rows are windows (x conditions when ``conditions_on_rows``), columns metrics (x conditions
    otherwise, metric-major), so the panels of one metric are adjacent and share one colour scale and
    one colour bar. ``outline(n_x, n_y)`` yields circuit rectangles (x centre, y centre, width,
    height). Returns the figure and whether a circuit was outlined.
    """
    windows, conds = ordered(df["window"]), _conditions(df)
    if conditions_on_rows:
        row_keys, col_keys = [(c, w) for c in conds for w in windows], [(m, None) for m in metrics]
    else:
        row_keys, col_keys = [(None, w) for w in windows], [(m, c) for m in metrics for c in conds]
    xi = {v: k for k, v in enumerate(x_values)}
    yi = {v: k for k, v in enumerate(y_values)}
    fig, axes = new_figure(len(row_keys), len(col_keys), panel=panel, extra=(0, 1.0))
    limits = metric_limits(df)
    boxes = list(outline(len(x_values), len(y_values))) if outline else []
    for metric in metrics:
        group = [j for j, (m, _) in enumerate(col_keys) if m == metric]
        im = None
        for j in group:
            for i, (row_cond, w) in enumerate(row_keys):
                cond = row_cond if row_cond is not None else col_keys[j][1]
                ax = axes[i, j]
                plot = df[(df["_cond"] == cond) & (df["window"] == w) & (df["metric"] == metric)]
                plot = plot[plot[x].isin(list(xi)) & plot[y].isin(list(yi))]
                if plot.empty:
                    ax.set_axis_off()
                    continue
                grid = np.full((len(y_values), len(x_values)), np.nan)
                gx, gy = plot[x].map(xi).to_numpy(int), plot[y].map(yi).to_numpy(int)
                grid[gy, gx] = plot["effect"].to_numpy()
                v = limits[metric]
                im = ax.imshow(
                    grid, aspect="auto", cmap=DIVERGING_CMAP, vmin=-v, vmax=v, interpolation="nearest"
                )
                if "detected" in plot.columns:
                    mark_detected(ax, plot.assign(_x=gx, _y=gy), "_x", "_y")
                for cx, cy, wd, ht in boxes:
                    outline_cells(ax, [(cx, cy)], wd, ht)
                win = f", window {w}" if len(windows) > 1 else ""
                ax.set_title(f"{cond}, {metric_label(metric)}{win}")
                _ticks(ax, "x", len(x_values), x_labels)
                _ticks(ax, "y", len(y_values), y_labels)
                ax.set_xlabel(x_name)
                ax.set_ylabel(y_name)
                ax.grid(False)
        if im is not None:
            colorbar(fig, im, axes[:, group], metric, location="bottom")
    fig.suptitle(title)
    return fig, bool(boxes)


def position_heatmap(
    effects: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    circuit: Circuit = None,
    position_labels: Mapping[int, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Effects of a ``position: each`` sweep: position x layer for layer sites, (layer.head) x position
    for heads; the circuit's layers (columns) or heads (rows) outlined."""
    df = _prepared(effects, metrics)
    df = df[per_position(df)]
    if df.empty:
        raise FrameError("position_heatmap needs per-position effects (a 'position: each' sweep)")
    cols = _metrics(df, metrics)
    positions = sorted(set(df["position"]))
    labels = [(position_labels or {}).get(p, str(p)) for p in positions]
    c_heads, c_layers = circuit_members(circuit)
    if (df["head"] >= 0).any():
        comps = sorted(set(zip(df["layer"], df["head"], strict=True)))
        names = [f"{la}.{h}" for la, h in comps]
        df = df.assign(_comp=[f"{la}.{h}" for la, h in zip(df["layer"], df["head"], strict=True)])
        rows = [k for k, h in enumerate(comps) if h in c_heads]
        fig, drawn = grid_heatmap(
            df, "position", "_comp", x_values=positions, y_values=names, x_labels=labels, y_labels=names,
            x_name="position", y_name="head (layer.head)", metrics=cols, title=_title(df, title),
            outline=lambda nx, ny: [((nx - 1) / 2, r, nx, 1) for r in rows], conditions_on_rows=True,
            panel=(min(9.0, 0.12 * len(positions) + 1.4), min(9.0, 0.11 * len(comps) + 1.2)),
        )  # fmt: skip
    else:
        layers = list(range(int(df["layer"].max()) + 1))
        wide = len(cols) * len(_conditions(df)) > 4  # more than four panels in a row: conditions go to rows
        fig, drawn = grid_heatmap(
            df, "layer", "position", x_values=layers, y_values=positions, y_labels=labels, x_name="layer",
            y_name="position", metrics=cols, title=_title(df, title), conditions_on_rows=wide,
            outline=lambda nx, ny: [(la, (ny - 1) / 2, 1, ny) for la in sorted(c_layers) if la < nx],
            panel=(max(2.4, 0.25 * len(layers) + 1.0), max(1.8, 0.14 * len(positions) + 1.0)),
        )  # fmt: skip
    _legend(fig, df, drawn)
    return fig


# ----------------------------------------------------------------------------- layer curves
def layer_curves(
    effects: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    row: str = "window",
    row_label: Callable[[object], str] | None = None,
    circuit: Circuit = None,
    title: str | None = None,
) -> Figure:
    """Effect per layer, one line per condition with its ±1 standard-error band, rows by ``row``
    (window, or e.g. task), columns by metric; the circuit's layers shaded."""
    df = _prepared(effects, metrics)
    df = df[(df["head"] < 0) & ~per_position(df)]
    if df.empty:
        raise FrameError("layer_curves needs layer effects at all / named positions (not heads, not "
                         "position: each; see head_heatmap and position_heatmap)")  # fmt: skip
    cols = _metrics(df, metrics)
    rows = ordered(df[row])
    label = row_label or (lambda v: f"window {v}" if row == "window" else str(v))
    conds = _conditions(df)
    _, c_layers = circuit_members(circuit)
    fig, axes = new_figure(len(rows), len(cols), panel=(3.0, 2.3), extra=(0, 0.9))
    band = False
    for i, rv in enumerate(rows):
        for j, metric in enumerate(cols):
            ax = axes[i, j]
            panel = df[(df[row] == rv) & (df["metric"] == metric)]
            for la in sorted(c_layers):
                ax.axvspan(la - 0.5, la + 0.5, color=CIRCUIT_COLOR, alpha=0.12, lw=0)
            for cond in conds:
                c = panel[panel["_cond"] == cond].sort_values("layer")
                if c.empty:
                    continue
                color = corruption_color(cond, conds)
                ax.plot(c["layer"], c["effect"], marker="o", ms=2.5, lw=1.2, color=color)
                se = c["effect_sd"] / np.sqrt(c["n_prompts"].clip(lower=1))
                if se.notna().any() and (c["n_prompts"] > 1).all():
                    ax.fill_between(
                        c["layer"], c["effect"] - se, c["effect"] + se, color=color, alpha=0.18, lw=0
                    )
                    band = True
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_title(f"{metric_label(metric)}, {label(rv)}")
            integer_axis(ax, "x")
            ax.set_xlabel("layer (window centre)" if row == "window" and rv != 1 else "layer")
            ax.set_ylabel(metric_axis_label(metric, wrap=True), fontsize=7)
    handles = [Line2D([], [], color=corruption_color(c, conds), marker="o", ms=3, label=c) for c in conds]
    if band:
        handles.append(Patch(facecolor="0.6", alpha=0.4, label="±1 standard error over prompts"))
    if c_layers:
        handles.append(Patch(facecolor=CIRCUIT_COLOR, alpha=0.25, label="known circuit (layers)"))
    fig.suptitle(_title(df, title))
    figure_legend(fig, handles)
    return fig


# ----------------------------------------------------------------------------- any experiment
def figure_kind(effects: pd.DataFrame) -> str:
    """``heads``, ``positions`` or ``layers``: the generic figure that fits the frame."""
    if per_position(effects).any():
        return "positions"
    return "heads" if (effects["head"] >= 0).any() else "layers"


def experiment_figure(
    effects: pd.DataFrame,
    *,
    circuit: Circuit = None,
    title: str | None = None,
    position_labels: Mapping[int, str] | None = None,
) -> Figure:
    """The figure of one experiment whatever its task and site (:func:`figure_kind` picks it)."""
    kind = figure_kind(validate_effects(effects))
    if kind == "heads":
        return head_heatmap(effects, circuit=circuit, title=title)
    if kind == "positions":
        return position_heatmap(effects, circuit=circuit, title=title, position_labels=position_labels)
    return layer_curves(effects, circuit=circuit, title=title)
