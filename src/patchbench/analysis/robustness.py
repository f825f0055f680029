"""Localization robustness: which findings survive the choice of corruption, metric and window.

Zhang & Nanda's message is that what activation patching localizes depends on methodological
choices. One *experiment* (one model, task, site and position mode) is swept over a grid of
*cells*, (corruption, metric, window); this module says, per component, whether its detection
holds across that grid, with uncertainty:

1. **Bootstrap over prompts** (:func:`bootstrap_grid`). B resamples of the prompts (seeded;
   multinomial counts, one count matrix shared by every cell of the experiment, so cells are
   compared on the same resamples). Each resample recomputes every metric from the raw per-prompt
   frame with :func:`patchbench.metrics.aggregate`, i.e. the normalised logit difference's
   denominator is recomputed per resample (it is a ratio of means). Per component and cell: a
   percentile confidence interval, and the *detection probability*: the share of resamples in
   which the paper's 2-SD rule (:func:`patchbench.detection.detect_signs`, applied to all
   components of the plot in that resample) detects it, per sign. Effects frames without their raw
   frames get a normal approximation instead (:func:`normal_grid`, effect ± SD/√n, components
   independent), marked ``ci_method = normal``.
2. **Status per cell** (:func:`cell_summary`): ``positive`` / ``negative`` when that sign's
   detection probability is at least ``robust`` (0.9), ``absent`` when the probability of either
   sign is at most ``unstable`` (0.1), else ``uncertain``.
3. **Verdict per component** (:func:`verdicts`): ``robust`` (the same sign, reliably, in every
   cell), ``unstable`` (uncertain in some cell), ``not detected`` (absent everywhere), else
   ``depends on <axes>``: the smallest set of grid axes (corruption, metric, window) whose values
   determine the component's status (e.g. detected under STR with every metric and window, absent
   under GN: ``depends on corruption``).
4. **Agreement between cells** (:func:`pairwise_agreement`): for every pair of cells, the Jaccard
   index of their detections (component and sign; 1 when neither detects anything) and the
   Spearman correlation of their effects over components, each with its bootstrap interval.
5. **The paper's explanations** (:func:`explanations`), attached where they apply, with numbers:
   §4.2, a negative component that another metric detects but probability misses while the
   probability floor −P_*(answer) lies above, or within ``floor_room`` SD below, the negative
   threshold μ − 2 SD (a probability effect cannot fall below −P_*(answer)); §3, a component
   detected under GN but by no metric under STR (GN's off-distribution inputs, §3.2); §5, a
   sliding-window peak larger than the sum of the single-layer effects over the same layers
   (ratio of the peaks as the paper computes it, its bootstrap interval above 1).
6. **Known circuit** (:func:`score_circuit`): precision and recall of each cell's detections
   against a circuit known for the model (Wang et al.'s GPT-2-small IOI heads; organisms whose
   circuit is known by construction), per class, with bootstrap intervals.

Everything is a pure function from frames to frames; :mod:`patchbench.analysis.robustness_report`
writes the tables, the one-page summaries and the report's summary page, and
:mod:`patchbench.analysis.robustness_figure` draws the figure.
"""

from __future__ import annotations

import itertools
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchbench.analysis.labels import corruption_label, metric_short
from patchbench.config import default
from patchbench.detection import PAPER_K, detect_signs, thresholds
from patchbench.metrics import METRICS, aggregate, baselines, components, metrics_for, prompt_terms
from patchbench.rawframe import metadata, position_mode

__all__ = [
    "AXES",
    "CELL_COLUMNS",
    "CIRCUIT_TASKS",
    "FLOOR_ROOM",
    "VERDICT_COLUMNS",
    "GridDraws",
    "KnownCircuit",
    "RobustnessError",
    "RobustnessSettings",
    "bootstrap_grid",
    "cell_label",
    "cell_summary",
    "explanations",
    "floor_hides_negatives",
    "normal_grid",
    "pairwise_agreement",
    "read_known_circuit",
    "score_circuit",
    "verdicts",
]

log = logging.getLogger(__name__)

#: The grid's axes, in the order verdicts name them.
AXES: tuple[str, ...] = ("corruption", "metric", "window")
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


#: §4.2: the probability floor explains a missed negative component when it lies above, or less than
#: this many SD below, the negative threshold (the schema's ``robustness.floor_room``).
FLOOR_ROOM: float = default("robustness.floor_room")


class RobustnessError(ValueError):
    """Inputs that cannot form one experiment's grid (the message names the input and the fix)."""


def _configured(key: str) -> Any:
    """A dataclass field whose default is the schema's ``robustness.<key>``."""
    return field(default_factory=lambda: default(f"robustness.{key}"))


@dataclass(frozen=True)
class RobustnessSettings:
    """Settings of the robustness analysis: the config's ``robustness`` block (its defaults are the
    schema's; see config/README.md) and the detection rule's k."""

    n_boot: int = _configured("n_boot")  # bootstrap resamples of the prompts
    ci: float = _configured("ci")  # confidence level of the percentile intervals
    seed: int = _configured("seed")  # seed of the resamples
    robust: float = _configured("robust")  # detected in at least this share of resamples: reliable
    unstable: float = _configured("unstable")  # in at most this share: reliably absent; between: uncertain
    floor_room: float = _configured("floor_room")  # §4.2 (:data:`FLOOR_ROOM`)
    k: float = PAPER_K  # the detection rule's threshold in SDs (the paper's 2)

    def __post_init__(self) -> None:
        if self.n_boot < 10:
            raise ValueError(
                f"robustness.n_boot = {self.n_boot}: use at least 10 resamples (1000 is the default)"
            )
        if not 0.0 < self.ci < 1.0:
            raise ValueError(f"robustness.ci = {self.ci} must lie in (0, 1), e.g. 0.95")
        if not 0.0 <= self.unstable < self.robust <= 1.0:
            raise ValueError(
                f"robustness.unstable ({self.unstable}) must be below robustness.robust ({self.robust}), both in [0, 1]"
            )
        if self.k <= 0 or self.floor_room < 0:
            raise ValueError(f"robustness.k ({self.k}) must be > 0 and floor_room ({self.floor_room}) >= 0")


@dataclass(frozen=True)
class GridDraws:
    """One experiment's effects on every cell, at the full data and under B prompt resamples.

    ``cells`` has one row per cell (model, task, site, positions, corruption, metric, window,
    n_prompts, p_answer_clean, p_answer_corrupted, ci_method); ``comps`` one row per component
    (component, layer, head, position), in the order of the last axis of ``point`` (C, T) and
    ``draws`` (C, B, T). ``spans`` (from raw frames; None from effects frames) holds the layers
    each target patched, as the engine recorded them: window, component, start, stop (half-open).
    """

    cells: pd.DataFrame
    comps: pd.DataFrame
    point: np.ndarray
    draws: np.ndarray
    settings: RobustnessSettings
    spans: pd.DataFrame | None = None

    def signs(self) -> tuple[np.ndarray, np.ndarray]:
        """The 2-SD rule's signs: at the full data (C, T) and per resample (C, B, T), int8."""
        k = self.settings.k
        return detect_signs(self.point, k), detect_signs(self.draws, k)


def cell_label(corruption: str, metric: str, window: int | None = None) -> str:
    """``STR/LD`` or, when windows vary, ``STR/LD/w5``."""
    base = f"{corruption_label(corruption)}/{metric_short(metric)}"
    return base if window is None else f"{base}/w{int(window)}"


def _labels(cells: pd.DataFrame) -> list[str]:
    with_window = cells["window"].nunique() > 1
    return [
        cell_label(c, m, w if with_window else None)
        for c, m, w in zip(cells["corruption"], cells["metric"], cells["window"], strict=True)
    ]


def _cell_order(cells: pd.DataFrame) -> np.ndarray:
    corr = {"STR": 0, "GN": 1}
    key = [
        (int(w), corr.get(c, 2), c, METRICS.index(m) if m in METRICS else 99)
        for c, m, w in zip(cells["corruption"], cells["metric"], cells["window"], strict=True)
    ]
    return np.array(sorted(range(len(key)), key=lambda i: key[i]), dtype=np.int64)


def _component_frame(names: Sequence[str], layer, head, position) -> pd.DataFrame:
    df = pd.DataFrame({"component": list(names), "layer": layer, "head": head, "position": position})
    df = df.astype({"layer": np.int64, "head": np.int64, "position": np.int64})
    return df.sort_values(["layer", "head", "position", "component"], kind="stable").reset_index(drop=True)


def _one_experiment(metas: Sequence[dict], what: Sequence[str]) -> None:
    for key in ("model", "task", "site", "positions"):
        values = {m[key] for m in metas}
        if len(values) > 1:
            detail = ", ".join(f"{w}: {m[key]!r}" for w, m in zip(what, metas, strict=True))
            raise RobustnessError(
                f"the inputs mix several {key}s ({detail}); robustness compares the cells of one experiment "
                f"(one model, task, site and position mode): pass the files of one experiment"
            )


def _raw_meta(raw: pd.DataFrame, what: str) -> dict:
    meta = metadata(raw)
    pat = raw[raw["run"] == "patched"] if "run" in raw.columns else raw.iloc[:0]
    if pat.empty:
        raise RobustnessError(f"{what}: no patched rows; pass a raw sweep frame (results/sweeps/...)")
    windows = pat["window"].unique()
    if len(windows) != 1:
        raise RobustnessError(
            f"{what}: several windows {sorted(windows)} in one raw frame; pass one sweep per file"
        )
    corruption = meta.get("corruption")
    if not corruption:
        raise RobustnessError(
            f"{what}: the file's metadata names no corruption; write raw frames with patchbench.rawframe.write_frame"
        )
    return {
        "model": str(meta.get("model", "")),
        "task": str(meta.get("task", "")),
        "site": str(pat["site"].iloc[0]),
        "positions": position_mode(meta),
        "corruption": corruption_label(corruption),
        "window": int(windows[0]),
    }


def _check_cells(cells: pd.DataFrame, what: Sequence[str]) -> None:
    dup = cells.duplicated(["corruption", "metric", "window"])
    if dup.any():
        c = cells.loc[dup].iloc[0]
        raise RobustnessError(
            f"two inputs give cell {c['corruption']} / {c['metric']} / window {c['window']} ({list(what)}); "
            "pass one sweep per corruption and window"
        )


def _without_attrs(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy(deep=False)
    out.attrs = {}
    return out


def _spans(raw: pd.DataFrame, comps: pd.DataFrame, window: int) -> pd.DataFrame:
    """The layers each target of a raw frame patched (its ``layers`` column, ``a:b``), by component;
    targets without a readable value are left out."""
    pat = raw.loc[raw["run"] == "patched", ["target", "layers"]].drop_duplicates("target")
    ab = pat["layers"].astype(str).str.extract(r"^(\d+):(\d+)$").dropna()
    return pd.DataFrame({
        "window": window, "component": comps.loc[pat.loc[ab.index, "target"], "component"].to_numpy(),
        "start": ab[0].astype(np.int64).to_numpy(), "stop": ab[1].astype(np.int64).to_numpy(),
    })  # fmt: skip


def bootstrap_grid(
    raws: Sequence[pd.DataFrame],
    settings: RobustnessSettings | None = None,
    metrics: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> GridDraws:
    """Bootstrap every cell of one experiment from its raw sweep frames (one frame per corruption x window).

    ``metrics`` defaults to :func:`patchbench.metrics.metrics_for` of the task; ``names`` label the
    frames in error messages (e.g. their paths). Prompts are resampled with replacement, B =
    ``settings.n_boot`` times, from one seeded count matrix over the union of the frames' prompt ids,
    so every cell sees the same resamples. GN noise samples stay with their prompt.
    """
    settings = settings if settings is not None else RobustnessSettings()
    if not raws:
        raise RobustnessError(
            "no raw sweep frames given; pass the sweeps of one experiment (results/sweeps/...)"
        )
    what = list(names) if names is not None else [f"raw frame {i}" for i in range(len(raws))]
    metas = [_raw_meta(r, w) for r, w in zip(raws, what, strict=True)]
    _one_experiment(metas, what)
    ms = tuple(metrics) if metrics is not None else metrics_for(metas[0]["task"])
    bare = [_without_attrs(r) for r in raws]  # slices would deep-copy the metadata
    terms = [prompt_terms(r, ms) for r in bare]
    comp_frames = [components(r).set_index("target") for r in raws]
    first = comp_frames[0].loc[terms[0].targets]
    comps = _component_frame(first["component"], first["layer"], first["head"], first["position"])
    order = {c: i for i, c in enumerate(comps["component"])}
    union = np.unique(np.concatenate([t.prompts for t in terms]))
    rng = np.random.default_rng(settings.seed)
    counts = rng.multinomial(
        len(union), np.full(len(union), 1.0 / len(union)), size=settings.n_boot
    )  # (B, P)
    points, draws, rows, spans = [], [], [], []
    for raw, t, cf, meta, w in zip(bare, terms, comp_frames, metas, what, strict=True):
        names_t = cf.loc[t.targets, "component"].to_numpy()
        if set(names_t) != set(order):
            extra = sorted(set(names_t) ^ set(order))[:5]
            raise RobustnessError(
                f"{w}: its components differ from {what[0]}'s (e.g. {extra}); the cells of one experiment "
                "must sweep the same components"
            )
        idx = np.array([order[n] for n in names_t])
        perm = np.argsort(idx)  # target order -> common component order
        cols = np.searchsorted(union, t.prompts)
        pt = aggregate(t)[:, perm]  # (M, T)
        dr = aggregate(t, counts[:, cols])[:, :, perm]  # (B, M, T)
        base = baselines(raw)
        spans.append(_spans(raw, cf, meta["window"]))
        for i, m in enumerate(ms):
            points.append(pt[i])
            draws.append(dr[:, i, :])
            rows.append({
                **{k: meta[k] for k in ("model", "task", "site", "positions", "corruption")},
                "metric": m, "window": meta["window"], "n_prompts": len(t.prompts),
                "p_answer_clean": base["clean_prob_ans"], "p_answer_corrupted": base["corrupted_prob_ans"],
                "ci_method": "bootstrap",
            })  # fmt: skip
    cells = pd.DataFrame(rows)
    _check_cells(cells, what)
    o = _cell_order(cells)
    return GridDraws(
        cells.iloc[o].reset_index(drop=True), comps, np.stack(points)[o], np.ascontiguousarray(np.stack(draws)[o]),
        settings, pd.concat(spans, ignore_index=True).drop_duplicates(["window", "component"]),
    )  # fmt: skip


def normal_grid(
    effects: Sequence[pd.DataFrame],
    settings: RobustnessSettings | None = None,
    names: Sequence[str] | None = None,
) -> GridDraws:
    """The grid from effects frames alone (no raw frames): draws effect + SD/√n · Z per component.

    A normal approximation: it ignores the uncertainty of the logit difference's denominator and the
    correlation between components and between cells (independent draws), so prefer
    :func:`bootstrap_grid` whenever the raw sweeps exist. P_*(answer) comes from the frames'
    metadata (``corrupted_prob_ans``, written by :func:`patchbench.metrics.effects`), NaN if absent.
    """
    settings = settings if settings is not None else RobustnessSettings()
    if not effects:
        raise RobustnessError("no effects frames given")
    what = list(names) if names is not None else [f"effects frame {i}" for i in range(len(effects))]
    need = ("model", "task", "corruption", "site", "window", "component", "layer", "head", "position",
            "metric", "effect", "effect_sd", "n_prompts")  # fmt: skip
    rng = np.random.default_rng(settings.seed)
    comps = None
    points, draws, rows, metas = [], [], [], []
    for eff, w in zip(effects, what, strict=True):
        missing = [c for c in need if c not in eff.columns]
        if missing:
            raise RobustnessError(
                f"{w}: not an effects frame, columns {missing} are missing (docs/architecture.md)"
            )
        if "prompt" in eff.columns:
            raise RobustnessError(f"{w}: per-prompt effects; pass dataset-mean effects (effects())")
        attrs = dict(eff.attrs.get("patchbench", {}) or {})
        pos_mode = str(eff["positions"].iloc[0]) if "positions" in eff.columns else position_mode({})
        for (corr, window, metric), g in eff.groupby(["corruption", "window", "metric"], sort=False):
            meta = {"model": str(g["model"].iloc[0]), "task": str(g["task"].iloc[0]), "site": str(g["site"].iloc[0]),
                    "positions": pos_mode}  # fmt: skip
            metas.append(meta)
            if g["component"].duplicated().any():
                raise RobustnessError(f"{w}: several rows per component in {corr}/{metric}/w{window}")
            cf = _component_frame(g["component"], g["layer"], g["head"], g["position"])
            if comps is None:
                comps = cf
            elif set(cf["component"]) != set(comps["component"]):
                raise RobustnessError(
                    f"{w}: components of {corr}/{metric}/w{window} differ from the first cell's"
                )
            g = g.set_index("component").loc[comps["component"]]
            eff_v = g["effect"].to_numpy(np.float64)
            se = g["effect_sd"].to_numpy(np.float64) / np.sqrt(g["n_prompts"].to_numpy(np.float64))
            points.append(eff_v)
            draws.append(eff_v + np.nan_to_num(se) * rng.standard_normal((settings.n_boot, len(eff_v))))
            rows.append({**meta, "corruption": corruption_label(corr), "metric": metric, "window": int(window),
                         "n_prompts": int(g["n_prompts"].max()),
                         "p_answer_clean": float(attrs.get("clean_prob_ans", np.nan)),
                         "p_answer_corrupted": float(attrs.get("corrupted_prob_ans", np.nan)),
                         "ci_method": "normal"})  # fmt: skip
    _one_experiment(metas, [f"cell {i}" for i in range(len(metas))])
    cells = pd.DataFrame(rows)
    _check_cells(cells, what)
    o = _cell_order(cells)
    return GridDraws(
        cells.iloc[o].reset_index(drop=True), comps, np.stack(points)[o], np.stack(draws)[o], settings
    )


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


# ----------------------------------------------------------------------------- agreement
def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their average rank (Spearman's ranks; scipy's
    ``rankdata(method="average")`` without importing scipy.stats, which costs seconds per job)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    flat = x.reshape(-1, n)
    order = np.argsort(flat, axis=-1)  # ties get their average rank whatever their order
    xs = np.take_along_axis(flat, order, axis=-1)
    same = xs[:, 1:] == xs[:, :-1]  # tie with the right neighbour
    idx = np.arange(n)
    starts = np.where(np.concatenate([np.ones((len(flat), 1), bool), ~same], axis=1), idx, 0)
    ends = np.where(np.concatenate([~same, np.ones((len(flat), 1), bool)], axis=1), idx, n - 1)
    first = np.maximum.accumulate(starts, axis=-1)  # first index of each value's tie group
    last = np.minimum.accumulate(ends[:, ::-1], axis=-1)[:, ::-1]  # and its last
    avg = (first + last) / 2.0 + 1.0
    ranks = np.empty_like(avg)
    np.put_along_axis(ranks, order, avg, axis=-1)
    return ranks.reshape(x.shape)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_t a[i, ..., t] b[j, ..., t] for every pair of cells: (C, ..., T) -> (..., C, C), one batched matmul."""
    a2, b2 = np.moveaxis(a, 0, -2), np.moveaxis(b, 0, -2)  # (..., C, T)
    return a2 @ np.swapaxes(b2, -1, -2)


def pearson_matrix(x: np.ndarray) -> np.ndarray:
    """Pearson correlation over the last axis between every pair of cells (first axis):
    (C, ..., T) -> (..., C, C); NaN where either side is constant (Spearman on ranks)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    norm = np.sqrt((xc * xc).sum(-1))  # (C, ...)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = xc / norm[..., None]
        out = _pairwise(z, z)
    const = np.moveaxis(norm == 0, 0, -1)  # (..., C)
    return np.where(const[..., :, None] | const[..., None, :], np.nan, out)


def jaccard_matrix(signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jaccard index of the detections (component and sign) between every pair of cells, 1 where
    neither detects anything: (C, ..., T) signs -> ((..., C, C) Jaccard, (..., C, C) shared count)."""
    pos, neg = (signs > 0).astype(np.float64), (signs < 0).astype(np.float64)
    both = _pairwise(pos, pos) + _pairwise(neg, neg)
    n = np.moveaxis((signs != 0).sum(-1), 0, -1).astype(np.float64)  # (..., C)
    union = n[..., :, None] + n[..., None, :] - both
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, both / np.maximum(union, 1), 1.0), both


def _interval(x: np.ndarray, ci: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan"), float("nan")
    a = (1.0 - ci) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    return float(lo), float(hi)


def pairwise_agreement(grid: GridDraws) -> pd.DataFrame:
    """One row per pair of cells: Jaccard of detections and Spearman of effects, with bootstrap intervals.

    Columns: ``cell_a``, ``cell_b`` (labels), the two cells' corruption / metric / window, ``same``
    (the axes on which the pair agrees), ``n_a``, ``n_b``, ``n_both`` (detections), ``jaccard``,
    ``jaccard_low``, ``jaccard_high``, ``spearman``, ``spearman_low``, ``spearman_high``.
    """
    s = grid.settings
    point_s, draw_s = grid.signs()
    finite = np.isfinite(grid.point).all(axis=0)
    jac_p, both_p = jaccard_matrix(point_s)  # (C, C)
    jac_d, _ = jaccard_matrix(draw_s)  # (B, C, C)
    rho_p = pearson_matrix(average_ranks(grid.point[:, finite]))
    rho_d = pearson_matrix(average_ranks(grid.draws[:, :, finite]))
    i, j = np.triu_indices(len(grid.cells), k=1)
    a = (1.0 - s.ci) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair whose every resample is NaN
        jac_lo, jac_hi = np.nanquantile(jac_d[:, i, j], [a, 1.0 - a], axis=0)
        rho_lo, rho_hi = np.nanquantile(rho_d[:, i, j], [a, 1.0 - a], axis=0)
    cells = grid.cells.reset_index(drop=True)
    labels = np.array(_labels(cells))
    ca, cb = cells.iloc[i].reset_index(drop=True), cells.iloc[j].reset_index(drop=True)
    same = np.stack([(ca[x] == cb[x]).to_numpy() for x in AXES], axis=1)
    n = (point_s != 0).sum(axis=1)
    return pd.DataFrame({
        "cell_a": labels[i], "cell_b": labels[j],
        **{f"{x}_a": ca[x] for x in AXES}, **{f"{x}_b": cb[x] for x in AXES},
        "same": ["+".join(x for x, ok in zip(AXES, row, strict=True) if ok) for row in same],
        "n_a": n[i], "n_b": n[j], "n_both": both_p[i, j].astype(np.int64),
        "jaccard": jac_p[i, j], "jaccard_low": jac_lo, "jaccard_high": jac_hi,
        "spearman": rho_p[i, j], "spearman_low": rho_lo, "spearman_high": rho_hi,
    })  # fmt: skip


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


# ----------------------------------------------------------------------------- known circuit
def _base(component: str) -> str:
    return str(component).split("@", 1)[0]


def _component_name(c) -> str:
    if isinstance(c, list | tuple):
        if len(c) == 2:
            return f"{int(c[0])}.{int(c[1])}"
        if len(c) == 1:
            return f"{int(c[0])}"
        raise ValueError(f"a component is [layer, head] or [layer], got {c!r}")
    return str(c)


@dataclass(frozen=True)
class KnownCircuit:
    """A circuit known for a model: class -> component names (``L.H`` heads, ``L`` layers, ``…@POS``)."""

    classes: Mapping[str, frozenset[str]]
    source: str
    tasks: frozenset[str] | None = None  # the tasks it is known for; None = any

    def members(self) -> frozenset[str]:
        return frozenset().union(*self.classes.values()) if self.classes else frozenset()

    def classes_of(self, component: str) -> list[str]:
        c = str(component)
        return [k for k, v in self.classes.items() if c in v or _base(c) in v]

    def applies_to(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


#: The tasks a circuit of each kind is known for: the IOI circuit serves every IOI variant (the
#: keys of patchbench.tasks.ioi.IOI_VARIANTS, not imported: that module imports torch).
CIRCUIT_TASKS: dict[str, tuple[str, ...]] = {
    "ioi": ("ioi", "ioi_s1io", "ioi_abc"),
    "factual": ("factual",),
    "greater_than": ("greater_than",),
    "arithmetic": ("arithmetic_add", "arithmetic_sub", "arithmetic_mul"),
    "docstring": ("docstring",),
}
#: An organism's MLP role that names the layers trained to carry nothing: outside the circuit.
OUTSIDE_ROLE = "outside"


def _organism_classes(data: Mapping[str, Any], path: Path) -> tuple[dict, tuple[str, ...]]:
    """Classes and tasks of an organism's ``circuit.json`` (issue 13, ``patchbench.toy.circuit``):
    ``{"kind", "heads": {class: ["L.H", ...]}, "mlps": {role: [L, ...]}}``; the ``outside`` role
    lists layers that are not in the circuit, so it is no class."""
    kind = data["kind"]
    if kind not in CIRCUIT_TASKS:
        raise RobustnessError(f"{path}: circuit kind {kind!r} is not one of {sorted(CIRCUIT_TASKS)}")
    heads, mlps = data.get("heads") or {}, data.get("mlps") or {}
    both = set(heads) & set(mlps)
    if both:
        raise RobustnessError(f"{path}: {sorted(both)} name both heads and MLP layers")
    classes = {**heads, **{r: v for r, v in mlps.items() if r != OUTSIDE_ROLE}}
    return {c: v for c, v in classes.items() if v}, CIRCUIT_TASKS[kind]


def read_known_circuit(path: str | Path, task: str | None = None) -> KnownCircuit:
    """Read a known-circuit JSON.

    Accepted layouts: ``{"classes": {class: [component, ...]}, "tasks": [task, ...]}`` (``tasks``
    optional: the tasks the circuit is known for), ``{"by_task": {task: {class: [...]}}}`` (several
    tasks; ``task`` selects one), Wang et al.'s file ``data/ioi_heads_gpt2_small.json``
    (``all_classes``: the full published IOI circuit, tasks ioi, ioi_s1io, ioi_abc), a model
    organism's ``circuit.json`` (``{"kind": "ioi" | "factual" | ..., "heads": {class: [...]}, "mlps":
    {role: [layer, ...]}}``, its tasks by :data:`CIRCUIT_TASKS`; the ``outside`` role is no class),
    or a bare ``{class: [...]}``. A component is ``"L.H"`` (head), ``"L"`` or an integer (layer),
    either with ``@POS``, or ``[layer, head]`` / ``[layer]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"known-circuit file {path} does not exist (see config/README.md, robustness)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RobustnessError(f"{path}: not valid JSON ({err})") from None
    tasks = None
    if "by_task" in data:
        if task is None or task not in data["by_task"]:
            raise RobustnessError(
                f"{path}: circuits are given per task ({sorted(data['by_task'])}); "
                f"task {task!r} has none (pass one of them)"
            )
        classes, tasks = data["by_task"][task], [task]
    elif "classes" in data:
        classes, tasks = data["classes"], data.get("tasks")
    elif "all_classes" in data:  # Wang et al. (2023): the full IOI circuit of GPT-2 small
        classes, tasks = data["all_classes"], CIRCUIT_TASKS["ioi"]
    elif "kind" in data:  # a model organism's circuit, known by construction
        classes, tasks = _organism_classes(data, path)
    else:
        classes = {k: v for k, v in data.items() if not str(k).startswith("_")}
    if not isinstance(classes, dict) or not all(isinstance(v, list) for v in classes.values()):
        raise RobustnessError(
            f"{path}: expected classes as {{class: [component, ...]}} (components 'L.H', 'L' or [layer, head])"
        )
    try:
        parsed = {str(k): frozenset(_component_name(c) for c in v) for k, v in classes.items()}
    except (TypeError, ValueError) as err:
        raise RobustnessError(f"{path}: {err}") from None
    return KnownCircuit(parsed, source=str(path), tasks=None if tasks is None else frozenset(tasks))


def score_circuit(grid: GridDraws, circuit: KnownCircuit) -> pd.DataFrame:
    """Precision and recall of each cell's detections against ``circuit``, per class, with intervals.

    A detection counts at the circuit's granularity: a component ``L.H@p`` detected at any position
    counts as ``L.H`` when the circuit names ``L.H``. Either sign counts (negative components are
    detected negatively). Rows: one per cell x class, plus class ``all`` (the whole circuit);
    ``precision`` (detected members / detected) is the same for every class of a cell. Only circuit
    members among the experiment's components count; none at all raises :class:`RobustnessError`.
    """
    s = grid.settings
    names = grid.comps["component"].astype(str).tolist()
    exact = [n in circuit.members() for n in names]
    keys = names if any(exact) else [_base(n) for n in names]
    units = sorted(set(keys))
    uidx = {u: i for i, u in enumerate(units)}
    M = np.zeros((len(names), len(units)), dtype=np.float64)  # component -> unit
    M[np.arange(len(names)), [uidx[k] for k in keys]] = 1.0
    present = {k: frozenset(v) & set(units) for k, v in circuit.classes.items()}
    members = frozenset().union(*present.values()) if present else frozenset()
    if not members:
        raise RobustnessError(
            f"none of the known circuit's components ({sorted(circuit.members())[:6]}...) is among this "
            f"experiment's components ({units[:6]}...): the circuit is for another model or site"
        )
    point_s, draw_s = grid.signs()
    det_p = (np.abs(point_s).astype(np.float64) @ M) > 0  # (C, U)
    det_d = (np.abs(draw_s).astype(np.float64) @ M) > 0  # (C, B, U)
    in_all = np.array([u in members for u in units])
    labels = _labels(grid.cells)
    rows = []

    def ratio(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, a / np.maximum(b, 1), np.nan)

    for c in range(len(grid.cells)):
        n_det_p, n_det_d = det_p[c].sum(), det_d[c].sum(-1)
        prec_p = ratio((det_p[c] & in_all).sum(), n_det_p)
        prec_d = ratio((det_d[c] & in_all).sum(-1), n_det_d)
        for cls, mem in [("all", members), *present.items()]:
            if not mem:
                continue
            mask = np.array([u in mem for u in units])
            rec_p = (det_p[c] & mask).sum() / mask.sum()
            rec_d = (det_d[c] & mask).sum(-1) / mask.sum()
            found = [u for u, d, m in zip(units, det_p[c], mask, strict=True) if d and m]
            rows.append({
                "cell": labels[c], **{a: grid.cells.iloc[c][a] for a in AXES}, "class": cls,
                "size": int(mask.sum()), "detected": int(n_det_p), "found": ", ".join(found),
                "precision": float(prec_p),
                **dict(zip(("precision_low", "precision_high"), _interval(prec_d, s.ci), strict=True)),
                "recall": float(rec_p),
                **dict(zip(("recall_low", "recall_high"), _interval(rec_d, s.ci), strict=True)),
            })  # fmt: skip
    return pd.DataFrame(rows)
