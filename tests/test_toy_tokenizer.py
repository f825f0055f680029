"""The toy tokenizer: round-trips, and segments years, numbers and names as the tasks need."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from patchbench.toy.corpus import CorpusSpec, ToyVocab, generate_corpus, vocabulary_texts
from patchbench.toy.tokenizer import (
    BOS,
    PAD,
    UNK,
    build_tokenizer,
    load_tokenizer,
    pretokenize,
    save_tokenizer,
)


@pytest.fixture(scope="module")
def toy(root, tmp_path_factory):
    vocab = ToyVocab.load(root / "data" / "toy")
    docs, _ = generate_corpus(vocab, CorpusSpec(n_docs=1500, seed=3))
    out = tmp_path_factory.mktemp("toytok")
    save_tokenizer(build_tokenizer(docs, vocabulary_texts(vocab)), out)
    return vocab, docs, out


def test_pretokenizer_splits_years_and_keeps_small_numbers_whole():
    assert pretokenize("from the year 1745 to the year 17") == [
        "from",
        " the",
        " year",
        " 17",
        "45",
        " to",
        " the",
        " year",
        " 17",
    ]
    assert pretokenize("12 + 134 = 146\n7") == ["12", " +", " 134", " =", " 146", "\n", "7"]
    assert pretokenize("Then, Ada and Basil") == ["Then", ",", " Ada", " and", " Basil"]


def test_round_trip_and_special_tokens(toy):
    _, docs, out = toy
    for tok in (load_tokenizer(out), PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))):
        for doc in docs[:300]:
            ids = tok(doc, add_special_tokens=False)["input_ids"]
            assert tok.convert_tokens_to_ids(UNK) not in ids, doc
            assert tok.decode(ids) == doc
    tok = load_tokenizer(out)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (BOS, BOS, PAD, UNK)
    assert len({tok.bos_token_id, tok.pad_token_id, tok.unk_token_id}) == 3
    # like GPT-2's, the tokenizer adds no special tokens by itself
    assert tok("Then, Ada")["input_ids"] == tok("Then, Ada", add_special_tokens=False)["input_ids"]
    with_bos = tok(BOS + "Then, Ada")["input_ids"]
    assert with_bos[0] == tok.bos_token_id and len(with_bos) == 4


def test_task_words_segment_as_specified(toy):
    vocab, _, out = toy
    tok = load_tokenizer(out)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    unk = tok.unk_token_id
    for name in vocab.ioi["names"]:
        assert len(enc(" " + name)) == 1 and len(enc(name)) == 1 and unk not in enc(" " + name), name
    for year in vocab.gt_years["hanna_years"]:
        ids = enc(f" {year}")
        assert tok.convert_ids_to_tokens(ids) == [f" {year // 100}", f"{year % 100:02d}"], year
    for yy in range(100):
        assert len(enc(f"{yy:02d}")) == 1
    for word in vocab.doc_words["variable_names"]:
        assert len(enc(" " + word)) == 1 and unk not in enc(" " + word), word
    for fact in vocab.facts:
        assert len(enc(" " + fact["attribute"])) == 1, fact
        assert 1 <= len(enc(fact["subject"])) <= 4, fact
        assert unk not in enc(fact["prompt"]), fact
    for n in range(300):
        assert len(enc(f" {n}")) == 1 and len(enc(str(n))) == 1
