"""One exact patching sweep: every target of a SweepSpec on every prompt, as a raw frame.

The sweep runs in prompt blocks sized to the memory budget. For each block it runs the corrupted
forward once (:func:`prepare_block`, caching the residual stream entering every layer), then the
patched runs of each chunk of targets that share a start layer
(:func:`patchbench.engine.patch.patched_logits`, prefix reuse and batching). The first block also
checks the two identities of :mod:`patchbench.engine.sanity`. Clean rows come from the clean
cache. With ``checkpoint_dir`` each finished piece is written (:mod:`patchbench.engine.checkpoint`)
and skipped on a rerun.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from patchbench.corruption import corrupted_tokens, noise_scale, noise_tensor
from patchbench.engine import patch
from patchbench.engine.cache import ANSWER_LOGITS, RESID0, check_cache, clean_cache, clean_rows
from patchbench.engine.checkpoint import Checkpoint, sweep_fingerprint
from patchbench.engine.forward import (
    bytes_per_row,
    embed_input,
    hooked,
    model_name,
    run_blocks,
    site_heads,
    unembed_at,
)
from patchbench.engine.patch import Block
from patchbench.engine.readout import AnswerIds, index_tensor
from patchbench.engine.sanity import check_identities, self_patch_targets
from patchbench.prompts import PromptSet
from patchbench.rawframe import assemble_raw, baseline_rows, patched_rows, raw_metadata
from patchbench.sites import PatchTarget, SweepSpec, enumerate_targets

__all__ = ["run_sweep"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# the plan: prompt blocks and target chunks


def plan_batches(
    spec: SweepSpec, targets: list[PatchTarget], model, n_rows: int, max_len: int
) -> dict[str, int]:
    """Rows per prompt block and targets per chunk that fit the memory budget (deterministic)."""
    cfg = model.cfg
    e = torch.tensor([], dtype=cfg.dtype).element_size()
    budget = spec.memory_budget_mb * 2**20
    cache_row = cfg.n_layers * max_len * cfg.d_model * e
    per_row = bytes_per_row(
        model, max_len, n_hook_elems=2 * max_len * max(cfg.d_model, cfg.n_heads * cfg.d_head)
    )
    rows_block = int(max(1, min(n_rows, (budget // 4) // (cache_row + per_row))))
    per_chunk = int(max(1, (budget - rows_block * cache_row) // (rows_block * per_row)))
    return {"rows_per_block": rows_block, "targets_per_chunk": per_chunk}


def chunk_targets(targets: list[PatchTarget], per_chunk: int) -> list[list[PatchTarget]]:
    """Consecutive targets, at most ``per_chunk`` per chunk, one start layer per chunk."""
    out: list[list[PatchTarget]] = []
    for t in targets:
        if out and len(out[-1]) < per_chunk and out[-1][0].start_layer == t.start_layer:
            out[-1].append(t)
        else:
            out.append([t])
    return out


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


# ---------------------------------------------------------------------------------------------
# one block of rows


def prepare_block(model, s: _Setup, index: int, rows: slice, capture: list[str]) -> Block:
    """Run the corrupted forward for a block of rows and cache what its patched runs need."""
    dev = model.cfg.device
    prompt_rows, sample_rows = s.row_prompt[rows], s.row_sample[rows]
    b = Block(index=index, prompt=prompt_rows, sample=sample_rows)
    tok = s.tokens[index_tensor(prompt_rows)].to(dev)
    noise = None
    if s.spec.corruption == "gn":
        noise = noise_tensor(
            s.prompts, prompt_rows, sample_rows, model.cfg.d_model, s.std, s.spec.noise.seed, s.max_len
        )
    store: dict[str, torch.Tensor] = {}

    def grab(act, hook):
        store[hook.name] = act.detach().clone()

    with hooked(model, [(k, grab) for k in capture]):
        resid, b.sf = embed_input(model, tok, noise)
        keep: list[torch.Tensor] = []
        resid = run_blocks(model, resid, 0, b.sf, keep)
    b.resid = keep
    b.corrupted_acts = store
    b.answer_pos = index_tensor(s.prompts.answer_pos[prompt_rows], dev)
    b.corrupted_logits = unembed_at(model, resid, b.answer_pos)
    b.answers = AnswerIds.of(s.prompts.answers, prompt_rows, dev)
    b.wrong = AnswerIds.of(s.prompts.wrong, prompt_rows, dev)
    cl = s.clean[ANSWER_LOGITS]
    b.clean_logp = torch.log_softmax(cl[index_tensor(prompt_rows, cl.device)].to(dev).double(), dim=-1)
    return b


def _chunk_rows(model, s: _Setup, chunk: list[PatchTarget], block: Block, srcs: dict) -> pd.DataFrame:
    """The patched rows of one chunk of targets on one block."""
    hooks = list(dict.fromkeys(h for t in chunk for h in t.hooks))
    logits = patch.patched_logits(model, chunk, block, {h: srcs[h] for h in hooks}, s.prompts, s.max_len)
    vals = block.values(logits, len(chunk))
    per_target = {k: v.reshape(len(chunk), len(block)) for k, v in vals.items()}
    positions = patch.target_positions(chunk, s.prompts, block.prompt)
    return patched_rows(chunk, block.prompt, block.sample, per_target, positions)


# ---------------------------------------------------------------------------------------------
# the sweep


def _setup(model, prompts: PromptSet, spec: SweepSpec, clean: dict | None) -> tuple[_Setup, float | None]:
    if (getattr(model.cfg, "n_devices", 1) or 1) > 1:
        raise NotImplementedError(
            f"model {model.cfg.model_name} is split over {model.cfg.n_devices} devices; the engine patches on one "
            "device. Load it with n_devices=1 (a larger GPU, or float16 / bfloat16)."
        )
    prompts.validate(model.cfg.d_vocab)
    tokens = corrupted_tokens(prompts, spec.corruption)
    max_len = tokens.shape[1]
    targets = enumerate_targets(spec, model.cfg.n_layers, site_heads(model, spec.site), max_len)
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


def _plan(model, s: _Setup) -> tuple[_Setup, dict[str, int]]:
    """The batching plan (whole prompts per block) and the setup with its target chunks."""
    k = s.spec.n_samples
    plan = plan_batches(s.spec, s.targets, model, len(s.row_prompt), s.max_len)
    plan["rows_per_block"] = max(k, plan["rows_per_block"] - plan["rows_per_block"] % k)
    return replace(s, chunks=chunk_targets(s.targets, plan["targets_per_chunk"])), plan


def _patched_parts(model, s: _Setup, bi: int, block: Block | None, done: list, ckpt, bar) -> tuple[list, int]:
    """The patched rows of every target chunk on block ``bi`` (finished chunks from ``done``), and how
    many chunks were computed. Clean sources are kept only while a later chunk still needs them."""
    parts, computed = [], 0
    src_cache: dict[str, torch.Tensor] = {}
    for ci, chunk in enumerate(s.chunks):
        df = done[ci]
        if df is None:
            hooks = list(dict.fromkeys(h for t in chunk for h in t.hooks))
            missing = [h for h in hooks if h not in src_cache]
            src_cache.update(patch.sources(s.clean, missing, block, model.cfg.dtype))
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
    model,
    prompts: PromptSet,
    spec: SweepSpec,
    clean: dict[str, torch.Tensor] | None = None,
    *,
    name: str | None = None,
    progress: bool = True,
    logger: logging.Logger | None = None,
    checkpoint_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Run one sweep; returns the raw frame of :mod:`patchbench.rawframe` (metadata in ``.attrs['patchbench']``).

    ``clean`` is a cache from :func:`patchbench.engine.cache.clean_cache` (computed here when None);
    ``name`` is the model's name in the frame's metadata (default ``model.cfg.model_name``).
    """
    log_ = logger or log
    s, sigma = _setup(model, prompts, spec, clean)
    if spec.corruption == "gn":
        log_.info(
            "GN: sigma %.6g, nu %g -> noise std %.6g, %d sample(s)",
            sigma,
            spec.noise.nu,
            s.std,
            spec.n_samples,
        )
    s, plan = _plan(model, s)
    rows_block = plan["rows_per_block"]
    n_blocks = math.ceil(len(s.row_prompt) / rows_block)
    log_.info(
        "sweep %s/%s: %d targets x %d prompts x %d sample(s); %d block(s) of %d rows, %d chunk(s)/block",
        *(
            prompts.task,
            spec.label,
            len(s.targets),
            len(prompts),
            spec.n_samples,
            n_blocks,
            rows_block,
            len(s.chunks),
        ),
    )
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Checkpoint(checkpoint_dir, sweep_fingerprint(model, prompts, spec, sigma, plan), spec, plan)

    parts: list[pd.DataFrame] = []
    sanity: dict[str, Any] = {}
    computed = 0
    bar = tqdm(total=n_blocks * len(s.chunks), desc=f"{spec.site} sweep", disable=not progress, unit="chunk")
    with torch.no_grad():
        for bi in range(n_blocks):
            done = [ckpt.load(ckpt.chunk_path(bi, ci)) if ckpt else None for ci in range(len(s.chunks))]
            base = ckpt.load(ckpt.base_path(bi)) if ckpt else None
            block = None
            if bi == 0 or base is None or any(d is None for d in done):
                capture = [h for t in self_patch_targets(s.targets) for h in t.hooks] if bi == 0 else []
                block = prepare_block(model, s, bi, slice(bi * rows_block, (bi + 1) * rows_block), capture)
                if bi == 0:
                    sanity = check_identities(
                        model, prompts, spec, s.targets, block, s.clean, s.max_len, log_
                    )
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

    facts = dict(plan=plan, chunks_computed=computed, sanity=sanity)
    meta = raw_metadata(name or model_name(model), prompts, spec, "exact", s.targets, sigma, s.std, **facts)
    raw = assemble_raw([clean_rows(s.clean, prompts, spec, model.cfg.device), *parts], meta)
    log_.info("sweep done: %d rows, %d chunk(s) computed", len(raw), computed)
    return raw
