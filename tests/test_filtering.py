"""The correctness filter on a small random model (native route) with GPT-2's vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchbench.filtering import answer_logits, filter_correct
from patchbench.tasks import build_task


@pytest.fixture(scope="module")
def model(gpt2_tokenizer):
    from patchbench.lm import load_native

    cfg = dict(
        n_layers=1, d_model=16, n_ctx=64, d_head=8, n_heads=2, d_mlp=32, act_fn="gelu", d_vocab=50257,
        normalization_type="LN", seed=0,
    )  # fmt: skip
    return load_native(cfg, tokenizer=gpt2_tokenizer)


@pytest.fixture(scope="module")
def ioi(gpt2_tokenizer, mirror):
    return build_task("ioi", gpt2_tokenizer, mirror, n_prompts=40, seed=0)


def _with_bias(model, token_ids, value):
    """Add ``value`` to the unembedding bias of ``token_ids``; returns the weights to restore."""
    saved = model.ht_state_dict()
    state = {k: v.clone() for k, v in saved.items()}
    state["unembed.b_U"][torch.as_tensor(token_ids)] += value
    model.load_ht_state_dict(state)
    return saved


def test_answer_logits_match_a_full_forward_pass(model, ioi):
    got = answer_logits(model, ioi, batch_size=7)
    for i in (0, 13, 39):
        with torch.no_grad():  # the library's own forward, one prompt at a time, no padding
            full = model.bridge(torch.as_tensor(ioi.clean[i]).unsqueeze(0))[0, ioi.answer_pos[i]]
        torch.testing.assert_close(got[i], full, rtol=1e-4, atol=1e-4)


def test_keeps_exactly_the_prompts_whose_top1_is_the_answer(model, ioi):
    target = int(ioi.answers[0][0])
    saved = _with_bias(model, [target], 100.0)
    try:
        kept, stats = filter_correct(model, ioi, batch_size=16)
    finally:
        model.load_ht_state_dict(saved)
    expect = [i for i in range(len(ioi)) if int(ioi.answers[i][0]) == target]
    assert kept.meta["text"].tolist() == [ioi.meta["text"][i] for i in expect]
    assert stats["n_total"] == 40 and stats["n_correct"] == len(expect)
    assert stats["accuracy"] == pytest.approx(len(expect) / 40)
    # the boosted token takes ~all probability where it is the answer, ~none elsewhere
    assert stats["mean_prob_answer"] == pytest.approx(len(expect) / 40, abs=1e-3)


def test_stats_agree_with_logits(model, ioi):
    logits = answer_logits(model, ioi)
    _, stats = filter_correct(model, ioi)
    ld = [logits[i, ioi.answers[i]].sum() - logits[i, ioi.wrong[i]].sum() for i in range(len(ioi))]
    p = [logits[i].softmax(-1)[ioi.answers[i]].sum() for i in range(len(ioi))]
    correct = [int(logits[i].argmax()) in ioi.answers[i] for i in range(len(ioi))]
    assert stats["mean_logit_diff"] == pytest.approx(float(np.mean(ld)), rel=1e-5)
    assert stats["mean_prob_answer"] == pytest.approx(float(np.mean(p)), rel=1e-5)
    assert stats["n_correct"] == sum(correct)


def test_greater_than_any_larger_year_counts(model, gpt2_tokenizer, mirror):
    gt = build_task("greater_than", gpt2_tokenizer, mirror, n_prompts=30, seed=0)
    ninety_nine = gpt2_tokenizer.encode("99")
    saved = _with_bias(model, ninety_nine, 100.0)  # "99" is larger than every YY (02..98)
    try:
        kept, stats = filter_correct(model, gt)
    finally:
        model.load_ht_state_dict(saved)
    assert len(kept) == 30 and stats["accuracy"] == 1.0
    zero_zero = gpt2_tokenizer.encode("00")
    saved = _with_bias(model, zero_zero, 100.0)  # "00" is never larger
    try:
        kept, stats = filter_correct(model, gt)
    finally:
        model.load_ht_state_dict(saved)
    assert len(kept) == 0 and stats["n_correct"] == 0 and stats["mean_logit_diff"] < 0
