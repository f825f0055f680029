"""One setup for every engine: a sweep's targets, its clean cache and its two unpatched runs.

Exact patching (:mod:`patchbench.engine.sweep`), attribution patching (:mod:`patchbench.attribution`)
and the attention-pattern capture (:mod:`patchbench.engine.patterns`) start from :func:`setup`: the
prompt set checked against the model and the corruption (before any compute), the patch targets
of the SweepSpec, the clean cache holding every activation they read (computed here when not
given), and the sweep's clean and corrupted :class:`~patchbench.engine.runs.Run`, the corrupted
one built by the spec's corruption (:mod:`patchbench.interventions.corruptions`). The direction
(:mod:`patchbench.interventions.directions`) says which of the two is the *base* run the patches
go into and which the *source* of the patched activations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from patchbench.engine.cache import ANSWER_LOGITS, RESID0, TOKENS, check_cache, clean_cache
from patchbench.engine.runs import Run, RunContext
from patchbench.interventions.corruptions import Corruption
from patchbench.interventions.directions import Direction, direction
from patchbench.interventions.sites import SITES
from patchbench.lm import LM
from patchbench.prompts import PromptSet
from patchbench.sites import PatchTarget, SweepSpec, enumerate_targets

__all__ = ["Setup", "setup"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    """What every block of one sweep shares, whichever engine runs it."""

    prompts: PromptSet
    spec: SweepSpec
    corruption: Corruption
    max_len: int
    targets: list[PatchTarget]
    clean: dict[str, torch.Tensor]  # the clean cache
    runs: dict[str, Run]  # "clean" and "corrupted"
    facts: dict[str, Any]  # the corrupted run's facts (frame metadata)
    fingerprint_facts: dict[str, Any] = field(
        default_factory=dict
    )  # beyond the spec (checkpoint fingerprint)

    @property
    def direction(self) -> Direction:
        return direction(self.spec.direction)

    @property
    def base(self) -> Run:
        """The run the patches go into (the corrupted run for denoising, the clean one for noising)."""
        return self.runs[self.direction.base]

    @property
    def source(self) -> Run:
        """The run whose activations are patched in."""
        return self.runs[self.direction.source]

    @property
    def hooks(self) -> list[str]:
        """Every hook point the sweep's targets patch."""
        return list(dict.fromkeys(h for t in self.targets for h in t.hooks))

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (prompt, sample) row of the sweep, prompt-major."""
        k = self.spec.n_samples
        n = len(self.prompts)
        return (
            np.repeat(np.arange(n, dtype=np.int64), k),
            np.tile(np.arange(k, dtype=np.int64), n),
        )


def setup(
    model: LM,
    prompts: PromptSet,
    spec: SweepSpec,
    clean: Mapping[str, torch.Tensor] | None = None,
    *,
    clean_hooks: Sequence[str] = (),
    complete: bool = False,
    reference: PromptSet | None = None,
    logger: logging.Logger | None = None,
) -> Setup:
    """The setup of one sweep of ``spec`` (see the module docstring).

    ``clean`` is a cache from :func:`patchbench.engine.cache.clean_cache`; it must hold every hook the
    targets patch (and ``clean_hooks``), else KeyError, unless ``complete``: then what it lacks is
    computed here. A cache of other prompts is refused. ``reference`` is a named reference prompt set
    of the corruption (mean ablation's).
    """
    prompts.validate(model.shape.d_vocab)
    corruption = spec.intervention
    corruption.check(prompts, reference, where=f"prompt set {prompts.task!r}")
    max_len = int(prompts.tokens("clean").shape[1])
    targets = enumerate_targets(spec, model.shape.n_layers, SITES[spec.site].n_heads(model.shape), max_len)
    if spec.position not in ("all", "each"):
        prompts.named_position(spec.position)  # raises naming the problem before any compute
    names = list(dict.fromkeys([*(h for t in targets for h in t.hooks), RESID0, *clean_hooks]))
    if clean is None:
        clean = clean_cache(model, prompts, names, memory_budget_mb=spec.memory_budget_mb)
    elif complete and any(h not in clean for h in (*names, ANSWER_LOGITS, TOKENS)):
        missing = [h for h in names if h not in clean]
        (logger or log).info("clean cache lacks %d hook(s): computing them", len(missing))
        clean = {**clean_cache(model, prompts, missing, memory_budget_mb=spec.memory_budget_mb), **clean}
    check_cache(clean, prompts, names)
    ctx = RunContext(model, prompts, spec, targets, max_len, clean, reference)
    corrupted, facts = corruption.corrupted_run(ctx)
    return Setup(
        prompts=prompts,
        spec=spec,
        corruption=corruption,
        max_len=max_len,
        targets=targets,
        clean=dict(clean),
        runs={"clean": Run("clean", prompts.tokens("clean")), "corrupted": corrupted},
        facts=facts,
        fingerprint_facts=corruption.fingerprint_facts(ctx, facts),
    )
