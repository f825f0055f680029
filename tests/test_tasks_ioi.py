"""IOI prompt sets under the real GPT-2 tokenizer: names, positions and the three corruptions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from patchbench.tasks import build_task
from patchbench.tasks.common import decode, diff_positions, encode
from patchbench.tasks.ioi import ioi_templates, single_token_names


@pytest.fixture(scope="module")
def ioi_sets(gpt2_tokenizer, mirror):
    return {
        v: build_task(v, gpt2_tokenizer, mirror, n_prompts=200, seed=3)
        for v in ("ioi", "ioi_s1io", "ioi_abc")
    }


def test_every_ioi_name_is_one_token(gpt2_tokenizer, mirror):
    names = json.loads((mirror / "ioi" / "ioi_vocab.json").read_text())["names"]
    single = single_token_names(gpt2_tokenizer, names)
    assert list(single) == names  # all 99 of Wang et al.'s names are one token for GPT-2
    for name, tid in single.items():
        assert encode(gpt2_tokenizer, " " + name) == [tid]


def test_default_count_and_mixed_templates(gpt2_tokenizer, mirror):
    ps = build_task("ioi", gpt2_tokenizer, mirror, n_prompts=None, seed=0)
    assert len(ps) == 500
    vocab = json.loads((mirror / "ioi" / "ioi_vocab.json").read_text())
    mixed = ioi_templates(vocab, "mixed")
    assert [t for _, t in mixed] == vocab["baba_templates"][:7] + vocab["abba_templates"][:7]
    assert set(ps.meta["template"]) <= {t for _, t in mixed}
    assert set(ps.meta["template_kind"]) == {"BABA", "ABBA"}
    assert ps.meta["template_idx"].nunique() == 14


def test_all_templates_option(gpt2_tokenizer, mirror):
    ps = build_task("ioi", gpt2_tokenizer, mirror, n_prompts=300, seed=0, templates="all")
    assert ps.meta["template_idx"].nunique() == 30


def test_positions_and_answers(ioi_sets, gpt2_tokenizer):
    ps = ioi_sets["ioi"]
    for i in range(len(ps)):
        ids = ps.clean[i].tolist()
        io_id, s_id = int(ps.answers[i][0]), int(ps.wrong[i][0])
        assert decode(gpt2_tokenizer, [io_id]) == " " + ps.meta["IO"][i]
        assert decode(gpt2_tokenizer, [s_id]) == " " + ps.meta["S"][i]
        io, s1, s2, end = (int(ps.positions[k][i]) for k in ("IO", "S1", "S2", "END"))
        assert ids[io] == io_id and ids.count(io_id) == 1
        assert ids[s1] == s_id and ids.index(s_id) == s1
        # S2 is the last occurrence of S
        assert ids[s2] == s_id and s_id not in ids[s2 + 1 :] and s1 < s2
        assert end == len(ids) - 1 == ps.answer_pos[i]
        assert decode(gpt2_tokenizer, ids) == ps.meta["text"][i]
        assert not ps.meta["text"][i].endswith(ps.meta["IO"][i])  # the final IO is cut off


def test_ioi_str_differs_only_at_s2(ioi_sets, gpt2_tokenizer):
    ps = ioi_sets["ioi"]
    for i in range(len(ps)):
        s2 = int(ps.positions["S2"][i])
        assert diff_positions(ps.clean[i], ps.corrupted[i]) == [s2]
        assert ps.corrupted[i][s2] == ps.answers[i][0]  # the IO name now sits at S2
        assert ps.noise_positions[i].tolist() == [s2]
        assert encode(gpt2_tokenizer, ps.meta["corrupted_text"][i]) == ps.corrupted[i].tolist()


@pytest.mark.parametrize(("variant", "slots"), [("ioi_s1io", ("IO", "S1")), ("ioi_abc", ("IO", "S1", "S2"))])
def test_random_name_corruptions_touch_only_their_positions(ioi_sets, gpt2_tokenizer, variant, slots):
    ps = ioi_sets[variant]
    for i in range(len(ps)):
        where = sorted(int(ps.positions[k][i]) for k in slots)
        assert diff_positions(ps.clean[i], ps.corrupted[i]) == where
        assert ps.noise_positions[i].tolist() == where
        new = [int(ps.corrupted[i][p]) for p in where]
        assert len(set(new)) == len(slots)  # distinct random names
        assert not set(new) & {int(ps.answers[i][0]), int(ps.wrong[i][0])}  # unrelated to IO and S
        assert ps.meta["rand_names"][i].split(",") == [
            decode(gpt2_tokenizer, [t]).strip()
            for t in (int(ps.corrupted[i][int(ps.positions[k][i])]) for k in slots)
        ]
        # the metric stays on the original IO, the wrong answer is S
        assert decode(gpt2_tokenizer, ps.answers[i].tolist()) == " " + ps.meta["IO"][i]
        assert decode(gpt2_tokenizer, ps.wrong[i].tolist()) == " " + ps.meta["S"][i]


def test_variants_share_clean_prompts(ioi_sets):
    a, b, c = (ioi_sets[v] for v in ("ioi", "ioi_s1io", "ioi_abc"))
    for i in range(len(a)):
        assert np.array_equal(a.clean[i], b.clean[i]) and np.array_equal(a.clean[i], c.clean[i])


def test_deterministic_by_seed(gpt2_tokenizer, mirror, ioi_sets):
    again = build_task("ioi_abc", gpt2_tokenizer, mirror, n_prompts=200, seed=3)
    assert again.to_frame().equals(ioi_sets["ioi_abc"].to_frame())
    other = build_task("ioi_abc", gpt2_tokenizer, mirror, n_prompts=200, seed=4)
    assert not other.to_frame()["clean"].equals(again.to_frame()["clean"])


def test_ioi_variant_option_is_fixed_by_the_task(gpt2_tokenizer, mirror):
    with pytest.raises(ValueError, match="fixes the options"):
        build_task("ioi", gpt2_tokenizer, mirror, n_prompts=5, seed=0, variant="ioi_abc")
