"""PairedFacts rebuilt from known_1000 under the real GPT-2 tokenizer (paper App. B)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from patchbench.prompts import PromptSetError
from patchbench.tasks import build_task, load_prompts
from patchbench.tasks.common import decode, diff_positions, find_token_range
from patchbench.tasks.factual import check_aligned, load_facts, pair_facts


@pytest.fixture(scope="module")
def facts(gpt2_tokenizer, mirror):
    return load_facts(gpt2_tokenizer, mirror)


@pytest.fixture(scope="module")
def paired(gpt2_tokenizer, mirror):
    return build_task("factual", gpt2_tokenizer, mirror, n_prompts=None, seed=0)


def test_pairs_have_equal_length_and_distinct_answers(paired):
    n = len(paired)
    assert n % 2 == 0 and n >= 2 * 100  # hundreds of pairs among 1209 known facts (the paper had 145)
    for k in range(0, n, 2):
        a, b = k, k + 1
        assert paired.meta["pair_id"][a] == paired.meta["pair_id"][b]
        assert len(paired.clean[a]) == len(paired.clean[b])
        assert paired.answers[a][0] != paired.answers[b][0]
        # each prompt is the other's corruption, both directions
        assert np.array_equal(paired.corrupted[a], paired.clean[b])
        assert np.array_equal(paired.corrupted[b], paired.clean[a])
        assert paired.wrong[a][0] == paired.answers[b][0] and paired.wrong[b][0] == paired.answers[a][0]
        assert paired.meta["relation_id"][a] == paired.meta["relation_id"][b]
        assert paired.meta["subject"][a] != paired.meta["subject"][b]


def test_subject_positions_and_noise(paired, gpt2_tokenizer):
    for i in range(len(paired)):
        s, last = int(paired.positions["subject_first"][i]), int(paired.positions["subject_last"][i])
        ids = paired.clean[i].tolist()
        assert paired.meta["subject"][i] in decode(gpt2_tokenizer, ids[s : last + 1])
        # the span is minimal: dropping its first or last token loses part of the subject
        assert paired.meta["subject"][i] not in decode(gpt2_tokenizer, ids[s + 1 : last + 1])
        assert paired.meta["subject"][i] not in decode(gpt2_tokenizer, ids[s:last])
        assert paired.noise_positions[i].tolist() == list(range(s, last + 1))
        assert paired.answer_pos[i] == len(ids) - 1
        assert decode(gpt2_tokenizer, paired.answers[i].tolist()) == " " + paired.meta["attribute"][i]
        assert decode(gpt2_tokenizer, ids) == paired.meta["text"][i]


def test_rome_find_token_range(gpt2_tokenizer):
    ids = gpt2_tokenizer.encode("Vinson Massif is located in the continent of")
    s, e = find_token_range(gpt2_tokenizer, ids, "Vinson Massif")
    assert s == 0 and decode(gpt2_tokenizer, ids[s:e]) == "Vinson Massif"
    assert decode(gpt2_tokenizer, ids[e : e + 1]) == " is"


def test_pairs_are_a_pure_subject_swap(facts):
    pairs = pair_facts(facts, 0)
    assert len(pairs) >= 145  # the paper's PairedFacts has 145 pairs
    for a, b in pairs:
        assert a.span == b.span and a.answer != b.answer
        assert set(diff_positions(a.ids, b.ids)) <= set(range(*a.span))


def test_named_positions_hold_corresponding_tokens(paired, gpt2_tokenizer):
    """The last subject token of the clean prompt is the partner's last subject token in the corrupted run."""
    for i in range(len(paired)):
        s, last = int(paired.positions["subject_first"][i]), int(paired.positions["subject_last"][i])
        corrupted = paired.corrupted[i].tolist()
        assert paired.meta["partner_subject"][i] in decode(gpt2_tokenizer, corrupted[s : last + 1])
        assert (paired.meta["partner_subject_first"][i], paired.meta["partner_subject_last"][i]) == (s, last)
        np.testing.assert_array_equal(paired.clean[i][last + 1 :], paired.corrupted[i][last + 1 :])
        np.testing.assert_array_equal(paired.clean[i][:s], paired.corrupted[i][:s])


def _swap_partner(ps, i, j):
    """``ps`` with row i's corrupted prompt taken from row j (equal length, another template)."""
    corrupted = [c.copy() for c in ps.corrupted]
    corrupted[i] = ps.clean[j].copy()
    meta = ps.meta.copy()
    for col in ("partner_subject_first", "partner_subject_last"):
        meta.loc[i, col] = ps.positions[col.removeprefix("partner_")][j]
    meta.loc[i, "corrupted_text"] = ps.meta["text"][j]
    return dataclasses.replace(ps, corrupted=corrupted, meta=meta)


def test_a_misaligned_pair_is_refused(paired, tmp_path):
    """Equal length is not enough: a corrupted prompt with another template or span is refused, also on load."""
    ids = [len(c) for c in paired.clean]
    # two prompts of equal length whose templates differ (the words around the subject)
    i, j = next(
        (i, j)
        for i in range(len(paired))
        for j in range(len(paired))
        if ids[i] == ids[j]
        and (
            paired.positions["subject_first"][i] != paired.positions["subject_first"][j]
            or paired.positions["subject_last"][i] != paired.positions["subject_last"][j]
        )
    )
    bad = _swap_partner(paired, i, j)
    with pytest.raises(PromptSetError, match=f"factual prompt {i} .*subject spans .*differ"):
        check_aligned(bad)
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(PromptSetError, match="last subject token"):
        load_prompts(tmp_path / "bad.parquet")
    # same span but other tokens around it (another template of the same shape) is refused too
    same_span = dataclasses.replace(
        paired, corrupted=[np.where(np.arange(len(c)) == len(c) - 1, c + 1, c) if k == 0 else c
                           for k, c in enumerate(paired.corrupted)],
    )  # fmt: skip
    with pytest.raises(PromptSetError, match="tokens around them differ"):
        check_aligned(same_span)
    check_aligned(paired)  # the built set passes


def test_matching_uses_every_fact_it_can(facts):
    pairs = pair_facts(facts, 0)
    used = [f for p in pairs for f in p]
    assert len(used) == len({id(f) for f in used})  # each fact in at most one pair
    # leftovers of a (length, relation, template, span) group all share one answer (maximum matching)
    groups = {}
    for f in facts:
        groups.setdefault((len(f.ids), f.relation, *f.outside_subject()), []).append(f)
    used_ids = {id(f) for f in used}
    for members in groups.values():
        left = {f.answer for f in members if id(f) not in used_ids}
        assert len(left) <= 1


def test_n_prompts_caps_whole_pairs_and_seed(gpt2_tokenizer, mirror, paired):
    few = build_task("factual", gpt2_tokenizer, mirror, n_prompts=20, seed=0)
    assert len(few) == 20 and few.to_frame().equals(paired.subset(range(20)).to_frame())
    other = build_task("factual", gpt2_tokenizer, mirror, n_prompts=20, seed=1)
    assert other.meta["fact_id"].tolist() != few.meta["fact_id"].tolist()


def test_bos_option(gpt2_tokenizer, mirror, paired):
    with_bos = build_task("factual", gpt2_tokenizer, mirror, n_prompts=4, seed=0, prepend_bos=True)
    assert with_bos.clean[0][0] == gpt2_tokenizer.bos_token_id
    assert np.array_equal(with_bos.positions["subject_first"], paired.positions["subject_first"][:4] + 1)


def test_subject_ids_alone_for_the_noise_scale(paired, gpt2_tokenizer):
    for i in range(0, len(paired), 50):
        ids = list(paired.meta["subject_ids"][i])
        assert decode(gpt2_tokenizer, ids) == paired.meta["subject"][i]
        assert gpt2_tokenizer.bos_token_id not in ids
