"""One figure style for every patchbench plot, and the writer that saves PNG + PDF together.

All figures go through :func:`new_figure` / :func:`save_figure` so they share fonts, colours,
sizes and the non-interactive Agg backend (the workflow runs headless). The labels of corruptions
and metrics come from :mod:`patchbench.analysis.labels`, so tables and figures spell them the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from patchbench.analysis.labels import METRIC_LABELS, corruption_label, metric_label  # noqa: E402
from patchbench.atomic import atomic_path  # noqa: E402

__all__ = [
    "CORRUPTION_COLORS",
    "METRIC_LABELS",
    "apply_style",
    "corruption_label",
    "metric_label",
    "new_figure",
    "save_figure",
]

log = logging.getLogger(__name__)

#: One colour per corruption, used by every line plot.
CORRUPTION_COLORS: dict[str, str] = {"STR": "#1f77b4", "GN": "#d62728", "clean": "#2ca02c"}

#: Diverging colour map for signed patching effects (0 = white).
DIVERGING_CMAP = "RdBu_r"

DPI = 150

#: Metadata of the figure files: a PDF's creation date would make every run's file differ.
FILE_METADATA: dict[str, dict[str, str | None]] = {"pdf": {"CreationDate": None}, "png": {}}


def apply_style() -> None:
    """Set the shared seaborn / matplotlib style (idempotent)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)
    plt.rcParams.update(
        {
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "axes.titlesize": 9,
            "axes.labelsize": 8,
            "xtick.labelsize": 7,
            "ytick.labelsize": 7,
            "legend.fontsize": 7,
            "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
        }
    )


def new_figure(nrows: int, ncols: int, panel: tuple[float, float] = (3.0, 2.4), **kwargs):
    """A styled figure with an ``nrows x ncols`` grid of axes (always a 2-D array)."""
    apply_style()
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False, **kwargs
    )
    return fig, axes


def save_figure(fig, outputs: Iterable[str | Path]) -> list[Path]:
    """Save ``fig`` to every path in ``outputs`` (format from the suffix: .png, .pdf) and close it.

    The workflow passes the PNG and the PDF of one figure together; a path with another suffix is
    an error, because the report expects exactly these two formats. Each file is written
    atomically (:mod:`patchbench.atomic`) with fixed metadata (:data:`FILE_METADATA`: no creation
    date), so the same figure is the same bytes in every run.
    """
    written: list[Path] = []
    for out in outputs:
        out = Path(out)
        if out.suffix not in {".png", ".pdf"}:
            plt.close(fig)
            raise ValueError(f"figure output {out} must end in .png or .pdf")
        fmt = out.suffix[1:]
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, metadata=FILE_METADATA[fmt])
        written.append(out)
        log.info("wrote %s", out)
    plt.close(fig)
    return written
