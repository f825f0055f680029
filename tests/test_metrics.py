"""Metrics on hand-made raw frames and hand-made logits (paper §2.1, App. C)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from patchbench.engine.readout import AnswerIds, answer_values
from patchbench.metrics import baselines, effects

COLS = [
    "run",
    "target",
    "site",
    "layer",
    "layers",
    "head",
    "position",
    "window",
    "prompt",
    "sample",
    "logit_ans",
    "logit_wrong",
    "prob_ans",
    "prob_wrong",
    "kl",
]


def row(run, target, prompt, la, lw, pa, pw, kl, sample=0, layer=-1, head=-1):
    return [
        run,
        target,
        "attn_head",
        layer,
        "" if target < 0 else f"{layer}:{layer + 1}",
        head,
        -1,
        1,
        prompt,
        sample,
        la,
        lw,
        pa,
        pw,
        kl,
    ]


@pytest.fixture
def raw():
    rows = [
        row("clean", -1, 0, 5, 1, 0.6, 0.1, 0.0),
        row("clean", -1, 1, 4, 2, 0.5, 0.2, 0.0),
        row("corrupted", -1, 0, 1, 3, 0.1, 0.5, 1.0),
        row("corrupted", -1, 1, 2, 2, 0.2, 0.3, 0.6),
        row("patched", 0, 0, 3, 2, 0.3, 0.3, 0.4, layer=1, head=2),
        row("patched", 0, 1, 3, 2, 0.35, 0.25, 0.2, layer=1, head=2),
        row("patched", 1, 0, 1, 3, 0.1, 0.5, 1.0, layer=0, head=0),
        row("patched", 1, 1, 2, 2, 0.2, 0.3, 0.6, layer=0, head=0),
    ]
    df = pd.DataFrame(rows, columns=COLS)
    df.attrs["patchbench"] = {"model": "m", "task": "t", "corruption": "str", "spec": {"position": "all"}}
    return df


def test_effects_by_hand(raw):
    eff = effects(raw, ["prob", "logit_diff", "kl", "stolfo"]).set_index(["component", "metric"])
    # LD_cl = (4, 2), LD_* = (-2, 0): denominator 3 - (-1) = 4; LD_pt = (1, 1)
    assert eff.loc[("1.2", "logit_diff"), "effect"] == pytest.approx((1 - (-1)) / 4)
    assert eff.loc[("1.2", "logit_diff"), "effect_sd"] == pytest.approx(math.sqrt(2 * 0.25**2))
    assert eff.loc[("1.2", "prob"), "effect"] == pytest.approx((0.2 + 0.15) / 2)
    assert eff.loc[("1.2", "kl"), "effect"] == pytest.approx((0.6 + 0.4) / 2)
    stolfo0 = 0.5 * ((0.3 - 0.1) / 0.1 + (0.5 - 0.3) / 0.3)
    stolfo1 = 0.5 * ((0.35 - 0.2) / 0.2 + (0.3 - 0.25) / 0.25)
    assert eff.loc[("1.2", "stolfo"), "effect"] == pytest.approx((stolfo0 + stolfo1) / 2)
    # a target that reproduces the corrupted run has zero effect under every metric
    assert eff.xs("0.0", level="component")["effect"].abs().max() == pytest.approx(0)
    assert (eff["n_prompts"] == 2).all() and (eff["model"] == "m").all() and (eff["detected"] == "").all()
    assert set(eff.reset_index()["layer"]) == {0, 1}


def test_per_prompt_logit_diff_normalises_each_prompt(raw):
    eff = effects(raw, ["logit_diff"], per_prompt=True)
    t = eff[eff.component == "1.2"].set_index("prompt")["effect"]
    assert t[0] == pytest.approx((1 - (-2)) / (4 - (-2)))
    assert t[1] == pytest.approx((1 - 0) / (2 - 0))


def test_noise_samples_are_averaged_per_prompt(raw):
    """Two GN samples per prompt: the effect is the mean over prompts of the per-prompt sample means."""
    extra = [
        row("corrupted", -1, 0, 0, 4, 0.05, 0.6, 1.2, sample=1),
        row("corrupted", -1, 1, 1, 3, 0.15, 0.35, 0.7, sample=1),
        row("patched", 0, 0, 2, 2, 0.2, 0.4, 0.5, sample=1, layer=1, head=2),
        row("patched", 0, 1, 2, 1, 0.3, 0.2, 0.3, sample=1, layer=1, head=2),
        row("patched", 1, 0, 0, 4, 0.05, 0.6, 1.2, sample=1),
        row("patched", 1, 1, 1, 3, 0.15, 0.35, 0.7, sample=1),
    ]
    df = pd.concat([raw, pd.DataFrame(extra, columns=COLS)], ignore_index=True)
    df.attrs = raw.attrs
    eff = effects(df, ["prob", "logit_diff"]).set_index(["component", "metric"])["effect"]
    prob = np.mean([np.mean([0.3 - 0.1, 0.2 - 0.05]), np.mean([0.35 - 0.2, 0.3 - 0.15])])
    assert eff[("1.2", "prob")] == pytest.approx(prob)
    ld_c = np.mean([-2, 0, -4, -2])
    ld_pt = np.mean([1, 1, 0, 1])
    assert eff[("1.2", "logit_diff")] == pytest.approx((ld_pt - ld_c) / (3 - ld_c))


def test_baselines_and_errors(raw):
    b = baselines(raw)
    assert (
        b["clean_logit_diff"] == 3
        and b["corrupted_logit_diff"] == -1
        and b["corrupted_kl"] == pytest.approx(0.8)
    )
    with pytest.raises(ValueError, match="unknown metrics"):
        effects(raw, ["accuracy"])
    with pytest.raises(ValueError, match="no clean or no corrupted"):
        effects(raw[raw.run != "clean"])


def test_named_position_component(raw):
    raw = raw.copy()
    raw.attrs = {"patchbench": {"spec": {"position": "END"}}}
    eff = effects(raw, ["prob"])
    assert sorted(eff["component"]) == ["0.0@END", "1.2@END"] and (eff["positions"] == "END").all()


def test_engine_columns_on_hand_made_logits():
    """Summed answer / wrong logits and probabilities, and KL to the clean distribution, from one logit row."""
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0, 1.0], [0.0, 0.0, 3.0, -2.0, 1.0]], dtype=torch.float64)
    clean = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0], [0.5, -0.5, 2.0, 0.0, 0.0]], dtype=torch.float64)
    rows = np.array([0, 1])
    answers = [np.array([0, 4]), np.array([2])]  # several answers (greater-than style) are summed
    wrong = [np.array([1]), np.array([3, 4])]
    ans, wr = AnswerIds.of(answers, rows, "cpu"), AnswerIds.of(wrong, rows, "cpu")
    clean_logp = torch.log_softmax(clean, -1)

    def columns(lg, reps):
        return {k: v.numpy() for k, v in answer_values(lg, clean_logp, ans, wr, reps).items()}

    got = columns(logits, 1)
    p = torch.softmax(logits, -1).numpy()
    q = torch.softmax(clean, -1).numpy()
    assert got["logit_ans"] == pytest.approx([2.0 + 1.0, 3.0])
    assert got["logit_wrong"] == pytest.approx([0.5, -2.0 + 1.0])
    assert got["prob_ans"] == pytest.approx([p[0, 0] + p[0, 4], p[1, 2]])
    assert got["prob_wrong"] == pytest.approx([p[0, 1], p[1, 3] + p[1, 4]])
    assert got["kl"] == pytest.approx([(q[i] * np.log(q[i] / p[i])).sum() for i in range(2)])
    # two copies (target-major): KL uses the same clean reference for each copy
    got2 = columns(torch.cat([logits, clean]), 2)
    assert got2["kl"][2:] == pytest.approx([0, 0], abs=1e-12)
