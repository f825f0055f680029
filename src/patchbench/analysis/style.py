"""One figure style for every patchbench plot, its shared parts, and the writer that saves PNG + PDF together.

All figures go through :func:`new_figure` / :func:`save_figure`, so they share fonts, colours,
sizes and the constrained layout (titles, colour bars and legends never overlap the panels).
Figures are :class:`matplotlib.figure.Figure` objects made without pyplot: no backend is chosen
or needed (the workflow runs headless, a notebook shows the returned figure).

The parts every figure draws the same way:

- :func:`metric_limits` / :func:`colorbar`: one symmetric colour scale per metric across the
  panels of a figure, and a colour bar labelled with the metric and its unit;
- :func:`mark_detected` / :data:`DETECTION_HANDLES`: the 2-SD detections (+ / −) and their legend;
- :func:`circuit_members` / :func:`outline_cells`: a known circuit's components outlined;
- :func:`figure_legend`: one legend outside the panels;
- :func:`integer_axis`: whole-number ticks on layer, head and position axes.

Labels of corruptions, metrics, tasks and sites come from :mod:`patchbench.analysis.labels`, so
tables and figures spell them the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FixedLocator, MaxNLocator

from patchbench.analysis.labels import METRIC_LABELS, corruption_label, metric_axis_label, metric_label
from patchbench.atomic import atomic_path

__all__ = [
    "CIRCUIT_COLOR",
    "CORRUPTION_COLORS",
    "DETECTION_HANDLES",
    "DIVERGING_CMAP",
    "METRIC_LABELS",
    "apply_style",
    "circuit_handle",
    "circuit_members",
    "colorbar",
    "corruption_label",
    "figure_legend",
    "integer_axis",
    "mark_detected",
    "metric_label",
    "metric_limits",
    "new_figure",
    "outline_cells",
    "save_figure",
]

log = logging.getLogger(__name__)

#: One colour per corruption, used by every line plot; others take the palette's next colours.
CORRUPTION_COLORS: dict[str, str] = {"STR": "#1f77b4", "GN": "#d62728", "clean": "#2ca02c"}
_MORE_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e")

#: Diverging colour map for signed patching effects (0 = white).
DIVERGING_CMAP = "RdBu_r"
#: The outline of a known circuit's components.
CIRCUIT_COLOR = "#1b9e77"

DPI = 150

#: Metadata of the figure files: a PDF's creation date would make every run's file differ.
FILE_METADATA: dict[str, dict[str, str | None]] = {"pdf": {"CreationDate": None}, "png": {}}

#: Legend entries of the detection marks (the paper's rule: more than 2 SD from the mean).
DETECTION_HANDLES = (
    Line2D([], [], ls="none", marker="+", color="k", markersize=7, mew=1.4, label="detected, positive (> μ + 2 SD)"),
    Line2D([], [], ls="none", marker="_", color="k", markersize=7, mew=1.4, label="detected, negative (< μ − 2 SD)"),
)  # fmt: skip


def apply_style() -> None:
    """Set the shared seaborn / matplotlib style (idempotent)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)
    rcParams.update(
        {
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "axes.titlesize": 9,
            "axes.labelsize": 8,
            "xtick.labelsize": 7,
            "ytick.labelsize": 7,
            "legend.fontsize": 7,
            "figure.titlesize": 10,
            "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
        }
    )


def new_figure(
    nrows: int,
    ncols: int,
    panel: tuple[float, float] = (3.0, 2.4),
    extra: tuple[float, float] = (0, 0),
    **kwargs,
):
    """A styled figure (constrained layout) with an ``nrows x ncols`` grid of axes (always 2-D).

    ``panel`` is the size of one panel in inches, ``extra`` room added for titles, colour bars and
    legends.
    """
    apply_style()
    size = (panel[0] * ncols + extra[0], panel[1] * nrows + extra[1])
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def corruption_color(corruption: str, order: Iterable[str] = ()) -> str:
    """The colour of a corruption's line: the fixed ones for STR / GN / clean, else by its rank in ``order``."""
    label = corruption_label(corruption)
    if label in CORRUPTION_COLORS:
        return CORRUPTION_COLORS[label]
    others = [c for c in dict.fromkeys(map(corruption_label, order)) if c not in CORRUPTION_COLORS]
    k = others.index(label) if label in others else 0
    return _MORE_COLORS[k % len(_MORE_COLORS)]


# ----------------------------------------------------------------------------- colour scales
def symmetric_limit(values) -> float:
    """The largest absolute finite value (1 when there is none or it is 0): a colour scale's ±limit."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    m = float(np.abs(v).max()) if v.size else 0.0
    return m if m > 0 else 1.0


def metric_limits(df: pd.DataFrame, value: str = "effect") -> dict[str, float]:
    """One symmetric colour limit per metric over every row of ``df`` (all panels of one figure)."""
    return {m: symmetric_limit(g[value]) for m, g in df.groupby("metric", sort=False)}


def colorbar(fig: Figure, mappable, axes, metric: str, location: str = "right"):
    """A colour bar for ``axes`` (one axes or several sharing the scale) labelled with the metric and its unit."""
    targets = list(np.ravel(axes)) if isinstance(axes, np.ndarray | list | tuple) else axes
    shrink = 0.9 if location in ("right", "left") else 0.8
    cb = fig.colorbar(
        mappable, ax=targets, location=location, shrink=shrink, aspect=25 if location == "right" else 30
    )
    cb.set_label(metric_axis_label(metric), fontsize=7)
    cb.ax.tick_params(labelsize=6)
    return cb


# ----------------------------------------------------------------------------- marks and outlines
def mark_detected(ax, frame: pd.DataFrame, x: str, y: str) -> bool:
    """Mark detected rows of ``frame`` at (``x``, ``y``): + positive, − negative; whether any was marked."""
    marked = False
    for sign, mark in (("positive", "+"), ("negative", "_")):
        d = frame[frame["detected"] == sign]
        if len(d):
            ax.scatter(d[x], d[y], marker=mark, s=36, c="k", linewidths=1.4, zorder=4)
            marked = True
    return marked


_HEAD = re.compile(r"^(\d+)\.(\d+)$")
_LAYER = re.compile(r"^(\d+)$")


def circuit_members(circuit: Mapping[str, Iterable] | None) -> tuple[set[tuple[int, int]], set[int]]:
    """(heads as (layer, head), layers) of a known circuit: class -> components (``L.H``, ``L``,
    either with ``@POS``, or ``[layer, head]`` / ``[layer]``), as :func:`patchbench.analysis.robustness.read_known_circuit`
    reads any circuit file; positions are dropped (a figure outlines the component)."""
    heads: set[tuple[int, int]] = set()
    layers: set[int] = set()
    for members in (circuit or {}).values():
        for m in members:
            if isinstance(m, list | tuple):
                if len(m) == 2:
                    heads.add((int(m[0]), int(m[1])))
                elif len(m) == 1:
                    layers.add(int(m[0]))
                continue
            text = str(m).split("@")[0]
            if h := _HEAD.match(text):
                heads.add((int(h.group(1)), int(h.group(2))))
            elif la := _LAYER.match(text):
                layers.add(int(la.group(1)))
    return heads, layers


def outline_cells(ax, cells: Iterable[tuple[float, float]], width: float = 1.0, height: float = 1.0) -> int:
    """Outline heatmap cells centred at (x, y) in data coordinates; returns how many."""
    n = 0
    for x, y in cells:
        ax.add_patch(Rectangle((x - width / 2, y - height / 2), width, height, fill=False,
                               edgecolor=CIRCUIT_COLOR, linewidth=1.8, zorder=3))  # fmt: skip
        n += 1
    return n


def circuit_handle(source: str = "known circuit") -> Patch:
    """Legend entry of the circuit outline."""
    return Patch(facecolor="none", edgecolor=CIRCUIT_COLOR, linewidth=1.8, label=source)


def figure_legend(fig: Figure, handles, ncol: int | None = None) -> None:
    """One legend below the panels, outside the data."""
    handles = list(handles)
    if handles:
        fig.legend(
            handles=handles, loc="outside lower center", ncol=ncol or min(len(handles), 4), frameon=False
        )


def integer_axis(
    ax, axis: str = "x", values: Iterable[int] | None = None, labels: Iterable[str] | None = None
) -> None:
    """Whole-number ticks: at every one of ``values`` (with ``labels``) or, without, at integers only."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    if values is None:
        target.set_major_locator(MaxNLocator(integer=True))
        return
    values = list(values)
    target.set_major_locator(FixedLocator(values))
    if labels is not None:
        (ax.set_xticklabels if axis == "x" else ax.set_yticklabels)(list(labels))


# ----------------------------------------------------------------------------- files
def save_figure(fig: Figure, outputs: Iterable[str | Path]) -> list[Path]:
    """Save ``fig`` to every path in ``outputs`` (format from the suffix: .png, .pdf).

    The workflow passes the PNG and the PDF of one figure together; a path with another suffix is
    an error, because the report expects exactly these two formats. Each file is written
    atomically (:mod:`patchbench.atomic`) with fixed metadata (:data:`FILE_METADATA`: no creation
    date), so the same figure is the same bytes in every run.
    """
    written: list[Path] = []
    for out in outputs:
        out = Path(out)
        if out.suffix not in {".png", ".pdf"}:
            raise ValueError(f"figure output {out} must end in .png or .pdf")
        fmt = out.suffix[1:]
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, metadata=FILE_METADATA[fmt])
        written.append(out)
        log.info("wrote %s", out)
    return written
