"""Status per cell and verdict per component: whether a detection holds across the grid.

:func:`cell_summary` gives each component, in each cell, its effect, interval and detection
probability, and a status (``positive`` / ``negative`` / ``absent`` / ``uncertain``);
:func:`verdicts` turns the statuses over the grid into one verdict per component (``robust``,
``depends on <axes>``, ``unstable``, ``not detected``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from patchbench.analysis.robustness.grid import AXES, GridDraws, RobustnessSettings, _labels
from patchbench.analysis.robustness.known_circuit import KnownCircuit
from patchbench.detection import thresholds

#: Columns of :func:`cell_summary` (one row per component x cell).
CELL_COLUMNS: tuple[str, ...] = (
    "model", "task", "site", "positions", "corruption", "metric", "window", "cell", "component", "layer",
    "head", "position", "effect", "ci_low", "ci_high", "detected", "p_positive", "p_negative", "status",
    "mu", "sd", "threshold_low", "threshold_high", "n_prompts", "ci_method",
)  # fmt: skip
#: Columns of :func:`verdicts` (one row per component).
VERDICT_COLUMNS: tuple[str, ...] = (
    "component", "layer", "head", "position", "verdict", "axes", "point_verdict", "max_p_detect", "detected_in",
    "uncertain_in", "classes", "explanation",
)  # fmt: skip
#: Verdict order in tables and figures.
VERDICT_ORDER: tuple[str, ...] = ("robust", "depends on", "unstable", "not detected")


# ----------------------------------------------------------------------------- per cell
def _status(p_pos: np.ndarray, p_neg: np.ndarray, s: RobustnessSettings) -> np.ndarray:
    return np.select(
        [p_pos >= s.robust, p_neg >= s.robust, p_pos + p_neg <= s.unstable],
        ["positive", "negative", "absent"],
        "uncertain",
    )


def cell_summary(grid: GridDraws) -> pd.DataFrame:
    """One row per component x cell (:data:`CELL_COLUMNS`): effect, CI, detection and its probability."""
    s = grid.settings
    point_s, draw_s = grid.signs()
    p_pos = (draw_s == 1).mean(axis=1)  # (C, T)
    p_neg = (draw_s == -1).mean(axis=1)
    a = (1.0 - s.ci) / 2.0
    lo, hi = np.quantile(grid.draws, [a, 1.0 - a], axis=1)  # (C, T) each
    rule = thresholds(grid.point, s.k)  # per cell, over its components
    labels = _labels(grid.cells)
    C, T = grid.point.shape
    ci = np.repeat(np.arange(C), T)
    ti = np.tile(np.arange(T), C)
    cells = grid.cells.iloc[ci].reset_index(drop=True)
    comps = grid.comps.iloc[ti].reset_index(drop=True)
    out = pd.DataFrame({
        **{k: cells[k] for k in ("model", "task", "site", "positions", "corruption", "metric", "window")},
        "cell": np.array(labels)[ci],
        **{k: comps[k] for k in ("component", "layer", "head", "position")},
        "effect": grid.point.ravel(), "ci_low": lo.ravel(), "ci_high": hi.ravel(),
        "detected": np.where(point_s.ravel() > 0, "positive", np.where(point_s.ravel() < 0, "negative", "")),
        "p_positive": p_pos.ravel(), "p_negative": p_neg.ravel(),
        "status": _status(p_pos, p_neg, s).ravel(),
        "mu": rule.mu[ci], "sd": rule.sd[ci], "threshold_low": rule.low[ci], "threshold_high": rule.high[ci],
        "n_prompts": cells["n_prompts"], "ci_method": cells["ci_method"],
    })  # fmt: skip
    return out[list(CELL_COLUMNS)]


# ----------------------------------------------------------------------------- verdicts
STATUS_CODES: dict[str, int] = {"absent": 0, "positive": 1, "negative": 2, "uncertain": 3}


def _verdict_codes(codes: np.ndarray, coords: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Verdicts of many components at once: ``codes`` (T, C) status codes over the C cells of ``coords``."""
    coords = coords.reset_index(drop=True)
    T = codes.shape[0]
    verdict = np.full(T, "", dtype=object)
    axes_out = np.full(T, "", dtype=object)
    unstable = (codes == STATUS_CODES["uncertain"]).any(axis=1)
    constant = (codes == codes[:, :1]).all(axis=1)
    verdict[unstable] = "unstable"
    absent = ~unstable & constant & (codes[:, 0] == STATUS_CODES["absent"])
    verdict[absent] = "not detected"
    verdict[~unstable & constant & ~absent] = "robust"
    todo = verdict == ""
    varying = [a for a in AXES if coords[a].nunique() > 1]
    for size in range(1, len(varying) + 1):
        for axes in itertools.combinations(varying, size):
            if not todo.any():
                break
            ok = np.ones(T, dtype=bool)
            for cols in coords.groupby(list(axes), sort=False).indices.values():
                block = codes[:, cols]
                ok &= (block == block[:, :1]).all(axis=1)
            hit = todo & ok
            verdict[hit] = "depends on " + " × ".join(axes)
            axes_out[hit] = "+".join(axes)
            todo &= ~hit
    if todo.any():
        raise AssertionError("unreachable: the status is always determined by every varying axis")
    return verdict, axes_out


def verdict_of(status: pd.Series, coords: pd.DataFrame) -> tuple[str, str]:
    """(verdict, axes) of one component from its per-cell ``status`` and the cells' ``coords``.

    ``coords`` has the columns of :data:`AXES`; axes with a single value in the grid are ignored.
    """
    codes = np.array([[STATUS_CODES[x] for x in status]])
    verdict, axes = _verdict_codes(codes, coords)
    return str(verdict[0]), str(axes[0])


def _cell_list(rows: pd.DataFrame, sign_col: bool = True) -> str:
    parts = []
    for r in rows.itertuples(index=False):
        p = max(r.p_positive, r.p_negative)
        sign = "+" if r.p_positive >= r.p_negative else "−"
        parts.append(f"{r.cell} {sign}{p:.2f}" if sign_col else f"{r.cell} {p:.2f}")
    return "; ".join(parts)


def verdicts(
    summary: pd.DataFrame,
    explained: pd.DataFrame | None = None,
    circuit: KnownCircuit | None = None,
) -> pd.DataFrame:
    """One row per component (:data:`VERDICT_COLUMNS`) from :func:`cell_summary`.

    ``point_verdict`` is what the 2-SD detections at the full data say, without their uncertainty
    (never ``unstable``). ``detected_in`` lists the cells where the component is reliably detected
    (sign and detection probability), ``uncertain_in`` those where it is uncertain; ``explanation`` joins the rows of
    :func:`explanations`, ``classes`` the known circuit's classes of the component. Sorted by
    verdict (robust, depends on, unstable, not detected), then layer, head, position.
    """
    notes: dict[str, str] = {}
    if explained is not None and len(explained):
        notes = explained.groupby("component")["text"].apply(lambda t: " ".join(t)).to_dict()
    cells = summary.drop_duplicates("cell")[["cell", *AXES]].reset_index(drop=True)
    comps = summary.drop_duplicates("component")[["component", "layer", "head", "position"]]
    wide = summary.pivot(index="component", columns="cell", values="status").loc[
        comps["component"], cells["cell"]
    ]
    codes = np.vectorize(STATUS_CODES.__getitem__, otypes=[np.int64])(wide.to_numpy())
    verdict, axes = _verdict_codes(codes, cells[list(AXES)])
    point = summary.pivot(index="component", columns="cell", values="detected").loc[
        comps["component"], cells["cell"]
    ]
    point_codes = np.vectorize(lambda d: STATUS_CODES[d or "absent"], otypes=[np.int64])(point.to_numpy())
    point_verdict, _ = _verdict_codes(point_codes, cells[list(AXES)])
    p_any = (summary["p_positive"] + summary["p_negative"]).groupby(summary["component"]).max()
    found = set(comps["component"][verdict != "not detected"])
    listed = {c: g for c, g in summary[summary["component"].isin(found)].groupby("component", sort=False)}
    rows = []
    for i, r in enumerate(comps.itertuples(index=False)):
        g = listed.get(r.component)
        rows.append({
            "component": r.component, "layer": int(r.layer), "head": int(r.head), "position": int(r.position),
            "verdict": verdict[i], "axes": axes[i], "point_verdict": point_verdict[i],
            "max_p_detect": float(p_any[r.component]),
            "detected_in": "" if g is None else _cell_list(g[g["status"].isin(["positive", "negative"])]),
            "uncertain_in": "" if g is None else _cell_list(g[g["status"] == "uncertain"]),
            "classes": ", ".join(circuit.classes_of(r.component)) if circuit is not None else "",
            "explanation": notes.get(r.component, ""),
        })  # fmt: skip
    out = pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
    rank = out["verdict"].map(lambda v: next(i for i, p in enumerate(VERDICT_ORDER) if v.startswith(p)))
    out = out.assign(_r=rank).sort_values(["_r", "layer", "head", "position"], kind="stable")
    return out.drop(columns="_r").reset_index(drop=True)
