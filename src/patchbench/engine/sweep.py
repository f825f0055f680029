"""One exact patching sweep: every target of a SweepSpec on every prompt, as a raw frame.

The sweep runs in prompt blocks sized to the memory budget. For each block it runs the corrupted
forward once (:func:`prepare_block`, caching the residual stream entering every layer), then the
patched runs of each chunk of targets, each target's rows joining the forward at their own start
layer (:func:`patchbench.engine.patch.patched_logits`, prefix reuse and batching). The first block
also checks the two identities of :mod:`patchbench.engine.sanity`. Clean rows come from the clean
cache. With ``checkpoint_dir`` each finished piece is written (:mod:`patchbench.engine.checkpoint`)
and skipped on a rerun.

Causal suffix reuse (issue #17): on models whose interface supports key/value reuse
(``shape.kv_reuse``: every route of :mod:`patchbench.lm`), a sweep of position-specific targets (a named
position or each position) also keeps the corrupted run's keys and values per block, groups its
targets by position (waste-bounded, :func:`chunk_targets`), and runs each chunk's
patched rows on their suffix only (:func:`patchbench.engine.patch.patched_logits`). The path a
sweep took is logged and recorded in its plan (``plan['path']``: ``suffix`` or ``full``).

Head-output shortcut (issue #17): a head-output (``attn_head``) sweep on a model that passes
:meth:`patchbench.lm.LM.head_shortcut` also keeps every layer's corrupted ``hook_z`` and attention
output and its final residual per block, and skips each target's start layer's attention
(:func:`patchbench.engine.patch.head_shortcut`; its rows join the forward after that layer);
``plan['head_shortcut']`` says
whether it did.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from patchbench.corruption import corrupted_tokens, noise_scale, noise_tensor
from patchbench.engine import patch
from patchbench.engine.budget import block_bytes_per_row, patched_bytes_per_row, tokens_per_forward
from patchbench.engine.cache import ANSWER_LOGITS, RESID0, check_cache, clean_cache, clean_rows
from patchbench.engine.checkpoint import Checkpoint, sweep_fingerprint
from patchbench.engine.heap import keep_freed_memory
from patchbench.engine.patch import Block
from patchbench.engine.readout import AnswerIds, index_tensor
from patchbench.engine.sanity import check_identities as run_identities
from patchbench.engine.sanity import self_patch_targets
from patchbench.lm import LM, KVCapture
from patchbench.prompts import PromptSet
from patchbench.rawframe import RAW_COLUMNS, assemble_raw, baseline_rows, patched_rows, raw_metadata
from patchbench.sites import PatchTarget, SweepSpec, enumerate_targets, head_axis

__all__ = ["plan_chunks", "run_sweep", "suffix_path"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# the plan: prompt blocks and target chunks


def plan_batches(
    spec: SweepSpec,
    targets: list[PatchTarget],
    model: LM,
    n_rows: int,
    max_len: int,
    keys_values: bool = False,
    heads: bool = False,
) -> dict[str, int]:
    """Rows per prompt block and targets per chunk that fit the memory budget (deterministic).

    ``keys_values``: the block also keeps the corrupted run's keys and values (suffix reuse).
    ``heads``: it also keeps every layer's corrupted head outputs and attention output, and the final
    residual (head-output shortcut).
    """
    budget = spec.memory_budget_mb * 2**20
    cache_row = block_bytes_per_row(model.shape, max_len, keys_values, heads)
    per_row = patched_bytes_per_row(model.shape, max_len)
    rows_block = int(max(1, min(n_rows, (budget // 4) // (cache_row + per_row))))
    per_chunk = int(max(1, (budget - rows_block * cache_row) // (rows_block * per_row)))
    return {"rows_per_block": rows_block, "targets_per_chunk": per_chunk}


#: Suffix reuse groups targets of different positions into one forward while its cost (each target's
#: layers x the positions the chunk runs) stays within this factor of the targets' own costs: fewer,
#: larger forwards, with bounded waste.
SUFFIX_WASTE = 1.5


def chunk_targets(
    targets: list[PatchTarget],
    per_chunk: int,
    by_position: bool = False,
    max_len: int = 0,
    n_layers: int = 0,
    rows: int = 1,
    max_tokens: int | None = None,
    first: Mapping[str, int] | None = None,
) -> list[list[PatchTarget]]:
    """The targets in chunks of at most ``per_chunk``, each chunk ordered by start layer.

    Rows join a chunk's forward at their own start layer (:func:`patchbench.engine.patch.patched_logits`),
    so targets of any start layers share a chunk at no extra cost. A chunk's forward holds at most
    ``max_tokens`` token rows (:func:`patchbench.engine.budget.tokens_per_forward`): ``rows`` per
    target times the positions it runs, a named position's from ``first[name]``, its earliest in
    any prompt. Without ``by_position``: consecutive targets. With it (suffix reuse; ``max_len`` the prompts' padded length, ``n_layers`` the model's),
    targets are ordered by position, latest first; a chunk holds one named position or only absolute
    ones, and runs positions from its earliest one, at a cost within :data:`SUFFIX_WASTE` times what
    its targets would cost one by one. Every target of a chunk is patched exactly as on its own: rows
    are the corrupted run up to their own first patched layer and position.
    """
    by_layer = lambda c: sorted(c, key=lambda t: t.start_layer)  # noqa: E731 (stable)
    if not by_position:
        size = per_chunk if max_tokens is None else max(1, min(per_chunk, max_tokens // (rows * max_len)))
        return [by_layer(targets[i : i + size]) for i in range(0, len(targets), size)]

    def order(t: PatchTarget) -> tuple:
        if isinstance(t.position, str):
            return (1, t.position, 0)
        return (0, "", -t.position)

    def positions(t: PatchTarget) -> int:  # the positions t runs on its own
        if isinstance(t.position, str):
            return max_len - (first or {}).get(t.position, 0)
        return max_len - t.position

    out: list[list[PatchTarget]] = []
    own = layers = most = 0  # the current chunk's own cost, summed layers and most positions
    for t in sorted(targets, key=order):
        n, p = n_layers - t.start_layer, positions(t)
        c = out[-1] if out else None
        fits = c is not None and len(c) < per_chunk
        if fits:
            assert c is not None
            named = isinstance(t.position, str)
            if named or isinstance(c[0].position, str):
                fits = named and c[0].position == t.position
            if fits and max_tokens is not None:
                fits = (len(c) + 1) * rows * max(p, most) <= max_tokens
            if fits:
                fits = (layers + n) * max(p, most) <= SUFFIX_WASTE * (own + n * p)
        if fits:
            assert c is not None
            c.append(t)
            most = max(p, most)
        else:
            out.append([t])
            own = layers = 0
            most = p
        own += n * p
        layers += n
    return [by_layer(c) for c in out]


def suffix_path(model: LM, spec: SweepSpec, suffix_reuse: bool | None = None) -> bool:
    """Whether a sweep runs its patched rows on their suffix only: position-specific targets, on a
    model with key/value reuse; ``suffix_reuse=False`` forces the full recompute (``True`` on a model
    without key/value reuse raises)."""
    if suffix_reuse is False or spec.position == "all":
        return False
    if not model.shape.kv_reuse:
        if suffix_reuse:
            raise ValueError(
                f"suffix_reuse=True, but {model.shape.architecture} ({model.shape.route} route) has no "
                "key/value reuse (LMShape.kv_reuse is False)"
            )
        return False
    return True


@dataclass(frozen=True)
class _Setup:
    """What every block of one sweep shares."""

    prompts: PromptSet
    spec: SweepSpec
    tokens: torch.Tensor  # the corrupted run's ids
    max_len: int
    targets: list[PatchTarget]
    chunks: list[list[PatchTarget]]
    clean: dict[str, torch.Tensor]
    std: float  # GN noise std (0 for STR)
    row_prompt: np.ndarray  # every (prompt, sample) row of the sweep
    row_sample: np.ndarray
    suffix: bool = False  # causal suffix reuse (see the module docstring)
    heads: bool = False  # head-output shortcut (see the module docstring)


# ---------------------------------------------------------------------------------------------
# one block of rows


def prepare_block(model: LM, s: _Setup, index: int, rows: slice, capture: list[str]) -> Block:
    """Run the corrupted forward for a block of rows and cache what its patched runs need."""
    dev = model.shape.device
    prompt_rows, sample_rows = s.row_prompt[rows], s.row_sample[rows]
    b = Block(index=index, prompt=prompt_rows, sample=sample_rows)
    tok = s.tokens[index_tensor(prompt_rows)].to(dev)
    noise = None
    if s.spec.corruption == "gn":
        noise = noise_tensor(
            s.prompts, prompt_rows, sample_rows, model.shape.d_model, s.std, s.spec.noise.seed, s.max_len,
            dtype=model.shape.dtype,
        )  # fmt: skip
    store: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, name: str) -> None:
        store[name] = act.detach().clone()

    kv = KVCapture() if s.suffix else None
    layers = sorted({t.start_layer for t in s.targets}) if s.heads else []
    short = {model.hook_name("attn_head", i): i for i in layers}
    short_out = {model.hook_name("attn_out", i): i for i in layers}
    names = list(dict.fromkeys([*capture, *short, *short_out]))
    with model.hooks([(k, grab) for k in names]):
        keep: list[torch.Tensor] = []
        resid = model.run_blocks(model.embed(tok, noise), 0, keep=keep, capture=kv)
    b.resid = keep
    b.kv = kv
    b.z_corr = {i: store[k] for k, i in short.items()}
    b.attn_corr = {i: store.pop(k) for k, i in short_out.items()}
    b.resid_final = resid if s.heads else None
    b.corrupted_acts = {k: store[k] for k in capture}
    b.answer_pos = index_tensor(s.prompts.answer_pos[prompt_rows], dev)
    b.corrupted_logits = model.unembed_at(resid, b.answer_pos)
    b.answers = AnswerIds.of(s.prompts.answers, prompt_rows, dev)
    b.wrong = AnswerIds.of(s.prompts.wrong, prompt_rows, dev)
    cl = s.clean[ANSWER_LOGITS]
    b.clean_logp = torch.log_softmax(cl[index_tensor(prompt_rows, cl.device)].to(dev).double(), dim=-1)
    return b


def _chunk_rows(model: LM, s: _Setup, chunk: list[PatchTarget], block: Block, srcs: dict) -> pd.DataFrame:
    """The patched rows of one chunk of targets on one block."""
    hooks = list(dict.fromkeys(h for t in chunk for h in t.hooks))
    logits = patch.patched_logits(model, chunk, block, {h: srcs[h] for h in hooks}, s.prompts, s.max_len)
    vals = block.values(logits, len(chunk))
    per_target = {k: v.reshape(len(chunk), len(block)) for k, v in vals.items()}
    positions = patch.target_positions(chunk, s.prompts, block.prompt)
    return patched_rows(chunk, block.prompt, block.sample, per_target, positions)


# ---------------------------------------------------------------------------------------------
# the sweep


def _setup(model: LM, prompts: PromptSet, spec: SweepSpec, clean: dict | None) -> tuple[_Setup, float | None]:
    prompts.validate(model.shape.d_vocab)
    tokens = corrupted_tokens(prompts, spec.corruption)
    max_len = tokens.shape[1]
    targets = enumerate_targets(spec, model.shape.n_layers, model.site_heads(spec.site), max_len)
    if spec.position not in ("all", "each"):
        prompts.named_position(spec.position)  # raises naming the problem before any compute
    names = [*dict.fromkeys(h for t in targets for h in t.hooks), RESID0]
    if clean is None:
        clean = clean_cache(model, prompts, names, memory_budget_mb=spec.memory_budget_mb)
    check_cache(clean, prompts, names)
    sigma, std = noise_scale(model, prompts, spec.corruption, spec.noise)
    k = spec.n_samples
    s = _Setup(
        prompts=prompts,
        spec=spec,
        tokens=tokens,
        max_len=max_len,
        targets=targets,
        chunks=[],
        clean=clean,
        std=std,
        row_prompt=np.repeat(np.arange(len(prompts), dtype=np.int64), k),
        row_sample=np.tile(np.arange(k, dtype=np.int64), len(prompts)),
    )
    return s, sigma


def plan_chunks(
    model: LM,
    prompts: PromptSet,
    spec: SweepSpec,
    targets: list[PatchTarget],
    n_rows: int,
    max_len: int,
    suffix: bool,
    heads: bool,
) -> tuple[list[list[PatchTarget]], dict[str, Any]]:
    """The batching plan of a sweep (whole prompts per block) and its target chunks, from the model's
    shape alone: what :func:`run_sweep` runs, and what :mod:`patchbench.cost` counts before a run.
    ``n_rows`` counts (prompt, sample) rows; ``suffix`` and ``heads`` are the paths the sweep takes
    (:func:`suffix_path`, the head-output shortcut)."""
    k = spec.n_samples
    plan: dict[str, Any] = dict(
        plan_batches(spec, targets, model, n_rows, max_len, keys_values=suffix, heads=heads)
    )
    plan["rows_per_block"] = max(k, plan["rows_per_block"] - plan["rows_per_block"] % k)
    plan["path"] = "suffix" if suffix else "full"
    plan["tokens_per_forward"] = tokens_per_forward(model.shape)
    if spec.site == "attn_head":
        plan["head_shortcut"] = heads
    pos = spec.position
    first = {} if pos in ("all", "each") else {pos: int(np.min(prompts.named_position(pos)))}
    chunks = chunk_targets(
        targets,
        plan["targets_per_chunk"],
        suffix,
        max_len,
        model.shape.n_layers,
        rows=plan["rows_per_block"],
        max_tokens=plan["tokens_per_forward"],
        first=first,
    )
    return chunks, plan


def _plan(model: LM, s: _Setup) -> tuple[_Setup, dict[str, Any]]:
    """The batching plan and the setup with its target chunks (:func:`plan_chunks`)."""
    chunks, plan = plan_chunks(
        model, s.prompts, s.spec, s.targets, len(s.row_prompt), s.max_len, s.suffix, s.heads
    )
    return replace(s, chunks=chunks), plan


def _patched_parts(
    model: LM, s: _Setup, bi: int, block: Block | None, done: list, ckpt, bar
) -> tuple[list, int]:
    """The patched rows of every target chunk on block ``bi`` (finished chunks from ``done``), and how
    many chunks were computed. Clean sources are kept only while a later chunk still needs them."""
    parts, computed = [], 0
    src_cache: dict[str, torch.Tensor] = {}
    for ci, chunk in enumerate(s.chunks):
        df = done[ci]
        if df is None:
            hooks = list(dict.fromkeys(h for t in chunk for h in t.hooks))
            missing = [h for h in hooks if h not in src_cache]
            src_cache.update(patch.sources(s.clean, missing, block, model.shape.dtype))
            df = _chunk_rows(model, s, chunk, block, src_cache)
            if ckpt:
                ckpt.save(df, ckpt.chunk_path(bi, ci))
            computed += 1
            keep = {h for c in s.chunks[ci + 1 :] for t in c for h in t.hooks}
            for h in [h for h in src_cache if h not in keep]:
                del src_cache[h]
        parts.append(df)
        bar.update(1)
    return parts, computed


def run_sweep(
    model: LM,
    prompts: PromptSet,
    spec: SweepSpec,
    clean: dict[str, torch.Tensor] | None = None,
    *,
    name: str | None = None,
    progress: bool = True,
    logger: logging.Logger | None = None,
    checkpoint_dir: str | Path | None = None,
    check_identities: bool = True,
    suffix_reuse: bool | None = None,
    head_shortcut: bool | None = None,
) -> pd.DataFrame:
    """Run one sweep; returns the raw frame of :mod:`patchbench.rawframe` (metadata in ``.attrs['patchbench']``).

    ``clean`` is a cache from :func:`patchbench.engine.cache.clean_cache` (computed here when None);
    ``name`` is the model's name in the frame's metadata (default ``model.name``). A head sweep's
    metadata (``head_axis``) and log say whether its heads are query or key-value heads
    (:func:`patchbench.sites.head_axis`). ``check_identities=False`` skips the sanity identities
    (config ``engine.check_identities``). The metadata holds the sweep's
    :func:`~patchbench.engine.checkpoint.sweep_fingerprint` and nothing that depends on how the run
    went (how many chunks came from a checkpoint is logged, and kept in ``attrs['patchbench_run']``),
    so a resumed sweep writes the same bytes as an uninterrupted one.

    ``suffix_reuse``: None (default) runs position-specific targets on their suffix only where the
    model supports key/value reuse (:func:`suffix_path`); False forces the full recompute. The path
    taken is logged and recorded as ``plan['path']`` (``suffix`` or ``full``).

    ``head_shortcut``: None (default) runs a head-output (``attn_head``) sweep's patched layer without
    its attention where the model allows it exactly (:meth:`patchbench.lm.LM.head_shortcut`;
    :func:`patchbench.engine.patch.head_shortcut`); False recomputes the patched layer in full. An
    ``attn_head`` sweep's plan records ``head_shortcut`` (taken or not).
    """
    log_ = logger or log
    keep_freed_memory()
    s, sigma = _setup(model, prompts, spec, clean)
    s = replace(s, suffix=suffix_path(model, spec, suffix_reuse))
    if spec.site == "attn_head" and head_shortcut is not False:
        ok = model.head_shortcut()
        if head_shortcut and not ok:
            raise ValueError(
                f"head_shortcut=True, but {model.shape.architecture} ({model.shape.route} route) fails the "
                "head-output shortcut's check (LM.head_shortcut)"
            )
        if not ok:
            log_.info(
                "head-output shortcut unavailable on %s (%s route): the patched layer is recomputed in full",
                model.shape.architecture,
                model.shape.route,
            )
        s = replace(s, heads=ok)
    if spec.corruption == "gn":
        log_.info(
            "GN: sigma %.6g, nu %g -> noise std %.6g, %d sample(s)",
            sigma,
            spec.noise.nu,
            s.std,
            spec.n_samples,
        )
    axis = head_axis(spec.site, model.shape, log_)
    s, plan = _plan(model, s)
    rows_block = plan["rows_per_block"]
    n_rows = len(s.row_prompt)
    n_blocks = math.ceil(n_rows / rows_block)
    log_.info(
        "sweep %s/%s: %d targets x %d prompts x %d sample(s); %d block(s) of %d rows, %d chunk(s)/block; "
        "path %s",
        *(
            prompts.task,
            spec.label,
            len(s.targets),
            len(prompts),
            spec.n_samples,
            n_blocks,
            rows_block,
            len(s.chunks),
            plan["path"],
        ),
    )
    if plan["path"] == "full" and spec.position != "all":
        log_.info(
            "full recompute for position-specific targets: %s",
            "suffix reuse switched off"
            if suffix_reuse is False
            else f"{model.shape.route} route has no key/value reuse",
        )
    fingerprint = sweep_fingerprint(model, prompts, spec, sigma, plan)
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Checkpoint(checkpoint_dir, fingerprint, spec, plan, logger=log_)
    if not check_identities:
        log_.warning("sanity identities skipped (engine.check_identities is false)")

    parts: list[pd.DataFrame] = []
    sanity: dict[str, Any] = {"skipped": True}
    computed = 0
    columns = list(RAW_COLUMNS)
    bar = tqdm(total=n_blocks * len(s.chunks), desc=f"{spec.site} sweep", disable=not progress, unit="chunk")
    with torch.no_grad():
        for bi in range(n_blocks):
            rows = slice(bi * rows_block, min(n_rows, (bi + 1) * rows_block))
            size = rows.stop - rows.start
            done: list[pd.DataFrame | None] = [None] * len(s.chunks)
            base = None
            if ckpt:
                done = [
                    ckpt.load(ckpt.chunk_path(bi, ci), len(c) * size, columns)
                    for ci, c in enumerate(s.chunks)
                ]
                base = ckpt.load(ckpt.base_path(bi), size, columns)
            block = None
            checks = check_identities and bi == 0
            if checks or base is None or any(d is None for d in done):
                capture = [h for t in self_patch_targets(s.targets) for h in t.hooks] if checks else []
                block = prepare_block(model, s, bi, rows, capture)
                if checks:
                    sanity = run_identities(model, prompts, spec, s.targets, block, s.clean, s.max_len, log_)
                    block.corrupted_acts = {}
            if base is None:
                values = block.values(block.corrupted_logits)
                base = baseline_rows("corrupted", spec.site, spec.window, block.prompt, block.sample, values)
                if ckpt:
                    ckpt.save(base, ckpt.base_path(bi))
            patched, n = _patched_parts(model, s, bi, block, done, ckpt, bar)
            parts += [base, *patched]
            computed += n
            del block
    bar.close()

    facts = dict(plan=plan, sanity=sanity, head_axis=axis, fingerprint=fingerprint)
    meta = raw_metadata(name or model.name, prompts, spec, "exact", s.targets, sigma, s.std, **facts)
    raw = assemble_raw([clean_rows(s.clean, prompts, spec, model.shape.device), *parts], meta)
    raw.attrs["patchbench_run"] = {"chunks_computed": computed, "chunks": n_blocks * len(s.chunks)}
    log_.info("sweep done: %d rows, %d of %d chunk(s) computed", len(raw), computed, n_blocks * len(s.chunks))
    return raw
