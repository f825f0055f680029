"""Greater-than prompt sets under the real GPT-2 tokenizer: the [XX][YY] split, answers, STR."""

from __future__ import annotations

import pytest

from patchbench.tasks import build_task
from patchbench.tasks.common import decode, diff_positions, encode, single_token_id
from patchbench.tasks.greater_than import split_years, two_digit_ids


@pytest.fixture(scope="module")
def gt(gpt2_tokenizer, mirror):
    return build_task("greater_than", gpt2_tokenizer, mirror, n_prompts=None, seed=0)


def test_count_and_year_split(gt, gpt2_tokenizer):
    assert len(gt) == 300
    for i in range(len(gt)):
        year = int(gt.meta["year"][i])
        xx, yy = divmod(year, 100)
        p = int(gt.positions["YY"][i])
        ids = gt.clean[i].tolist()
        # " XXYY" is [" XX", "YY"] and sits at YY-1, YY
        assert encode(gpt2_tokenizer, f" {year}") == ids[p - 1 : p + 1]
        assert decode(gpt2_tokenizer, [ids[p - 1]]) == f" {xx}"
        assert decode(gpt2_tokenizer, [ids[p]]) == f"{yy:02d}"
        assert 2 <= yy <= 98
        assert ids[-1] == ids[p - 1] == single_token_id(gpt2_tokenizer, f" {xx}")
        assert gt.answer_pos[i] == gt.positions["END"][i] == len(ids) - 1


def test_hanna_balanced_years(gt):
    # YY cycles through 02..98 (Hanna's YearDataset(balanced=True))
    assert [int(y) for y in gt.meta["YY"][:97]] == list(range(2, 99))
    assert gt.meta["year"].between(1000, 1899).all()


def test_answers_exclude_yy(gt, gpt2_tokenizer):
    digits = two_digit_ids(gpt2_tokenizer)
    for i in range(len(gt)):
        yy = int(gt.meta["YY"][i])
        assert gt.answers[i].tolist() == digits[yy + 1 :]
        assert gt.wrong[i].tolist() == digits[:yy]
        assert digits[yy] not in gt.answers[i] and digits[yy] not in gt.wrong[i]


def test_str_sets_yy_to_01_only(gt, gpt2_tokenizer):
    zero_one = single_token_id(gpt2_tokenizer, "01")
    for i in range(len(gt)):
        p = int(gt.positions["YY"][i])
        assert diff_positions(gt.clean[i], gt.corrupted[i]) == [p]
        assert gt.corrupted[i][p] == zero_one
        assert gt.noise_positions[i].tolist() == [p]
        assert "01 to the year" in gt.meta["corrupted_text"][i]


def test_bos_modes(gpt2_tokenizer, mirror):
    bos = gpt2_tokenizer.bos_token_id
    hanna = build_task("greater_than", gpt2_tokenizer, mirror, n_prompts=5, seed=0)
    pre = build_task("greater_than", gpt2_tokenizer, mirror, n_prompts=5, seed=0, bos="prepend")
    none = build_task("greater_than", gpt2_tokenizer, mirror, n_prompts=5, seed=0, bos="none")
    assert hanna.clean[0][0] == bos and decode(gpt2_tokenizer, hanna.clean[0][1:2]) == " The"
    assert pre.clean[0][0] == bos and decode(gpt2_tokenizer, pre.clean[0][1:2]) == "The"
    assert bos not in none.clean[0] and decode(gpt2_tokenizer, none.clean[0][:1]) == "The"
    assert hanna.meta["year"].tolist() == none.meta["year"].tolist()


def test_acdc_years_option(gpt2_tokenizer, mirror):
    ps = build_task("greater_than", gpt2_tokenizer, mirror, n_prompts=50, seed=1, years="acdc")
    assert ps.meta["year"].between(1100, 1799).all()


def test_split_years_rejects_unsplit_years(gpt2_tokenizer):
    # 1900..1999 years are often one token for GPT-2 (" 1990") or split differently
    kept = split_years(gpt2_tokenizer, list(range(1900, 2000)))
    for y in range(1900, 2000):
        ok = len(encode(gpt2_tokenizer, f" {y}")) == 2 and encode(gpt2_tokenizer, f" {y}")[
            1
        ] == single_token_id(gpt2_tokenizer, f"{y % 100:02d}")
        assert (y in kept) == ok
    assert len(kept) < 100


def test_deterministic_by_seed(gt, gpt2_tokenizer, mirror):
    again = build_task("greater_than", gpt2_tokenizer, mirror, n_prompts=None, seed=0)
    assert again.to_frame().equals(gt.to_frame())


def test_acdc_template_option(gpt2_tokenizer, mirror):
    from patchbench.tasks.greater_than import ACDC_TEMPLATE

    ps = build_task(
        "greater_than", gpt2_tokenizer, mirror, n_prompts=10, seed=0, bos="none", template=ACDC_TEMPLATE
    )
    for i in range(len(ps)):
        xx = ps.meta["XX"][i]
        assert ps.meta["text"][i].endswith(f"{ps.meta['year'][i]} to {xx}")
        assert decode(gpt2_tokenizer, ps.clean[i][-1:]) == f" {xx}"
