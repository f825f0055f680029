"""The robustness figure: components x cells, detection probability as colour, the effect's CI drawn in each tile.

One row per component detected somewhere (the verdict table's order: robust, depends on, unstable),
one column per cell (corruption / metric / window). The tile's colour is the signed detection
probability p(positive) − p(negative) (red: detected positive, blue: negative, white: never).
Inside each tile a horizontal bar is the effect's confidence interval and the dot its value, on
the column's own scale (spanning every component's effect in that cell and its thresholds); the dashed lines of the column are the detection thresholds μ ± k SD and
the thin solid line is zero, so a bar that crosses a dashed line is a detection the data do not
settle. The axis along the top gives each column's scale: its lowest and highest value (and 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection

from patchbench.analysis.style import DIVERGING_CMAP, new_figure, save_figure

__all__ = ["MAX_ROWS", "robustness_figure"]

#: At most this many components are drawn (the first of the verdict table's order); the tables hold all.
MAX_ROWS = 40


def robustness_figure(
    cells: pd.DataFrame,
    verdicts: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    title: str = "",
    max_rows: int = MAX_ROWS,
) -> list[Path]:
    """Draw the figure from :func:`~patchbench.analysis.robustness.cell_summary` and
    :func:`~patchbench.analysis.robustness.verdicts` and save it to ``outputs`` (PNG and, if asked, PDF)."""
    found = verdicts[verdicts["verdict"] != "not detected"]
    rows = found["component"].tolist()[:max_rows]
    order = list(dict.fromkeys(cells["cell"]))
    if not rows:
        fig, axes = new_figure(1, 1, panel=(6.0, 1.6))
        ax = axes[0, 0]
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}\nno component is detected in any of the {len(order)} cells",
                ha="center", va="center", fontsize=9)  # fmt: skip
        return save_figure(fig, outputs)
    sub = cells[cells["component"].isin(rows)]
    get = sub.set_index(["component", "cell"])
    R, C = len(rows), len(order)
    colour = np.full((R, C), np.nan)
    fig, axes = new_figure(1, 1, panel=(2.6 + 0.85 * C, max(2.8, 1.6 + 0.26 * R)))
    ax = axes[0, 0]
    segs, dots, thresh, zeros, scale = [], [], [], [], []
    for j, cell in enumerate(order):
        col = cells[cells["cell"] == cell]
        first = col.iloc[0]
        shown = sub[sub["cell"] == cell]
        lo = min(shown["ci_low"].min(), col["effect"].min(), first["threshold_low"], 0.0)
        hi = max(shown["ci_high"].max(), col["effect"].max(), first["threshold_high"], 0.0)
        span = hi - lo if np.isfinite(hi - lo) and hi > lo else 1.0

        def x(v, j=j, lo=lo, span=span):
            return j - 0.42 + 0.84 * (v - lo) / span

        for t in (first["threshold_low"], first["threshold_high"]):
            if np.isfinite(t):
                thresh.append([(x(t), -0.5), (x(t), R - 0.5)])
        zeros.append([(x(0.0), -0.5), (x(0.0), R - 0.5)])
        scale += [(x(lo), lo), (x(hi), hi)] + ([(x(0.0), 0.0)] if min(-lo, hi) > 0.15 * span else [])
        for i, comp in enumerate(rows):
            r = get.loc[(comp, cell)]
            colour[i, j] = r["p_positive"] - r["p_negative"]
            if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
                segs.append([(x(r["ci_low"]), i), (x(r["ci_high"]), i)])
            if np.isfinite(r["effect"]):
                dots.append((x(r["effect"]), i))
    im = ax.imshow(
        colour, cmap=DIVERGING_CMAP, vmin=-1, vmax=1, aspect="auto", interpolation="nearest", alpha=0.8
    )
    ax.add_collection(LineCollection(thresh, colors="0.25", linewidths=0.8, linestyles=(0, (3, 2))))
    ax.add_collection(LineCollection(zeros, colors="0.6", linewidths=0.5))
    ax.add_collection(LineCollection(segs, colors="black", linewidths=1.3))
    if dots:
        d = np.array(dots)
        ax.scatter(d[:, 0], d[:, 1], s=7, color="black", zorder=3)
    verdict = found.set_index("component")["verdict"]
    ax.set_yticks(range(R), [f"{c}  ({verdict[c].replace('depends on ', 'dep. ')})" for c in rows])
    ax.set_xticks(range(C), order, rotation=45, ha="right")
    ax.set_xticks(np.arange(C + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(R + 1) - 0.5, minor=True)
    ax.grid(False)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    ax.set_xlim(-0.5, C - 0.5)
    ax.set_ylim(R - 0.5, -0.5)
    top = ax.secondary_xaxis("top")
    top.set_xticks([p for p, _ in scale], [f"{v:.2g}" for _, v in scale], rotation=90, fontsize=5)
    top.tick_params(length=2, pad=1)
    top.set_xlabel("effect (each column on its own scale: lowest, 0, highest)", fontsize=6)
    ci = cells["ci_method"].iloc[0]
    n_found = len(found)
    more = f"; first {R} of {n_found} components" if n_found > R else ""
    ax.set_title(
        f"{title}\ncolour: detection probability (red +, blue −); bar: effect CI ({ci}), dashed: μ ± k SD{more}"
    )
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("detection probability p(positive) − p(negative)")
    return save_figure(fig, outputs)
