"""Docstring prompt sets under the real GPT-2 tokenizer: ACDC's layout, C_def and its STR."""

from __future__ import annotations

import re

import pytest

from patchbench.tasks import build_task
from patchbench.tasks.common import decode, diff_positions, encode

PATTERN = re.compile(
    r'\ndef (\w+)\(self, (\w+), (\w+), (\w+), (\w+), (\w+), (\w+)\):\n    """(\w+) (\w+) (\w+)\n\n'
    r"    :param (\w+): (\w+) (\w+)\n    :param (\w+): (\w+) (\w+)\n    :param\Z"
)


@pytest.fixture(scope="module")
def doc(gpt2_tokenizer, mirror):
    return build_task("docstring", gpt2_tokenizer, mirror, n_prompts=None, seed=0)


def test_count_layout_and_bos(doc, gpt2_tokenizer):
    assert len(doc) == 200
    for i in range(len(doc)):
        m = PATTERN.match(doc.meta["text"][i])
        assert m, doc.meta["text"][i]
        a_def, b_def, c_def = m.group(4), m.group(5), m.group(6)
        assert (m.group(11), m.group(14)) == (a_def, b_def)  # A_def and B_def documented in order
        assert c_def == doc.meta["C_def"][i]
        assert doc.clean[i][0] == gpt2_tokenizer.bos_token_id
        assert decode(gpt2_tokenizer, doc.clean[i][1:]) == doc.meta["text"][i]


def test_c_def_position_answer_and_str(doc, gpt2_tokenizer):
    for i in range(len(doc)):
        p = int(doc.positions["C_def"][i])
        ids = doc.clean[i].tolist()
        assert ids[p] == doc.answers[i][0]
        assert decode(gpt2_tokenizer, doc.answers[i].tolist()) == " " + doc.meta["C_def"][i]
        # C_def is in the signature: before the first newline after "def"
        assert "\n" not in decode(gpt2_tokenizer, ids[2:p])
        assert diff_positions(doc.clean[i], doc.corrupted[i]) == [p]
        assert doc.corrupted[i][p] == doc.wrong[i][0]
        assert decode(gpt2_tokenizer, doc.wrong[i].tolist()) == " " + doc.meta["replacement"][i]
        assert doc.meta["replacement"][i] not in doc.meta["def_args"][i].split(",")
        assert doc.noise_positions[i].tolist() == [p]
        assert doc.answer_pos[i] == len(ids) - 1


def test_acdc_wrong_answers_recorded(doc, gpt2_tokenizer):
    for i in range(len(doc)):
        names = doc.meta["acdc_wrong"][i].split(",")
        ids = list(doc.meta["acdc_wrong_ids"][i])
        assert len(names) == len(set(names)) == 13
        assert ids == [encode(gpt2_tokenizer, " " + n)[0] for n in names]
        assert int(doc.answers[i][0]) not in ids and int(doc.wrong[i][0]) in ids


def test_deterministic_by_seed(doc, gpt2_tokenizer, mirror):
    again = build_task("docstring", gpt2_tokenizer, mirror, n_prompts=None, seed=0)
    assert again.meta["text"].tolist() == doc.meta["text"].tolist()
    other = build_task("docstring", gpt2_tokenizer, mirror, n_prompts=20, seed=1)
    assert other.meta["text"].tolist() != doc.meta["text"].tolist()[:20]
