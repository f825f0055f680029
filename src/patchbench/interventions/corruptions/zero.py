"""Zero ablation: the sweep's patched activations set to zero.

An activation-level corruption: the corrupted run reads the clean prompt, and every activation
the sweep patches (its site at the swept layers, heads and positions) is replaced by zero
(:class:`patchbench.engine.runs.Ablation`). Denoising restores one target's clean activation in
that run while the others stay ablated; noising zeroes one target in the clean run. Zero has no
settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from patchbench.interventions.corruptions.base import Corruption


@dataclass(frozen=True)
class Zero(Corruption):
    name = "zero"
    label = "Zero"
    kind = "activations"
    summary = "the clean prompt, the sweep's patched activations set to zero"

    def corrupted_run(self, ctx):
        from patchbench.engine.runs import Ablation, Run

        ablation = Ablation(tuple(ctx.targets), lambda hook, rows: 0.0)
        return Run("corrupted", ctx.prompts.tokens("clean"), ablation=ablation), {
            "sigma": None,
            "noise_std": None,
        }


CORRUPTION = Zero
