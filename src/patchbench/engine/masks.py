"""Where a patch lands: boolean masks over a site's activation, from patch targets.

A :class:`~patchbench.sites.HookPatch` names a hook point, heads (None: all) and a position (-1:
every position; an absolute index; or a named position, one index per prompt). Its mask over a
block of rows has the layout of its site's activation (:class:`patchbench.interventions.sites.Site`):
``[rows, pos, 1]``, ``[rows, pos, head, 1]`` or, for attention patterns, ``[rows, head, dest, 1]``
(a pattern's position is its destination row); the trailing 1 broadcasts over the feature axis.
:func:`build_mask` stacks one such mask per target of a chunk (the generic patch,
:mod:`patchbench.engine.patch`); :func:`union_mask` ORs every patch of a sweep at one hook (what
an activation-level corruption ablates, :mod:`patchbench.engine.runs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from patchbench.engine.readout import index_tensor
from patchbench.interventions.sites import SITES, Site
from patchbench.prompts import PromptSet

# HookPatch and PatchTarget (patchbench.sites) are named, not imported: sites reads the corruptions,
# whose runs use these masks
HookPatch = PatchTarget = Any

__all__ = ["build_mask", "fill", "hook_site", "union_mask"]


def fill(mask: torch.Tensor, site: Site, part: HookPatch, prompts: PromptSet, rows: np.ndarray) -> None:
    """Set ``mask`` (``[rows, ...]`` in ``site``'s layout) True where ``part`` patches the prompts ``rows``."""
    view = mask.transpose(1, 2) if site.layout == "bhqk" else mask  # [rows, pos, (head,) 1]
    heads = slice(None) if part.heads is None else list(part.heads)
    has_heads = view.dim() == 4
    if part.position == -1:
        if has_heads:
            view[:, :, heads] = True
        else:
            view[:] = True
    elif isinstance(part.position, int):
        if has_heads:
            view[:, part.position, heads] = True
        else:
            view[:, part.position] = True
    else:
        r = torch.arange(view.shape[0])
        pos = index_tensor(prompts.named_position(part.position)[rows])
        if has_heads:
            hs = torch.arange(view.shape[2]) if part.heads is None else index_tensor(part.heads)
            view[r[:, None], pos[:, None], hs[None, :]] = True
        else:
            view[r, pos] = True


def hook_site(targets: Iterable[PatchTarget], hook: str) -> Site:
    """The site of ``hook`` among the targets that patch it."""
    for t in targets:
        if hook in t.hooks:
            return SITES[t.site]
    raise KeyError(f"no target patches {hook}")


def build_mask(
    n_heads: int,
    chunk: Sequence[PatchTarget],
    hook: str,
    prompts: PromptSet,
    rows: np.ndarray,
    max_len: int,
) -> torch.Tensor:
    """Boolean mask ``[m, rows, ...]``: True where target j of ``chunk`` patches ``hook`` in each row
    (``n_heads``: the heads of the hook's site on the model)."""
    site = hook_site(chunk, hook)
    mask = torch.zeros(len(chunk), *site.mask_shape(len(rows), max_len, n_heads), dtype=torch.bool)
    for j, t in enumerate(chunk):
        for p in t.patches:
            if p.hook == hook:
                fill(mask[j], site, p, prompts, rows)
    return mask


def union_mask(
    n_heads: int,
    targets: Sequence[PatchTarget],
    hook: str,
    prompts: PromptSet,
    rows: np.ndarray,
    max_len: int,
) -> torch.Tensor:
    """Boolean mask ``[rows, ...]``: True where any of ``targets`` patches ``hook``."""
    site = hook_site(targets, hook)
    mask = torch.zeros(*site.mask_shape(len(rows), max_len, n_heads), dtype=torch.bool)
    for part in (p for t in targets for p in t.patches if p.hook == hook):
        fill(mask, site, part, prompts, rows)
    return mask
