"""Attribution patching: every patch effect of a sweep from one forward and a few backward passes.

Exact activation patching (:mod:`patchbench.engine.sweep`) runs a partial forward pass per patch
target. Attribution patching (Nanda 2023; Syed et al. 2023; AtP, Kramár et al. 2024) replaces each
of those runs by a first-order Taylor expansion around the corrupted run::

    m(patched) - m(corrupted)  ≈  (a_clean - a_corrupted) · ∂m/∂a |_corrupted

where ``a`` is the patched activation (a head's ``hook_z``, ``hook_mlp_out``, ``hook_resid_pre``,
restricted to the target's heads and positions) and ``m`` one scalar output of the run. One
corrupted forward pass (with the same GN noise draw as the exact engine, from
:func:`patchbench.corruption.noise_tensor`) and one backward pass per output give the estimate for
every target of the sweep at once.

**Outputs are the engine's raw columns.** The backward passes differentiate the raw columns the
exact engine stores (see ``docs/architecture.md``), so an attribution sweep returns a raw sweep
frame whose ``patched`` rows hold first-order estimates ``corrupted value + estimated change``;
:func:`patchbench.metrics.effects` (``method='attribution'``), :func:`patchbench.detection.detect`
and every table then treat it like an exact sweep. Only the columns the requested metrics need
are differentiated (one backward pass each):

===============  ==========================================================================
metric           differentiated output
===============  ==========================================================================
``logit_diff``   LD = Σ logit(r) − Σ logit(r'); the estimated change is booked on ``logit_ans``
                 and ``logit_wrong`` keeps its corrupted value (only their difference is
                 estimated; read no meaning into either column alone)
``prob``         ``prob_ans``
``kl``           ``kl`` = KL(P_clean ‖ P_run)
``stolfo``       ``prob_ans`` and ``prob_wrong``
===============  ==========================================================================

Columns that no requested metric needs are NaN in the patched rows. Clean rows come from the
clean cache and corrupted rows from the attribution's own corrupted forward (computed exactly as
the engine computes them), so baselines and normalisation are identical to the exact sweep's.

Known limits of the first-order estimate (measured against exact patching in
:mod:`patchbench.analysis.agreement`):

* **KL** is zero with zero gradient at the clean distribution; near it KL is quadratic and the
  linear estimate of its change is off by up to a factor of two even for tiny corruptions.
* **Windows** (``mlp`` with ``window > 1``) sum the single-layer estimates of the window's layers
  (the linear form of the paper's §5 summation baseline): exact window patching clamps the later
  layers of the window, which the summed gradient does not.
* **Attention saturation**: a head whose patch moves a softmax far is poorly linearised. With
  ``qk_fix=True`` (``attn_head`` at ``position='all'`` only) a head's effect is the AtP*
  estimate over its query, key and value nodes: values linearly; each query position and each
  key position of the head patched on its own through the *exact* softmax, and the resulting
  change of the attention pattern linearised (Kramár et al. 2024, §3.1.1). The default z-gradient
  already treats the head's own softmax exactly (Δz is taken from the two runs); the QK fix
  differs by splitting the head into per-position query / key / value nodes, whose estimates add.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from patchbench.corruption import corrupted_tokens, noise_scale, noise_tensor
from patchbench.engine.cache import ANSWER_LOGITS, TOKENS, clean_cache, clean_rows
from patchbench.engine.patch import target_positions
from patchbench.engine.readout import AnswerIds, answer_values
from patchbench.lm import LM
from patchbench.metrics import METRICS
from patchbench.prompts import PromptSet
from patchbench.rawframe import VALUE_COLUMNS, assemble_raw, baseline_rows, patched_rows, raw_metadata
from patchbench.sites import PatchTarget, SweepSpec, enumerate_targets, head_axis

__all__ = [
    "GRAD_COLUMNS",
    "attribution_effects",
    "grad_columns",
    "qk_fix_applies",
    "run_attribution",
    "site_gradients",
]

log = logging.getLogger(__name__)

#: differentiable outputs (one backward pass each) and the metrics that need them
GRAD_COLUMNS: dict[str, tuple[str, ...]] = {
    "logit_diff": ("ld",),
    "prob": ("prob_ans",),
    "kl": ("kl",),
    "stolfo": ("prob_ans", "prob_wrong"),
}


def grad_columns(metrics: Sequence[str]) -> list[str]:
    """The outputs to differentiate for ``metrics`` (``ld``, ``prob_ans``, ``prob_wrong``, ``kl``)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
    if not metrics:
        raise ValueError("attribution needs at least one metric to differentiate")
    return list(dict.fromkeys(c for m in metrics for c in GRAD_COLUMNS[m]))


# ---------------------------------------------------------------------------------------------
# forward with the activations kept in the graph


def _outputs(
    logits: Float[torch.Tensor, "rows d_vocab"],
    clean_logp: Float[torch.Tensor, "rows d_vocab"],
    answers: AnswerIds,
    wrong: AnswerIds,
) -> dict[str, torch.Tensor]:
    """The raw value columns (:func:`patchbench.engine.readout.answer_values`) and LD, differentiable."""
    out = answer_values(logits, clean_logp, answers, wrong)
    out["ld"] = out["logit_ans"] - out["logit_wrong"]
    return out


def _forward(model: LM, tokens, noise, hooks: Sequence[str], answer_pos: torch.Tensor):
    """Corrupted forward (the engine's: embed, GN noise on hook_embed, blocks, answer-position unembed).

    Returns the answer-position logits and the hooked activations, still attached to the graph.
    """
    store: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, name: str) -> torch.Tensor:
        store[name] = act
        return act

    with model.hooks([(h, keep) for h in hooks]):
        resid = model.embed(tokens, noise)
        # a leaf that requires grad: gradients reach every hook whatever the parameters' requires_grad
        resid = model.run_blocks(resid.detach().requires_grad_(True), 0)
    logits = model.unembed_at(resid, answer_pos)
    missing = [h for h in hooks if h not in store]
    if missing:
        raise RuntimeError(
            f"hooks {missing} did not fire in the attribution forward; is the site valid for this model?"
        )
    return logits, store


# ---------------------------------------------------------------------------------------------
# per-target reduction


def _reduce(prod: torch.Tensor, head: bool) -> torch.Tensor:
    """Δa · grad summed over the feature dims: [R, P, H] for head hooks, [R, P] otherwise."""
    return prod.sum(-1) if head else prod.reshape(prod.shape[0], prod.shape[1], -1).sum(-1)


def _target_estimates(
    targets: Sequence[PatchTarget],
    per_pos: dict[str, np.ndarray],
    prompts: PromptSet,
    rows_prompt: np.ndarray,
) -> np.ndarray:
    """[n_targets, R] estimated change of one output for every target (sum over the target's patches)."""
    r = len(rows_prompt)
    out = np.zeros((len(targets), r), dtype=np.float64)
    totals = {k: v.sum(1) for k, v in per_pos.items()}  # over positions
    rows = np.arange(r)
    named: dict[str, np.ndarray] = {}

    def heads_sum(v: np.ndarray, heads: tuple[int, ...] | None) -> np.ndarray:
        if v.ndim == 1:  # a site without heads
            return v
        return v[:, list(heads)].sum(-1) if heads is not None else v.sum(-1)

    for j, t in enumerate(targets):
        acc = np.zeros(r, dtype=np.float64)
        for p in t.patches:
            if p.position == -1:
                v = totals[p.hook]
            else:
                if isinstance(p.position, str):
                    if p.position not in named:
                        named[p.position] = prompts.named_position(p.position)[rows_prompt]
                    pos = named[p.position]
                else:
                    pos = np.full(r, p.position)
                v = per_pos[p.hook][rows, pos]  # [R, H] or [R]
            acc += heads_sum(v, p.heads)
        out[j] = acc
    return out


# ---------------------------------------------------------------------------------------------
# AtP* QK fix


def _qk_fix_hooks(layers: Sequence[int]) -> list[str]:
    return [f"blocks.{lay}.attn.hook_{n}" for lay in layers for n in ("q", "k", "v", "pattern")]


def qk_fix_applies(spec: SweepSpec) -> bool:
    """Whether AtP*'s QK fix can estimate ``spec``: whole heads (``attn_head``) at every position."""
    return spec.site == "attn_head" and spec.position == "all"


def _check_qk_fix(model: LM, spec: SweepSpec) -> None:
    shape = model.shape
    if not qk_fix_applies(spec):
        raise ValueError(
            f"qk_fix applies to site='attn_head' with position='all' (AtP* nodes are a head's queries, keys and "
            f"values at every position), not site={spec.site!r} position={spec.position!r}; use qk_fix=False"
        )
    bad = []
    if shape.positional != "standard":
        bad.append(f"{shape.positional} positional embeddings")
    if shape.grouped_query:
        bad.append("grouped-query attention")
    if shape.sliding_window is not None:
        bad.append("sliding-window attention")
    if bad:
        raise ValueError(f"qk_fix supports plain dot-product attention only; this model has {', '.join(bad)}")


def _scores(
    layer: int, q: torch.Tensor, k: torch.Tensor, pattern: torch.Tensor, scale: float
) -> torch.Tensor:
    """Layer ``layer``'s attention scores ``q . k / scale`` under the causal mask (-inf above the
    diagonal), [R, H, T, S], rebuilt from ``hook_q`` / ``hook_k``: the bridge's ``hook_attn_scores``
    fires after the softmax on some attentions (the native one's, GPT-J's). Refused unless their
    softmax is the model's own ``hook_pattern`` (another scaling, soft-capping, rotary keys or a
    mask of its own would make AtP*'s query and key terms silently wrong)."""
    n = q.shape[1]
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    scores = (torch.einsum("rthd,rshd->rhts", q, k) / scale).masked_fill(future, -math.inf)
    gap = float((torch.softmax(scores, dim=-1) - pattern).abs().max())
    if not gap <= 1e-4:
        raise ValueError(
            f"qk_fix: layer {layer}'s attention pattern is not softmax(q . k / {scale:g}) under a causal mask "
            f"(max gap {gap:.3g}); this model's attention is not plain dot-product attention. Use qk_fix=False"
        )
    return scores


def _qk_fixed_heads(
    model: LM,
    layer: int,
    acts: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    clean: dict[str, torch.Tensor],
) -> torch.Tensor:
    """AtP* estimate per head for one layer: value + query + key nodes, [R, H] (float64)."""
    pre = f"blocks.{layer}.attn."
    q, k, v = (acts[pre + f"hook_{n}"].detach().double() for n in ("q", "k", "v"))  # [R, P, H, dh]
    qc, kc, vc = (clean[pre + f"hook_{n}"].double() for n in ("q", "k", "v"))
    pattern = acts[pre + "hook_pattern"].detach().double()  # [R, H, T, S]
    g_a = grads[pre + "hook_pattern"].double()  # [R, H, T, S]
    g_v = grads[pre + "hook_v"].double()  # [R, P, H, dh]
    scale = model.attn_scale(layer)
    scores = _scores(layer, q, k, pattern, scale)  # masked with -inf
    value = ((vc - v) * g_v).sum((1, 3))  # [R, H]
    # queries: each query position t patched alone -> exact softmax of the patched score row
    d_sq = torch.einsum("rthd,rshd->rhts", qc - q, k) / scale
    new_rows = torch.softmax(scores + d_sq, dim=-1)
    new_rows = torch.where(torch.isnan(new_rows), torch.zeros_like(new_rows), new_rows)
    query = ((new_rows - pattern) * g_a).sum((2, 3))
    # keys: each key position s patched alone -> column s of every row changes; closed form
    d_sk = torch.einsum("rthd,rshd->rhts", q, kc - k) / scale
    a = pattern
    finite = torch.isfinite(scores)
    logit_a = torch.where(
        finite & (a > 0), torch.log(a) - torch.log1p(-a.clamp(max=1 - 1e-15)), torch.full_like(a, -math.inf)
    )
    a_new = torch.where(finite & (a > 0), torch.sigmoid(logit_a + d_sk), torch.zeros_like(a))
    ratio = torch.where(1 - a > 1e-12, (1 - a_new) / (1 - a).clamp(min=1e-12), torch.ones_like(a))
    big_g = (a * g_a).sum(-1, keepdim=True)  # [R, H, T, 1]
    key = ((a_new - a) * g_a + (ratio - 1) * (big_g - a * g_a)).sum((2, 3))
    return value + query + key


# ---------------------------------------------------------------------------------------------
# the sweep


def _backward(
    outs: dict[str, torch.Tensor], cols: Sequence[str], inputs: list[torch.Tensor], *, batched: bool
) -> list[tuple[torch.Tensor | None, ...]]:
    """Gradients of each output column (summed over rows: rows are independent) w.r.t. ``inputs``.

    With several columns and ``batched``, one vmapped backward pass over the stacked columns
    (``is_grads_batched``): the same arithmetic as one pass per column, in larger matrix products.
    """
    if len(cols) == 1 or not batched:
        return [
            torch.autograd.grad(outs[c].sum(), inputs, retain_graph=i + 1 < len(cols), allow_unused=True)
            for i, c in enumerate(cols)
        ]
    y = torch.stack([outs[c] for c in cols])  # [C, R]
    onehot = torch.zeros(len(cols), *y.shape, dtype=y.dtype, device=y.device)
    for i in range(len(cols)):
        onehot[i, i] = 1.0
    gs = torch.autograd.grad(y, inputs, grad_outputs=onehot, is_grads_batched=True, allow_unused=True)
    return [tuple(None if g is None else g[i] for g in gs) for i in range(len(cols))]


def _rows_per_block(model: LM, max_len: int, budget_mb: int, extra_hook_elems: int) -> int:
    s = model.shape
    e = s.dtype.itemsize
    per_layer = max_len * (10 * s.d_model + 4 * s.d_mlp + 4 * s.n_heads * max_len + 6 * s.n_heads * s.d_head)
    per_row = (s.n_layers * per_layer + extra_hook_elems) * e * 2 + s.d_vocab * 8 * 4
    return max(1, int(budget_mb * 2**20 // per_row))


@dataclass(frozen=True)
class _Setup:
    """What every block of one attribution sweep shares."""

    prompts: PromptSet
    spec: SweepSpec
    cols: list[str]  # the outputs differentiated
    tokens: torch.Tensor
    max_len: int
    targets: list[PatchTarget]
    site_hooks: list[str]  # the targets' hook points
    hooks: list[str]  # the hook points kept in the graph (site hooks, or the QK fix's nodes)
    clean_needed: list[str]  # clean activations the estimate reads
    layers: list[int]
    clean: dict[str, torch.Tensor]
    std: float
    qk_fix: bool


def _setup(model: LM, prompts: PromptSet, spec: SweepSpec, clean, cols: list[str], qk_fix: bool):
    prompts.validate(model.shape.d_vocab)
    tokens = corrupted_tokens(prompts, spec.corruption)
    max_len = tokens.shape[1]
    targets = enumerate_targets(spec, model.shape.n_layers, model.site_heads(spec.site), max_len)
    if spec.position not in ("all", "each"):
        prompts.named_position(spec.position)  # raises naming the problem before any compute
    site_hooks = list(dict.fromkeys(h for t in targets for h in t.hooks))
    layers = sorted({p.layer for t in targets for p in t.patches})
    if qk_fix:
        _check_qk_fix(model, spec)
        hooks = _qk_fix_hooks(layers)
        clean_needed = [h for h in hooks if h.endswith(("hook_q", "hook_k", "hook_v"))]
    else:
        hooks = site_hooks
        clean_needed = site_hooks
    if clean is None or any(h not in clean for h in (*clean_needed, ANSWER_LOGITS, TOKENS)):
        have = {} if clean is None else clean
        extra = clean_cache(
            model, prompts, [h for h in clean_needed if h not in have], memory_budget_mb=spec.memory_budget_mb
        )
        clean = {**extra, **have}
    if not torch.equal(clean[TOKENS], prompts.tokens("clean")):
        raise ValueError(f"the clean cache was built from other prompts than {prompts.task!r}; rebuild it")
    sigma, std = noise_scale(model, prompts, spec.corruption, spec.noise)
    setup = _Setup(
        prompts,
        spec,
        cols,
        tokens,
        max_len,
        targets,
        site_hooks,
        hooks,
        clean_needed,
        layers,
        clean,
        std,
        qk_fix,
    )
    return setup, sigma


def _block(model: LM, s: _Setup, pr: np.ndarray, sa: np.ndarray, batched: bool):
    """One block of rows: the corrupted outputs and, per differentiated output, ``[n_targets, R]`` estimates."""
    dev, dtype = model.shape.device, model.shape.dtype
    spec, prompts, clean = s.spec, s.prompts, s.clean
    idx = torch.as_tensor(pr)
    tok = s.tokens[idx].to(dev)
    noise = (
        noise_tensor(prompts, pr, sa, model.shape.d_model, s.std, spec.noise.seed, s.max_len, dtype=dtype)
        if spec.corruption == "gn"
        else None
    )
    apos = torch.as_tensor(prompts.answer_pos[pr], device=dev)
    clean_logp = torch.log_softmax(clean[ANSWER_LOGITS][idx].to(dev).double(), dim=-1)
    est: dict[str, np.ndarray] = {}
    with torch.enable_grad():
        logits, acts = _forward(model, tok, noise, s.hooks, apos)
        outs = _outputs(
            logits, clean_logp, AnswerIds.of(prompts.answers, pr, dev), AnswerIds.of(prompts.wrong, pr, dev)
        )
        grad_hooks = [h for h in s.hooks if not h.endswith(("hook_q", "hook_k"))]
        all_grads = _backward(outs, s.cols, [acts[h] for h in grad_hooks], batched=batched)
        for c, gs in zip(s.cols, all_grads, strict=True):
            unused = [
                h for h, g in zip(grad_hooks, gs, strict=True) if g is None and h.endswith("hook_pattern")
            ]
            if unused:  # a pattern hook that fires after the fact: its gradient would silently be zero
                raise ValueError(f"qk_fix: {unused} do not reach the output on this model; use qk_fix=False")
            grads = {
                h: (torch.zeros_like(acts[h]) if g is None else g)
                for h, g in zip(grad_hooks, gs, strict=True)
            }
            if s.qk_fix:
                per_layer = {
                    lay: _qk_fixed_heads(
                        model,
                        lay,
                        acts,
                        grads,
                        {h: clean[h][idx].to(dev) for h in s.clean_needed if f"blocks.{lay}." in h},
                    )
                    for lay in s.layers
                }
                per_pos = {
                    f"blocks.{lay}.attn.hook_z": v.detach().cpu().numpy()[:, None, :]
                    for lay, v in per_layer.items()
                }
            else:
                per_pos = {}
                for h in s.site_hooks:
                    delta = clean[h][idx].to(device=dev, dtype=dtype) - acts[h].detach()
                    per_pos[h] = _reduce(
                        (delta.double() * grads[h].double()), h.endswith(("hook_z", "hook_v"))
                    )
                    per_pos[h] = per_pos[h].cpu().numpy()
            est[c] = _target_estimates(s.targets, per_pos, prompts, pr)
            del gs, grads
    corr = {kk: v.detach().cpu().numpy() for kk, v in outs.items()}
    return corr, est


def _patched_values(
    corr: dict[str, np.ndarray], est: dict[str, np.ndarray], n_targets: int
) -> dict[str, np.ndarray]:
    """Patched rows' value columns, ``[n_targets, rows]``: corrupted value + estimated change; NaN
    where no requested metric needs the column (LD's change is booked on ``logit_ans``)."""
    n_rows = len(corr["kl"])
    vals = {c: np.full((n_targets, n_rows), np.nan) for c in VALUE_COLUMNS}
    if "ld" in est:
        vals["logit_ans"] = corr["logit_ans"][None] + est["ld"]
        vals["logit_wrong"] = np.broadcast_to(corr["logit_wrong"][None], vals["logit_ans"].shape).copy()
    for c in ("prob_ans", "prob_wrong", "kl"):
        if c in est:
            vals[c] = corr[c][None] + est[c]
    return vals


def run_attribution(
    model: LM,
    prompts: PromptSet,
    spec: SweepSpec,
    clean: dict[str, torch.Tensor] | None = None,
    *,
    metrics: Sequence[str] = ("prob", "logit_diff", "kl"),
    qk_fix: bool = False,
    batched_backward: bool = True,
    name: str | None = None,
    progress: bool = True,
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """An attribution sweep: the raw frame of :mod:`patchbench.rawframe` with first-order ``patched`` rows.

    Same targets (ids, components), rows and metadata layout as :func:`patchbench.engine.sweep.run_sweep`
    for ``spec``; ``attrs['patchbench']['method'] == 'attribution'``. ``clean`` is a cache from
    :func:`patchbench.engine.cache.clean_cache`; hooks it lacks are computed here. ``name`` is the
    model's name in the metadata (default ``model.name``).
    ``batched_backward`` differentiates all outputs in one vmapped backward pass (about twice as
    fast as one pass per output on CPU for three outputs; same numbers).
    """
    log_ = logger or log
    cols = grad_columns(metrics)
    s, sigma = _setup(model, prompts, spec, clean, cols, qk_fix)
    axis = head_axis(spec.site, model.shape, log_)
    k = spec.n_samples
    all_prompt = np.repeat(np.arange(len(prompts), dtype=np.int64), k)
    all_sample = np.tile(np.arange(k, dtype=np.int64), len(prompts))
    step = _rows_per_block(model, s.max_len, spec.memory_budget_mb, 0)
    step = max(k, step - step % k)
    log_.info(
        "attribution %s/%s: %d targets x %d rows, %d backward pass(es) %s, blocks of %d rows%s",
        *(prompts.task, spec.label, len(s.targets), len(all_prompt), len(cols), cols, step),
        ", AtP* QK fix" if qk_fix else "",
    )

    base_parts: list[pd.DataFrame] = []
    est_parts: list[dict[str, np.ndarray]] = []  # per block: column -> [n_targets, R]
    corr_parts: list[dict[str, np.ndarray]] = []
    bar = tqdm(total=len(all_prompt), desc=f"{spec.site} attribution", disable=not progress, unit="row")
    for a in range(0, len(all_prompt), step):
        pr, sa = all_prompt[a : a + step], all_sample[a : a + step]
        corr, est = _block(model, s, pr, sa, batched_backward)
        est_parts.append(est)
        corr_parts.append(corr)
        base_parts.append(baseline_rows("corrupted", spec.site, spec.window, pr, sa, corr))
        bar.update(len(pr))
    bar.close()

    corr_all = {c: np.concatenate([p[c] for p in corr_parts]) for c in corr_parts[0]}
    est_all = {c: np.concatenate([p[c] for p in est_parts], axis=1) for c in cols}
    vals = _patched_values(corr_all, est_all, len(s.targets))
    patched = patched_rows(
        s.targets, all_prompt, all_sample, vals, target_positions(s.targets, prompts, all_prompt)
    )

    facts = dict(metrics=list(metrics), grad_columns=cols, qk_fix=qk_fix, head_axis=axis)
    meta = raw_metadata(name or model.name, prompts, spec, "attribution", s.targets, sigma, s.std, **facts)
    return assemble_raw([clean_rows(s.clean, prompts, spec, model.shape.device), *base_parts, patched], meta)


def site_gradients(
    model: LM, prompts: PromptSet, spec: SweepSpec, output: str = "ld"
) -> dict[str, Float[torch.Tensor, "rows ..."]]:
    """Gradient of one output (``ld``, ``logit_ans``, ``prob_ans``, ``prob_wrong``, ``kl``) at every hook of ``spec``.

    Evaluated at the corrupted run of every prompt (GN: noise sample 0), all prompts in one batch;
    for checks and inspection (the sweep itself is :func:`run_attribution`).
    """
    tokens = corrupted_tokens(prompts, spec.corruption)
    max_len = tokens.shape[1]
    targets = enumerate_targets(spec, model.shape.n_layers, model.site_heads(spec.site), max_len)
    hooks = list(dict.fromkeys(h for t in targets for h in t.hooks))
    dev = model.shape.device
    rows = np.arange(len(prompts), dtype=np.int64)
    _, std = noise_scale(model, prompts, spec.corruption, spec.noise)
    noise = (
        noise_tensor(
            prompts,
            rows,
            np.zeros_like(rows),
            model.shape.d_model,
            std,
            spec.noise.seed,
            max_len,
            dtype=model.shape.dtype,
        )  # fmt: skip
        if spec.corruption == "gn"
        else None
    )
    clean = clean_cache(model, prompts, [])
    with torch.enable_grad():
        logits, acts = _forward(
            model, tokens.to(dev), noise, hooks, torch.as_tensor(prompts.answer_pos, device=dev)
        )
        clean_logp = torch.log_softmax(clean[ANSWER_LOGITS].to(dev).double(), -1)
        outs = _outputs(
            logits,
            clean_logp,
            AnswerIds.of(prompts.answers, rows, dev),
            AnswerIds.of(prompts.wrong, rows, dev),
        )
        if output not in outs:
            raise ValueError(f"unknown output {output!r}; choose from {sorted(outs)}")
        grads = torch.autograd.grad(outs[output].sum(), [acts[h] for h in hooks])
    return {h: g.detach() for h, g in zip(hooks, grads, strict=True)}


def attribution_effects(raw: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    """:func:`patchbench.metrics.effects` of an attribution raw frame (``method='attribution'``, its metrics)."""
    from patchbench.metrics import effects
    from patchbench.rawframe import metadata

    kwargs.setdefault("metrics", tuple(metadata(raw).get("metrics", ("prob", "logit_diff", "kl"))))
    return effects(raw, method="attribution", **kwargs)
