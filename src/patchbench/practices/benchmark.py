"""The benchmark itself: every practice of one organism scored from its raw sweeps, with bootstrap draws.

For one organism and seed (:func:`score_seed`), the raw frames of its sweeps (one per corruption,
direction, window and method) are read once each: :func:`patchbench.metrics.prompt_terms` gives
every metric's per-prompt terms, :func:`patchbench.metrics.aggregate` the effects at the full data
and under the robustness package's prompt resamples (:func:`patchbench.analysis.robustness.resample_counts`:
one seeded count matrix for every sweep of the seed, so two practices are compared on the same
resamples and their difference has a paired interval), the detection rules of
:mod:`patchbench.practices.rules` their detections, and :mod:`patchbench.practices.scores` their
scores against the circuit. Seeds are then pooled (:func:`pool_seeds`): a practice's score is the
mean over seeds, its interval the percentile interval of the resamples' mean over seeds, and its
spread over seeds the SD of the seeds' scores.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from patchbench.analysis.robustness import (
    KnownCircuit,
    RobustnessSettings,
    light_frame,
    percentile_interval,
    resample_counts,
)
from patchbench.config import default
from patchbench.metrics import aggregate, components, metrics_for, prompt_terms
from patchbench.practices import rules
from patchbench.practices.scores import Truth, auroc, detection_scores
from patchbench.rawframe import metadata

__all__ = ["BenchSettings", "Outcome", "PracticeKey", "pool_seeds", "score_seed"]

log = logging.getLogger(__name__)

#: One practice: (corruption, direction, metric, window, method, rule), the order of
#: :data:`patchbench.practices.grid.AXES`.
PracticeKey = tuple[str, str, str, int, str, str]


def _configured(key: str) -> Any:
    """A dataclass field whose default is the schema's ``practices.<key>`` (a tuple for a list)."""

    def make() -> Any:
        value = default(f"practices.{key}")
        return tuple(value) if isinstance(value, list) else value

    return field(default_factory=make)


@dataclass(frozen=True)
class BenchSettings:
    """The config's ``practices`` metrics and rules (defaults: the schema's), and the robustness
    package's bootstrap settings (``robustness``: resamples, interval level, seed)."""

    metrics: tuple[str, ...] = _configured("metrics")
    rules: tuple[str, ...] = _configured("rules")
    alpha: float = _configured("alpha")
    n_perm: int = _configured("n_perm")
    seed: int = _configured("seed")
    negative_classes: tuple[str, ...] = _configured("negative_classes")
    bootstrap: RobustnessSettings = field(default_factory=RobustnessSettings)

    @classmethod
    def of(cls, practices: Mapping[str, Any], robustness: Mapping[str, Any]) -> BenchSettings:
        """From the config's ``practices`` and ``robustness`` sections (validated: defaults filled in)."""
        return cls(
            tuple(practices["metrics"]), tuple(practices["rules"]), float(practices["alpha"]),
            int(practices["n_perm"]), int(practices["seed"]), tuple(practices["negative_classes"]),
            RobustnessSettings(**robustness),
        )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """One practice on one seed: its scores at the full data and per resample, or why it is not defined."""

    scores: Mapping[str, tuple[float, np.ndarray]] = field(default_factory=dict)  # name -> (point, (B,))
    reason: str = ""
    found: tuple[str, ...] = ()  # units detected at the full data
    n_prompts: int = 0


@dataclass
class _Frame:
    """One raw frame's per-prompt terms, in the seed's common component order."""

    terms: Any
    perm: np.ndarray  # target order -> common component order
    cols: np.ndarray  # its prompts' columns in the union of prompts
    metrics: tuple[str, ...]


def _read(raw: pd.DataFrame, wanted: Sequence[str], task: str) -> tuple[Any, list[str], tuple[str, ...], str]:
    """Terms of the metrics ``raw`` can give among ``wanted``, its component names (target order), the
    metrics it gives and a reason for those it cannot."""
    meta = metadata(raw)
    if meta.get("method") == "attribution":
        have = tuple(meta.get("metrics") or metrics_for(task))
        reason = f"attribution differentiated only {', '.join(have)}"
    else:
        have, reason = tuple(wanted), ""
    ms = tuple(m for m in wanted if m in have)
    terms = prompt_terms(light_frame(raw), ms)
    names = components(raw).set_index("target").loc[terms.targets, "component"].astype(str).tolist()
    return terms, names, ms, reason


def score_seed(
    frames: Mapping[tuple[str, str, int, str], pd.DataFrame],
    circuit: KnownCircuit,
    settings: BenchSettings,
    task: str,
) -> tuple[dict[PracticeKey, Outcome], Truth]:
    """Every practice of one organism and seed from its sweeps' raw ``frames`` (keyed by (corruption,
    direction, window, method)): its :class:`Outcome` per practice, and the circuit at its units."""
    read = {k: _read(raw, settings.metrics, task) for k, raw in frames.items()}
    first_names = next(iter(read.values()))[1]
    order = {c: i for i, c in enumerate(first_names)}
    units = rules.Units.of(first_names, circuit.members())
    truth = Truth.of(units.names, circuit, settings.negative_classes)
    if not truth.member.any():
        raise ValueError(
            f"none of the circuit's components ({sorted(circuit.members())[:6]}) is among the sweeps' "
            f"({list(units.names)[:6]}); the circuit ({circuit.source}) is for another model or site"
        )
    union = np.unique(np.concatenate([t.prompts for t, *_ in read.values()]))
    counts = resample_counts(len(union), settings.bootstrap)  # (B, P)
    flips = rules.sign_flips(settings.n_perm, len(union), settings.seed)
    out: dict[PracticeKey, Outcome] = {}
    for (corr, direction, window, method), (terms, names, ms, reason) in read.items():
        if set(names) != set(order):
            raise ValueError(
                f"sweep {corr} {direction} w{window} {method}: its components differ from the others'"
            )
        perm = np.argsort([order[n] for n in names])
        cols = np.searchsorted(union, terms.prompts)
        w = counts[:, cols]
        point_all, draws_all = aggregate(terms)[:, perm], aggregate(terms, w)[:, :, perm]
        for metric in settings.metrics:
            keys = [(corr, direction, metric, window, method, r) for r in settings.rules]
            if metric not in ms:
                out.update({k: Outcome(reason=reason) for k in keys})
                continue
            i = ms.index(metric)
            point, draws = point_all[i], draws_all[:, i, :]
            x = terms.numerators[i][perm]  # (T, P)
            au = (
                float(auroc(units.magnitude(point), truth.member)),
                auroc(units.magnitude(draws), truth.member),
            )
            for rule, key in zip(settings.rules, keys, strict=True):
                sp, sd = _detect(rule, point, draws, x, w, flips[:, cols], units, truth, settings)
                at_draws = detection_scores(sd, truth)
                scores = {n: (float(v), at_draws[n]) for n, v in detection_scores(sp, truth).items()}
                scores["auroc"] = au
                found = tuple(u for u, s in zip(units.names, sp, strict=True) if s)
                out[key] = Outcome(scores, found=found, n_prompts=len(terms.prompts))
    return out, truth


def _detect(rule, point, draws, x, w, flips, units, truth, settings) -> tuple[np.ndarray, np.ndarray]:
    """Unit signs of one rule at the full data (U,) and per resample (B, U)."""
    if rule == "two_sd":
        return rules.two_sd(point, units), rules.two_sd(draws, units)
    if rule == "top_k":
        return rules.top_k(point, units, truth.size), rules.top_k(draws, units, truth.size)
    if rule == "permutation":
        null = rules.sign_flip_null(x, flips, settings.alpha)
        return rules.permutation(x, point, null, units), rules.permutation(x, draws, null, units, w)
    raise ValueError(f"unknown detection rule {rule!r}; use one of two_sd, top_k, permutation")


def pool_seeds(outcomes: Mapping[int, Outcome], names: Sequence[str], ci: float) -> dict[str, Any]:
    """One practice over its seeds: per score the mean over seeds (``<score>``), the percentile interval
    of the resamples' mean over seeds (``_low``, ``_high``) and the SD over seeds (``_seed_sd``), the
    pooled draws (``draws``: score -> (B,)), and the seeds' detections."""
    seeds = sorted(outcomes)
    row: dict[str, Any] = {"n_seeds": len(seeds), "seeds": ",".join(map(str, seeds))}
    draws: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a score undefined on every seed or resample
        for name in names:
            points = np.array(
                [outcomes[s].scores[name][0] if name in outcomes[s].scores else np.nan for s in seeds]
            )
            d = np.nanmean(
                np.stack([outcomes[s].scores[name][1] for s in seeds if name in outcomes[s].scores]), 0
            )
            draws[name] = d
            lo, hi = percentile_interval(d, ci)
            row[name] = float(np.nanmean(points)) if np.isfinite(points).any() else np.nan
            row[f"{name}_low"], row[f"{name}_high"] = lo, hi
            row[f"{name}_seed_sd"] = (
                float(np.nanstd(points, ddof=1)) if np.isfinite(points).sum() > 1 else np.nan
            )
    row["n_prompts"] = ",".join(str(outcomes[s].n_prompts) for s in seeds)
    row["found"] = " | ".join(", ".join(outcomes[s].found) or "-" for s in seeds)
    return {"row": row, "draws": draws}
