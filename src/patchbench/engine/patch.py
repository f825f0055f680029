"""The one generic patch: source activations copied into the base run where a target's mask says.

The base run is the corrupted run and the source the clean run for denoising, the other way
round for noising (:mod:`patchbench.interventions.directions`); below, "corrupted" reads "base"
for noising. A patch target (:class:`patchbench.sites.PatchTarget`) is a set of ``(hook point,
heads, position)`` parts. For a batch of targets over a :class:`Block` of (prompt, sample) rows,
:func:`~patchbench.engine.masks.build_mask` turns them into one boolean mask per hook point, and
:func:`patched_logits` runs the blocks from the first patched layer on the block's cached base
residual stream with ``torch.where(mask, source, activation)`` at each hook: every site goes through
this one code path. Targets x rows share the batch dimension (target-major). A base run with an
ablation (mean / zero, denoising) keeps its ablation hooks in the patched forward, before the
patch: every other ablated component stays ablated while the target is restored.

Causal suffix reuse: a patch at position p leaves every position < p as in the corrupted run, in
every layer (causal attention; GN noise is part of the corrupted run). When the block holds the
corrupted run's keys and values (:attr:`Block.kv`, a :class:`~patchbench.lm.KVCapture`) and every
target of a chunk is position-specific, the patched forward runs only positions >= the chunk's
:func:`suffix_start` (the first position any of its targets patches in any of the block's rows),
attending to the corrupted keys and values of the positions before it. A row whose answer comes
before that position is the corrupted run itself, and takes the corrupted logits.

Head-output shortcut (issue #17): when the block holds every layer's base ``hook_z`` and
attention-module output (:attr:`Block.z_base`, :attr:`Block.attn_base`) and a target patches only
head outputs at its start layer L (:func:`takes_shortcut`), layer L's attention is not run for it
(:func:`head_shortcut`): a patched (row, position) entry gets the corrupted attention output plus
``(z_source - z_base) @ W_O`` of its patched heads and goes through the rest of block L alone; every
other entry leaves layer L as in the corrupted run. Its rows join the chunk's forward at layer L + 1.
Head values (``hook_v``) are mixed by the attention pattern and never take this path.

Rows join at their own layer: each target's rows enter the chunk's forward at the layer where
they first differ from the corrupted run (its start layer, or the one after it for the
shortcut), as the block's cached corrupted residual there; the batch grows layer by layer
(target-major, in order of entry), so targets of any start layers share one forward and no row
runs a layer before its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from patchbench.engine.masks import build_mask
from patchbench.engine.readout import AnswerIds, answer_values, index_tensor
from patchbench.engine.runs import Ablation
from patchbench.interventions.sites import SITES
from patchbench.lm import LM, KVCapture
from patchbench.prompts import PromptSet
from patchbench.sites import PatchTarget

__all__ = [
    "Block",
    "SanityError",
    "patched_logits",
    "sources",
    "suffix_start",
    "target_positions",
]


class SanityError(RuntimeError):
    """A sweep failed one of its sanity identities (or a patch did not fire): its results cannot be trusted."""


@dataclass
class Block:
    """A block of (prompt, sample) rows and everything cached for them (from the base run, unless named)."""

    index: int
    prompt: np.ndarray  # [R]
    sample: np.ndarray  # [R]
    resid: list[torch.Tensor] = field(default_factory=list)  # resid_pre per layer, [R, P, d]
    answer_pos: torch.Tensor | None = None
    answers: AnswerIds | None = None
    wrong: AnswerIds | None = None
    clean_logp: torch.Tensor | None = None  # [R, V] float64
    base_logits: torch.Tensor | None = None  # [R, V] the base run's
    corrupted_logits: torch.Tensor | None = None  # [R, V] the corrupted run's (the base run's for denoising)
    base_acts: dict[str, torch.Tensor] = field(default_factory=dict)  # the base run's, for the self-patch
    sources: dict[str, torch.Tensor] = field(
        default_factory=dict
    )  # the source run's when not cached (noising)
    kv: KVCapture | None = None  # the base run's keys and values (suffix reuse), or None
    # head-output shortcut (issue #17): the base run's hook_z [R, P, H, d_head] and attention
    # module output [R, P, d] per layer, and its final residual (resid_post of the last layer)
    z_base: dict[int, torch.Tensor] = field(default_factory=dict)
    attn_base: dict[int, torch.Tensor] = field(default_factory=dict)
    resid_final: torch.Tensor | None = None
    # an ablated base run (mean / zero, denoising): its masks and values per hook (Ablation.tensors)
    ablation: Ablation | None = None
    ablation_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    ablation_values: dict[str, torch.Tensor | float] = field(default_factory=dict)

    def resid_after(self, layer: int) -> torch.Tensor:
        """The base residual stream leaving block ``layer`` ([R, P, d])."""
        if layer + 1 < len(self.resid):
            return self.resid[layer + 1]
        assert self.resid_final is not None
        return self.resid_final

    def __len__(self) -> int:
        return len(self.prompt)

    def rows(self, idx: np.ndarray) -> Block:
        """The block of rows ``idx`` only: every per-row array and tensor (the first axis) indexed."""
        t = index_tensor(idx)

        def take(x):
            if isinstance(x, torch.Tensor):
                return x[t.to(x.device)]
            if isinstance(x, np.ndarray):
                return x[idx]
            if isinstance(x, list):
                return [take(v) for v in x]
            if isinstance(x, dict):
                return {k: take(v) for k, v in x.items()}
            if isinstance(x, AnswerIds):
                return AnswerIds(take(x.idx), take(x.mask))
            if isinstance(x, KVCapture):
                kv = KVCapture()
                kv.keys, kv.values = take(x.keys), take(x.values)
                return kv
            return x  # the block's index; None; an ablation; a scalar ablation value

        return Block(**{f.name: take(getattr(self, f.name)) for f in fields(self)})

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


def suffix_start(chunk: Sequence[PatchTarget], block: Block, prompts: PromptSet) -> int:
    """The first position any target of ``chunk`` patches in any row of ``block`` (0 when a target
    patches every position): positions before it are the corrupted run's in every layer."""
    first: int | None = None
    for t in chunk:
        for p in t.patches:
            if p.position == -1:
                return 0
            if isinstance(p.position, str):
                pos = int(np.min(prompts.named_position(p.position)[block.prompt]))
            else:
                pos = int(p.position)
            first = pos if first is None else min(first, pos)
    return max(0, first or 0)


def sources(
    clean: dict[str, torch.Tensor], names: Iterable[str], block: Block, dtype
) -> dict[str, torch.Tensor]:
    """The source activations of the block's rows at ``names``, on the block's device and in ``dtype``:
    from the clean cache (denoising: ``clean`` indexed by the rows' prompts), or the block's own
    :attr:`Block.sources` (noising: the corrupted run of these rows)."""
    dev = block.resid[0].device
    if block.sources:
        return {k: block.sources[k].to(device=dev, dtype=dtype) for k in names}
    idx = index_tensor(block.prompt)
    return {k: clean[k][idx.to(clean[k].device)].to(device=dev, dtype=dtype) for k in names}


def takes_shortcut(model: LM, target: PatchTarget, block: Block) -> bool:
    """Whether ``target`` takes the head-output shortcut at its start layer L: its site takes it
    (:attr:`patchbench.interventions.sites.Site.shortcut`: head outputs), and the block holds L's base
    ``hook_z`` and attention output."""
    start = target.start_layer
    if not SITES[target.site].shortcut or start not in block.attn_base or start not in block.z_base:
        return False
    z = SITES[target.site].hook_name(start)
    return all(p.hook == z for p in target.patches if p.layer == start)


def head_shortcut(
    model: LM,
    layer: int,
    block: Block,
    mask: torch.Tensor,
    src: torch.Tensor,
    p0: int,
    m: int,
) -> torch.Tensor:
    """The residual leaving block ``layer`` of ``m`` targets x the block's rows, on positions >= ``p0``,
    for head-output patches at ``layer`` (``mask`` [m, R, P', H, 1] of ``hook_z``, ``src`` [R, P', H,
    d_head] the source ``hook_z``), without running that layer's attention.

    Exact: the attention module's output is linear in ``z`` per head (``sum_h z_h @ W_O[h] + b_O``,
    :meth:`LM.head_shortcut`), so a patched row's output is the base one plus
    ``(z_source - z_base)_h @ W_O[h]`` over its patched heads, at its patched positions; every other
    (row, position) of the layer is the base run's (the layer's keys and values come from its
    unpatched input, and the rest of the block acts position by position). The rest of the block
    (norms, residual adds, MLP) runs on the patched (row, position) entries only, through the model's
    own block code (:meth:`LM.run_block_with_attention`)."""
    r = len(block)
    sel = mask[..., 0]  # [m, R, P', H]
    hit = sel.any(-1)  # [m, R, P']
    j, rr, pp = hit.nonzero(as_tuple=True)
    dense = bool(hit.all())  # every entry patched (all positions): no gathering
    if dense:
        out = None
    else:
        out = block.resid_after(layer)[:, p0:].unsqueeze(0).repeat(m, 1, 1, 1)  # [m, R, P', d], a copy
        if not len(j):
            return out.reshape(m * r, *out.shape[2:])
    z_base = block.z_base[layer][:, p0:]
    diff = src.to(z_base.dtype) - z_base  # [R, P', H, d_head]
    w_o = model.W_O(layer).to(z_base.dtype)  # [H, d_head, d]
    heads = sel[j, rr, pp]  # [N, H]
    delta = torch.zeros(len(j), w_o.shape[-1], dtype=z_base.dtype, device=z_base.device)
    for h in range(heads.shape[1]):
        k = heads[:, h].nonzero(as_tuple=True)[0]
        if len(k):
            delta.index_add_(0, k, diff[rr[k], pp[k], h] @ w_o[h])
    attn_base, pre = block.attn_base[layer][:, p0:], block.resid[layer][:, p0:]
    if dense:  # j, rr, pp enumerate every entry in order: delta is the whole [m, R, P', d] change
        attn = (attn_base.unsqueeze(0) + delta.view(m, r, -1, delta.shape[-1])).reshape(
            m * r, -1, delta.shape[-1]
        )
        x = pre.unsqueeze(0).expand(m, *pre.shape).reshape(m * r, *pre.shape[1:])
        return model.run_block_with_attention(layer, x, attn)
    assert out is not None
    attn = attn_base[rr, pp] + delta
    out[j, rr, pp] = model.run_block_with_attention(layer, pre[rr, pp][:, None], attn[:, None])[:, 0]
    return out.reshape(m * r, *out.shape[2:])


def patched_logits(
    model: LM,
    chunk: Sequence[PatchTarget],
    block: Block,
    srcs: dict[str, torch.Tensor],
    prompts: PromptSet,
    max_len: int,
) -> torch.Tensor:
    """One forward for ``len(chunk) x len(block)`` rows; ``srcs[hook]`` is [R, P, ...] per block row.

    Returns the answer-position logits, target-major in chunk order. Raises SanityError if a patch
    hook did not fire exactly once. Each target's rows join the forward at their own entry layer
    (the first patched layer, or the one after it for the head-output shortcut, :func:`takes_shortcut`)
    as the block's cached base residual stream there, so targets of different start layers share
    one forward with no row run through a layer before its own: the batch grows layer by layer, rows
    ordered by entry layer (target-major). With ``block.kv`` set, a chunk of position-specific targets
    runs its suffix only (see the module docstring).
    """
    m, r = len(chunk), len(block)
    dev = block.resid[0].device
    p0 = suffix_start(chunk, block, prompts) if block.kv is not None else 0
    short = [takes_shortcut(model, t, block) for t in chunk]
    entry = [t.start_layer + int(s) for t, s in zip(chunk, short, strict=True)]
    order = sorted(range(m), key=lambda j: (entry[j], short[j], j))  # the batch's targets, in order
    names = list(dict.fromkeys(h for t in chunk for h in t.hooks))
    layer_of = {p.hook: p.layer for t in chunk for p in t.patches}
    fired = dict.fromkeys(names, 0)
    masks: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        site = SITES[next(t.site for t in chunk if name in t.hooks)]
        mask = build_mask(site.n_heads(model.shape), chunk, name, prompts, block.prompt, max_len)
        if p0 > 0:
            ax = site.pos_axis + 1  # the mask's position axis (after the target axis)
            if bool(mask.narrow(ax, 0, p0).any()):  # suffix_start is wrong: never silently drop a patch
                raise SanityError(f"{name}: a patch before the suffix start {p0}")
            mask = mask.narrow(ax, p0, mask.shape[ax] - p0)
        masks[name] = mask.to(dev)
        layer = layer_of[name]
        users = [
            j for j in range(m) if name in chunk[j].hooks and not (short[j] and layer == chunk[j].start_layer)
        ]
        if not users:  # only shortcut targets patch here: head_shortcut applies it
            continue
        in_batch = [j for j in order if entry[j] <= layer]  # a prefix of ``order``
        assert set(users) <= set(in_batch), (name, users, in_batch)
        sel = masks[name][torch.as_tensor(in_batch, device=dev)]
        src = site.positions_from(srcs[name], p0).unsqueeze(0)
        k = len(in_batch)

        def fn(act: torch.Tensor, name: str, mask=sel, src=src, k=k) -> torch.Tensor:
            fired[name] += 1
            a = act.reshape(k, r, *act.shape[1:])
            return torch.where(mask, src, a).reshape(act.shape)

        hooks.append((name, fn))
    hooked = {name for name, _ in hooks}
    if block.ablation is not None:  # an ablated base run keeps its ablation, applied before the patch
        hooks = [*block.ablation.hooks(block.ablation_masks, block.ablation_values, p0), *hooks]
    n_layers = model.shape.n_layers
    entries = sorted(set(entry))
    prefix = block.kv.prefix(p0) if p0 > 0 and block.kv is not None else None
    resid: torch.Tensor | None = None
    batch: list[int] = []
    with model.hooks(hooks):
        for i, e in enumerate(entries):
            parts = [] if resid is None else [resid]
            plain = [j for j in order if entry[j] == e and not short[j]]
            if plain:
                parts.append(block.resid[e][:, p0:].repeat(len(plain), 1, 1))
            cut = [j for j in order if entry[j] == e and short[j]]
            if cut:
                z = next(p.hook for p in chunk[cut[0]].patches if p.layer == e - 1)
                pick = torch.as_tensor(cut, device=dev)
                parts.append(
                    head_shortcut(model, e - 1, block, masks[z][pick], srcs[z][:, p0:], p0, len(cut))
                )
                if z not in hooked:
                    fired[z] += 1
            batch += plain + cut
            resid = parts[0] if len(parts) == 1 else torch.cat(parts)
            stop = entries[i + 1] if i + 1 < len(entries) else n_layers
            if stop > e:
                past = None if prefix is None else prefix.repeat(len(batch))
                resid = model.run_blocks(resid, e, stop, past=past)
    assert resid is not None and batch == order
    silent = [k for k, v in fired.items() if v != 1]
    if silent:
        raise SanityError(f"patch hooks {silent} fired {[fired[k] for k in silent]} times instead of once")
    if order != sorted(order):  # back to chunk order
        inv = torch.as_tensor(np.argsort(order), device=dev)
        resid = resid.view(m, r, *resid.shape[1:])[inv].reshape(resid.shape)
    pos = block.answer_pos.repeat(m) if m > 1 else block.answer_pos
    if p0 == 0:
        return model.unembed_at(resid, pos)
    # causality: a row whose answer comes before the suffix is the base run
    before = pos < p0
    logits = model.unembed_at(resid, torch.where(before, 0, pos - p0))
    if bool(before.any()):
        assert block.base_logits is not None
        base = block.base_logits.repeat(m, 1) if m > 1 else block.base_logits
        logits = torch.where(before[:, None], base.to(logits.dtype), logits)
    return logits
