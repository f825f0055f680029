"""The paper's explanations of a component's verdict, attached where they apply, with numbers.

§4.2, a negative component that another metric detects but probability misses while the
probability floor −P_*(answer) lies above, or within ``floor_room`` SD below, the negative
threshold μ − 2 SD (a probability effect cannot fall below −P_*(answer)); §3, a component detected
under GN but by no metric under STR (GN's off-distribution inputs, §3.2); §5, a sliding-window peak
larger than the sum of the single-layer effects over the same layers (ratio of the peaks as the
paper computes it, its bootstrap interval above 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from patchbench.analysis.labels import metric_short
from patchbench.analysis.robustness.grid import GridDraws, RobustnessSettings, _interval
from patchbench.analysis.robustness.verdict import cell_summary
from patchbench.config import default

#: §4.2: the probability floor explains a missed negative component when it lies above, or less than
#: this many SD below, the negative threshold (the schema's ``robustness.floor_room``).
FLOOR_ROOM: float = default("robustness.floor_room")


# ----------------------------------------------------------------------------- explanations
EXPLANATION_COLUMNS = ("component", "section", "corruption", "metric", "window", "text")


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _ci_text(r) -> str:
    return f"{_fmt(r.effect)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"


def floor_hides_negatives(floor: float, threshold: float, sd: float, room: float = FLOOR_ROOM) -> bool:
    """§4.2: a probability effect cannot fall below the floor −P_*(answer), so the floor hides negative
    components when it lies above the negative threshold μ − k SD, or less than ``room`` SD below it."""
    return bool(floor > threshold - room * sd)


def _floor_42(summary: pd.DataFrame, cells: pd.DataFrame, s: RobustnessSettings) -> list[dict]:
    """§4.2: probability misses a negative component that the floor −P_*(answer) hides."""
    out = []
    for (corr, window), g in summary.groupby(["corruption", "window"], sort=False):
        prob = g[g["metric"] == "prob"].set_index("component")
        others = g[(g["metric"] != "prob") & (g["detected"] == "negative")]
        if prob.empty or others.empty:
            continue
        cell = cells[
            (cells["corruption"] == corr) & (cells["window"] == window) & (cells["metric"] == "prob")
        ]
        p_star = float(cell["p_answer_corrupted"].iloc[0])
        if not np.isfinite(p_star):
            continue
        first = prob.iloc[0]
        floor, threshold, sd = -p_star, float(first["threshold_low"]), float(first["sd"])
        if not floor_hides_negatives(floor, threshold, sd, s.floor_room):
            continue
        room = "above" if floor > threshold else f"{(threshold - floor) / sd:.2f} SD below"
        for comp, o in others.groupby("component", sort=False):
            p = prob.loc[comp]
            if p["detected"] == "negative":
                continue
            by = "; ".join(f"{metric_short(r.metric)} {_ci_text(r)}" for r in o.itertuples())
            out.append({
                "component": comp, "section": "4.2", "corruption": corr, "metric": "prob", "window": window,
                "text": (
                    f"§4.2 floor ({corr}, w{window}): P_*(answer) = {_fmt(p_star)}, so a probability effect cannot "
                    f"fall below {_fmt(floor)}; the negative threshold μ − {s.k:g} SD is {_fmt(threshold)} "
                    f"(SD {_fmt(sd)}), the floor lies {room} it: probability misses {comp} "
                    f"({_ci_text(p)}) while {by} detects it negative."
                ),
            })  # fmt: skip
    return out


def _gn_only(summary: pd.DataFrame) -> list[dict]:
    """§3: detected under GN, by no metric under STR (same window)."""
    out = []
    if not {"STR", "GN"} <= set(summary["corruption"]):
        return out
    for window, w in summary.groupby("window", sort=False):
        str_rows = w[w["corruption"] == "STR"]
        str_any = (str_rows["detected"] != "").groupby(str_rows["component"]).any()
        quiet = set(str_any.index[~str_any])
        gn = w[(w["corruption"] == "GN") & (w["detected"] != "") & w["component"].isin(quiet)]
        by = str_rows.set_index(["component", "metric"])
        for r in gn.itertuples():
            key = (r.component, r.metric)
            s_txt = _ci_text(by.loc[key]) if key in by.index else "not run"
            kind = "a peak" if r.detected == "positive" else "a negative detection (cf. head 0.10 in §3.2)"
            out.append({
                "component": r.component, "section": "3", "corruption": "GN", "metric": r.metric, "window": window,
                "text": (
                    f"§3 GN only (w{window}): {kind} under GN with {metric_short(r.metric)} "
                    f"({_ci_text(r)}) that STR detects with no metric (STR {metric_short(r.metric)} {s_txt}); "
                    "GN's noise is off distribution (§3.2), the paper recommends STR."
                ),
            })  # fmt: skip
    return out


def _summed_matrix(grid: GridDraws, window: int) -> np.ndarray:
    """S (T x T): row i sums the single-layer components over the layers component i's window patched.

    The span comes from the raw frame (the engine's ``layers`` column), or from
    :func:`patchbench.sites.window_layers` when the frames do not record it (effects frames).
    """
    comps = grid.comps
    layer = comps["layer"].to_numpy()
    pos = comps["position"].to_numpy()
    head = comps["head"].to_numpy()
    recorded = (
        None if grid.spans is None else grid.spans[grid.spans["window"] == window].set_index("component")
    )
    if recorded is not None and set(comps["component"]) <= set(recorded.index):
        sp = recorded.loc[comps["component"]]
        start, stop = sp["start"].to_numpy(), sp["stop"].to_numpy()
    else:
        from patchbench.sites import window_layers  # imported here: patchbench.sites imports torch

        n_layers = int(layer.max()) + 1
        start, stop = np.array([window_layers(int(la), window, n_layers) for la in layer]).T
    S = (layer[None, :] >= start[:, None]) & (layer[None, :] < stop[:, None])
    S &= (pos[None, :] == pos[:, None]) & (head[None, :] == head[:, None])
    return S.astype(np.float64)


def _sliding_peaks(grid: GridDraws, summary: pd.DataFrame) -> list[dict]:
    """§5: a sliding-window peak larger than the summed single-layer effects (ratio of peaks, CI above 1)."""
    out = []
    cells, s = grid.cells, grid.settings
    if grid.comps["head"].max() >= 0 or 1 not in set(cells["window"]):
        return out
    positions = grid.comps["position"].to_numpy()
    names = grid.comps["component"].to_numpy()
    point_s = grid.signs()[0]
    summed = {w: _summed_matrix(grid, int(w)) for w in set(cells["window"]) if w > 1}
    at = summary.set_index(["corruption", "metric", "window", "component"])
    for (corr, metric), g in cells.groupby(["corruption", "metric"], sort=False):
        single = g.index[g["window"] == 1]
        if not len(single):
            continue
        i1 = single[0]
        for iw in g.index[g["window"] > 1]:
            w = int(cells.loc[iw, "window"])
            summed_p = summed[w] @ grid.point[i1]  # (T,)
            summed_d = None
            for p in np.unique(positions):
                on = positions == p
                peak = int(np.flatnonzero(on)[np.argmax(grid.point[iw][on])])
                if point_s[iw, peak] != 1:  # the peak must be a detection
                    continue
                if summed_d is None:
                    summed_d = grid.draws[i1] @ summed[w].T  # (B, T)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = grid.point[iw][on].max() / summed_p[on].max()
                    ratios = grid.draws[iw][:, on].max(axis=1) / summed_d[:, on].max(axis=1)
                lo, hi = _interval(ratios, s.ci)
                if not lo > 1.0:
                    continue
                row = at.loc[(corr, metric, w, names[peak])]
                out.append({
                    "component": names[peak], "section": "5", "corruption": corr, "metric": metric, "window": w,
                    "text": (
                        f"§5 window ({corr}, {metric_short(metric)}): the window-{w} peak at {names[peak]} "
                        f"({_ci_text(row)}) is {ratio:.2f}x [{lo:.2f}, {hi:.2f}] the peak of the single-layer effects "
                        f"summed over the same layers ({_fmt(float(summed_p[on].max()))}); joint patching of "
                        "a window is not the sum of its layers (§5)."
                    ),
                })  # fmt: skip
    return out


def explanations(grid: GridDraws, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's explanations that apply, one row per (component, section) instance, with the numbers.

    Columns: component, section (``4.2``, ``3``, ``5``), the cell it refers to (corruption, metric,
    window) and the text. See the module docstring for the three rules.
    """
    summary = cell_summary(grid) if summary is None else summary
    rows = _floor_42(summary, grid.cells, grid.settings) + _gn_only(summary) + _sliding_peaks(grid, summary)
    return pd.DataFrame(rows, columns=list(EXPLANATION_COLUMNS))
