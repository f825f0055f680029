"""Detection rules of the practice benchmark: which components a sweep calls important, with their sign.

Every rule sees one plot (one sweep and metric: the effects of its components) and answers, per
*unit* of the known circuit (a head ``L.H`` or a layer ``L``; a per-position sweep's components
``L.H@p`` belong to the unit ``L.H``), +1 (detected, positive), -1 (detected, negative) or 0.
Arrays may carry leading axes (bootstrap resamples); the last axis holds the components (or units).

``two_sd``
    The paper's rule (:func:`patchbench.detection.detect_signs`, k = 2): more than 2 SD of the
    plot's effects from their mean.
``top_k``
    The k units with the largest |effect| (a unit's: its components' largest), k = the number of
    circuit units among the plot's units; the sign is its effect's. Ties go to the earlier unit.
``permutation``
    A sign-flip test over prompts per component, family-wise over the plot. Per component t with
    per-prompt effect numerators x_tp (the terms whose prompt sums form its effect,
    :func:`patchbench.metrics.prompt_terms`: a metric's change, the logit difference's before its
    normalisation by the prompts' fixed denominators), the statistic is the self-normalised sum
    Z_t = Σ_p x_tp / √(Σ_p x_tp²). Under H0 (each prompt's effect is symmetric about zero: no
    average effect), flipping the signs of the prompts leaves its distribution unchanged;
    ``n_perm`` random flips s_b ∈ {±1}^P (one sign per prompt, shared by every component, so their
    dependence is kept; seeded) give Z_bt = Σ_p s_bp x_tp / √(Σ_p x_tp²). Multiplicity: the
    Westfall-Young single-step max-T adjustment over the plot's components, p_t = (1 + #{b:
    max_t' |Z_bt'| >= |Z_t|}) / (1 + n_perm); a component is detected when p_t <= ``alpha``
    (family-wise error <= alpha over the plot), with its effect's sign. A component whose
    numerators are all zero has Z = 0 and is never detected. Under bootstrap resamples of the
    prompts (counts w_p), the statistic is Σ_p w_p x_tp / √(Σ_p w_p x_tp²) (each drawn copy a prompt
    of its own) and it is compared with the full data's null (:class:`SignFlipNull`): recomputing
    the null per resample would cost B x n_perm products for a distribution that barely moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchbench.detection import PAPER_K, detect_signs

__all__ = ["SignFlipNull", "Units", "permutation", "sign_flip_null", "top_k", "two_sd", "z_scores"]


@dataclass(frozen=True)
class Units:
    """The circuit's units of a plot: ``names`` (U,) and ``index`` (T,), the unit of each component."""

    names: tuple[str, ...]
    index: np.ndarray

    @classmethod
    def of(cls, components: list[str], members: frozenset[str]) -> Units:
        """Units at the circuit's granularity: a component is its own unit when the circuit names it,
        else its base without ``@position`` (``3.0@7`` -> ``3.0``)."""
        exact = any(c in members for c in components)
        keys = [c if exact else c.split("@", 1)[0] for c in components]
        names = tuple(dict.fromkeys(keys))
        pos = {n: i for i, n in enumerate(names)}
        return cls(names, np.array([pos[k] for k in keys], dtype=np.int64))

    def magnitude(self, effects: np.ndarray) -> np.ndarray:
        """(..., U): each unit's largest |effect| over its components."""
        a = np.abs(np.nan_to_num(np.asarray(effects, dtype=np.float64)))
        out = np.zeros((*a.shape[:-1], len(self.names)))
        np.maximum.at(np.moveaxis(out, -1, 0), self.index, np.moveaxis(a, -1, 0))
        return out

    def collapse(self, signs: np.ndarray, effects: np.ndarray) -> np.ndarray:
        """(..., U) int8: each unit's sign, that of its detected component with the largest |effect|
        (0 when none is detected)."""
        signs = np.asarray(signs)
        if len(self.names) == signs.shape[-1] and np.array_equal(self.index, np.arange(len(self.names))):
            return signs.astype(np.int8)
        score = np.where(signs != 0, np.abs(np.nan_to_num(effects)) + 1.0, 0.0)  # detected beat undetected
        out = np.zeros((*signs.shape[:-1], len(self.names)), dtype=np.int8)
        for u in range(len(self.names)):
            cols = np.flatnonzero(self.index == u)
            best = np.take_along_axis(signs[..., cols], score[..., cols].argmax(-1)[..., None], -1)[..., 0]
            out[..., u] = best
        return out


def two_sd(effects: np.ndarray, units: Units) -> np.ndarray:
    """The paper's 2-SD rule, per unit."""
    return units.collapse(detect_signs(effects, PAPER_K), effects)


def top_k(effects: np.ndarray, units: Units, k: int) -> np.ndarray:
    """The ``k`` units with the largest |effect|, signed by their largest component's effect."""
    eff = np.nan_to_num(np.asarray(effects, dtype=np.float64))
    mag = units.magnitude(eff)  # (..., U)
    order = np.argsort(-mag, axis=-1, kind="stable")[..., :k]
    chosen = np.zeros(mag.shape, dtype=bool)
    np.put_along_axis(chosen, order, True, axis=-1)
    # the sign of each unit's largest component
    comp_sign = np.sign(eff).astype(np.int8)
    unit_sign = units.collapse(np.where(eff != 0, comp_sign, 1).astype(np.int8), eff)
    return np.where(chosen, unit_sign, 0).astype(np.int8)


def z_scores(numerators: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The self-normalised sums Z_t = Σ_p w_p x_tp / √(Σ_p |w_p| x_tp²) of ``numerators`` (T, P), for
    prompt weights (P,) or (B, P): resample counts, or sign flips (None: every prompt once, sign +1);
    0 where a component's terms are all zero."""
    x = np.nan_to_num(np.asarray(numerators, dtype=np.float64))
    w = np.ones(x.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    num = w @ x.T
    den = np.sqrt(np.abs(w) @ (x * x).T)  # a flip changes no square; a count weights one
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


@dataclass(frozen=True)
class SignFlipNull:
    """The permutation rule's null of one plot: the sorted max_t |Z_bt| of ``n_perm`` sign flips."""

    max_abs: np.ndarray  # (n_perm,), ascending
    alpha: float

    def p_values(self, z: np.ndarray) -> np.ndarray:
        """Westfall-Young adjusted p-values of |z| (any shape)."""
        n = len(self.max_abs)
        at_least = n - np.searchsorted(self.max_abs, np.abs(z), side="left")
        return (1.0 + at_least) / (1.0 + n)

    def detects(self, z: np.ndarray) -> np.ndarray:
        return self.p_values(z) <= self.alpha


def sign_flips(n_perm: int, n_prompts: int, seed: int) -> np.ndarray:
    """(n_perm, P) random signs, one per prompt and flip (seeded)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, size=(n_perm, n_prompts), dtype=np.int8) * 2 - 1).astype(np.float64)


def sign_flip_null(numerators: np.ndarray, flips: np.ndarray, alpha: float) -> SignFlipNull:
    """The null of the permutation rule for one plot's ``numerators`` (T, P) under ``flips`` (n_perm, P)."""
    z = z_scores(numerators, flips)  # (n_perm, T)
    return SignFlipNull(np.sort(np.abs(z).max(axis=-1)), float(alpha))


def permutation(
    numerators: np.ndarray,
    effects: np.ndarray,
    null: SignFlipNull,
    units: Units,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """The permutation rule per unit, at the full data (``weights`` None; ``effects`` (T,)) or under
    resample counts (``weights`` (B, P); ``effects`` (B, T))."""
    z = z_scores(numerators, weights)
    detected = null.detects(z)
    signs = np.where(detected, np.sign(np.nan_to_num(effects)), 0).astype(np.int8)
    return units.collapse(signs, effects)
