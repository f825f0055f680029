"""Scores of a practice against the circuit known by construction: what a detection rule found, and how.

Detections are per unit of the circuit (:class:`patchbench.practices.rules.Units`). With D the
detected units (either sign), C the circuit's units among the plot's and N its negative ones
(classes ``practices.negative_classes``, e.g. negative name movers):

* ``precision`` = |D ∩ C| / |D| (NaN when nothing is detected), ``recall`` = |D ∩ C| / |C|,
  ``f1`` = 2|D ∩ C| / (2|D ∩ C| + |D \\ C| + |C \\ D|) (0 when nothing is detected);
* per class c of the circuit, ``recall_<c>`` = |D ∩ c| / |c|;
* negative components, sign-aware: with D⁻ the units detected *negative*, ``neg_precision`` =
  |D⁻ ∩ N| / |D⁻|, ``neg_recall`` = |D⁻ ∩ N| / |N|, ``neg_f1`` as f1 on (D⁻, N); NaN when the
  circuit has no negative component among the plot's units;
* ``auroc``: the rank agreement of |effect| with membership, rule-free: P(|effect| of a random
  circuit unit > that of a random unit outside it) + ½ P(tie), i.e. the Mann-Whitney U over
  |C|·|U \\ C| (a unit's |effect| is its components' largest); 0.5 is chance, 1 a perfect ranking.

Every function takes arrays with leading axes (bootstrap resamples) and returns one value per
leading index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from patchbench.analysis.robustness import KnownCircuit, average_ranks

__all__ = ["SCORES", "Truth", "auroc", "detection_scores", "score_names"]

#: The scores every practice gets, in table order (``recall_<class>`` columns follow them).
SCORES: tuple[str, ...] = ("f1", "precision", "recall", "neg_f1", "neg_precision", "neg_recall", "auroc")


@dataclass(frozen=True)
class Truth:
    """The known circuit at a plot's units: membership (U,), negative membership (U,), classes."""

    units: tuple[str, ...]
    member: np.ndarray
    negative: np.ndarray
    classes: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, units: Sequence[str], circuit: KnownCircuit, negative_classes: Sequence[str]) -> Truth:
        """The circuit's classes restricted to ``units``; classes with no unit among them are left out."""
        units = tuple(units)
        classes = {name: np.array([u in comps for u in units]) for name, comps in circuit.classes.items()}
        classes = {k: v for k, v in classes.items() if v.any()}
        member = np.any(list(classes.values()), axis=0) if classes else np.zeros(len(units), dtype=bool)
        negative = np.zeros(len(units), dtype=bool)
        for name in negative_classes:
            if name in classes:
                negative |= classes[name]
        return cls(units, member, negative, classes)

    @property
    def size(self) -> int:
        """The number of circuit units among the plot's (top-k's k)."""
        return int(self.member.sum())


def score_names(truth: Truth) -> tuple[str, ...]:
    """The score columns for ``truth``: :data:`SCORES`, then one recall per class."""
    return (*SCORES, *(f"recall_{c}" for c in truth.classes))


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _prf(found: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 of ``found`` (..., U) bool against ``truth`` (U,) bool."""
    tp = (found & truth).sum(-1)
    fp = (found & ~truth).sum(-1)
    fn = (~found & truth).sum(-1)
    n_true = np.full(tp.shape, truth.sum())
    return _ratio(tp, tp + fp), _ratio(tp, n_true), _ratio(2 * tp, 2 * tp + fp + fn)


def detection_scores(signs: np.ndarray, truth: Truth) -> dict[str, np.ndarray]:
    """Every detection score (module docstring) of unit ``signs`` (..., U): name -> (...)."""
    signs = np.asarray(signs)
    found = signs != 0
    precision, recall, f1 = _prf(found, truth.member)
    neg_p, neg_r, neg_f1 = _prf(signs < 0, truth.negative)
    if not truth.negative.any():  # nothing to find: no negative score is defined
        neg_p = neg_r = neg_f1 = np.full(found.shape[:-1], np.nan)
    out = {"f1": f1, "precision": precision, "recall": recall}
    out.update({"neg_f1": neg_f1, "neg_precision": neg_p, "neg_recall": neg_r})
    for name, mask in truth.classes.items():
        out[f"recall_{name}"] = _ratio((found & mask).sum(-1), np.full(found.shape[:-1], mask.sum()))
    return out


def auroc(magnitude: np.ndarray, member: np.ndarray) -> np.ndarray:
    """AUROC of ``magnitude`` (..., U) as a score for ``member`` (U,) bool (module docstring); NaN when
    the circuit holds every unit or none."""
    n1 = int(member.sum())
    n0 = len(member) - n1
    if n1 == 0 or n0 == 0:
        return np.full(np.shape(magnitude)[:-1], np.nan)
    ranks = average_ranks(np.asarray(magnitude, dtype=np.float64))
    u = ranks[..., member].sum(-1) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n0)
