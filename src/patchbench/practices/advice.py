"""The paper's advice, measured: each recommendation as a comparison of practices, and its verdict.

Zhang & Nanda (§6) recommend STR over Gaussian noise (GN), the logit difference over probability
(probability "may fail to detect negative model components", §4.2), single-layer patching before
sliding windows (§5), and the benchmark adds exact patching over attribution patching (the first-
order estimate of AtP, Kramár et al. 2024; not a recommendation of the paper). Each becomes one or
more :class:`Comparison`: two values of one axis of the grid (the recommended one and the one
advised against) and the score that decides (:data:`RECOMMENDATIONS`).

**The verdict rule**, fixed before any result was computed (:func:`compare`): on each organism,
every pair of practices that differ only on the compared axis (all other axes equal, both defined,
the score defined on both) contributes its difference recommended − advised against. The pairs'
mean difference is averaged over seeds and then over organisms; its 95 % interval is the
percentile interval of the same mean over the bootstrap resamples of the prompts (paired: both
practices of a pair are scored on the same resamples). ``confirmed`` when the interval lies above
0, ``contradicted`` when it lies below 0, ``not distinguishable on these organisms`` when it
contains 0; ``cannot be judged`` when no organism has a pair with the score defined (e.g. no
negative components, no site with windows).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from patchbench.analysis.robustness import percentile_interval
from patchbench.practices.grid import AXES

__all__ = ["RECOMMENDATIONS", "VERDICT_RULE", "Comparison", "Recommendation", "compare", "verdict"]

#: The verdict rule, as the summary states it.
VERDICT_RULE = (
    "For each comparison, every pair of practices that differ only on the compared axis (all other axes "
    "equal, both defined) contributes its score difference recommended − advised against; the pairs' mean "
    "difference is averaged over seeds and organisms, with the 95 % percentile interval of the same mean over "
    "bootstrap resamples of the prompts (paired: both practices of a pair see the same resamples). "
    "Confirmed: the interval lies above 0; contradicted: below 0; not distinguishable on these organisms: it "
    "contains 0; cannot be judged: no pair has the score defined. The rule and the scores were fixed before "
    "any result was computed."
)


@dataclass(frozen=True)
class Comparison:
    """Two values of one axis, the recommended and the advised-against one, and the deciding score."""

    axis: str
    recommended: str | int
    against: str | int
    score: str

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ValueError(f"comparison axis {self.axis!r} is not one of {AXES}")


@dataclass(frozen=True)
class Recommendation:
    """One piece of advice: its title, where it comes from, and its comparisons."""

    title: str
    source: str
    comparisons: tuple[Comparison, ...]


RECOMMENDATIONS: tuple[Recommendation, ...] = (
    Recommendation(
        "Prefer STR to GN",
        "§6: 'we recommend STR whenever possible' (GN puts the model off distribution)",
        tuple(Comparison("corruption", "str", f"gn@nu={nu}", "f1") for nu in (1, 3, 9)),
    ),
    Recommendation(
        "Logit difference over probability for negative components",
        "§4.2, §6: probability 'may fail to detect negative model components'",
        (Comparison("metric", "logit_diff", "prob", "neg_recall"),),
    ),
    Recommendation(
        "Read sliding-window peaks with care",
        "§5, §6: 'experimenting with single-layer patching first'; windows show joint effects",
        (Comparison("window", 1, 3, "f1"), Comparison("window", 1, 5, "f1")),
    ),
    Recommendation(
        "Exact over attribution where it matters",
        "not the paper's: attribution patching is a first-order estimate (AtP, Kramár et al. 2024)",
        (
            Comparison("method", "exact", "attribution", "f1"),
            Comparison("method", "exact", "attribution_qk", "f1"),
        ),
    ),
)


def verdict(low: float, high: float, n_pairs: int) -> str:
    """The verdict of an interval of recommended − advised against (see the module docstring)."""
    if n_pairs == 0 or not (np.isfinite(low) and np.isfinite(high)):
        return "cannot be judged"
    if low > 0:
        return "confirmed"
    if high < 0:
        return "contradicted"
    return "not distinguishable on these organisms"


def _pairs(practices: Mapping[tuple, Mapping[str, Any]], c: Comparison) -> list[tuple[tuple, tuple]]:
    i = AXES.index(c.axis)
    out = []
    for key in practices:
        if key[i] != c.recommended:
            continue
        other = (*key[:i], c.against, *key[i + 1 :])
        if other in practices:
            out.append((key, other))
    return out


def _mean_pairs(
    practices, pairs, score
) -> tuple[float, float, float, np.ndarray, np.ndarray, np.ndarray, int]:
    """Means over the pairs whose score is defined: recommended, against, difference (points), and
    their resample draws; and the number of pairs."""

    def value(key: tuple) -> float:
        return float(practices[key]["row"].get(score, np.nan))

    used = [(a, b) for a, b in pairs if np.isfinite(value(a)) and np.isfinite(value(b))]
    if not used:
        nan = np.array([np.nan])
        return np.nan, np.nan, np.nan, nan, nan, nan, 0
    pa = np.array([value(a) for a, _ in used])
    pb = np.array([value(b) for _, b in used])
    da = np.stack([practices[a]["draws"][score] for a, _ in used])
    db = np.stack([practices[b]["draws"][score] for _, b in used])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        diff = np.nanmean(da - db, axis=0)
        return (
            float(pa.mean()),
            float(pb.mean()),
            float((pa - pb).mean()),
            np.nanmean(da, 0),
            np.nanmean(db, 0),
            diff,
            len(used),
        )


def compare(organisms: Mapping[str, Mapping[tuple, Mapping[str, Any]]], ci: float) -> list[dict[str, Any]]:
    """Every comparison of :data:`RECOMMENDATIONS` on each organism and over all of them.

    ``organisms`` maps an organism's label to its practices (practice key -> the pooled row and draws
    of :func:`patchbench.practices.benchmark.pool_seeds`). One row per (recommendation, comparison,
    organism or ``all``): the pairs, the recommended and advised-against means with intervals, the
    difference with its interval, and the verdict.
    """
    rows = []
    for rec in RECOMMENDATIONS:
        for c in rec.comparisons:
            per: dict[str, tuple] = {}
            for name, practices in organisms.items():
                m = _mean_pairs(practices, _pairs(practices, c), c.score)
                if m[-1]:
                    per[name] = m
            rows += [_row(rec, c, name, [m], ci) for name, m in per.items()]
            rows.append(_row(rec, c, "all organisms", list(per.values()), ci))
    return rows


def _row(rec: Recommendation, c: Comparison, organism: str, ms: Sequence[tuple], ci: float) -> dict[str, Any]:
    n = sum(m[-1] for m in ms)
    out = {
        "recommendation": rec.title, "source": rec.source, "axis": c.axis, "recommended": str(c.recommended),
        "against": str(c.against), "score": c.score, "organism": organism, "pairs": n,
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for j, name in enumerate(("value_recommended", "value_against", "difference")):
            point = float(np.mean([m[j] for m in ms])) if ms else np.nan
            lo, hi = (
                percentile_interval(np.mean([m[3 + j] for m in ms], axis=0), ci) if ms else (np.nan, np.nan)
            )
            out.update({name: point, f"{name}_low": lo, f"{name}_high": hi})
    out["verdict"] = verdict(out["difference_low"], out["difference_high"], n)
    return out
