"""Sliding-window patching versus summed single-layer patching (§5).

Sliding-window patching (ROME) restores a window of ``w`` adjacent MLP layers at once and reports
the joint effect at the window centre ``l``. §5's baseline patches each layer alone and sums the
single-layer effects over the same span. The span is the engine's own
:func:`patchbench.sites.window_layers` (``[max(0, l - w//2), min(L, l + ceil(w/2)))``), imported,
not re-derived, so the two can never disagree.
"""

from __future__ import annotations

import pandas as pd

from patchbench.analysis.frames import FrameError, validate_effects
from patchbench.sites import window_layers

__all__ = ["sliding_vs_summed", "summed_single_layers"]

_CURVE = ["model", "task", "corruption", "site", "method", "position", "metric"]


def summed_single_layers(effects: pd.DataFrame, window: int, n_layers: int | None = None) -> pd.DataFrame:
    """Window-``window`` sums of the single-layer (``window == 1``) effects, one row per curve x layer.

    Returns the window-1 rows with ``effect`` replaced by the sum over ``window_layers(l, window)``
    and ``window`` set to ``window``; ``n_layers`` defaults to the largest layer + 1 of each curve.
    """
    df = validate_effects(effects)
    single = df[df["window"] == 1]
    if single.empty:
        raise FrameError("no single-layer (window 1) effects: the summation baseline needs the w=1 sweep")
    out = []
    for _, curve in single.groupby(_CURVE, sort=False):
        curve = curve.sort_values("layer")
        if curve["layer"].duplicated().any():
            raise FrameError("several window-1 effects per layer in one curve; select one position first")
        eff = dict(zip(curve["layer"], curve["effect"], strict=True))
        L = int(curve["layer"].max()) + 1 if n_layers is None else n_layers
        summed = curve.copy()
        summed["effect"] = [
            sum(eff.get(k, 0.0) for k in range(*window_layers(int(la), window, L))) for la in curve["layer"]
        ]
        summed["window"] = window
        out.append(summed)
    return pd.concat(out, ignore_index=True)


def sliding_vs_summed(effects: pd.DataFrame, n_layers: int | None = None) -> pd.DataFrame:
    """Long frame with ``kind`` = ``sliding`` / ``summed`` for every window > 1 in ``effects``."""
    df = validate_effects(effects)
    parts = []
    for w in sorted(set(df["window"]) - {1}):
        parts.append(df[df["window"] == w].assign(kind="sliding"))
        parts.append(summed_single_layers(df, w, n_layers).assign(kind="summed"))
    if not parts:
        raise FrameError("no window > 1 in the effects: nothing to compare with the summed single layers")
    return pd.concat(parts, ignore_index=True)
