"""The patching engine: exact activation patching, batched and prefix-reusing.

Activation patching runs the model on a corrupted input and replaces one activation (a *patch
target*: a head's output, an MLP layer's output over a window of layers, the residual stream at a
layer and position, ...) with its value from the clean run, then reads how far the output moves
back towards the clean answer. Done naively (TransformerLens's ``get_act_patch_*``), every target
costs a full forward pass over all prompts, and logits over every position.

This engine computes exactly the same numbers, faster:

* **Prefix reuse.** Patching something in layer L leaves layers < L as in the corrupted run. The
  corrupted run's residual stream (``blocks.L.hook_resid_pre`` for every L) is cached once per
  block of prompts; each patched run starts at its first patched layer on that cached residual
  (the blocks' hooks still fire, so patching is ordinary TransformerLens hooking).
* **Batching.** Targets x prompts share the batch dimension, chunked to ``memory_budget_mb``.
  Targets in one chunk share their start layer.
* **One generic patch.** A target is a boolean mask over the activation at one or more hook
  points; the hook returns ``torch.where(mask, clean[prompt], activation)``. Every site uses this
  one code path.
* **Answer-position unembedding.** Only ``answer_pos`` of each row goes through ``ln_final`` and
  the unembedding; the raw columns of every metric (summed answer / wrong logits and
  probabilities, KL to the clean distribution) come from that single forward.

Corruptions (:mod:`patchbench.corruption`): STR reads the corrupted prompts; GN adds seeded noise
to ``hook_embed`` of the clean prompts. Patched runs start from the cached corrupted residual, so
they carry exactly the corrupted run's noise draw.

Every sweep checks two identities on its first block of prompts and raises
:class:`SanityError` beyond tolerance (both go to the log and the frame's metadata):
patching a target with the corrupted run's own activations reproduces the corrupted outputs; and
patching the whole residual stream at layer 0 with clean activations reproduces the clean outputs
(so a patch that silently does nothing cannot pass). Every patch hook must also fire.

With ``checkpoint_dir`` each finished chunk is written atomically and skipped on a rerun; the
resumed frame is bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from patchbench.corruption import corrupted_tokens, embedding_sigma, noise_tensor
from patchbench.frames import read_frame as read_raw
from patchbench.frames import write_frame as write_raw
from patchbench.prompts import PromptSet, PromptSetError
from patchbench.sites import SITES, HookPatch, PatchTarget, SweepSpec, enumerate_targets, hook_name

__all__ = [
    "RAW_COLUMNS",
    "SanityError",
    "SweepSpec",
    "clean_cache",
    "required_hooks",
    "run_sweep",
    "capture_patterns",
    "PatternCapture",
    "write_raw",
    "read_raw",
    "embed_input",
    "run_blocks",
    "unembed_at",
]
# write_raw / read_raw: patchbench.frames's write_frame / read_frame (metadata in attrs['patchbench'])

log = logging.getLogger(__name__)

RAW_COLUMNS: dict[str, str] = {
    "run": "str",
    "target": "int64",
    "site": "str",
    "layer": "int64",
    "layers": "str",
    "head": "int64",
    "position": "int64",
    "window": "int64",
    "prompt": "int64",
    "sample": "int64",
    "logit_ans": "float64",
    "logit_wrong": "float64",
    "prob_ans": "float64",
    "prob_wrong": "float64",
    "kl": "float64",
}
VALUE_COLUMNS = ("logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl")
ANSWER_LOGITS = "answer_logits"
TOKENS = "tokens"
RESID0 = "blocks.0.hook_resid_pre"


def _t(a, device=None) -> torch.Tensor:
    """An int64 tensor copy of an index array (PromptSet arrays read from Parquet are read-only)."""
    return torch.from_numpy(np.array(a, dtype=np.int64)).to(device) if device is not None else torch.from_numpy(
        np.array(a, dtype=np.int64)
    )


class SanityError(RuntimeError):
    """A sweep failed one of its sanity identities: its results cannot be trusted."""


# ---------------------------------------------------------------------------------------------
# forward pieces (the same functions serve the clean, corrupted and patched runs)


def embed_input(model, tokens: torch.Tensor, noise: torch.Tensor | None):
    """Residual stream entering block 0 (and the shortformer positional embedding, if any)."""
    x = model.hook_embed(model.embed(tokens))
    if noise is not None:
        x = x + noise.to(device=x.device, dtype=x.dtype)
    resid, sf = model.get_residual(x, 0, attention_mask=None, tokens=tokens, return_shortformer_pos_embed=True)
    return resid, sf


def run_blocks(model, resid, start: int, sf, keep: list | None = None):
    """Blocks ``start``..L-1 on ``resid`` (their hooks fire); ``keep`` collects each block's input."""
    for i in range(start, model.cfg.n_layers):
        if keep is not None:
            keep.append(resid)
        resid = model.blocks[i](resid, shortformer_pos_embed=sf, attention_mask=None)
    return resid


def unembed_at(model, resid: torch.Tensor, pos: torch.Tensor) -> Float[torch.Tensor, "batch d_vocab"]:
    """Logits at one position per row: ``ln_final`` + unembed on ``resid[b, pos[b]]`` only."""
    from transformer_lens.utilities import apply_softcap

    x = resid[torch.arange(resid.shape[0], device=resid.device), pos][:, None]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = model.unembed(x)[:, 0]
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


def _tol(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) of the sanity identities for a model dtype."""
    return (1e-4, 1e-4) if dtype in (torch.float32, torch.float64) else (5e-2, 2e-2)


# ---------------------------------------------------------------------------------------------
# clean cache


def _site_heads(model, site: str) -> int:
    kv = getattr(model.cfg, "n_key_value_heads", None)
    return kv if (site == "head_v" and kv) else model.cfg.n_heads


def required_hooks(model, spec_or_hooks: SweepSpec | Sequence[SweepSpec | str] | str) -> list[str]:
    """Hook points whose clean activations sweeps need, plus layer 0's residual (for the sanity check).

    Items may be SweepSpecs (their targets' hooks), site names (``attn_head``, ``head_v``, ``mlp``,
    ``resid_pre``: that site's hook at every layer) or hook point names.
    """
    if isinstance(spec_or_hooks, (SweepSpec, str)):
        spec_or_hooks = [spec_or_hooks]
    names: dict[str, None] = {RESID0: None}
    for item in spec_or_hooks:
        if isinstance(item, SweepSpec):
            for t in enumerate_targets(item, model.cfg.n_layers, _site_heads(model, item.site), 1):
                names.update(dict.fromkeys(t.hooks))
        elif item in SITES:
            names.update(dict.fromkeys(hook_name(item, lay) for lay in range(model.cfg.n_layers)))
        elif item in model.hook_dict:
            names[str(item)] = None
        else:
            raise ValueError(f"{item!r} is neither a SweepSpec, a site {SITES} nor a hook point of the model")
    return list(names)


def _rows_per_forward(model, max_len: int, budget_mb: int) -> int:
    return max(1, int(budget_mb * 2**20 // max(1, _bytes_per_row(model, max_len))))


def _bytes_per_row(model, max_len: int, n_hook_elems: int = 0) -> int:
    """Rough transient memory of one row of one forward (activations of a block + answer logits)."""
    cfg = model.cfg
    e = torch.tensor([], dtype=cfg.dtype).element_size()
    d_mlp = cfg.d_mlp or 0
    acts = max_len * (6 * cfg.d_model + 3 * d_mlp + 3 * cfg.n_heads * max_len + 4 * cfg.n_heads * cfg.d_head) * e
    return acts + 4 * cfg.d_vocab_out * 8 + n_hook_elems * e


def clean_cache(
    model,
    prompts: PromptSet,
    spec_or_hooks: SweepSpec | Sequence[SweepSpec | str] | str,
    *,
    memory_budget_mb: int = 1024,
) -> dict[str, torch.Tensor]:
    """Clean activations (CPU, contiguous) a sweep needs, plus the clean logits at ``answer_pos``.

    Keys: hook point names (``[n_prompts, max_len, ...]``), ``answer_logits`` (``[n_prompts,
    d_vocab]``, float32 or float64) and ``tokens`` (the clean ids, to check the cache matches a PromptSet).
    The clean run does not depend on the corruption, so one cache serves STR and GN sweeps; it
    is a flat dict of tensors and can be saved with ``safetensors.torch.save_file``.
    """
    prompts.validate(model.cfg.d_vocab)
    names = required_hooks(model, spec_or_hooks)
    tokens = prompts.tokens("clean")
    n, max_len = tokens.shape
    store: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    logits: list[torch.Tensor] = []

    def grab(act, hook):
        store[hook.name].append(act.detach().to("cpu"))

    step = _rows_per_forward(model, max_len, memory_budget_mb)
    dev = model.cfg.device
    with torch.no_grad(), model.hooks(fwd_hooks=[(k, grab) for k in names]):
        for a in range(0, n, step):
            tok = tokens[a : a + step].to(dev)
            resid, sf = embed_input(model, tok, None)
            resid = run_blocks(model, resid, 0, sf)
            pos = _t(prompts.answer_pos[a : a + step], resid.device)
            logits.append(unembed_at(model, resid, pos).to(torch.promote_types(model.cfg.dtype, torch.float32)).cpu())
    out = {k: torch.cat(v).contiguous() for k, v in store.items()}
    out[ANSWER_LOGITS] = torch.cat(logits).contiguous()
    out[TOKENS] = tokens.contiguous()
    return out


def _check_cache(clean: dict[str, torch.Tensor], prompts: PromptSet, names: Iterable[str]) -> None:
    missing = [k for k in (*names, ANSWER_LOGITS, TOKENS) if k not in clean]
    if missing:
        raise KeyError(
            f"clean cache lacks {missing}; build it with patchbench.patching.clean_cache(model, prompts, spec) "
            "for every spec that will use it"
        )
    tok = clean[TOKENS].cpu()
    if tok.shape != prompts.tokens("clean").shape or not torch.equal(tok, prompts.tokens("clean")):
        raise ValueError(
            f"the clean cache was built from other prompts than {prompts.task!r}; rebuild it from this PromptSet"
        )


# ---------------------------------------------------------------------------------------------
# per-block context


@dataclass
class _Block:
    """A block of (prompt, sample) rows and everything cached for them."""

    index: int
    prompt: np.ndarray  # [R]
    sample: np.ndarray  # [R]
    resid: list[torch.Tensor] = field(default_factory=list)  # resid_pre per layer, [R, P, d]
    sf: torch.Tensor | None = None
    answer_pos: torch.Tensor | None = None
    ans_idx: torch.Tensor | None = None
    ans_mask: torch.Tensor | None = None
    wrong_idx: torch.Tensor | None = None
    wrong_mask: torch.Tensor | None = None
    clean_logp: torch.Tensor | None = None  # [R, V] float64
    corrupted_logits: torch.Tensor | None = None  # [R, V]
    corrupted_acts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt)


def _padded(ids: list[np.ndarray], rows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids[int(p)]) for p in rows)
    idx = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.float64)
    for r, p in enumerate(rows):
        a = _t(ids[int(p)])
        idx[r, : len(a)] = a
        mask[r, : len(a)] = 1.0
    return idx.to(device), mask.to(device)


def _columns(block: _Block, logits: torch.Tensor, reps: int) -> dict[str, np.ndarray]:
    """Raw metric columns for ``reps`` copies of the block's rows (target-major)."""
    logits = logits.double()
    logp = torch.log_softmax(logits, dim=-1)
    r = len(block)
    rep = lambda t: t.repeat(reps, *([1] * (t.dim() - 1))) if reps > 1 else t  # noqa: E731
    ai, am, wi, wm = rep(block.ans_idx), rep(block.ans_mask), rep(block.wrong_idx), rep(block.wrong_mask)
    out = {
        "logit_ans": (logits.gather(1, ai) * am).sum(1),
        "logit_wrong": (logits.gather(1, wi) * wm).sum(1),
        "prob_ans": (logp.gather(1, ai).exp() * am).sum(1),
        "prob_wrong": (logp.gather(1, wi).exp() * wm).sum(1),
    }
    kl = torch.empty(logits.shape[0], dtype=torch.float64, device=logits.device)
    ref = block.clean_logp
    for j in range(reps):
        sl = slice(j * r, (j + 1) * r)
        kl[sl] = (ref.exp() * (ref - logp[sl])).sum(1)
    out["kl"] = kl
    return {k: v.cpu().numpy() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# the generic patch


def _hook_kind(name: str) -> str:
    return "head" if name.endswith(("hook_z", "hook_v")) else "vector"


def _build_mask(
    model,
    chunk: Sequence[PatchTarget],
    hook: str,
    block: _Block,
    prompts: PromptSet,
    max_len: int,
) -> torch.Tensor:
    """Boolean mask [m, R, P, (H,) 1]: True where target j patches row r of ``hook``."""
    m, r = len(chunk), len(block)
    if _hook_kind(hook) == "head":
        n_h = _site_heads(model, "head_v" if hook.endswith("hook_v") else "attn_head")
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
                pos = _t(_named_positions(prompts, p.position)[block.prompt])
                if mask.dim() == 5:
                    hs = torch.arange(mask.shape[3]) if p.heads is None else _t(p.heads)
                    mask[j, rows[:, None], pos[:, None], hs[None, :]] = True
                else:
                    mask[j, rows, pos] = True
    return mask


def _named_positions(prompts: PromptSet, name: str) -> np.ndarray:
    if name not in prompts.positions:
        raise PromptSetError(
            f"{prompts.task}: no named position {name!r}; this PromptSet has {sorted(prompts.positions)} "
            "(or use position='all' / 'each')"
        )
    pos = prompts.positions[name]
    absent = np.flatnonzero(pos < 0)
    if absent.size:
        raise PromptSetError(
            f"{prompts.task}: position {name!r} is absent (-1) in prompts {absent[:10].tolist()}"
            f"{' ...' if absent.size > 10 else ''}; patching there would be a silent no-op. "
            "Fix: subset the PromptSet to prompts that have it (PromptSet.subset)."
        )
    return pos


def _patched_logits(
    model,
    chunk: Sequence[PatchTarget],
    block: _Block,
    sources: dict[str, torch.Tensor],
    prompts: PromptSet,
    max_len: int,
) -> torch.Tensor:
    """One forward for ``len(chunk) x len(block)`` rows; ``sources[hook]`` is [R, P, ...] per block row."""
    m, r = len(chunk), len(block)
    start = min(t.start_layer for t in chunk)
    dev = block.resid[0].device
    names = list(dict.fromkeys(h for t in chunk for h in t.hooks))
    fired = dict.fromkeys(names, 0)
    hooks = []
    for name in names:
        mask = _build_mask(model, chunk, name, block, prompts, max_len).to(dev)
        src = sources[name].unsqueeze(0)

        def fn(act, hook, mask=mask, src=src):
            fired[hook.name] += 1
            a = act.reshape(m, r, *act.shape[1:])
            return torch.where(mask, src, a).reshape(act.shape)

        hooks.append((name, fn))
    resid = block.resid[start]
    resid = resid.repeat(m, 1, 1) if m > 1 else resid
    sf = None if block.sf is None else (block.sf.repeat(m, 1, 1) if m > 1 else block.sf)
    with model.hooks(fwd_hooks=hooks):
        resid = run_blocks(model, resid, start, sf)
    silent = [k for k, v in fired.items() if v != 1]
    if silent:
        raise SanityError(f"patch hooks {silent} fired {[fired[k] for k in silent]} times instead of once")
    pos = block.answer_pos.repeat(m) if m > 1 else block.answer_pos
    return unembed_at(model, resid, pos)


# ---------------------------------------------------------------------------------------------
# the sweep


def _fingerprint(model, prompts: PromptSet, spec: SweepSpec, sigma: float | None, plan: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"spec": spec.to_dict(), "sigma": sigma, "plan": plan, "cfg": str(model.cfg.model_name),
                         "shape": [model.cfg.n_layers, model.cfg.d_model, model.cfg.d_vocab]}, sort_keys=True).encode())
    h.update(prompts.tokens("clean").numpy().tobytes())
    h.update(prompts.tokens("corrupted").numpy().tobytes())
    with torch.no_grad():
        for p in list(model.parameters())[:4]:
            h.update(np.float64(p.double().sum().item()).tobytes())
    return h.hexdigest()[:16]


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _frame(parts: dict[str, Any], n: int) -> pd.DataFrame:
    cols = {}
    for c, dt in RAW_COLUMNS.items():
        v = parts[c]
        np_dt = object if dt == "str" else dt
        cols[c] = np.full(n, v, dtype=np_dt) if np.isscalar(v) else np.asarray(v, dtype=np_dt)
    return pd.DataFrame(cols)


def _target_frame(chunk: Sequence[PatchTarget], block: _Block, vals: dict[str, np.ndarray], prompts) -> pd.DataFrame:
    r = len(block)
    frames = []
    for j, t in enumerate(chunk):
        sl = slice(j * r, (j + 1) * r)
        if t.position == -1 or isinstance(t.position, int):
            position: Any = t.position
        else:
            position = _named_positions(prompts, t.position)[block.prompt]
        frames.append(
            _frame(
                dict(run="patched", target=t.id, site=t.site, layer=t.layer, layers=f"{t.layers[0]}:{t.layers[1]}",
                     head=t.head, position=position, window=t.window, prompt=block.prompt, sample=block.sample,
                     **{k: v[sl] for k, v in vals.items()}),
                r,
            )
        )
    return pd.concat(frames, ignore_index=True)


def _plan(spec: SweepSpec, targets: list[PatchTarget], model, n_rows: int, max_len: int) -> dict:
    """Prompt blocks and target chunks that fit the memory budget (deterministic)."""
    cfg = model.cfg
    e = torch.tensor([], dtype=cfg.dtype).element_size()
    budget = spec.memory_budget_mb * 2**20
    cache_row = cfg.n_layers * max_len * cfg.d_model * e
    per_row = _bytes_per_row(model, max_len, n_hook_elems=2 * max_len * max(cfg.d_model, cfg.n_heads * cfg.d_head))
    rows_block = int(max(1, min(n_rows, (budget // 4) // (cache_row + per_row))))
    per_chunk = int(max(1, (budget - rows_block * cache_row) // (rows_block * per_row)))
    return {"rows_per_block": rows_block, "targets_per_chunk": per_chunk}


def _chunks(targets: list[PatchTarget], per_chunk: int) -> list[list[PatchTarget]]:
    out: list[list[PatchTarget]] = []
    for t in targets:
        if out and len(out[-1]) < per_chunk and out[-1][0].start_layer == t.start_layer:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def _prepare_block(model, prompts, spec, index, prompt_rows, sample_rows, tokens, clean, std, max_len,
                   capture: Sequence[str] = ()) -> _Block:
    """Run the corrupted forward for a block of rows and cache what its patched runs need."""
    dev = model.cfg.device
    b = _Block(index=index, prompt=prompt_rows, sample=sample_rows)
    tok = tokens[_t(prompt_rows)].to(dev)
    noise = None
    if spec.corruption == "gn":
        noise = noise_tensor(prompts, prompt_rows, sample_rows, model.cfg.d_model, std, spec.noise.seed, max_len)
    store: dict[str, torch.Tensor] = {}

    def grab(act, hook):
        store[hook.name] = act.detach().clone()

    with model.hooks(fwd_hooks=[(k, grab) for k in capture]):
        resid, b.sf = embed_input(model, tok, noise)
        keep: list[torch.Tensor] = []
        resid = run_blocks(model, resid, 0, b.sf, keep)
    b.resid = keep
    b.corrupted_acts = store
    b.answer_pos = _t(prompts.answer_pos[prompt_rows], dev)
    b.corrupted_logits = unembed_at(model, resid, b.answer_pos)
    b.ans_idx, b.ans_mask = _padded(prompts.answers, prompt_rows, dev)
    b.wrong_idx, b.wrong_mask = _padded(prompts.wrong, prompt_rows, dev)
    cl = clean[ANSWER_LOGITS]
    b.clean_logp = torch.log_softmax(cl[_t(prompt_rows, cl.device)].to(dev).double(), dim=-1)
    return b


def _sources(clean: dict[str, torch.Tensor], names: Iterable[str], block: _Block, dtype) -> dict[str, torch.Tensor]:
    idx = _t(block.prompt)
    dev = block.resid[0].device
    return {k: clean[k][idx.to(clean[k].device)].to(device=dev, dtype=dtype) for k in names}


def _self_patch_targets(targets: list[PatchTarget]) -> list[PatchTarget]:
    """The self-patch check's targets: the last target and the last one of an earlier start layer.

    Late start layers keep the check cheap (a few layers of one batch); two distinct start layers
    check the prefix reuse at more than one layer.
    """
    last = targets[-1]
    earlier = [t for t in targets if t.start_layer < last.start_layer]
    return [earlier[-1], last] if earlier else [last]


def _sanity(model, prompts, spec, targets, block: _Block, clean, max_len, log_) -> dict[str, Any]:
    """The two identities on ``block`` (see the module docstring); raises SanityError beyond tolerance."""
    atol, rtol = _tol(model.cfg.dtype)
    corr = _columns(block, block.corrupted_logits, 1)
    cl_logits = clean[ANSWER_LOGITS]
    cl = _columns(block, cl_logits[_t(block.prompt, cl_logits.device)].to(block.resid[0].device), 1)
    ld = lambda c: c["logit_ans"] - c["logit_wrong"]  # noqa: E731

    def gap(a, b):
        diff = np.maximum(np.abs(ld(a) - ld(b)), np.abs(a["prob_ans"] - b["prob_ans"]))
        allowed = atol + rtol * np.abs(ld(b))
        return float(diff.max()), bool((diff <= allowed).all())

    res: dict[str, Any] = {"atol": atol, "rtol": rtol}
    if np.max(np.abs(ld(cl) - ld(corr))) == 0 and np.max(np.abs(cl["prob_ans"] - corr["prob_ans"])) == 0:
        raise SanityError(
            f"{prompts.task}/{spec.corruption}: the corrupted run equals the clean run exactly on every prompt; "
            "the corruption does nothing (GN with nu=0 or sigma=0? STR with corrupted == clean?)"
        )
    # 1. self-patch: corrupted activations into the corrupted run
    chosen = _self_patch_targets(targets)
    worst = 0.0
    ok = True
    for t in chosen:
        src = {k: block.corrupted_acts[k] for k in t.hooks}
        got = _columns(block, _patched_logits(model, [t], block, src, prompts, max_len), 1)
        d, good = gap(got, corr)
        worst, ok = max(worst, d), ok and good
    res["self_patch_maxdiff"] = worst
    res["self_patch_targets"] = [t.component for t in chosen]
    # 2. clean residual at layer 0, all positions
    t0 = PatchTarget(id=-2, site="resid_pre", layer=0, layers=(0, 1), head=-1, position=-1, window=1,
                     patches=(HookPatch(RESID0, 0, None, -1),), component="0")
    src = _sources(clean, [RESID0], block, model.cfg.dtype)
    got = _columns(block, _patched_logits(model, [t0], block, src, prompts, max_len), 1)
    d0, good0 = gap(got, cl)
    res["clean_resid0_maxdiff"] = d0
    res["passed"] = bool(ok and good0)
    log_.info(
        "sanity %s/%s/%s: self-patch maxdiff %.3g, clean resid_pre[0] maxdiff %.3g (atol %g, rtol %g)",
        prompts.task, spec.corruption, spec.site, worst, d0, atol, rtol,
    )
    if not ok:
        raise SanityError(
            f"patching {res['self_patch_targets']} with the corrupted run's own activations moved the output by "
            f"{worst:.3g} (> atol {atol} + rtol {rtol}·|LD|): the prefix-reusing patched run does not reproduce "
            "the corrupted run"
        )
    if not good0:
        raise SanityError(
            f"patching the clean residual stream at layer 0 (all positions) gave outputs {d0:.3g} away from the "
            "clean run: the patch does not reach the model, or the corrupted run leaks past layer 0"
        )
    return res


def run_sweep(
    model,
    prompts: PromptSet,
    spec: SweepSpec,
    clean: dict[str, torch.Tensor] | None = None,
    *,
    progress: bool = True,
    logger: logging.Logger | None = None,
    checkpoint_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Run one sweep; returns the raw frame of ``docs/architecture.md`` (metadata in ``.attrs['patchbench']``).

    ``clean`` is a cache from :func:`clean_cache` (computed here when None).
    """
    log_ = logger or log
    if (getattr(model.cfg, "n_devices", 1) or 1) > 1:
        raise NotImplementedError(
            f"model {model.cfg.model_name} is split over {model.cfg.n_devices} devices; the engine patches on one "
            "device. Load it with n_devices=1 (a larger GPU, or float16 / bfloat16)."
        )
    prompts.validate(model.cfg.d_vocab)
    tokens = corrupted_tokens(prompts, spec.corruption)
    max_len = tokens.shape[1]
    targets = enumerate_targets(spec, model.cfg.n_layers, _site_heads(model, spec.site), max_len)
    if spec.position not in ("all", "each"):
        _named_positions(prompts, spec.position)  # raises naming the problem before any compute
    names = list(dict.fromkeys(h for t in targets for h in t.hooks))
    if clean is None:
        clean = clean_cache(model, prompts, [*names, RESID0], memory_budget_mb=spec.memory_budget_mb)
    _check_cache(clean, prompts, [*names, RESID0])

    sigma = None
    std = 0.0
    if spec.corruption == "gn":
        sigma = spec.noise.sigma if spec.noise.sigma is not None else embedding_sigma(model, prompts)
        std = spec.noise.nu * sigma
        log_.info("GN: sigma %.6g, nu %g -> noise std %.6g, %d sample(s)", sigma, spec.noise.nu, std, spec.n_samples)

    k = spec.n_samples
    all_prompt = np.repeat(np.arange(len(prompts), dtype=np.int64), k)
    all_sample = np.tile(np.arange(k, dtype=np.int64), len(prompts))
    plan = _plan(spec, targets, model, len(all_prompt), max_len)
    rows_block = plan["rows_per_block"]
    rows_block = max(k, rows_block - rows_block % k)  # whole prompts per block
    plan["rows_per_block"] = rows_block
    chunks = _chunks(targets, plan["targets_per_chunk"])
    n_blocks = math.ceil(len(all_prompt) / rows_block)
    log_.info(
        "sweep %s/%s/%s pos=%s w=%d: %d targets x %d prompts x %d sample(s); %d block(s) of %d rows, %d chunk(s)/block",
        prompts.task, spec.corruption, spec.site, spec.position, spec.window, len(targets), len(prompts), k,
        n_blocks, rows_block, len(chunks),
    )

    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir)
        ckpt.mkdir(parents=True, exist_ok=True)
        fp = _fingerprint(model, prompts, spec, sigma, plan)
        manifest = ckpt / "manifest.json"
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if old.get("fingerprint") != fp:
                raise ValueError(
                    f"checkpoint directory {ckpt} belongs to another sweep (fingerprint {old.get('fingerprint')} != "
                    f"{fp}); delete it or choose another checkpoint_dir"
                )
        else:
            tmp = manifest.with_name("manifest.json.tmp")
            tmp.write_text(json.dumps({"fingerprint": fp, "spec": spec.to_dict(), "plan": plan}))
            os.replace(tmp, manifest)

    dtype = model.cfg.dtype
    parts: list[pd.DataFrame] = []
    sanity: dict[str, Any] = {}
    computed = 0
    bar = tqdm(total=n_blocks * len(chunks), desc=f"{spec.site} sweep", disable=not progress, unit="chunk")
    with torch.no_grad():
        for bi in range(n_blocks):
            sl = slice(bi * rows_block, (bi + 1) * rows_block)
            paths = [ckpt / f"chunk-{bi:05d}-{ci:05d}.parquet" for ci in range(len(chunks))] if ckpt else []
            base_path = ckpt / f"base-{bi:05d}.parquet" if ckpt else None
            done = [p.exists() for p in paths] if ckpt else [False] * len(chunks)
            need_block = bi == 0 or not all(done) or not (base_path and base_path.exists())
            block = None
            if need_block:
                capture = [h for t in _self_patch_targets(targets) for h in t.hooks] if bi == 0 else []
                block = _prepare_block(model, prompts, spec, bi, all_prompt[sl], all_sample[sl], tokens, clean, std,
                                       max_len, capture)
                if bi == 0:
                    sanity = _sanity(model, prompts, spec, targets, block, clean, max_len, log_)
                    block.corrupted_acts = {}
            if base_path is not None and base_path.exists():
                parts.append(pd.read_parquet(base_path))
            else:
                vals = _columns(block, block.corrupted_logits, 1)
                base = _frame(dict(run="corrupted", target=-1, site=spec.site, layer=-1, layers="", head=-1,
                                   position=-1, window=spec.window, prompt=block.prompt, sample=block.sample, **vals),
                              len(block))
                if base_path is not None:
                    _write_atomic(base, base_path)
                parts.append(base)
            src_cache: dict[str, torch.Tensor] = {}
            for ci, chunk in enumerate(chunks):
                if ckpt and done[ci]:
                    parts.append(pd.read_parquet(paths[ci]))
                    bar.update(1)
                    continue
                hooks = list(dict.fromkeys(h for t in chunk for h in t.hooks))
                missing = [h for h in hooks if h not in src_cache]
                src_cache.update(_sources(clean, missing, block, dtype))
                logits = _patched_logits(model, chunk, block, {h: src_cache[h] for h in hooks}, prompts, max_len)
                df = _target_frame(chunk, block, _columns(block, logits, len(chunk)), prompts)
                if ckpt:
                    _write_atomic(df, paths[ci])
                parts.append(df)
                computed += 1
                bar.update(1)
                # sources of layers no later chunk starts below are no longer needed
                if ci + 1 < len(chunks):
                    keep = {h for c in chunks[ci + 1 :] for t in c for h in t.hooks}
                    for h in [h for h in src_cache if h not in keep]:
                        del src_cache[h]
            del block
    bar.close()

    # clean rows: from the clean cache's answer logits
    cl_block = _Block(index=-1, prompt=np.arange(len(prompts), dtype=np.int64), sample=np.zeros(len(prompts), np.int64))
    dev = model.cfg.device
    cl_block.ans_idx, cl_block.ans_mask = _padded(prompts.answers, cl_block.prompt, dev)
    cl_block.wrong_idx, cl_block.wrong_mask = _padded(prompts.wrong, cl_block.prompt, dev)
    cl_logits = clean[ANSWER_LOGITS].to(dev)
    cl_block.clean_logp = torch.log_softmax(cl_logits.double(), dim=-1)
    vals = _columns(cl_block, cl_logits, 1)
    clean_rows = _frame(dict(run="clean", target=-1, site=spec.site, layer=-1, layers="", head=-1, position=-1,
                             window=spec.window, prompt=cl_block.prompt, sample=cl_block.sample, **vals), len(prompts))
    raw = pd.concat([clean_rows, *parts], ignore_index=True)
    order = {"clean": 0, "corrupted": 1, "patched": 2}
    raw = (
        raw.assign(_o=raw["run"].map(order))
        .sort_values(["_o", "target", "prompt", "sample"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )
    raw = raw.astype(RAW_COLUMNS)
    raw.attrs["patchbench"] = {
        "model": str(model.cfg.model_name),
        "task": prompts.task,
        "variant": prompts.variant,
        "corruption": spec.corruption,
        "spec": spec.to_dict(),
        "sigma": sigma,
        "noise_std": std if spec.corruption == "gn" else None,
        "n_targets": len(targets),
        "n_prompts": len(prompts),
        "plan": plan,
        "chunks_computed": computed,
        "sanity": sanity,
        "components": {int(t.id): t.component for t in targets},
    }
    log_.info("sweep done: %d rows, %d chunk(s) computed", len(raw), computed)
    return raw


# ---------------------------------------------------------------------------------------------
# attention patterns (paper §3.2)


@dataclass
class PatternCapture:
    """Attention patterns of chosen heads: ``[rows, n_heads, dest, src]`` per run (CPU float32).

    ``clean`` has one row per prompt; ``corrupted`` and ``patched`` one row per (prompt, sample),
    in the order of ``prompt`` / ``sample``.
    """

    heads: tuple[tuple[int, int], ...]
    clean: torch.Tensor
    corrupted: torch.Tensor
    patched: torch.Tensor | None
    prompt: np.ndarray
    sample: np.ndarray

    def attention(self, prompts: PromptSet, dest: str, src: str) -> pd.DataFrame:
        """Per (run, row, head) attention probability from named position ``dest`` to named ``src``."""
        frames = []
        for run, pat in (("clean", self.clean), ("corrupted", self.corrupted), ("patched", self.patched)):
            if pat is None:
                continue
            pr = np.arange(len(prompts)) if run == "clean" else self.prompt
            sa = np.zeros(len(pr), np.int64) if run == "clean" else self.sample
            d = _t(_named_positions(prompts, dest)[pr])
            s = _t(_named_positions(prompts, src)[pr])
            vals = pat[torch.arange(len(pr)), :, d, s].numpy()  # [rows, n_heads]
            for j, (lay, h) in enumerate(self.heads):
                frames.append(pd.DataFrame({"run": run, "prompt": pr, "sample": sa, "head": f"{lay}.{h}",
                                            "dest": dest, "src": src, "attention": vals[:, j]}))
        return pd.concat(frames, ignore_index=True)


def capture_patterns(
    model,
    prompts: PromptSet,
    heads: Sequence[tuple[int, int]],
    corruption: str,
    patch_spec: SweepSpec | None = None,
    *,
    noise=None,
    clean: dict[str, torch.Tensor] | None = None,
    memory_budget_mb: int = 1024,
) -> PatternCapture:
    """Attention patterns of ``heads`` in the clean, corrupted and (optionally) patched runs.

    ``patch_spec`` must describe exactly one target (e.g. ``SweepSpec('str', 'head_v',
    heads=S_INHIBITION)``: the S-inhibition heads' values patched together); its corruption must
    equal ``corruption``. GN uses ``noise`` (a NoiseSpec; default the patch spec's) and the same
    draw in the corrupted and patched runs.
    """
    from patchbench.corruption import NoiseSpec

    heads = tuple((int(a), int(b)) for a, b in heads)
    if patch_spec is not None and patch_spec.corruption != corruption:
        raise ValueError(f"patch_spec corruption {patch_spec.corruption!r} != {corruption!r}")
    noise = noise or (patch_spec.noise if patch_spec is not None else NoiseSpec())
    k = noise.n_samples if corruption == "gn" else 1
    tok_corr = corrupted_tokens(prompts, corruption)
    tok_clean = prompts.tokens("clean")
    max_len = tok_clean.shape[1]
    std = 0.0
    if corruption == "gn":
        std = noise.nu * (noise.sigma if noise.sigma is not None else embedding_sigma(model, prompts))
    target = None
    if patch_spec is not None:
        ts = enumerate_targets(patch_spec, model.cfg.n_layers, _site_heads(model, patch_spec.site), max_len)
        if len(ts) != 1:
            raise ValueError(f"capture_patterns needs a patch_spec with exactly one target, got {len(ts)}")
        target = ts[0]
        if clean is None:
            clean = clean_cache(model, prompts, list(target.hooks), memory_budget_mb=memory_budget_mb)
    names = [f"blocks.{lay}.attn.hook_pattern" for lay in sorted({lay for lay, _ in heads})]
    store: dict[str, torch.Tensor] = {}

    def grab(act, hook):
        store[hook.name] = act.detach().float().cpu()

    def collect() -> torch.Tensor:
        return torch.stack([store[f"blocks.{lay}.attn.hook_pattern"][:, h] for lay, h in heads], dim=1)

    dev = model.cfg.device
    prompt_rows = np.repeat(np.arange(len(prompts), dtype=np.int64), k)
    sample_rows = np.tile(np.arange(k, dtype=np.int64), len(prompts))
    step = max(k, _rows_per_forward(model, max_len, memory_budget_mb))
    out: dict[str, list[torch.Tensor]] = {"clean": [], "corrupted": [], "patched": []}
    with torch.no_grad(), model.hooks(fwd_hooks=[(nm, grab) for nm in names]):
        for a in range(0, len(prompts), step):
            tok = tok_clean[a : a + step].to(dev)
            resid, sf = embed_input(model, tok, None)
            run_blocks(model, resid, 0, sf)
            out["clean"].append(collect())
        for a in range(0, len(prompt_rows), step):
            pr, sa = prompt_rows[a : a + step], sample_rows[a : a + step]
            tok = tok_corr[_t(pr)].to(dev)
            nz = noise_tensor(prompts, pr, sa, model.cfg.d_model, std, noise.seed, max_len) if corruption == "gn" else None
            resid, sf = embed_input(model, tok, nz)
            run_blocks(model, resid, 0, sf)
            out["corrupted"].append(collect())
            if target is not None:
                block = _Block(index=-1, prompt=pr, sample=sa)
                block.resid = [resid]  # device holder for _sources
                src = _sources(clean, target.hooks, block, model.cfg.dtype)
                hooks = []
                for name in target.hooks:
                    mask = _build_mask(model, [target], name, block, prompts, max_len).to(dev)[0]
                    hooks.append((name, lambda act, hook, mask=mask, s=src[name]: torch.where(mask, s, act)))
                with model.hooks(fwd_hooks=hooks):
                    resid, sf = embed_input(model, tok, nz)
                    run_blocks(model, resid, 0, sf)
                out["patched"].append(collect())
    return PatternCapture(
        heads=heads,
        clean=torch.cat(out["clean"]),
        corrupted=torch.cat(out["corrupted"]),
        patched=torch.cat(out["patched"]) if target is not None else None,
        prompt=prompt_rows,
        sample=sample_rows,
    )

