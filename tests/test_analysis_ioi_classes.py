"""The IOI head classifier: rules on synthetic statistics, statistics from a tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ioi_like_prompts, tiny_ioi_model
from patchbench.analysis.ioi_classes import (
    CLASSES,
    HEAD_STAT_COLUMNS,
    Thresholds,
    classifier_inputs,
    classify_heads,
    default_classes_path,
    head_classes_for,
    published_classes,
)
from patchbench.prompts import PromptSet


def _stats(
    rows: dict[tuple[int, int], dict[str, float]], n_layers: int = 3, n_heads: int = 4
) -> pd.DataFrame:
    recs = []
    for layer in range(n_layers):
        for head in range(n_heads):
            rec = {c: 0.05 for c in HEAD_STAT_COLUMNS[2:]}
            rec["dla"] = 0.01
            rec.update(rows.get((layer, head), {}))
            recs.append({"layer": layer, "head": head, **rec})
    return pd.DataFrame(recs, columns=list(HEAD_STAT_COLUMNS))


def _members(classes: pd.DataFrame, cls: str) -> list[tuple[int, int]]:
    sub = classes[classes["class"] == cls]
    return list(zip(sub["layer"].tolist(), sub["head"].tolist(), strict=True))


def test_rules_label_each_class_from_synthetic_patterns():
    stats = _stats(
        {
            (2, 1): {"end_to_io": 0.7, "dla": 3.0},  # name mover
            (2, 2): {"end_to_io": 0.5, "dla": -2.0},  # negative name mover
            (2, 3): {"end_to_io": 0.6, "dla": 0.1},  # attends to IO but writes ~nothing: neither
            (1, 0): {"end_to_s2": 0.4},  # S-inhibition
            (0, 3): {"s2_to_s1": 0.9},  # duplicate token
            (1, 2): {"s2_to_s1_next": 0.8},  # induction
            (0, 0): {"end_to_s1": 0.9},  # attends to S1 from END: no class
        }
    )
    classes = classify_heads(stats)
    assert _members(classes, "name_mover") == [(2, 1)]
    assert _members(classes, "negative_name_mover") == [(2, 2)]
    assert _members(classes, "s_inhibition") == [(1, 0)]
    assert _members(classes, "duplicate_token") == [(0, 3)]
    assert _members(classes, "induction") == [(1, 2)]
    assert set(classes["class"]) <= set(CLASSES)


def test_thresholds_move_the_boundary():
    stats = _stats(
        {
            (1, 1): {"s2_to_s1": 0.25},
            (2, 0): {"end_to_io": 0.8, "dla": 1.0},
            (2, 1): {"end_to_io": 0.8, "dla": 0.3},
        }
    )
    assert _members(classify_heads(stats), "duplicate_token") == []
    assert _members(classify_heads(stats, Thresholds(attention=0.2)), "duplicate_token") == [(1, 1)]
    # DLA threshold is relative to the largest |DLA|: 0.3 is 30% of 1.0
    assert _members(classify_heads(stats, Thresholds(dla=0.2)), "name_mover") == [(2, 0), (2, 1)]
    assert _members(classify_heads(stats, Thresholds(dla=0.5)), "name_mover") == [(2, 0)]
    with pytest.raises(ValueError, match="attention threshold"):
        Thresholds(attention=0.0)


def test_published_gpt2_small_classes_match_the_paper_denominators():
    classes = published_classes()
    counts = classes.groupby("class").size().to_dict()
    assert counts == {
        "name_mover": 3,
        "duplicate_token": 2,
        "s_inhibition": 4,
        "negative_name_mover": 2,
        "induction": 2,
    }
    assert (9, 9) in _members(classes, "name_mover") and (11, 10) in _members(classes, "negative_name_mover")
    data = json.loads(default_classes_path().read_text())
    assert "Wang" in data["citation"] and "2211.00593" in data["citation"]
    full = published_classes(which="all_classes")
    assert len(_members(full, "backup_name_mover")) == 8
    cls, source = head_classes_for("gpt2-small")
    assert source.startswith("Wang") and len(cls) == 13
    with pytest.raises(ValueError, match="no published IOI head classes"):
        head_classes_for("toy-2l")


def test_classifier_inputs_attention_and_dla_match_an_independent_computation():
    torch.manual_seed(0)
    model = tiny_ioi_model()
    ps = ioi_like_prompts()
    stats = classifier_inputs(model, ps, batch_size=4)  # two batches, the second one partial
    assert list(stats.columns) == list(HEAD_STAT_COLUMNS) and len(stats) == 8
    # recompute prompt by prompt, unpadded: attention END -> IO, and the DLA check: the heads'
    # attributions + the rest of the residual stream, all through the final LN, plus the LN bias and
    # the unembedding bias add up to the model's own logit difference.
    exp = np.zeros((2, 4))
    total_dla = np.zeros(len(ps))
    for i in range(len(ps)):
        toks = torch.as_tensor(ps.clean[i])[None]
        logits, cache = model.run_with_cache(toks)
        e, a, b = ps.positions["END"][i], int(ps.answers[i][0]), int(ps.wrong[i][0])
        for layer in range(2):
            exp[layer] += cache["pattern", layer][0, :, e, ps.positions["IO"][i]].numpy()
        ld = (logits[0, e, a] - logits[0, e, b]).item()
        resid = cache["resid_post", 1][0, e]
        heads = sum(
            torch.einsum("hd,hdm->m", cache["z", layer][0, e], model.W_O[layer]) for layer in range(2)
        )
        rest = resid - heads
        scale = cache["ln_final.hook_scale"][0, e]
        d = model.W_U[:, a] - model.W_U[:, b]
        rest_dla = (((rest - rest.mean()) / scale) * model.ln_final.w) @ d
        bias = model.ln_final.b @ d + model.b_U[a] - model.b_U[b]
        total_dla[i] = ld - (rest_dla + bias).item()
    np.testing.assert_allclose(stats["end_to_io"].to_numpy(), (exp / len(ps)).ravel(), atol=1e-6)
    # stats hold per-head means; their sum over heads is the mean head contribution
    np.testing.assert_allclose(stats["dla"].sum(), total_dla.mean(), rtol=1e-4, atol=1e-5)


def test_classifier_inputs_needs_ioi_positions():
    ps = ioi_like_prompts()
    bad = PromptSet(task="x", clean=ps.clean, corrupted=ps.corrupted, answer_pos=ps.answer_pos,
                    answers=ps.answers, wrong=ps.wrong, noise_positions=ps.noise_positions,
                    positions={"IO": ps.positions["IO"]})  # fmt: skip
    with pytest.raises(ValueError, match="lacks named positions"):
        classifier_inputs(tiny_ioi_model(), bad)
