"""What one run's output is: the raw value columns, read from the logits at the answer position.

Every run (clean, corrupted, patched; exact or first-order) is summarised per row by the value
columns of the raw frame (:data:`patchbench.rawframe.VALUE_COLUMNS`): the summed logits and
probabilities of the answers r and wrong answers r', and KL(P_clean ‖ P_run) over the vocabulary.
:func:`answer_values` computes them from answer-position logits, in float64 and differentiably
(attribution patching back-propagates through the same function the exact engine evaluates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int

__all__ = ["AnswerIds", "answer_values", "index_tensor", "summed_logits"]


def index_tensor(a, device=None) -> Int[torch.Tensor, ...]:
    """An int64 tensor copy of an index array (PromptSet arrays read from Parquet are read-only)."""
    t = torch.from_numpy(np.array(a, dtype=np.int64))
    return t.to(device) if device is not None else t


@dataclass(frozen=True)
class AnswerIds:
    """Token ids of some rows' answers (or wrong answers), right-padded: ``idx`` and a 0/1 ``mask``."""

    idx: Int[torch.Tensor, "rows width"]
    mask: Float[torch.Tensor, "rows width"]

    @classmethod
    def of(cls, ids: list[np.ndarray], rows: np.ndarray, device) -> AnswerIds:
        """The ids of prompts ``rows`` (``ids`` is ``PromptSet.answers`` or ``.wrong``)."""
        width = max(len(ids[int(p)]) for p in rows)
        idx = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.float64)
        for r, p in enumerate(rows):
            a = index_tensor(ids[int(p)])
            idx[r, : len(a)] = a
            mask[r, : len(a)] = 1.0
        return cls(idx.to(device), mask.to(device))

    def repeat(self, reps: int) -> AnswerIds:
        """``reps`` copies of the rows, one after the other (target-major batches)."""
        if reps == 1:
            return self
        return AnswerIds(self.idx.repeat(reps, 1), self.mask.repeat(reps, 1))


def summed_logits(
    logits: Float[torch.Tensor, "rows d_vocab"], ids: AnswerIds
) -> Float[torch.Tensor, " rows"]:
    """Σ logit over each row's ids (float64): ``logit_ans`` / ``logit_wrong``; their difference is LD."""
    return (logits.double().gather(1, ids.idx) * ids.mask).sum(1)


#: Rows per piece of :func:`answer_values` (float64 over the vocabulary: a piece stays in cache
#: instead of the whole batch's log-probabilities being written to fresh memory).
PIECE_ROWS = 8


def answer_values(
    logits: Float[torch.Tensor, "reps_x_rows d_vocab"],
    clean_logp: Float[torch.Tensor, "rows d_vocab"],
    answers: AnswerIds,
    wrong: AnswerIds,
    reps: int = 1,
) -> dict[str, Float[torch.Tensor, " reps_x_rows"]]:
    """The value columns of ``reps`` copies of some rows (logits target-major: copy j is rows
    ``j*R .. (j+1)*R-1``); ``answers``, ``wrong`` and ``clean_logp`` describe the R rows once.
    Computed a few copies at a time (at least one, about :data:`PIECE_ROWS` rows; each row's values depend on
    that row only), so the clean distribution is never repeated in memory."""
    r = clean_logp.shape[0]
    clean_p = clean_logp.exp()
    step = max(1, PIECE_ROWS // r)
    pieces = []
    for j0 in range(0, reps, step):
        k = min(step, reps - j0)
        x = logits[j0 * r : (j0 + k) * r].double()
        logp = torch.log_softmax(x, dim=-1)
        ai, wi = answers.repeat(k), wrong.repeat(k)
        kl = (clean_p * (clean_logp - logp.view(k, r, -1))).sum(-1).reshape(k * r)
        pieces.append(
            {
                "logit_ans": summed_logits(x, ai),
                "logit_wrong": summed_logits(x, wi),
                "prob_ans": (logp.gather(1, ai.idx).exp() * ai.mask).sum(1),
                "prob_wrong": (logp.gather(1, wi.idx).exp() * wi.mask).sum(1),
                "kl": kl,
            }
        )
    return {key: torch.cat([p[key] for p in pieces]) for key in pieces[0]}
