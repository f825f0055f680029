"""The two identities every exact sweep checks on its first block of prompts.

1. Self-patch: patching a target with the corrupted run's own activations reproduces the corrupted
   outputs (the prefix-reusing patched run is the corrupted run).
2. Clean layer 0: patching the whole residual stream at layer 0 with clean activations reproduces
   the clean outputs (so a patch that silently does nothing cannot pass).

Both results go to the log and the frame's metadata; beyond tolerance they raise
:class:`~patchbench.engine.patch.SanityError`. A corruption that leaves the run unchanged is refused too.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from patchbench.engine.cache import ANSWER_LOGITS, RESID0
from patchbench.engine.patch import Block, SanityError, patched_logits, sources
from patchbench.engine.readout import index_tensor
from patchbench.prompts import PromptSet
from patchbench.sites import HookPatch, PatchTarget, SweepSpec

__all__ = ["check_identities", "self_patch_targets", "tolerance"]


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


def check_identities(
    model,
    prompts: PromptSet,
    spec: SweepSpec,
    targets: list[PatchTarget],
    block: Block,
    clean: dict[str, torch.Tensor],
    max_len: int,
    log: logging.Logger,
) -> dict[str, Any]:
    """Both identities on ``block`` (which holds the corrupted activations of :func:`self_patch_targets`)."""
    atol, rtol = tolerance(model.cfg.dtype)
    corr = block.values(block.corrupted_logits)
    cl_logits = clean[ANSWER_LOGITS]
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
            "the corruption does nothing (GN with nu=0 or sigma=0? STR with corrupted == clean?)"
        )
    # 1. self-patch: corrupted activations into the corrupted run
    chosen = self_patch_targets(targets)
    worst = 0.0
    ok = True
    for t in chosen:
        src = {k: block.corrupted_acts[k] for k in t.hooks}
        got = block.values(patched_logits(model, [t], block, src, prompts, max_len))
        d, good = gap(got, corr)
        worst, ok = max(worst, d), ok and good
    res["self_patch_maxdiff"] = worst
    res["self_patch_targets"] = [t.component for t in chosen]
    # 2. clean residual at layer 0, all positions
    t0 = PatchTarget(
        id=-2,
        site="resid_pre",
        layer=0,
        layers=(0, 1),
        head=-1,
        position=-1,
        window=1,
        patches=(HookPatch(RESID0, 0, None, -1),),
        component="0",
    )
    src = sources(clean, [RESID0], block, model.cfg.dtype)
    got = block.values(patched_logits(model, [t0], block, src, prompts, max_len))
    d0, good0 = gap(got, cl)
    res["clean_resid0_maxdiff"] = d0
    res["passed"] = bool(ok and good0)
    log.info(
        "sanity %s/%s/%s: self-patch maxdiff %.3g, clean resid_pre[0] maxdiff %.3g (atol %g, rtol %g)",
        prompts.task,
        spec.corruption,
        spec.site,
        worst,
        d0,
        atol,
        rtol,
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
