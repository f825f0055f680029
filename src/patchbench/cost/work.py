"""The work a sweep does, counted from the engine's own plan before anything runs.

:func:`sweep_work` asks the engine for the sweep's plan (:func:`patchbench.engine.sweep.plan_chunks`:
prompt blocks and target chunks; :func:`~patchbench.engine.sweep.suffix_path`;
:func:`~patchbench.engine.patch.suffix_start` and :func:`~patchbench.engine.patch.takes_shortcut`
per chunk; the sanity identities' rows and targets from :mod:`patchbench.engine.sanity`) and
counts what each forward of that plan runs:

* the corrupted run of every block (every layer, every position, unembedding at the answer position);
* the sanity identities on the first block (one row per answer position: the self-patch of
  :func:`~patchbench.engine.sanity.self_patch_targets`, the clean layer-0 patch from the first
  position where clean and corrupted inputs differ);
* every chunk's patched forward: each target's rows from their entry layer (prefix reuse) on the
  chunk's suffix (causal suffix reuse: ``max_len - suffix_start`` query positions attending to all
  ``max_len`` keys), a head-output target's own layer as the shortcut runs it (the patched heads'
  ``(z_clean - z_corr) @ W_O`` and the rest of the block on its patched (row, position) entries
  only), one unembedding per row at its answer position.

What counts as a FLOP (:attr:`Work.flops`): twice the multiply-adds of the dense products, as
:class:`torch.utils.flop_counter.FlopCounterMode` counts them (``mm``, ``addmm``, ``bmm``,
``baddbmm``, scaled-dot-product attention): per row and layer, ``2 q d (H + 2 H_kv) d_head`` for
the query / key / value projections, ``4 H q k d_head`` for the attention scores and their
weighted sum (the whole ``q x k`` rectangle the engine computes, not only its causal half),
``2 q H d_head d`` for the output projection and ``4 q d d_mlp`` (``6`` for gated MLPs) for the
MLP; ``2 d V`` per unembedded row. Norms, activations, masks, softmax and the patch's
``torch.where`` are not FLOPs: they are the elementwise share, counted as :attr:`Work.tokens`
(token rows through a layer, and attention-score elements), with the per-call overhead (:attr:`Work.calls`) and the read-out
over the vocabulary (:attr:`Work.readout`); :mod:`patchbench.cost.device` turns the counts into
seconds. The clean cache is its own job (:func:`forward_work`), not part of a sweep.

``model`` is a loaded :class:`patchbench.lm.LM` or a :class:`PlannedModel` (a shape read from a
config, :mod:`patchbench.cost.shapes`): the plan functions read only the shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from patchbench.corruption import corrupted_tokens
from patchbench.engine.budget import block_bytes_per_row, patched_bytes_per_row, rows_per_forward
from patchbench.engine.cache import RESID0
from patchbench.engine.patch import Block, suffix_start, takes_shortcut
from patchbench.engine.sanity import identity_rows, self_patch_targets
from patchbench.engine.sweep import plan_chunks, suffix_path
from patchbench.lm import LM, LMShape
from patchbench.prompts import PromptSet
from patchbench.sites import HookPatch, PatchTarget, SweepSpec, enumerate_targets

__all__ = ["PlannedModel", "SweepWork", "Work", "forward_work", "layer_flops", "sweep_work"]


@dataclass(frozen=True)
class Work:
    """Counts of what some engine work runs (see the module docstring for each unit)."""

    flops: float = 0.0  # dense-product FLOPs (FlopCounterMode's count)
    tokens: float = 0.0  # token rows x layers run through a block (the elementwise share)
    scores: float = 0.0  # attention-score elements (tokens x layers x heads x keys): the rest of it
    calls: int = 0  # block calls: one layer on one batch (the per-call overhead)
    readout: float = 0.0  # answer-position rows read out over the vocabulary (log-softmax, KL)
    rows: int = 0  # raw-frame rows built
    sweeps: int = 0  # sweeps run (each a fixed set-up and finish)

    def __add__(self, other: Work) -> Work:
        return Work(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, k: float) -> Work:
        return Work(*(type(getattr(self, f.name))(getattr(self, f.name) * k) for f in fields(self)))


@dataclass
class PlannedModel:
    """A model known by its shape alone (no weights): what the engine's plan functions read of a model.

    ``gated_mlp``: the MLP has a gate projection (three matrices). ``shortcut``: whether the model
    would pass :meth:`patchbench.lm.LM.head_shortcut` (measured at load on a real model; every route
    and test family passes it, so an estimate assumes it).
    """

    shape: LMShape
    gated_mlp: bool = False
    shortcut: bool = True
    name: str = ""

    site_heads = LM.site_heads
    hook_name = LM.hook_name

    def head_shortcut(self) -> bool:
        return self.shortcut


def _gated(model: Any) -> bool:
    if isinstance(model, PlannedModel):
        return model.gated_mlp
    return bool(getattr(model.bridge.cfg, "gated_mlp", False))


def layer_flops(shape: LMShape, q: int, k: int, gated: bool = False) -> float:
    """Dense FLOPs of one row through one layer: ``q`` query positions attending to ``k`` keys."""
    s = shape
    qkv = 2 * q * s.d_model * (s.n_heads + 2 * s.n_kv_heads) * s.d_head
    attn = 4 * s.n_heads * q * k * s.d_head
    out = 2 * q * s.n_heads * s.d_head * s.d_model
    return float(qkv + attn + out + mlp_flops(shape, q, gated))


def mlp_flops(shape: LMShape, n: int, gated: bool = False) -> float:
    """Dense FLOPs of the MLP on ``n`` token rows."""
    return float((6 if gated else 4) * n * shape.d_model * shape.d_mlp)


def unembed_flops(shape: LMShape, rows: int) -> float:
    return float(2 * rows * shape.d_model * shape.d_vocab)


def forward_work(
    model: Any, rows: int, q: int, k: int | None = None, start: int = 0, unembed: int = 0
) -> Work:
    """A forward of ``rows`` rows through layers ``start..`` on ``q`` positions (``k`` keys, default
    ``q``), in one batch, and ``unembed`` rows unembedded at one position each."""
    s = model.shape
    n = s.n_layers - start
    k = q if k is None else k
    return Work(
        flops=rows * n * layer_flops(s, q, k, _gated(model)) + unembed_flops(s, unembed),
        tokens=rows * n * q,
        scores=rows * n * q * k * s.n_heads,
        calls=n if rows else 0,
        readout=unembed,
    )


@dataclass(frozen=True)
class SweepWork:
    """The counted work of one sweep, and the plan it was counted from."""

    work: Work
    plan: dict[str, Any]
    n_rows: int  # (prompt, sample) rows
    max_len: int
    n_targets: int
    blocks: int
    chunks: int  # per block
    memory: dict[str, int] = field(default_factory=dict)  # bytes: block cache, largest forward


def _first_difference(prompts: PromptSet, spec: SweepSpec, rows: np.ndarray, tokens: torch.Tensor) -> int:
    """The first position where any of ``rows``' clean layer-0 input differs from the corrupted one
    (:func:`patchbench.engine.sanity.clean_from`, from the inputs rather than the residuals): STR's
    first replaced token, GN's first noised position; 0 when none differs."""
    if spec.corruption == "gn":
        firsts = [min(prompts.noise_positions[int(r)], default=tokens.shape[1]) for r in rows]
        first = min(firsts)
    else:
        clean = prompts.tokens("clean")[torch.as_tensor(rows)]
        diff = (clean != tokens[torch.as_tensor(rows)]).any(0)
        first = int(diff.long().argmax()) if bool(diff.any()) else tokens.shape[1]
    return 0 if first >= tokens.shape[1] else int(first)


def _block(prompt: np.ndarray, prompts: PromptSet, layers: Sequence[int]) -> Block:
    """A block as :func:`patchbench.engine.sweep.prepare_block` leaves it, with only what the plan
    functions read: its prompts, answer positions and, for the head-output shortcut, the layers whose
    corrupted head outputs it keeps (empty tensors: nothing is computed)."""
    empty = {i: torch.empty(0) for i in layers}
    return Block(
        index=0,
        prompt=prompt,
        sample=np.zeros(len(prompt), dtype=np.int64),
        answer_pos=torch.as_tensor(prompts.answer_pos[prompt]),
        z_corr=dict(empty),
        attn_corr=dict(empty),
    )


def chunk_work(
    model: Any, chunk: Sequence[PatchTarget], block: Block, prompts: PromptSet, max_len: int, suffix: bool
) -> tuple[Work, int]:
    """One patched forward of ``chunk`` on ``block`` (:func:`patchbench.engine.patch.patched_logits`),
    and the token rows of its widest batch."""
    s = model.shape
    r = len(block)
    p0 = suffix_start(chunk, block, prompts) if suffix else 0
    q = max_len - p0
    gated = _gated(model)
    per_layer = layer_flops(s, q, max_len, gated)
    flops = tokens = scores = 0.0
    entries: set[int] = set()
    for t in chunk:
        short = takes_shortcut(model, t, block)
        entry = t.start_layer + int(short)
        entries.add(entry)
        n = s.n_layers - entry
        flops += r * n * per_layer
        tokens += r * n * q
        scores += r * n * q * max_len * s.n_heads
        if short:  # the start layer without attention, on the patched (row, position) entries
            for p in t.patches:
                if p.layer != t.start_layer:
                    continue
                hits = r * (q if p.position == -1 else 1)
                heads = s.n_heads if p.heads is None else len(p.heads)
                flops += hits * (2 * heads * s.d_head * s.d_model) + mlp_flops(s, hits, gated)
                tokens += hits
    m = len(chunk)
    flops += unembed_flops(s, m * r)
    calls = s.n_layers - min(entries) if min(entries) < s.n_layers else 0
    work = Work(flops=flops, tokens=tokens, scores=scores, calls=calls, readout=m * r, rows=m * r)
    return work, m * r * q


def _identities(
    model: Any,
    prompts: PromptSet,
    spec: SweepSpec,
    targets: list[PatchTarget],
    block: Block,
    tokens: torch.Tensor,
    max_len: int,
    suffix: bool,
) -> Work:
    """The sanity identities of :mod:`patchbench.engine.sanity` on ``block`` (the first)."""
    rows = identity_rows(block)
    sub = Block(
        index=block.index,
        prompt=block.prompt[rows],
        sample=block.sample[rows],
        answer_pos=block.answer_pos[torch.as_tensor(rows)],
        z_corr=block.z_corr,
        attn_corr=block.attn_corr,
    )
    work = Work()
    for t in self_patch_targets(targets):
        work += chunk_work(model, [t], sub, prompts, max_len, suffix)[0]
    first = _first_difference(prompts, spec, sub.prompt, tokens) if suffix else 0
    patches = (
        tuple(HookPatch(RESID0, 0, None, p) for p in range(first, max_len))
        if first > 0
        else (HookPatch(RESID0, 0, None, -1),)
    )
    t0 = PatchTarget(
        id=-2, site="resid_pre", layer=0, layers=(0, 1), head=-1, position=-1, window=1, patches=patches,
        component="0",
    )  # fmt: skip
    work += chunk_work(model, [t0], sub, prompts, max_len, suffix)[0]
    return dataclasses.replace(work, rows=0)


def sweep_work(
    model: Any,
    prompts: PromptSet,
    spec: SweepSpec,
    *,
    check_identities: bool = True,
    suffix_reuse: bool | None = None,
    head_shortcut: bool | None = None,
) -> SweepWork:
    """The work :func:`patchbench.engine.sweep.run_sweep` does for ``spec`` on ``prompts`` (same
    arguments), counted from the engine's plan without running the model (see the module docstring)."""
    s = model.shape
    tokens = corrupted_tokens(prompts, spec.corruption)
    max_len = int(tokens.shape[1])
    targets = enumerate_targets(spec, s.n_layers, model.site_heads(spec.site), max_len)
    suffix = suffix_path(model, spec, suffix_reuse)
    heads = spec.site == "attn_head" and head_shortcut is not False and model.head_shortcut()
    k = spec.n_samples
    row_prompt = np.repeat(np.arange(len(prompts), dtype=np.int64), k)
    n_rows = len(row_prompt)
    chunks, plan = plan_chunks(model, prompts, spec, targets, n_rows, max_len, suffix, heads)
    rows_block = plan["rows_per_block"]
    layers = sorted({t.start_layer for t in targets}) if heads else []
    n_blocks = math.ceil(n_rows / rows_block)
    work = Work(rows=len(prompts) * k, sweeps=1)  # the clean rows
    widest = 0
    for bi in range(n_blocks):
        block = _block(row_prompt[bi * rows_block : (bi + 1) * rows_block], prompts, layers)
        r = len(block)
        work += forward_work(model, r, max_len, unembed=r) + Work(rows=r)  # the corrupted run
        if check_identities and bi == 0:
            work += _identities(model, prompts, spec, targets, block, tokens, max_len, suffix)
        for chunk in chunks:
            w, n_tok = chunk_work(model, chunk, block, prompts, max_len, suffix)
            work += w
            widest = max(widest, n_tok)
    memory = {
        "block": rows_block * block_bytes_per_row(s, max_len, suffix, heads),
        "forward": widest * patched_bytes_per_row(s, max_len) // max(1, max_len),
    }
    return SweepWork(work, plan, n_rows, max_len, len(targets), n_blocks, len(chunks), memory)


def clean_cache_work(model: Any, prompts: PromptSet, memory_budget_mb: int) -> Work:
    """The clean cache's forwards (:func:`patchbench.engine.cache.clean_cache`)."""
    max_len = int(prompts.tokens("clean").shape[1])
    step = rows_per_forward(model.shape, max_len, memory_budget_mb)
    work = Work()
    for a in range(0, len(prompts), step):
        r = min(step, len(prompts) - a)
        work += forward_work(model, r, max_len, unembed=r)
    return work


def filter_work(model: Any, prompts: PromptSet, batch_size: int = 64) -> Work:
    """The correctness filter's forwards (:func:`patchbench.filtering.answer_logits`): batches of
    ``batch_size`` prompts, each as long as its longest prompt."""
    work = Work()
    for a in range(0, len(prompts), batch_size):
        idx = np.arange(a, min(a + batch_size, len(prompts)))
        length = int(prompts.lengths[idx].max())
        work += forward_work(model, len(idx), length, unembed=len(idx))
    return work
