"""A sweep's unpatched runs as the model reads them, and the one builder every engine runs them through.

Every patching method compares two unpatched runs of each prompt, the clean run and the
corrupted run, and patches activations of one into the other (the direction,
:mod:`patchbench.interventions.directions`). A :class:`Run` says what the model reads for each
(prompt, noise sample) row:

* ``tokens``: token ids per prompt (the clean prompt, its STR counterpart, a resampled prompt);
* ``noise``: embedding noise per row, added to ``hook_embed`` (GN), or None;
* ``ablation``: activations replaced by fixed values at the sweep's patched components
  (:class:`Ablation`: mean and zero ablation), or None.

The corruptions build their corrupted run (:meth:`patchbench.interventions.corruptions.base.Corruption.corrupted_run`,
from a :class:`RunContext`); exact patching (:mod:`patchbench.engine.sweep`), attribution
patching (:mod:`patchbench.attribution`) and the attention-pattern capture
(:mod:`patchbench.engine.patterns`) run them through :meth:`Run.forward` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from patchbench.engine.masks import hook_site, union_mask
from patchbench.engine.readout import index_tensor
from patchbench.lm import LM, KVCapture
from patchbench.prompts import PromptSet

__all__ = ["Ablation", "HookFn", "NoiseFn", "Run", "RunContext"]

# The sweep's types (patchbench.sites: SweepSpec, PatchTarget) are named in docstrings, not imported:
# the corruptions build these runs and patchbench.sites reads the corruptions.

#: (prompt rows, sample rows) -> noise ``[rows, max_len, d_model]`` added to the token embeddings
NoiseFn = Callable[[np.ndarray, np.ndarray], torch.Tensor]
HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


@dataclass(frozen=True)
class Ablation:
    """Activation-level corruption: at every hook the sweep's ``targets`` patch, the entries any of
    them patches are replaced by ``value(hook, prompt_rows)`` (``[rows, ...]`` like the activation, or
    a scalar); every other entry keeps the run's own value."""

    targets: tuple[Any, ...]  # the sweep's PatchTargets
    value: Callable[[str, np.ndarray], torch.Tensor | float]

    @property
    def hook_names(self) -> list[str]:
        return list(dict.fromkeys(h for t in self.targets for h in t.hooks))

    def tensors(
        self, model: LM, prompts: PromptSet, rows: np.ndarray, max_len: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | float]]:
        """Per hook, the mask of the ablated entries and their values for prompt ``rows`` (on the model's
        device): what :meth:`hooks` applies (a block keeps them for all its forwards)."""
        masks: dict[str, torch.Tensor] = {}
        values: dict[str, torch.Tensor | float] = {}
        dev, dtype = model.shape.device, model.shape.dtype
        for name in self.hook_names:
            site = hook_site(self.targets, name)
            masks[name] = union_mask(
                site.n_heads(model.shape), self.targets, name, prompts, rows, max_len
            ).to(dev)
            value = self.value(name, rows)
            values[name] = value.to(device=dev, dtype=dtype) if isinstance(value, torch.Tensor) else value
        return masks, values

    def hooks(
        self, masks: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor | float], start: int = 0
    ) -> list[tuple[str, HookFn]]:
        """Hooks applying :meth:`tensors`' ablation to any number of target-major copies of its rows, on
        positions >= ``start`` (a suffix-only run)."""
        out = []
        for name, mask in masks.items():
            site = hook_site(self.targets, name)
            mask = site.positions_from(mask, start)
            value = values[name]
            if isinstance(value, torch.Tensor):
                value = site.positions_from(value, start)
            n = mask.shape[0]

            def fn(act: torch.Tensor, name: str, mask=mask, value=value, n=n) -> torch.Tensor:
                a = act.reshape(-1, n, *act.shape[1:])
                return torch.where(mask, value, a).reshape(act.shape)

            out.append((name, fn))
        return out


@dataclass(frozen=True)
class Run:
    """One unpatched run of a sweep (see the module docstring)."""

    name: str  # "clean" or "corrupted"
    tokens: torch.Tensor  # [n_prompts, max_len]
    noise: NoiseFn | None = None
    ablation: Ablation | None = None

    def embed(
        self, model: LM, prompt_rows: np.ndarray, sample_rows: np.ndarray
    ) -> Float[torch.Tensor, "rows pos d_model"]:
        """The residual stream entering block 0 for these rows (on the model's device)."""
        tok = self.tokens[index_tensor(prompt_rows)].to(model.shape.device)
        noise = None if self.noise is None else self.noise(prompt_rows, sample_rows)
        return model.embed(tok, noise)

    def hooks(self, model: LM, prompts: PromptSet, prompt_rows: np.ndarray) -> list[tuple[str, HookFn]]:
        """The run's own hooks (its ablation's) for these rows."""
        if self.ablation is None:
            return []
        return self.ablation.hooks(*self.ablation.tensors(model, prompts, prompt_rows, self.tokens.shape[1]))

    def forward(
        self,
        model: LM,
        prompts: PromptSet,
        prompt_rows: np.ndarray,
        sample_rows: np.ndarray,
        *,
        hooks: Sequence[tuple[str, HookFn]] = (),
        keep: list[torch.Tensor] | None = None,
        capture: KVCapture | None = None,
        leaf: bool = False,
    ) -> Float[torch.Tensor, "rows pos d_model"]:
        """The run on these rows, every block, ``hooks`` firing after the run's own; returns the final
        residual stream. ``keep`` collects each block's input residual, ``capture`` the keys and
        values; ``leaf`` makes the embedding a leaf that requires grad (attribution patching)."""
        resid = self.embed(model, prompt_rows, sample_rows)
        if leaf:
            resid = resid.detach().requires_grad_(True)
        with model.hooks([*self.hooks(model, prompts, prompt_rows), *hooks]):
            return model.run_blocks(resid, 0, keep=keep, capture=capture)

    def activations(
        self,
        model: LM,
        prompts: PromptSet,
        prompt_rows: np.ndarray,
        sample_rows: np.ndarray,
        names: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        """The run's activations at ``names`` on these rows (detached, on the model's device)."""
        store: dict[str, torch.Tensor] = {}

        def grab(act: torch.Tensor, name: str) -> None:
            store[name] = act.detach()

        with torch.no_grad():
            self.forward(model, prompts, prompt_rows, sample_rows, hooks=[(n, grab) for n in names])
        return store


@dataclass(frozen=True)
class RunContext:
    """What a corruption may read to build its corrupted run."""

    model: LM
    prompts: PromptSet
    spec: Any  # the SweepSpec
    targets: Sequence[Any]  # its PatchTargets
    max_len: int
    clean: Mapping[str, torch.Tensor]  # the clean cache (every target hook, answer logits, tokens)
    reference: PromptSet | None = None  # a named reference prompt set (mean ablation)
    extra: Mapping[str, Any] | None = None
