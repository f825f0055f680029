"""Resample ablation: each prompt's corrupted run is another prompt of the same task and template.

Prompt i's corrupted run reads the clean prompt j = ``pairing[i]``, another prompt of i's template
(metadata column ``template``) and token length (so every position means the same in both), as
causal scrubbing's resample ablation does. The pairing is seeded (setting ``seed``, config section
``resample``): within each (template, length) group, in a random order, each prompt takes the next
one's prompt (a cyclic shift: no prompt is paired with itself). Answers and wrong answers stay
prompt i's (as GN reuses STR's r'). The pairing is recorded in the raw frame's metadata
(``source_prompt``: j for every prompt i) and enters its fingerprint.

A prompt alone in its group has nothing to resample from: refused before any work, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from patchbench.interventions.corruptions.base import Corruption, CorruptionError, template_groups


def pairing(prompts: Any, seed: int, *, where: str = "") -> np.ndarray:
    """The prompt each prompt's corrupted run reads (see the module docstring)."""
    groups = template_groups(prompts, corruption="resample", what=where)
    alone = [(k, idx[0]) for k, idx in groups.items() if len(idx) < 2]
    if alone:
        (template, n), i = alone[0]
        raise CorruptionError.of(
            f"corruption 'resample' on {where or f'prompt set {prompts.task!r}'}",
            f"prompt {i} is the only one of its template ({template!r}) with {n} tokens"
            f"{f' ({len(alone)} prompts are alone in their group)' if len(alone) > 1 else ''}, so it has no "
            "other prompt to resample its corrupted run from",
            "generate more prompts (tasks.<task>.n_prompts; the correctness filter may leave few), or use "
            "another corruption (str, gn, mean, zero)",
        )
    rng = np.random.default_rng(int(seed))
    out = np.empty(len(prompts), dtype=np.int64)
    for key in sorted(groups):
        order = rng.permutation(np.asarray(groups[key], dtype=np.int64))
        out[order] = np.roll(order, -1)
    return out


@dataclass(frozen=True)
class Resample(Corruption):
    """Resample ablation with its pairing seed."""

    seed: int = 0

    name = "resample"
    label = "Resample"
    kind = "tokens"
    section = "resample"
    summary = "another prompt of the same template and length (seeded pairing)"

    def check(self, prompts: Any, reference: Any = None, *, where: str = "") -> None:
        pairing(prompts, self.seed, where=where)

    def corrupted_run(self, ctx):
        from patchbench.engine.runs import Run

        source = pairing(ctx.prompts, self.seed)
        clean = ctx.prompts.tokens("clean")
        return Run("corrupted", clean[source]), {
            "sigma": None,
            "noise_std": None,
            "source_prompt": source.tolist(),
        }

    def fingerprint_facts(self, ctx, facts):
        return {"source_prompt": facts["source_prompt"]}


CORRUPTION = Resample
