"""The corruptions' public names: the registry (:mod:`patchbench.interventions.corruptions`) and GN's noise.

Each corruption lives in its own module of :mod:`patchbench.interventions.corruptions` (STR, GN,
resample, mean, zero); this module gives the names code outside the engine imports: the registry's
:data:`NAMES`, :func:`resolve` and :func:`label`, and GN's :class:`NoiseSpec` and seeded noise draw
(:mod:`patchbench.interventions.corruptions.gn`, where ``noise_scale`` is the one computation of
GN's sigma and std).
"""

from __future__ import annotations

from patchbench.interventions.corruptions import NAMES, Corruption, CorruptionError, label, parse, resolve
from patchbench.interventions.corruptions.gn import (
    SIGMA_META_COLUMNS,
    NoiseSpec,
    draw_noise,
    embedding_sigma,
    noise_dtype,
    noise_scale,
    noise_seed,
    noise_tensor,
)

__all__ = [
    "NAMES",
    "SIGMA_META_COLUMNS",
    "Corruption",
    "CorruptionError",
    "NoiseSpec",
    "draw_noise",
    "embedding_sigma",
    "label",
    "noise_dtype",
    "noise_scale",
    "noise_seed",
    "noise_tensor",
    "parse",
    "resolve",
]
