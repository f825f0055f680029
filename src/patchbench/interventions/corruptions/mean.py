"""Mean ablation: the sweep's patched activations set to their mean over a reference set.

An activation-level corruption: the corrupted run reads the clean prompt, and every activation
the sweep patches (its site at the swept layers, heads and positions) is replaced by that
activation's mean over the clean runs of a reference set, at the same position: for prompt i, the
reference prompts of i's template and token length (metadata column ``template``), so that every
position means the same in all of them. The reference set is the task's own prompts by default;
setting ``reference`` (config section ``mean``, or ``mean@reference=<task>``) names another task
of the config whose prompts share the templates (for example ``ioi_abc``'s clean prompts for
``ioi``). A reference set without prompt i's template and length is refused before any work.

Denoising restores one target's clean activation in the mean-ablated run while the others stay
ablated; noising mean-ablates one target in the clean run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from patchbench.interventions.corruptions.base import (
    TEMPLATE_COLUMN,
    Corruption,
    CorruptionError,
    template_groups,
)


def _keys(prompts: Any) -> list[tuple[str, int]]:
    return [(str(t), int(n)) for t, n in zip(prompts.meta[TEMPLATE_COLUMN], prompts.lengths, strict=True)]


def _fit(table: Any, layout: str, max_len: int) -> Any:
    """``table`` ``[groups, ...]`` with every position axis cut or zero-padded to ``max_len``."""
    import torch

    for axis in (2, 3) if layout == "bhqk" else (1,):
        n = table.shape[axis]
        if n > max_len:
            table = table.narrow(axis, 0, max_len)
        elif n < max_len:
            shape = list(table.shape)
            shape[axis] = max_len - n
            table = torch.cat([table, table.new_zeros(shape)], dim=axis)
    return table


@dataclass(frozen=True)
class Mean(Corruption):
    """Mean ablation over a reference set (None: the task's own prompts)."""

    reference: str | None = None

    name = "mean"
    label = "Mean"
    kind = "activations"
    section = "mean"
    summary = "the clean prompt, the sweep's patched activations set to their mean over a reference set"

    @classmethod
    def check_config(cls, settings, config, where):
        ref = settings.get("reference")
        if ref is not None and ref not in config["tasks"]:
            raise CorruptionError.of(
                f"{where}: corruption 'mean' with reference={ref!r}",
                f"no task {ref!r} is configured (tasks: {', '.join(sorted(config['tasks']))})",
                "name a task under `tasks:` whose prompts share this task's templates, or drop the setting to "
                "average over the task's own prompts",
            )

    @classmethod
    def config_facts(cls, config, settings):
        facts = super().config_facts(config, settings)
        ref = settings.get("reference")
        return facts if ref is None else {**facts, "reference_task": config["tasks"][ref]}

    def reference_task(self) -> str | None:
        return self.reference

    def _reference(self, prompts: Any, reference: Any, where: str) -> Any:
        if self.reference is None:
            return prompts
        if reference is None:
            raise CorruptionError.of(
                f"corruption 'mean' on {where or prompts.task}",
                f"its reference set {self.reference!r} was not given",
                f"pass the prompts of {self.reference!r} as the sweep's reference",
            )
        return reference

    def check(self, prompts: Any, reference: Any = None, *, where: str = "") -> None:
        ref = self._reference(prompts, reference, where)
        what = f"reference set {self.reference!r}" if self.reference else f"prompt set {prompts.task!r}"
        groups = template_groups(ref, corruption="mean", what=what)
        keys = _keys(prompts) if ref is not prompts else list(groups)
        missing = [(i, k) for i, k in enumerate(keys) if k not in groups]
        if missing:
            i, (template, n) = missing[0]
            raise CorruptionError.of(
                f"corruption 'mean' on {where or prompts.task}: {what}",
                f"has no prompt of template {template!r} with {n} tokens, the template and length of prompt "
                f"{i} ({len(missing)} prompt(s) lack theirs), so their mean activations are undefined",
                "choose a reference task whose prompts share this task's templates and lengths, or drop "
                "`reference` to average over the task's own prompts",
            )

    def corrupted_run(self, ctx):
        import torch

        from patchbench.engine.cache import clean_cache
        from patchbench.engine.masks import hook_site
        from patchbench.engine.readout import index_tensor
        from patchbench.engine.runs import Ablation, Run

        self.check(ctx.prompts, ctx.reference)
        ref = self._reference(ctx.prompts, ctx.reference, "")
        groups = template_groups(ref, corruption="mean")
        order = sorted(groups)
        index = {k: g for g, k in enumerate(order)}
        group_of = np.array([index[k] for k in _keys(ctx.prompts)], dtype=np.int64)
        hooks = list(dict.fromkeys(h for t in ctx.targets for h in t.hooks))
        acts = ctx.clean
        if self.reference is not None:
            acts = clean_cache(ctx.model, ref, hooks, memory_budget_mb=ctx.spec.memory_budget_mb)
        dtype = ctx.model.shape.dtype
        tables = {}
        for h in hooks:
            means = torch.stack([acts[h][index_tensor(groups[k])].double().mean(0) for k in order])
            tables[h] = _fit(means, hook_site(ctx.targets, h).layout, ctx.max_len).to(dtype)

        def value(hook: str, rows: np.ndarray):
            return tables[hook][index_tensor(group_of[rows])]

        run = Run("corrupted", ctx.prompts.tokens("clean"), ablation=Ablation(tuple(ctx.targets), value))
        facts = {"sigma": None, "noise_std": None, "reference": self.reference, "mean_groups": len(order)}
        return run, facts

    def fingerprint_facts(self, ctx, facts):
        from patchbench.fingerprint import prompts_digest

        ref = None if self.reference is None else prompts_digest(ctx.reference)
        return {
            "groups": [
                list(k) for k in sorted(template_groups(ctx.reference or ctx.prompts, corruption="mean"))
            ],
            "reference": ref,
        }


CORRUPTION = Mean
