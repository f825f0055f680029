"""STR: symmetric token replacement (the paper's in-distribution corruption).

The corrupted run reads each prompt's STR counterpart (``PromptSet.corrupted``): an
in-distribution prompt of the same token length whose answer is the wrong answer r' of the
logit difference. Unequal pairs are refused (by :class:`~patchbench.prompts.PromptSet` itself,
naming the prompt). STR has no settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patchbench.interventions.corruptions.base import Corruption


@dataclass(frozen=True)
class STR(Corruption):
    name = "str"
    label = "STR"
    kind = "tokens"
    in_paper = True
    summary = "each prompt's STR counterpart (same length; its answer is the wrong answer r')"

    def check(self, prompts: Any, reference: Any = None, *, where: str = "") -> None:
        prompts.validate()  # refuses unequal clean / corrupted pairs, naming the prompt

    def corrupted_run(self, ctx):
        from patchbench.engine.runs import Run

        self.check(ctx.prompts)
        return Run("corrupted", ctx.prompts.tokens("corrupted")), {"sigma": None, "noise_std": None}


CORRUPTION = STR
