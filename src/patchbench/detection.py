"""Detection: the paper's rule for calling a component important (§3, App. D, Table 5).

Within one plot (one model x task x corruption x site x window x method x metric, and one sweep's
position mode; for per-position sweeps every head x position pair of the plot counts as a
component, as the paper does for docstring), take each component's dataset-mean effect, their
mean mu and standard deviation s. A component is detected ``positive`` when its effect exceeds
mu + k·s and ``negative`` (it hurts performance) when it falls below mu − k·s; k = 2.

:func:`thresholds` computes mu, s and the two thresholds mu ∓ k·s; :func:`detect_signs` is the rule
on arrays (its last axis holds the components of one plot, any leading axes are independent plots,
e.g. bootstrap resamples); :func:`detect` applies it to each plot of an effects frame, so the
three cannot disagree.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = ["PAPER_K", "PLOT_KEYS", "Thresholds", "detect", "detect_signs", "thresholds"]

#: The paper's threshold: more than 2 SDs from the mean effect of the plot.
PAPER_K = 2.0

#: Columns that identify one plot; ``positions`` (the sweep's position mode) is used when present.
PLOT_KEYS = ("model", "task", "corruption", "site", "window", "method", "metric")


class Thresholds(NamedTuple):
    """One plot's mean effect ``mu``, SD ``sd`` over its components and the two thresholds."""

    mu: np.ndarray
    sd: np.ndarray
    low: np.ndarray  # mu - k·sd: below it a component is detected negative
    high: np.ndarray  # mu + k·sd: above it a component is detected positive


def thresholds(effects: np.ndarray, k: float = PAPER_K, *, ddof: int = 0) -> Thresholds:
    """The rule's thresholds over the last axis of ``effects`` (one plot's components; leading axes
    are independent plots): arrays of the leading shape. NaN where the plot has too few components."""
    x = np.asarray(effects, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("the 2-SD rule needs an array whose last axis holds the components of a plot")
    if x.shape[-1] < 2 or x.shape[-1] <= ddof:
        nan = np.full(x.shape[:-1], np.nan)
        return Thresholds(nan, nan, nan, nan)
    mu = x.mean(axis=-1)
    sd = x.std(axis=-1, ddof=ddof)
    return Thresholds(mu, sd, mu - k * sd, mu + k * sd)


def detect_signs(effects: np.ndarray, k: float = PAPER_K, *, ddof: int = 0) -> np.ndarray:
    """The 2-SD rule on ``effects[..., n_components]``: int8 of the same shape, +1 / -1 / 0.

    Each slice along the last axis is one plot (its components' dataset-mean effects); leading
    axes are independent plots. +1 = ``positive`` (effect > mu + k·s), -1 = ``negative``
    (effect < mu - k·s), 0 = not detected. Plots with fewer than two components, or fewer than
    ``ddof + 1``, detect nothing; a NaN effect makes mu undefined, so its plot detects nothing.
    """
    x = np.asarray(effects, dtype=np.float64)
    t = thresholds(x, k, ddof=ddof)
    with np.errstate(invalid="ignore"):
        pos = x > t.high[..., None]
        neg = x < t.low[..., None]
    return np.where(pos, 1, np.where(neg, -1, 0)).astype(np.int8)


def detect(effects: pd.DataFrame, k: float = PAPER_K, *, ddof: int = 0) -> pd.DataFrame:
    """A copy of ``effects`` with ``detected`` in {``positive``, ``negative``, ``""``} per plot.

    ``ddof`` is the SD's delta degrees of freedom over components (0: population SD, numpy's
    default; the paper does not say). Plots with fewer than two components detect nothing.
    """
    if "prompt" in effects.columns:
        raise ValueError(
            "detect() needs dataset-mean effects; got a per-prompt frame (effects(per_prompt=True))"
        )
    missing = [c for c in (*PLOT_KEYS, "effect") if c not in effects.columns]
    if missing:
        raise KeyError(f"not an effects frame: columns {missing} are missing")
    keys = [*PLOT_KEYS, *(["positions"] if "positions" in effects.columns else [])]
    out = effects.copy()
    eff = out["effect"].to_numpy(dtype=np.float64)
    signs = np.zeros(len(out), dtype=np.int8)
    for rows in out.groupby(keys, sort=False, dropna=False).indices.values():
        signs[rows] = detect_signs(eff[rows], k, ddof=ddof)
    out["detected"] = np.where(signs > 0, "positive", np.where(signs < 0, "negative", ""))
    out.attrs = dict(effects.attrs)
    out.attrs.setdefault("patchbench", {})
    out.attrs["patchbench"] = {**out.attrs["patchbench"], "detection_k": k, "detection_ddof": ddof}
    return out
