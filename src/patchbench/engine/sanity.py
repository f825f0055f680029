"""The two identities every exact sweep checks on its first block of prompts, in either direction.

They run on one row per distinct answer position of the block (:func:`identity_rows`): a row's
patched run depends on the others only through the batch it shares, so these rows reach every
path a row can take (answer before or after a suffix start, each prompt length), for the cost of
a few rows instead of a forward of the whole block. The *base* run is the one the patches go into
(the corrupted run for denoising, the clean run for noising), the *source* run the other one.

1. Patching nothing changes nothing (self-patch): patching a target with the base run's own
   activations reproduces the base outputs (the prefix-reusing patched run is the base run).
2. Patching everything gives the source run: for a token-level corruption, the source run's whole
   residual stream at layer 0 (so a patch that silently does nothing cannot pass); for an
   activation-level one (mean, zero), every activation the sweep patches at once (restoring all of
   them gives the clean run, ablating all of them the ablated run). On a block with the base run's
   keys and values (suffix reuse), positions before the first one where any row's source layer-0
   residual differs from the base one (bitwise) are the same in both runs in every layer (causal
   attention), so the patched run starts there and attends to the base run's keys and values before
   it: the same identity, on the suffix path the sweep's patched runs take, for the cost of the
   suffix only.

Both results go to the log and the frame's metadata; beyond tolerance they raise
:class:`~patchbench.engine.patch.SanityError`. A corruption that leaves the run unchanged is refused too.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from patchbench.engine.cache import ANSWER_LOGITS, RESID0, RESID0_SITE
from patchbench.engine.patch import Block, SanityError, patched_logits, sources
from patchbench.engine.readout import index_tensor
from patchbench.engine.setup import Setup
from patchbench.lm import LM
from patchbench.sites import HookPatch, PatchTarget

__all__ = ["check_identities", "clean_from", "identity_rows", "self_patch_targets", "tolerance"]


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) of the identities for a model dtype."""
    return (1e-4, 1e-4) if dtype in (torch.float32, torch.float64) else (5e-2, 2e-2)


def self_patch_targets(targets: list[PatchTarget]) -> list[PatchTarget]:
    """The self-patch check's targets: the last target and the last one of an earlier start layer.

    Late start layers keep the check cheap (a few layers of one batch); two distinct start layers
    check the prefix reuse at more than one layer.
    """
    last = targets[-1]
    earlier = [t for t in targets if t.start_layer < last.start_layer]
    return [earlier[-1], last] if earlier else [last]


def identity_rows(block: Block) -> np.ndarray:
    """The block rows the identities run on: the first row of each distinct answer position."""
    assert block.answer_pos is not None
    return np.unique(block.answer_pos.cpu().numpy(), return_index=True)[1]


def clean_from(source0: torch.Tensor, block: Block) -> int:
    """The first position where any row's source layer-0 residual (``source0`` [R, P, d]) differs from the
    base one (bitwise); 0 when none does (the identity then runs every position)."""
    same = (source0 == block.resid[0]).flatten(2).all(-1).all(0)  # [P]
    first = int(same.long().cumprod(0).sum())
    return 0 if first >= same.shape[0] else first


def everything(st: Setup, block: Block, max_len: int) -> tuple[PatchTarget, str, int]:
    """The target that patches everything the source run changes (see the module docstring), what it
    patches (for messages), and the first position it patches."""
    if st.corruption.kind == "activations":
        parts = tuple(dict.fromkeys(p for t in st.targets for p in t.patches))
        layers = [p.layer for p in parts]
        target = PatchTarget(
            id=-2, site=st.spec.site, layer=min(layers), layers=(min(layers), max(layers) + 1), head=-1,
            position=-1, window=1, patches=parts, component="all",
        )  # fmt: skip
        return target, "activations at every target", 0
    src = sources(st.clean, [RESID0], block, block.resid[0].dtype)
    first = clean_from(src[RESID0], block) if block.kv is not None else 0
    parts = (
        tuple(HookPatch(RESID0, 0, None, p) for p in range(first, max_len))
        if first > 0
        else (HookPatch(RESID0, 0, None, -1),)
    )
    target = PatchTarget(
        id=-2,
        site=RESID0_SITE,
        layer=0,
        layers=(0, 1),
        head=-1,
        position=-1,
        window=1,
        patches=parts,
        component="0",
    )
    return target, "residual stream at layer 0", first


def check_identities(model: LM, st: Setup, block: Block, log: logging.Logger) -> dict[str, Any]:
    """Both identities on :func:`identity_rows` of ``block`` (which holds the base run's activations of
    :func:`self_patch_targets`); the corruption is checked on every row."""
    prompts, spec, max_len = st.prompts, st.spec, st.max_len
    atol, rtol = tolerance(model.shape.dtype)
    corr = block.values(block.corrupted_logits)
    cl_logits = st.clean[ANSWER_LOGITS]
    cl = block.values(cl_logits[index_tensor(block.prompt, cl_logits.device)].to(block.resid[0].device))
    ld = lambda c: c["logit_ans"] - c["logit_wrong"]  # noqa: E731

    def gap(a, b):
        diff = np.maximum(np.abs(ld(a) - ld(b)), np.abs(a["prob_ans"] - b["prob_ans"]))
        allowed = atol + rtol * np.abs(ld(b))
        return float(diff.max()), bool((diff <= allowed).all())

    res: dict[str, Any] = {"atol": atol, "rtol": rtol}
    if np.max(np.abs(ld(cl) - ld(corr))) == 0 and np.max(np.abs(cl["prob_ans"] - corr["prob_ans"])) == 0:
        raise SanityError(
            f"{prompts.task}/{spec.corruption}: the corrupted run equals the clean run exactly on every prompt; "
            "the corruption does nothing (GN with nu=0 or sigma=0? STR with corrupted == clean? a resample "
            "pairing of equal prompts? an ablation of activations that are already its value?)"
        )
    base_name, source_name = st.direction.base, st.direction.source
    rows = identity_rows(block)
    block = block.rows(rows)
    corr, cl = ({k: v[rows] for k, v in c.items()} for c in (corr, cl))
    base, other = (corr, cl) if base_name == "corrupted" else (cl, corr)
    res["rows"] = [int(r) for r in rows]
    # 1. self-patch: the base run's own activations into the base run
    chosen = self_patch_targets(st.targets)
    worst = 0.0
    ok = True
    for t in chosen:
        src = {k: block.base_acts[k] for k in t.hooks}
        got = block.values(patched_logits(model, [t], block, src, prompts, max_len))
        d, good = gap(got, base)
        worst, ok = max(worst, d), ok and good
    res["self_patch_maxdiff"] = worst
    res["self_patch_targets"] = [t.component for t in chosen]
    # 2. everything: the source run's layer-0 residual (from the first position that differs, on the
    # suffix path), or every activation the sweep patches
    t0, what, first = everything(st, block, max_len)
    src = sources(st.clean, t0.hooks, block, model.shape.dtype)
    got = block.values(patched_logits(model, [t0], block, src, prompts, max_len))
    d0, good0 = gap(got, other)
    token_denoising = base_name == "corrupted" and st.corruption.kind == "tokens"
    res["clean_resid0_maxdiff" if token_denoising else "source_everything_maxdiff"] = d0
    res["clean_resid0_from"] = first
    res["passed"] = bool(ok and good0)
    log.info(
        "sanity %s/%s/%s%s on block rows %s: self-patch maxdiff %.3g, %s run patched in everywhere maxdiff %.3g "
        "(positions >= %d; atol %g, rtol %g)",
        prompts.task,
        spec.corruption,
        spec.site,
        "" if base_name == "corrupted" else f" ({spec.direction})",
        res["rows"],
        worst,
        source_name,
        d0,
        res["clean_resid0_from"],
        atol,
        rtol,
    )
    if not ok:
        raise SanityError(
            f"patching {res['self_patch_targets']} with the {base_name} run's own activations moved the output by "
            f"{worst:.3g} (> atol {atol} + rtol {rtol}·|LD|): the prefix-reusing patched run does not reproduce "
            f"the {base_name} run"
        )
    if not good0:
        raise SanityError(
            f"patching the {source_name} run's {what} gave outputs {d0:.3g} away from the {source_name} run: the "
            f"patch does not reach the model, or the {base_name} run leaks past it"
        )
    return res
