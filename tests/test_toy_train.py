"""Toy training: a tiny model trains in seconds and its loss falls; same seed, same weights; load_toy."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from patchbench.toy.corpus import CorpusSpec, ToyVocab, generate_corpus, vocabulary_texts
from patchbench.toy.model import ModelSpec, load_toy
from patchbench.toy.settings import DEFAULT_MODELS, ToySettings
from patchbench.toy.tokenizer import build_tokenizer, save_tokenizer
from patchbench.toy.train import TrainSpec, pack_documents, train_toy

TINY = ModelSpec(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=64)


@pytest.fixture(scope="module")
def corpus(root):
    vocab = ToyVocab.load(root / "data" / "toy")
    docs, held = generate_corpus(vocab, CorpusSpec(n_docs=1500, seed=0))
    return docs, build_tokenizer(docs, vocabulary_texts(vocab))


def test_pack_documents_rows_and_mask():
    docs = [[5, 6, 7], [8, 9], [10] * 10, [11] * 70]
    tokens, mask = pack_documents(docs, n_ctx=8, bos_id=0, pad_id=1, seed=0, bos_dropout=0.0)
    assert tokens.shape[1] == 8
    assert tokens[0, :7].tolist() == [0, 5, 6, 7, 0, 8, 9] and tokens[0, 7] == 1
    assert (mask == (tokens != 1)).all()
    assert (tokens[:, 0] == 0).all()  # no BOS dropout: every row starts with BOS
    assert all(len(r[r != 1]) <= 8 for r in tokens)  # over-long documents are truncated
    dropped, _ = pack_documents(docs, n_ctx=8, bos_id=0, pad_id=1, seed=0, bos_dropout=1.0)
    assert (dropped[:, 0] != 0).all()


def test_pack_documents_fills_earlier_gaps_first_fit():
    # [0,5,5,5,5] leaves 3 free; the 7-token piece needs a new row; the short one goes back into row 0
    docs = [[5] * 4, [6] * 6, [7]]
    tokens, mask = pack_documents(docs, n_ctx=8, bos_id=0, pad_id=1, seed=0, bos_dropout=0.0)
    assert tokens.shape == (2, 8)
    assert tokens[0, :7].tolist() == [0, 5, 5, 5, 5, 0, 7]
    assert tokens[1, :7].tolist() == [0] + [6] * 6
    # every token of every document is kept exactly once
    assert sorted(tokens[mask].tolist()) == sorted([0, 0, 0] + [5] * 4 + [6] * 6 + [7])


def test_pack_documents_is_dense_on_the_toy_corpus(corpus):
    docs, tok = corpus
    ids = [e.ids for e in tok.encode_batch(docs)]
    _, mask = pack_documents(ids, n_ctx=64, bos_id=0, pad_id=1, seed=0)
    assert mask.float().mean() > 0.93


def test_tiny_training_loss_falls_within_a_minute(corpus, tmp_path):
    docs, tok = corpus
    t0 = time.perf_counter()
    summary = train_toy(
        docs, tok, TINY, TrainSpec(steps=60, batch_size=16, lr=1e-2, warmup=5), tmp_path, "tiny"
    )
    assert time.perf_counter() - t0 < 60
    curve = np.loadtxt(tmp_path / "training_curve.csv", delimiter=",", skiprows=1)
    assert curve.shape == (60, 2)
    assert curve[-10:, 1].mean() < curve[:5, 1].mean() - 1.5, curve[:, 1]
    assert summary["final_loss"] < summary["first_loss"]


def test_same_seed_same_weights_other_seed_other_weights(corpus, tmp_path):
    docs, tok = corpus
    states = []
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_toy(docs, tok, TINY, TrainSpec(steps=3, batch_size=8, seed=seed), tmp_path / run, run)
        from safetensors.torch import load_file

        states.append(load_file(str(tmp_path / run / "model.safetensors")))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    # byte-identical files, not only equal tensors (the safetensors header included)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    assert not torch.equal(states[0]["embed.W_E"], states[2]["embed.W_E"])


def test_load_toy_gives_a_native_model_with_tokenizer(corpus, tmp_path):
    docs, tok = corpus
    save_tokenizer(tok, tmp_path)
    spec = ModelSpec(n_layers=2, d_model=32, n_heads=2, attn_only=True, n_ctx=64)
    train_toy(docs, tok, spec, TrainSpec(steps=2, batch_size=4), tmp_path, "tiny-attn")
    model = load_toy(tmp_path)
    s = model.shape
    assert (s.route, s.processed, s.n_layers, s.d_mlp, s.d_vocab) == (
        "native",
        False,
        2,
        0,
        tok.get_vocab_size(),
    )
    assert model.tokenizer.bos_token_id == tok.token_to_id("<|endoftext|>")
    toks = torch.tensor(
        [[model.tokenizer.bos_token_id, *tok.encode("Then, Ada and Basil walked to the cafe.").ids]]
    )
    logits = model.logits(toks)
    assert logits.shape == (1, toks.shape[1], s.d_vocab) and torch.isfinite(logits).all()
    # the saved file is the trained weights, in HookedTransformer's format, unprocessed
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "model.safetensors"))
    assert saved["blocks.0.attn.W_Q"].shape == (2, 32, 16) and "unembed.b_U" in saved
    assert all(torch.equal(saved[k], v) for k, v in model.ht_state_dict().items())
    with pytest.raises(FileNotFoundError, match="toy_train"):
        load_toy(tmp_path / "missing")


def test_training_updates_every_weight_the_hookedtransformer_trained(corpus, tmp_path):
    """Every HookedTransformer weight is trained (b_U included: the native head has no bias of its own)."""
    docs, tok = corpus
    train_toy(docs, tok, TINY, TrainSpec(steps=3, batch_size=4, seed=2), tmp_path / "t", "t")
    from safetensors.torch import load_file

    from patchbench.toy.model import build_model, hooked_config

    trained = load_file(str(tmp_path / "t" / "model.safetensors"))
    expected = {k for k in build_model(hooked_config(TINY, tok.get_vocab_size(), 2, "t")).ht_state_dict()}
    assert set(trained) == expected and "unembed.b_U" in expected
    assert trained["unembed.b_U"].abs().max() > 0  # initialised at 0, moved by training


def test_a_model_trained_under_transformerlens_3_9_loads_unchanged(corpus, tmp_path):
    """HookedTransformer-format checkpoints (buffers ``mask`` / ``IGNORE`` included) load; a weight of the
    wrong shape for the config is refused naming the file."""
    import json

    from safetensors.torch import load_file, save_file

    docs, tok = corpus
    save_tokenizer(tok, tmp_path)
    train_toy(docs, tok, TINY, TrainSpec(steps=1, batch_size=4), tmp_path, "tiny")
    state = load_file(str(tmp_path / "model.safetensors"))
    n_ctx = TINY.n_ctx
    old = {**state, **{f"blocks.{i}.attn.mask": torch.ones(n_ctx, n_ctx).tril().bool() for i in range(2)}}
    old |= {f"blocks.{i}.attn.IGNORE": torch.tensor(-1e5) for i in range(2)}
    save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    back = load_toy(tmp_path).ht_state_dict()
    assert all(torch.equal(back[k], state[k]) for k in state)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "n_heads": 4, "d_head": 8}))
    from patchbench.errors import InputError

    with pytest.raises(
        InputError,
        match=r"'blocks\.0\.attn\.W_Q' in model\.safetensors has shape \[2, 32, 16\].*gives \[4, 32, 8\]",
    ):
        load_toy(tmp_path)


def test_settings_merge_defaults_and_reject_unknown_keys():
    s = ToySettings.from_config({"models": {"organism-arithmetic": {"steps": 5}}})
    assert s.models["organism-arithmetic"].train.steps == 5
    assert (
        s.models["organism-arithmetic"].model.n_layers
        == DEFAULT_MODELS["organism-arithmetic"]["n_layers"]
        >= 6
    )
    assert (
        s.models["organism-docstring"].model.attn_only and s.models["organism-docstring"].model.n_layers == 4
    )
    assert s.models["organism-arithmetic"].circuit.kind == "arithmetic"
    ioi = ToySettings.from_config({"models": {"organism-ioi": {"steps": 7}}}).models["organism-ioi"]
    assert ioi.train.steps == 7 and ioi.circuit.kind == "ioi"  # the circuit survives the merge
    assert ioi.model.attn_only and ioi.model.n_layers * ioi.model.n_heads >= 96 and ioi.model.d_head == 16
    assert (
        ioi.circuit.head("name_mover")
        and len(ioi.circuit.head("negative_name_mover")) >= 2
        and ioi.impose.units == 12
    )
    with pytest.raises(ValueError, match="unknown keys"):
        ToySettings.from_config({"models": {"organism-arithmetic": {"stepz": 5}}})
    with pytest.raises(ValueError, match="unknown impose keys"):
        ToySettings.from_config({"models": {"organism-ioi": {"impose": {"unitz": 5}}}})
    with pytest.raises(ValueError, match="no settings"):
        ToySettings.from_config({"models": {"toy-new": {}}})


def test_each_model_has_its_own_corpus_mix_with_documented_precedence():
    s = ToySettings.from_config({"corpus": {"n_docs": 500}, "models": {"extra": {"n_layers": 2, "steps": 5}}})
    gpt2, attn = s.models["organism-arithmetic"].corpus, s.models["extra"].corpus
    assert gpt2.mix == DEFAULT_MODELS["organism-arithmetic"]["mix"] and attn.mix == s.corpus.mix
    # suite-level keys reach every model's corpus that does not set its own
    assert attn.n_docs == 500 and gpt2.n_docs == DEFAULT_MODELS["organism-arithmetic"]["n_docs"]
    # toy.corpus.mix, when given, replaces the built-in per-model mixes ...
    suite_mix = {"ioi": 1.0}
    s = ToySettings.from_config(
        {"corpus": {"mix": suite_mix}, "models": {"organism-arithmetic": {"mix": {"factual": 1.0}}}}
    )
    assert s.models["organism-docstring"].corpus.mix == suite_mix
    # ... and a model's own entry wins over both
    assert s.models["organism-arithmetic"].corpus.mix == {"factual": 1.0}
    # the held-out combinations are the suite's: same seed and fraction for every model
    assert {(m.corpus.seed, m.corpus.heldout_fraction) for m in s.models.values()} == {(0, 0.15)}
    assert s.corpus_for("not-a-toy-model") == s.corpus
    with pytest.raises(ValueError, match="unknown document kinds"):
        ToySettings.from_config({"models": {"organism-arithmetic": {"mix": {"poetry": 1.0}}}})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_checkpoint_written_under_transformerlens_3_9_gives_its_logits(root, dtype):
    """tests/data/tl39-toy was written by a HookedTransformer under TransformerLens 3.9 (its make.py):
    the native route runs those weights to the dtype's rounding, in float32 and float64. Not to the
    bit: the reference was computed on another CPU, and the BLAS kernel a CPU picks sets the order
    of a product's sums (7e-7 in float32, 2e-15 in float64 between an Intel and an AMD machine)."""
    import json

    from safetensors.torch import load_file

    from patchbench.lm import load_native

    d = root / "tests" / "data" / "tl39-toy"
    ref = load_file(str(d / "reference.safetensors"))
    model = load_native(
        json.loads((d / "config.json").read_text()), load_file(str(d / "model.safetensors")), dtype=dtype
    )
    with torch.no_grad():
        got = model.logits(ref["tokens"])
    want = ref[f"logits_{str(dtype).split('.')[-1]}"]
    assert got.dtype == want.dtype
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]  # logits of magnitude ~3: ~1e3 units of rounding
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
