"""Detection: the paper's rule for calling a component important (§3, App. D, Table 5).

Within one plot (one model x task x corruption x site x window x method x metric, and one sweep's
position mode; for per-position sweeps every head x position pair of the plot counts as a
component, as the paper does for docstring), take each component's dataset-mean effect, their
mean mu and standard deviation s. A component is detected ``positive`` when its effect exceeds
mu + k·s and ``negative`` (it hurts performance) when it falls below mu − k·s; k = 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["PAPER_K", "PLOT_KEYS", "detect"]

#: The paper's threshold: more than 2 SDs from the mean effect of the plot.
PAPER_K = 2.0

#: Columns that identify one plot; ``positions`` (the sweep's position mode) is used when present.
PLOT_KEYS = ("model", "task", "corruption", "site", "window", "method", "metric")


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
    eff = out["effect"].astype("float64")
    grouped = eff.groupby([out[c] for c in keys], sort=False, dropna=False)
    mu = grouped.transform("mean")
    sd = grouped.transform(lambda x: float(np.std(x.to_numpy(), ddof=ddof)) if len(x) > ddof else np.nan)
    size = grouped.transform("size")
    pos = (eff > mu + k * sd) & (size >= 2)
    neg = (eff < mu - k * sd) & (size >= 2)
    out["detected"] = np.where(pos, "positive", np.where(neg, "negative", ""))
    out.attrs = dict(effects.attrs)
    out.attrs.setdefault("patchbench", {})
    out.attrs["patchbench"] = {**out.attrs["patchbench"], "detection_k": k, "detection_ddof": ddof}
    return out
