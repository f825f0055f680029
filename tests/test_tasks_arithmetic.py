"""Arithmetic prompt sets under the real GPT-2 tokenizer: Stolfo's 2-shot format, operands, STR."""

from __future__ import annotations

import re

import pytest

from patchbench.tasks import build_task
from patchbench.tasks.common import decode, diff_positions

OPS = {"arithmetic_add": ("+", 250), "arithmetic_sub": ("-", 250), "arithmetic_mul": ("*", 23)}


def _eval(op, x, y):
    return {"+": x + y, "-": x - y, "*": x * y}[op]


@pytest.fixture(scope="module", params=sorted(OPS))
def arith(request, gpt2_tokenizer, mirror):
    return request.param, build_task(request.param, gpt2_tokenizer, mirror, n_prompts=None, seed=0)


def test_format_operands_and_answer(arith, gpt2_tokenizer):
    name, ps = arith
    op, max_n = OPS[name]
    assert len(ps) == 200
    line = re.escape(op)
    pattern = re.compile(rf"(\d+) {line} (\d+) = (\d+)\n(\d+) {line} (\d+) = (\d+)\n(\d+) {line} (\d+) =\Z")
    assert ps.meta["few_shots"].nunique() == 1  # Stolfo draws the shots once per template
    for i in range(len(ps)):
        m = pattern.match(ps.meta["text"][i])
        assert m, ps.meta["text"][i]
        vals = [int(v) for v in m.groups()]
        assert _eval(op, vals[0], vals[1]) == vals[2] and _eval(op, vals[3], vals[4]) == vals[5]
        x, y = vals[6], vals[7]
        z = int(ps.meta["result"][i])
        assert z == _eval(op, x, y) and 1 <= z < max_n and 1 <= x <= max_n and 1 <= y <= max_n
        assert decode(gpt2_tokenizer, ps.answers[i].tolist()) == f" {z}"
        ids = ps.clean[i].tolist()
        assert decode(gpt2_tokenizer, [ids[int(ps.positions["X3"][i])]]) == str(x)  # after "\n": no space
        assert decode(gpt2_tokenizer, [ids[int(ps.positions["Y3"][i])]]) == f" {y}"
        assert ps.answer_pos[i] == len(ids) - 1 and decode(gpt2_tokenizer, ids[-1:]) == " ="
        assert decode(gpt2_tokenizer, ids) == ps.meta["text"][i]


def test_str_redraws_operands_only(arith, gpt2_tokenizer):
    name, ps = arith
    op, max_n = OPS[name]
    for i in range(len(ps)):
        key = [int(ps.positions["X3"][i]), int(ps.positions["Y3"][i])]
        assert set(diff_positions(ps.clean[i], ps.corrupted[i])) <= set(key)
        assert ps.noise_positions[i].tolist() == key
        xc, yc, zc = (int(ps.meta[k][i]) for k in ("x_corrupt", "y_corrupt", "result_corrupt"))
        assert zc == _eval(op, xc, yc) and 1 <= zc < max_n and zc != int(ps.meta["result"][i])
        assert decode(gpt2_tokenizer, ps.wrong[i].tolist()) == f" {zc}"
        assert decode(gpt2_tokenizer, ps.corrupted[i].tolist()) == ps.meta["corrupted_text"][i]


def test_deterministic_by_seed(arith, gpt2_tokenizer, mirror):
    name, ps = arith
    again = build_task(name, gpt2_tokenizer, mirror, n_prompts=None, seed=0)
    assert again.to_frame().equals(ps.to_frame())


def test_result_max_option(gpt2_tokenizer, mirror):
    ps = build_task("arithmetic_mul", gpt2_tokenizer, mirror, n_prompts=50, seed=0, result_max=200)
    assert ps.meta["result"].max() >= 23 and ps.meta["result"].max() < 200
    assert ps.meta[["x", "y"]].max().max() <= 23
