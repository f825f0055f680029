"""The generators under the toy suite's tokenizer and vocabulary (data/toy), not just GPT-2's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from patchbench.tasks import TASKS, build_task, check_task_contract

SNIPPETS = [
    '\ndef f(self, a, b):\n    """a b c\n\n    :param a: b c\n    :param b: c d\n    :param',
    "1 + 2 = 3\n4 - 5 = 6\n7 * 8 =",
]


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


@pytest.fixture(scope="module")
def toy(root, tmp_path_factory):
    from patchbench.toy.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer

    data = root / "data" / "toy"
    texts = list(SNIPPETS)
    for f in sorted(data.glob("*/*.json")):
        for s in _strings(json.loads(f.read_text())):
            texts += [s, " " + s]
    out = tmp_path_factory.mktemp("toy_tok")
    save_tokenizer(build_tokenizer(texts), out)
    return load_tokenizer(out), data


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_builds_under_the_toy_tokenizer(toy, name):
    tok, data = toy
    ps = build_task(name, tok, data, n_prompts=20, seed=0)
    check_task_contract(ps)
    assert len(ps) == 20
    unk = tok.unk_token_id
    for i in range(len(ps)):
        assert unk not in ps.clean[i] and unk not in ps.corrupted[i]
        if name != "factual":
            diff = set(np.flatnonzero(ps.clean[i] != ps.corrupted[i]).tolist())
            assert diff and diff <= set(ps.noise_positions[i].tolist())
        else:
            assert len(ps.clean[i]) == len(ps.corrupted[i]) and ps.answers[i][0] != ps.wrong[i][0]
