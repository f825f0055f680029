"""Model loading: local save_pretrained directories, the hub path through a seeded offline cache,
and the errors a missing model gives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from patchbench.models import ModelNotFoundError, ModelSpec, load_model, load_tokenizer

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def gpt2_small_dir(tmp_path_factory, mirror) -> Path:
    """A random-weight GPT-2-small-shaped model in save_pretrained layout, with the real tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("gpt2-standin")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_ctx=1024)).save_pretrained(d)
    for f in TOKENIZER_FILES:
        shutil.copy(mirror / "gpt2-tokenizer" / f, d / f)
    return d


def test_local_directory_matches_huggingface(gpt2_small_dir):
    from transformers import GPT2LMHeadModel

    spec = ModelSpec.from_name(str(gpt2_small_dir), device="cpu")
    assert spec.source == "local"
    model = load_model(spec)
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model, model.cfg.d_vocab) == (
        12,
        12,
        768,
        50257,
    )
    tokens = model.tokenizer(
        "When Mary and John went to the store, John gave a drink to", return_tensors="pt"
    )["input_ids"]
    assert tokens[0, :3].tolist() == [
        50256,
        2215,
        5335,
    ]  # BOS, "When", " Mary" under the real GPT-2 tokenizer
    hf = GPT2LMHeadModel.from_pretrained(gpt2_small_dir).eval()
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = hf(tokens).logits.log_softmax(-1)
    # TransformerLens centres the unembedding, which shifts raw logits by a per-position constant:
    # log-probabilities (and every logit difference) are what must agree.
    assert (ours - theirs).abs().max().item() < 1e-4


def test_missing_local_directory_names_the_path(tmp_path):
    spec = ModelSpec(name="mine", source="local", path=str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFoundError, match=r"nowhere.*config\.json missing.*save_pretrained"):
        load_model(spec)


def test_missing_toy_model_names_the_fix(tmp_path):
    spec = ModelSpec(name="toy-gpt2", source="toy", path=str(tmp_path / "toy-gpt2"))
    with pytest.raises(ModelNotFoundError, match=r"toy-gpt2.*model\.safetensors.*snakemake"):
        load_model(spec)


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        _ = ModelSpec(name="gpt2", dtype="fp8").torch_dtype


def _run_offline(code: str, hub: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1", HF_HOME=str(hub.parent / "hf-home"))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True
    )


def test_hub_model_missing_from_cache_names_the_cache(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    res = _run_offline(
        """
        from patchbench.models import ModelSpec, load_model, ModelNotFoundError
        try:
            load_model(ModelSpec(name="gpt2", source="hub", hub_name="gpt2", device="cpu"))
        except ModelNotFoundError as e:
            print("ERR", e)
        """,
        hub,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ERR model 'gpt2'" in res.stdout
    assert str(hub) in res.stdout and "local" in res.stdout and "demo" in res.stdout


def test_hub_path_loads_gpt2_from_a_seeded_offline_cache(tmp_path, mirror):
    """The paper suite's real loading path (HookedTransformer.from_pretrained('gpt2')), offline."""
    from transformers import GPT2Config, GPT2LMHeadModel

    commit = "0123456789abcdef0123456789abcdef01234567"
    hub = tmp_path / "hub"
    repo = hub / "models--gpt2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    torch.manual_seed(0)
    # fewer layers than GPT-2 small keeps the test fast; the loading code path is the same
    GPT2LMHeadModel(GPT2Config(n_ctx=1024, n_layer=2)).save_pretrained(snap)
    for f in TOKENIZER_FILES:
        shutil.copy(mirror / "gpt2-tokenizer" / f, snap / f)
    res = _run_offline(
        """
        from patchbench.models import ModelSpec, load_model, load_tokenizer
        spec = ModelSpec(name="gpt2", source="hub", hub_name="gpt2", device="cpu")
        m = load_model(spec)
        tok = load_tokenizer(spec)
        print("OK", m.cfg.n_layers, m.cfg.d_vocab, tok(" Mary")["input_ids"])
        """,
        hub,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK 2 50257 [5335]" in res.stdout


def test_local_tokenizer_loads_without_weights(gpt2_small_dir):
    tok = load_tokenizer(ModelSpec.from_name(str(gpt2_small_dir)))
    assert tok(" John")["input_ids"] == [1757]
    assert tok.pad_token == tok.eos_token
