"""Keep the prompts a model answers correctly, as the paper does for arithmetic and factual recall.

A prompt is answered correctly when the model's top-1 next token at ``answer_pos`` of the clean
prompt is one of its ``answers`` (for greater-than: any year larger than YY). Alongside the
kept prompts, ``filter_correct`` returns the accuracy statistics that the workflow records for
every task: ``n_total``, ``n_correct``, ``accuracy``, ``mean_prob_answer`` (summed probability
of the answer tokens, mean over all prompts) and ``mean_logit_diff`` (summed answer logits minus
summed wrong-answer logits, mean over all prompts).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from patchbench.lm import LM
from patchbench.prompts import PromptSet

__all__ = ["answer_logits", "check_enough", "filter_correct"]

log = logging.getLogger(__name__)


@torch.no_grad()
def answer_logits(
    model: LM, prompts: PromptSet, batch_size: int = 64
) -> Float[torch.Tensor, "n_prompts d_vocab"]:
    """Next-token logits at ``answer_pos`` of every clean prompt (float32, on the CPU), computed as the
    engine's clean run computes them (embed, every block, unembedding at ``answer_pos``).

    Prompts are right-padded; causal attention makes the padding invisible at ``answer_pos``.
    """
    device = model.shape.device
    tokens = prompts.tokens("clean")
    out = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=f"filter {prompts.task}", disable=len(starts) < 4, leave=False):
        idx = torch.arange(start, min(start + batch_size, len(prompts)))
        lengths = torch.as_tensor(prompts.lengths[idx.numpy()])
        batch = tokens[idx, : int(lengths.max())].to(device)
        pos = torch.as_tensor(prompts.answer_pos[idx.numpy()], device=device)
        out.append(model.unembed_at(model.run_blocks(model.embed(batch), 0), pos).float().cpu())
    return torch.cat(out)


def filter_correct(model: LM, prompts: PromptSet, batch_size: int = 64) -> tuple[PromptSet, dict]:
    """The prompts whose top-1 next token is an answer, and the accuracy statistics."""
    if len(prompts) == 0:
        raise ValueError(f"{prompts.task}: empty PromptSet, nothing to filter")
    prompts.validate(model.shape.d_vocab)
    logits = answer_logits(model, prompts, batch_size)
    probs = logits.softmax(-1)
    top1 = logits.argmax(-1).numpy()
    correct = np.array([top1[i] in set(prompts.answers[i].tolist()) for i in range(len(prompts))])
    p_ans = np.array(
        [probs[i, torch.as_tensor(prompts.answers[i])].sum().item() for i in range(len(prompts))]
    )
    ld = np.array(
        [
            logits[i, torch.as_tensor(prompts.answers[i])].sum().item()
            - logits[i, torch.as_tensor(prompts.wrong[i])].sum().item()
            for i in range(len(prompts))
        ]
    )
    stats = {
        "n_total": int(len(prompts)),
        "n_correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "mean_prob_answer": float(p_ans.mean()),
        "mean_logit_diff": float(ld.mean()),
    }
    log.info(
        "%s: %d of %d prompts answered correctly (accuracy %.3f, mean P(answer) %.3f, mean LD %.3f)",
        prompts.task,
        stats["n_correct"],
        stats["n_total"],
        stats["accuracy"],
        stats["mean_prob_answer"],
        stats["mean_logit_diff"],
    )
    return prompts.subset(np.flatnonzero(correct)), stats


def check_enough(kept: int, total: int, min_prompts: int, filtered: bool, model: str, task: str) -> None:
    """Refuse a prompt set left with fewer than ``min_prompts`` prompts, with the fix that applies:
    with the correctness filter on, turning it off or lowering min_prompts; with it off (every
    prompt already kept), lowering min_prompts or generating more prompts."""
    from patchbench.errors import InputError

    if kept >= min_prompts:
        return
    if filtered:
        raise InputError(
            f"{model} answers only {kept} of {total} {task} prompts correctly (min_prompts={min_prompts}); is the "
            f"model trained / the right one? Fix: set filter_correct: false to patch all prompts anyway, or lower "
            f"min_prompts to {kept}"
        )
    raise InputError(
        f"the {task} prompt set for {model} has {kept} prompts, fewer than min_prompts={min_prompts} "
        f"(filter_correct is already false: every prompt is kept). Fix: lower min_prompts to {kept} or raise "
        f"tasks.{task}.n_prompts"
    )
