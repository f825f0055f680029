"""The robustness grid: one experiment's effects on every cell, at the full data and under prompt resamples.

:class:`RobustnessSettings` is the config's ``robustness`` block; :func:`bootstrap_grid` resamples
the prompts of the raw sweep frames (one seeded count matrix shared by every cell) and recomputes
every metric per resample; :func:`normal_grid` approximates the draws from effects frames alone.
Both return a :class:`GridDraws`, which every other module of :mod:`patchbench.analysis.robustness`
reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from patchbench.analysis.labels import corruption_label, metric_short
from patchbench.config import default
from patchbench.detection import PAPER_K, detect_signs
from patchbench.metrics import METRICS, aggregate, baselines, components, metrics_for, prompt_terms
from patchbench.rawframe import metadata, position_mode

#: The grid's axes, in the order verdicts name them.
AXES: tuple[str, ...] = ("corruption", "metric", "window")


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


def _interval(x: np.ndarray, ci: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan"), float("nan")
    a = (1.0 - ci) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    return float(lo), float(hi)
