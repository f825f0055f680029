"""The one generic patch: clean activations copied into the corrupted run where a target's mask says.

A patch target (:class:`patchbench.sites.PatchTarget`) is a set of ``(hook point, heads,
position)`` parts. For a batch of targets over a :class:`Block` of (prompt, sample) rows,
:func:`build_mask` turns them into one boolean mask per hook point, and :func:`patched_logits`
runs the blocks from the first patched layer on the block's cached corrupted residual stream with
``torch.where(mask, clean, activation)`` at each hook: every site goes through this one code path.
Targets x rows share the batch dimension (target-major).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from patchbench.engine.forward import hooked, run_blocks, site_heads, unembed_at
from patchbench.engine.readout import AnswerIds, answer_values, index_tensor
from patchbench.prompts import PromptSet
from patchbench.sites import PatchTarget

__all__ = ["Block", "SanityError", "build_mask", "patched_logits", "sources", "target_positions"]


class SanityError(RuntimeError):
    """A sweep failed one of its sanity identities (or a patch did not fire): its results cannot be trusted."""


@dataclass
class Block:
    """A block of (prompt, sample) rows and everything cached for them."""

    index: int
    prompt: np.ndarray  # [R]
    sample: np.ndarray  # [R]
    resid: list[torch.Tensor] = field(default_factory=list)  # resid_pre per layer, [R, P, d]
    sf: torch.Tensor | None = None
    answer_pos: torch.Tensor | None = None
    answers: AnswerIds | None = None
    wrong: AnswerIds | None = None
    clean_logp: torch.Tensor | None = None  # [R, V] float64
    corrupted_logits: torch.Tensor | None = None  # [R, V]
    corrupted_acts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt)

    def values(self, logits: torch.Tensor, reps: int = 1) -> dict[str, np.ndarray]:
        """The raw value columns of ``reps`` target-major copies of the block's rows, from their logits."""
        vals = answer_values(logits, self.clean_logp, self.answers, self.wrong, reps)
        return {k: v.cpu().numpy() for k, v in vals.items()}


def target_positions(targets: Sequence[PatchTarget], prompts: PromptSet, rows: np.ndarray) -> np.ndarray:
    """``[n_targets, n_rows]``: the position each target patches in each row (-1 = all positions)."""
    out = np.empty((len(targets), len(rows)), dtype=np.int64)
    for j, t in enumerate(targets):
        out[j] = prompts.named_position(t.position)[rows] if isinstance(t.position, str) else t.position
    return out


def _is_head_hook(name: str) -> bool:
    return name.endswith(("hook_z", "hook_v"))


def build_mask(
    model,
    chunk: Sequence[PatchTarget],
    hook: str,
    block: Block,
    prompts: PromptSet,
    max_len: int,
) -> torch.Tensor:
    """Boolean mask [m, R, P, (H,) 1]: True where target j patches row r of ``hook``."""
    m, r = len(chunk), len(block)
    if _is_head_hook(hook):
        n_h = site_heads(model, "head_v" if hook.endswith("hook_v") else "attn_head")
        mask = torch.zeros(m, r, max_len, n_h, 1, dtype=torch.bool)
    else:
        mask = torch.zeros(m, r, max_len, 1, dtype=torch.bool)
    rows = torch.arange(r)
    for j, t in enumerate(chunk):
        for p in t.patches:
            if p.hook != hook:
                continue
            heads = slice(None) if p.heads is None else list(p.heads)
            if p.position == -1:
                if mask.dim() == 5:
                    mask[j, :, :, heads] = True
                else:
                    mask[j] = True
            elif isinstance(p.position, int):
                if mask.dim() == 5:
                    mask[j, :, p.position, heads] = True
                else:
                    mask[j, :, p.position] = True
            else:
                pos = index_tensor(prompts.named_position(p.position)[block.prompt])
                if mask.dim() == 5:
                    hs = torch.arange(mask.shape[3]) if p.heads is None else index_tensor(p.heads)
                    mask[j, rows[:, None], pos[:, None], hs[None, :]] = True
                else:
                    mask[j, rows, pos] = True
    return mask


def sources(
    clean: dict[str, torch.Tensor], names: Iterable[str], block: Block, dtype
) -> dict[str, torch.Tensor]:
    """The clean activations of the block's prompts at ``names``, on the block's device and in ``dtype``."""
    idx = index_tensor(block.prompt)
    dev = block.resid[0].device
    return {k: clean[k][idx.to(clean[k].device)].to(device=dev, dtype=dtype) for k in names}


def patched_logits(
    model,
    chunk: Sequence[PatchTarget],
    block: Block,
    srcs: dict[str, torch.Tensor],
    prompts: PromptSet,
    max_len: int,
) -> torch.Tensor:
    """One forward for ``len(chunk) x len(block)`` rows; ``srcs[hook]`` is [R, P, ...] per block row.

    Returns the answer-position logits, target-major. Raises SanityError if a patch hook did not
    fire exactly once.
    """
    m, r = len(chunk), len(block)
    start = min(t.start_layer for t in chunk)
    dev = block.resid[0].device
    names = list(dict.fromkeys(h for t in chunk for h in t.hooks))
    fired = dict.fromkeys(names, 0)
    hooks = []
    for name in names:
        mask = build_mask(model, chunk, name, block, prompts, max_len).to(dev)
        src = srcs[name].unsqueeze(0)

        def fn(act, hook, mask=mask, src=src):
            fired[hook.name] += 1
            a = act.reshape(m, r, *act.shape[1:])
            return torch.where(mask, src, a).reshape(act.shape)

        hooks.append((name, fn))
    resid = block.resid[start]
    resid = resid.repeat(m, 1, 1) if m > 1 else resid
    sf = None if block.sf is None else (block.sf.repeat(m, 1, 1) if m > 1 else block.sf)
    with hooked(model, hooks):
        resid = run_blocks(model, resid, start, sf)
    silent = [k for k, v in fired.items() if v != 1]
    if silent:
        raise SanityError(f"patch hooks {silent} fired {[fired[k] for k in silent]} times instead of once")
    pos = block.answer_pos.repeat(m) if m > 1 else block.answer_pos
    return unembed_at(model, resid, pos)
