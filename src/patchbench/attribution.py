"""Attribution patching: every patch effect of a sweep from one forward and a few backward passes.

Exact activation patching (:mod:`patchbench.engine.sweep`) runs a partial forward pass per patch
target. Attribution patching (Nanda 2023; Syed et al. 2023; AtP, Kramár et al. 2024) replaces each
of those runs by a first-order Taylor expansion around the corrupted run::

    m(patched) - m(corrupted)  ≈  (a_clean - a_corrupted) · ∂m/∂a |_corrupted

where ``a`` is the patched activation (any site of :data:`patchbench.interventions.sites.SITES`,
restricted to the target's heads and positions) and ``m`` one scalar output of the run. One
forward pass of the base run (built by the engines' one setup, :mod:`patchbench.engine.setup`: the
same tokens, GN noise draw or ablation as the exact engine's) and one backward pass per output give
the estimate for every target of the sweep at once.

**Directions.** Denoising linearises around the corrupted run and patches in clean activations
(the source is the clean cache); noising linearises around the clean run and patches in the
corrupted run's activations (one more forward of the corrupted run per block gives them, and the
frame's corrupted rows): ``m(patched) - m(clean) ≈ (a_corrupted - a_clean) · ∂m/∂a |_clean``. For
mean and zero ablation the corrupted run is the ablated one (denoising: the gradient is taken with
every other ablated component held at its ablated value, as the exact engine patches).

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
  linear estimate of its change is off by up to a factor of two even for tiny corruptions. A
  noising sweep linearises around the clean run itself, where KL's gradient vanishes: its
  first-order KL estimate is 0 for every component (and the probability's is small where the clean
  run saturates it).
* **Windows** (``mlp`` with ``window > 1``) sum the single-layer estimates of the window's layers
  (the linear form of the paper's §5 summation baseline): exact window patching clamps the later
  layers of the window, which the summed gradient does not.
* **Attention saturation**: a head whose patch moves a softmax far is poorly linearised. With
  ``qk_fix=True`` (``attn_head`` at ``position='all'`` under a token-level corruption only;
  :mod:`patchbench.qk_fix`; refused, naming the sweep, elsewhere) a head's effect is the AtP*
  estimate over its query, key and value nodes: values linearly; each query position and each
  key position of the head patched on its own through the *exact* softmax, and the resulting
  change of the attention pattern linearised (Kramár et al. 2024, §3.1.1). The default z-gradient
  already treats the head's own softmax exactly (Δz is taken from the two runs); the QK fix
  differs by splitting the head into per-position query / key / value nodes, whose estimates add.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from patchbench.engine.cache import ANSWER_LOGITS, clean_cache, clean_rows
from patchbench.engine.patch import target_positions
from patchbench.engine.readout import AnswerIds, answer_values
from patchbench.engine.setup import Setup, setup
from patchbench.interventions.sites import SITES, Site
from patchbench.lm import LM
from patchbench.metrics import METRICS
from patchbench.prompts import PromptSet
from patchbench.qk_fix import check_qk_fix, qk_fix_applies, qk_fix_hooks, qk_fixed_heads
from patchbench.rawframe import VALUE_COLUMNS, assemble_raw, baseline_rows, patched_rows, raw_metadata
from patchbench.sites import PatchTarget, SweepSpec, head_axis

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


def _forward(model: LM, st: Setup, rows: tuple[np.ndarray, np.ndarray], hooks: Sequence[str], answer_pos):
    """The base run (the engines' one builder, :meth:`patchbench.engine.runs.Run.forward`) on ``rows``,
    its embedding a leaf that requires grad, so that gradients reach every hook whatever the
    parameters' ``requires_grad``. Returns the answer-position logits and the hooked activations,
    still attached to the graph."""
    store: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, name: str) -> torch.Tensor:
        store[name] = act
        return act

    resid = st.base.forward(model, st.prompts, *rows, hooks=[(h, keep) for h in hooks], leaf=True)
    logits = model.unembed_at(resid, answer_pos)
    missing = [h for h in hooks if h not in store]
    if missing:
        raise RuntimeError(
            f"hooks {missing} did not fire in the attribution forward; is the site valid for this model?"
        )
    return logits, store


# ---------------------------------------------------------------------------------------------
# per-target reduction


def _target_estimates(
    site: Site,
    targets: Sequence[PatchTarget],
    per_pos: dict[str, np.ndarray],
    prompts: PromptSet,
    rows_prompt: np.ndarray,
) -> np.ndarray:
    """[n_targets, R] estimated change of one output for every target (sum over the target's patches);
    ``per_pos[hook]`` is ``[R, P, H]`` for a site with heads, ``[R, P]`` otherwise."""
    r = len(rows_prompt)
    out = np.zeros((len(targets), r), dtype=np.float64)
    totals = {k: v.sum(1) for k, v in per_pos.items()}  # over positions
    rows = np.arange(r)
    named: dict[str, np.ndarray] = {}

    def heads_sum(v: np.ndarray, heads: tuple[int, ...] | None) -> np.ndarray:
        if not site.has_heads:
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
class _Attribution:
    """An attribution sweep: the engines' shared setup and what the estimate reads."""

    setup: Setup
    cols: list[str]  # the outputs differentiated
    site_hooks: list[str]  # the targets' hook points
    hooks: list[str]  # the hook points kept in the graph (site hooks, or the QK fix's nodes)
    source_needed: list[str]  # source activations the estimate reads
    layers: list[int]
    qk_fix: bool

    def sources(self, model: LM, pr: np.ndarray, sa: np.ndarray) -> tuple[dict[str, torch.Tensor], Any]:
        """The source activations of rows (pr, sa) on the model's device, and the source run's answer
        logits when it is not the clean run (noising: the frame's corrupted rows), else None."""
        st, dev, dtype = self.setup, model.shape.device, model.shape.dtype
        if st.direction.source == "clean":
            idx = torch.as_tensor(pr)
            return {h: st.clean[h][idx].to(device=dev, dtype=dtype) for h in self.source_needed}, None
        store: dict[str, torch.Tensor] = {}

        def grab(act: torch.Tensor, name: str) -> None:
            store[name] = act.detach()

        with torch.no_grad():
            resid = st.source.forward(
                model, st.prompts, pr, sa, hooks=[(h, grab) for h in self.source_needed]
            )
            logits = model.unembed_at(resid, torch.as_tensor(st.prompts.answer_pos[pr], device=dev))
        return store, logits


def _setup(model: LM, prompts: PromptSet, spec: SweepSpec, clean, cols, qk_fix: bool, reference, logger):
    st = setup(model, prompts, spec, clean, complete=True, reference=reference, logger=logger)
    site_hooks = st.hooks
    layers = sorted({p.layer for t in st.targets for p in t.patches})
    if qk_fix:
        check_qk_fix(model, spec)
        hooks = qk_fix_hooks(layers)
        needed = [h for h in hooks if h.endswith(("hook_q", "hook_k", "hook_v"))]
        missing = [h for h in needed if h not in st.clean]
        if missing:
            st = replace(
                st,
                clean={
                    **clean_cache(model, prompts, missing, memory_budget_mb=spec.memory_budget_mb),
                    **st.clean,
                },
            )
    else:
        hooks = needed = site_hooks
    return _Attribution(st, cols, site_hooks, hooks, needed, layers, qk_fix)


def _block(model: LM, a: _Attribution, pr: np.ndarray, sa: np.ndarray, batched: bool):
    """One block of rows: the base and corrupted outputs and, per differentiated output, ``[n_targets, R]``
    estimates."""
    st = a.setup
    dev = model.shape.device
    prompts, clean = st.prompts, st.clean
    site = SITES[st.spec.site]
    idx = torch.as_tensor(pr)
    apos = torch.as_tensor(prompts.answer_pos[pr], device=dev)
    clean_logp = torch.log_softmax(clean[ANSWER_LOGITS][idx].to(dev).double(), dim=-1)
    answers, wrong = AnswerIds.of(prompts.answers, pr, dev), AnswerIds.of(prompts.wrong, pr, dev)
    source, source_logits = a.sources(model, pr, sa)
    est: dict[str, np.ndarray] = {}
    with torch.enable_grad():
        logits, acts = _forward(model, st, (pr, sa), a.hooks, apos)
        outs = _outputs(logits, clean_logp, answers, wrong)
        grad_hooks = [h for h in a.hooks if not h.endswith(("hook_q", "hook_k"))] if a.qk_fix else a.hooks
        all_grads = _backward(outs, a.cols, [acts[h] for h in grad_hooks], batched=batched)
        for c, gs in zip(a.cols, all_grads, strict=True):
            unused = [
                h for h, g in zip(grad_hooks, gs, strict=True) if g is None and h.endswith("hook_pattern")
            ]
            if (
                a.qk_fix and unused
            ):  # a pattern hook that fires after the fact: its gradient would silently be zero
                raise ValueError(f"qk_fix: {unused} do not reach the output on this model; use qk_fix=False")
            grads = {
                h: (torch.zeros_like(acts[h]) if g is None else g)
                for h, g in zip(grad_hooks, gs, strict=True)
            }
            if a.qk_fix:
                per_layer = {
                    lay: qk_fixed_heads(
                        model,
                        lay,
                        acts,
                        grads,
                        {h: source[h] for h in a.source_needed if f"blocks.{lay}." in h},
                    )
                    for lay in a.layers
                }
                per_pos = {
                    site.hook_name(lay): v.detach().cpu().numpy()[:, None, :] for lay, v in per_layer.items()
                }
            else:
                per_pos = {}
                for h in a.site_hooks:
                    delta = source[h].to(acts[h].dtype) - acts[h].detach()
                    per_pos[h] = site.per_position(delta.double() * grads[h].double()).cpu().numpy()
            est[c] = _target_estimates(site, st.targets, per_pos, prompts, pr)
            del gs, grads
    base = {kk: v.detach().cpu().numpy() for kk, v in outs.items()}
    corr = base
    if source_logits is not None:
        corr = {
            k: v.cpu().numpy() for k, v in answer_values(source_logits, clean_logp, answers, wrong).items()
        }
    return base, corr, est


def _patched_values(
    base: dict[str, np.ndarray], est: dict[str, np.ndarray], n_targets: int
) -> dict[str, np.ndarray]:
    """Patched rows' value columns, ``[n_targets, rows]``: base value + estimated change; NaN
    where no requested metric needs the column (LD's change is booked on ``logit_ans``)."""
    n_rows = len(base["kl"])
    vals = {c: np.full((n_targets, n_rows), np.nan) for c in VALUE_COLUMNS}
    if "ld" in est:
        vals["logit_ans"] = base["logit_ans"][None] + est["ld"]
        vals["logit_wrong"] = np.broadcast_to(base["logit_wrong"][None], vals["logit_ans"].shape).copy()
    for c in ("prob_ans", "prob_wrong", "kl"):
        if c in est:
            vals[c] = base[c][None] + est[c]
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
    reference: PromptSet | None = None,
) -> pd.DataFrame:
    """An attribution sweep: the raw frame of :mod:`patchbench.rawframe` with first-order ``patched`` rows.

    Same targets (ids, components), rows and metadata layout as :func:`patchbench.engine.sweep.run_sweep`
    for ``spec`` (either direction, every corruption); ``attrs['patchbench']['method'] == 'attribution'``.
    ``clean`` is a cache from :func:`patchbench.engine.cache.clean_cache`; hooks it lacks are computed
    here. ``name`` is the model's name in the metadata (default ``model.name``); ``reference`` a
    corruption's named reference prompt set (mean ablation). ``batched_backward`` differentiates all
    outputs in one vmapped backward pass (about twice as fast as one pass per output on CPU for three
    outputs; same numbers). ``qk_fix`` where it is not defined is refused (:func:`patchbench.qk_fix.check_qk_fix`).
    """
    log_ = logger or log
    cols = grad_columns(metrics)
    a = _setup(model, prompts, spec, clean, cols, qk_fix, reference, log_)
    st = a.setup
    axis = head_axis(spec.site, model.shape, log_)
    k = spec.n_samples
    all_prompt, all_sample = st.rows()
    step = _rows_per_block(model, st.max_len, spec.memory_budget_mb, 0)
    step = max(k, step - step % k)
    log_.info(
        "attribution %s/%s: %d targets x %d rows, %d backward pass(es) %s, blocks of %d rows%s",
        *(prompts.task, spec.label, len(st.targets), len(all_prompt), len(cols), cols, step),
        ", AtP* QK fix" if qk_fix else "",
    )

    base_parts: list[pd.DataFrame] = []
    est_parts: list[dict[str, np.ndarray]] = []  # per block: column -> [n_targets, R]
    base_values: list[dict[str, np.ndarray]] = []
    bar = tqdm(total=len(all_prompt), desc=f"{spec.site} attribution", disable=not progress, unit="row")
    for i in range(0, len(all_prompt), step):
        pr, sa = all_prompt[i : i + step], all_sample[i : i + step]
        base, corr, est = _block(model, a, pr, sa, batched_backward)
        est_parts.append(est)
        base_values.append(base)
        base_parts.append(baseline_rows("corrupted", spec.site, spec.window, pr, sa, corr))
        bar.update(len(pr))
    bar.close()

    base_all = {c: np.concatenate([p[c] for p in base_values]) for c in base_values[0]}
    est_all = {c: np.concatenate([p[c] for p in est_parts], axis=1) for c in cols}
    vals = _patched_values(base_all, est_all, len(st.targets))
    patched = patched_rows(
        st.targets, all_prompt, all_sample, vals, target_positions(st.targets, prompts, all_prompt)
    )

    facts = dict(metrics=list(metrics), grad_columns=cols, qk_fix=qk_fix, head_axis=axis)
    meta = raw_metadata(name or model.name, prompts, spec, "attribution", st.targets, st.facts, **facts)
    return assemble_raw([clean_rows(st.clean, prompts, spec, model.shape.device), *base_parts, patched], meta)


def site_gradients(
    model: LM, prompts: PromptSet, spec: SweepSpec, output: str = "ld"
) -> dict[str, Float[torch.Tensor, "rows ..."]]:
    """Gradient of one output (``ld``, ``logit_ans``, ``prob_ans``, ``prob_wrong``, ``kl``) at every hook of ``spec``.

    Evaluated at the base run of every prompt (GN: noise sample 0), all prompts in one batch;
    for checks and inspection (the sweep itself is :func:`run_attribution`).
    """
    st = setup(model, prompts, spec)
    dev = model.shape.device
    rows = np.arange(len(prompts), dtype=np.int64)
    with torch.enable_grad():
        logits, acts = _forward(
            model, st, (rows, np.zeros_like(rows)), st.hooks, torch.as_tensor(prompts.answer_pos, device=dev)
        )
        clean_logp = torch.log_softmax(st.clean[ANSWER_LOGITS].to(dev).double(), -1)
        outs = _outputs(
            logits,
            clean_logp,
            AnswerIds.of(prompts.answers, rows, dev),
            AnswerIds.of(prompts.wrong, rows, dev),
        )
        if output not in outs:
            raise ValueError(f"unknown output {output!r}; choose from {sorted(outs)}")
        grads = torch.autograd.grad(outs[output].sum(), [acts[h] for h in st.hooks])
    return {h: g.detach() for h, g in zip(st.hooks, grads, strict=True)}


def attribution_effects(raw: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    """:func:`patchbench.metrics.effects` of an attribution raw frame (``method='attribution'``, its metrics)."""
    from patchbench.metrics import effects
    from patchbench.rawframe import metadata

    kwargs.setdefault("metrics", tuple(metadata(raw).get("metrics", ("prob", "logit_diff", "kl"))))
    return effects(raw, method="attribution", **kwargs)
