"""Every trap of running TransformerLens 4 models block by block is a guarantee of ``patchbench.lm``.

Small float64 stand-ins of each family (saved with ``save_pretrained``, loaded offline through
the real loading routes), so that "equal" means equal to rounding (1e-12 relative). For each
trap there is a test that the interface gets it right AND a test that the interface's own
check fails loudly when the guard is taken away (the trap "comes back").
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from lm_models import SHAPES, ht_forward, ht_state_dict, save_hf, write_legacy_repo
from patchbench.lm import KVCapture, ModelInterfaceError, load_legacy, load_native, load_transformers
from patchbench.lm import model as lm_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "gpt2-small": dict(n_layer=3, n_embd=64, n_head=4, vocab_size=1000, n_positions=64),
    "gpt-j": dict(n_layer=3, n_embd=64, n_head=4, rotary_dim=8, vocab_size=1000, n_positions=64, bos_token_id=0,
                  eos_token_id=0),
    "llama": dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=1000),
    "qwen2": dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=1000),
    "gemma2": dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   intermediate_size=128, vocab_size=1000),
}  # fmt: skip
assert set(TINY) <= set(SHAPES)
EXACT = 1e-12
# Hugging Face's GPT-J attention computes its scores in float32 even in a float64 model, so its
# block-by-block and suffix runs agree with the full forward to float32 rounding only: which float32
# kernel a matmul takes (and so its last bits) depends on its operands' layout and the processor.
FLOAT32_SCORES = {"gpt-j": 1e-8}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lm-tiny")
    return {name: save_hf(name, root / name, **kw) for name, kw in TINY.items()}


@pytest.fixture(scope="module")
def tiny(tiny_dirs) -> dict:
    return {name: load_transformers(str(d), dtype=torch.float64) for name, d in tiny_dirs.items()}


def tokens_for(lm, batch=2, length=10, seed=1):
    return torch.randint(
        1, min(lm.shape.d_vocab, 1000), (batch, length), generator=torch.Generator().manual_seed(seed)
    )


# ------------------------------------------------------------------------------ shapes and routes


def test_shapes_read_from_the_bridge(tiny):
    s = {k: (v.shape.n_layers, v.shape.n_heads, v.shape.n_kv_heads, v.shape.d_head, v.shape.positional)
         for k, v in tiny.items()}  # fmt: skip
    assert s == {
        "gpt2-small": (3, 4, 4, 16, "standard"),
        "gpt-j": (3, 4, 4, 16, "rotary"),
        "llama": (3, 4, 2, 16, "rotary"),
        "qwen2": (3, 4, 2, 16, "rotary"),
        "gemma2": (3, 4, 2, 16, "rotary"),
    }
    assert tiny["gemma2"].shape.sliding_window == 4 and tiny["gemma2"].shape.logit_softcap == 30.0
    assert all(
        m.shape.kv_reuse and m.shape.processed and m.shape.dtype == torch.float64 for m in tiny.values()
    )
    assert tiny["llama"].site_heads("head_v") == 2 and tiny["llama"].site_heads("attn_head") == 4


@pytest.mark.parametrize("name", list(TINY))
def test_block_by_block_and_suffix_runs_equal_the_full_forward(tiny, name):
    """Embed -> every block -> final norm + unembed at each position; and a suffix run on cached K/V."""
    got = tiny[name].self_check(length=10)
    tol = FLOAT32_SCORES.get(name, EXACT)
    assert got["blocks"] < tol and got["suffix"] < tol, got


# ------------------------------------------------------------------------------ rotary embeddings


@pytest.mark.parametrize("name", ["llama", "gpt-j", "gemma2"])
def test_missing_rotary_embeddings_fail_loudly(tiny, name, monkeypatch):
    lm = tiny[name]
    if name == "gpt-j":  # Hugging Face's GPT-J attention cannot run without them at all
        monkeypatch.setattr(lm, "_rotary", None)
        with pytest.raises((ModelInterfaceError, TypeError)):
            lm.self_check()
        return
    monkeypatch.setattr(lm, "_rotary", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # TransformerLens warns; the guard under test is ours
        with pytest.raises(ModelInterfaceError, match="disagree"):
            lm.self_check()


@pytest.mark.parametrize("name", ["llama", "gpt-j"])
def test_suffix_rotary_positions_are_absolute(tiny, name, monkeypatch):
    """A suffix run whose rotary embeddings restart at position 0 is caught."""
    lm = tiny[name]
    rot = lm._rotary

    def from_zero(x, pos):
        return rot(x, pos - pos[:, :1])

    monkeypatch.setattr(lm, "_rotary", from_zero)
    with pytest.raises(ModelInterfaceError, match="suffix"):
        lm.self_check()


# ------------------------------------------------------------------------------ masks


def test_gpt_j_blocks_need_the_explicit_causal_mask(tiny, monkeypatch):
    """Hugging Face's GPT-J attention applies no causal mask of its own to a block called by hand."""
    lm = tiny["gpt-j"]
    monkeypatch.setattr(lm, "_mask", lambda *a, **k: None)
    with pytest.raises(ModelInterfaceError, match="blocks"):
        lm.self_check()


def test_sliding_window_layers_are_masked(tiny, monkeypatch):
    """Gemma 2's sliding-window layers (window 4 < 10 tokens) get their window; without it the check fails."""
    lm = tiny["gemma2"]
    assert lm._sliding == [True, False, True]
    assert lm.self_check(length=10)["blocks"] < EXACT
    monkeypatch.setattr(lm, "_sliding", [False] * 3)
    lm._masks.clear()
    with pytest.raises(ModelInterfaceError, match="blocks"):
        lm.self_check(length=10)
    lm._masks.clear()


def test_final_logit_softcap_is_applied(tiny, monkeypatch):
    lm = tiny["gemma2"]
    monkeypatch.setattr(lm, "shape", dataclasses.replace(lm.shape, logit_softcap=None))
    with pytest.raises(ModelInterfaceError, match="blocks"):
        lm.self_check()


# ------------------------------------------------------------------------------ key/value reuse


@pytest.mark.parametrize("name", list(TINY))
def test_kv_cache_is_read_and_its_length_checked(tiny, name):
    lm = tiny[name]
    tok = tokens_for(lm, length=12)
    with torch.no_grad():
        full = lm.bridge(tok)
        cap = KVCapture()
        r0 = lm.embed(tok)
        lm.run_blocks(r0, 0, capture=cap)
        for p in (1, 7, 11):
            past = cap.prefix(p)
            assert past.length == p
            assert next(iter(past.keys.values())).shape[1] == lm.shape.n_kv_heads
            out = lm.run_blocks(r0[:, p:], 0, past=past)
            assert past.calls == {i: 1 for i in range(lm.shape.n_layers)}
            assert past.seen_lengths == {i: 12 for i in range(lm.shape.n_layers)}
            got = torch.stack([lm.unembed_at(out, torch.full((2,), j)) for j in range(12 - p)], 1)
            assert (got - full[:, p:]).abs().max() < FLOAT32_SCORES.get(name, EXACT) * full.abs().max()
            # the prefix matters: the suffix alone (no keys/values of positions < p) is far off
            alone = lm.run_blocks(lm.embed(tok[:, p:], offset=p), 0)
            assert (lm.unembed_at(alone, torch.zeros(2, dtype=torch.long)) - full[:, p]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["gpt2-small", "llama", "gpt-j"])
def test_a_cache_the_attention_ignores_fails_loudly(tiny, name, monkeypatch):
    """The transformers 5.24 trap: the cache travels under a name no attention reads."""
    lm = tiny[name]
    monkeypatch.setattr(lm_model, "_CACHE_KWARGS", ("ignored_cache_argument",))
    with pytest.raises(ModelInterfaceError, match="used .* times per layer"):
        lm.self_check()


def test_prefix_repeat_serves_several_targets_in_one_forward(tiny):
    lm = tiny["llama"]
    tok = tokens_for(lm, length=9)
    with torch.no_grad():
        cap = KVCapture()
        r0 = lm.embed(tok)
        lm.run_blocks(r0, 0, capture=cap)
        one = lm.run_blocks(r0[:, 4:], 0, past=cap.prefix(4))
        two = lm.run_blocks(r0[:, 4:].repeat(2, 1, 1), 0, past=cap.prefix(4).repeat(2))
        # equal to float64 rounding: a batch of 4 may take other BLAS kernels than a batch of 2
        scale = float(one.abs().max())
        assert (two[:2] - one).abs().max() < EXACT * scale and (two[2:] - one).abs().max() < EXACT * scale
        with pytest.raises(ModelInterfaceError, match="PrefixKV.repeat"):
            lm.run_blocks(r0[:, 4:].repeat(2, 1, 1), 0, past=cap.prefix(4))


# ------------------------------------------------------------------------------ hooks


@pytest.mark.parametrize("name", ["gpt2-small", "llama"])
def test_hooks_are_called_by_the_requested_name(tiny, name):
    """TransformerLens fires ``blocks.L.hook_resid_pre`` as ``blocks.L.hook_in``; the interface does not."""
    lm = tiny[name]
    seen: list[tuple[str, tuple]] = []
    names = [lm.hook_name(site, 1) for site in ("attn_head", "head_v", "mlp", "resid_pre")]
    with torch.no_grad(), lm.hooks([(n, lambda act, nm: seen.append((nm, tuple(act.shape)))) for n in names]):
        lm.run_blocks(lm.embed(tokens_for(lm, length=5)), 0)
    kv = lm.shape.n_kv_heads
    assert seen == [
        ("blocks.1.hook_resid_pre", (2, 5, 64)),
        ("blocks.1.attn.hook_v", (2, 5, kv, 16)),
        ("blocks.1.attn.hook_z", (2, 5, 4, 16)),
        ("blocks.1.hook_mlp_out", (2, 5, 64)),
    ]
    with pytest.raises(KeyError, match="no hook point"):
        with lm.hooks([("blocks.1.hook_nothing", lambda a, n: None)]):
            pass


def test_hook_returning_a_tensor_patches_the_model(tiny):
    """Patching through the interface's hooks reaches the output (hook_z with its [b, p, h, d] view)."""
    lm = tiny["llama"]
    tok = tokens_for(lm, length=6)
    with torch.no_grad():
        base = lm.unembed_at(lm.run_blocks(lm.embed(tok), 0), torch.full((2,), 5))
        with lm.hooks([(lm.hook_name("attn_head", 2), lambda act, nm: act * 0)]):
            zeroed = lm.unembed_at(lm.run_blocks(lm.embed(tok), 0), torch.full((2,), 5))
    assert (zeroed - base).abs().max() > 1e-3


# ------------------------------------------------------------------------------ raw embeddings (GN's sigma)


@pytest.mark.parametrize("name", ["gpt2-small", "gemma2"])
def test_raw_token_embeddings_are_the_unprocessed_embedding_layer(tiny, tiny_dirs, name):
    """ROME's sigma source: the model's own embedding layer before weight processing (Gemma's is scaled)."""
    from transformers import AutoModelForCausalLM

    lm = tiny[name]
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[name], dtype=torch.float64).eval()
    ids = torch.tensor([3, 17, 17, 400])
    with torch.no_grad():
        want = hf.get_input_embeddings()(ids[None])[0]
    got = lm.raw_token_embeddings(ids)
    assert torch.equal(got, want)
    if name == "gpt2-small":  # compatibility mode centred the live W_E: the raw copy is what sigma needs
        assert (lm.bridge.W_E[ids] - want).abs().max() > 1e-3
    else:  # Gemma multiplies by sqrt(d_model) inside its embedding layer
        assert torch.allclose(got, hf.get_input_embeddings().weight[ids] * 64**0.5)


# ------------------------------------------------------------------------------ native and legacy routes

NATIVE = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=16, act_fn="gelu",
              normalization_type="LN", positional_embedding_type="standard", attn_only=False)  # fmt: skip


def test_native_route_runs_hookedtransformer_weights_exactly():
    """The project's own models: HookedTransformer-format weights, unprocessed, equal HT's math to rounding."""
    sd = {k: v.double() for k, v in ht_state_dict(NATIVE).items()}
    lm = load_native(NATIVE, sd, dtype=torch.float64)
    assert lm.shape.route == "native" and not lm.shape.processed and lm.shape.kv_reuse
    tok = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ht_forward(sd, NATIVE, tok)
        got = torch.stack(
            [lm.unembed_at(lm.run_blocks(lm.embed(tok), 0), torch.full((3,), p)) for p in range(9)], 1
        )
    assert (got - want).abs().max() < 1e-12
    assert torch.equal(lm.raw_token_embeddings(torch.tensor([4, 9])), sd["embed.W_E"][[4, 9]])
    # key/value reuse (issue 17): a suffix run on the captured keys and values equals HT's math too
    with torch.no_grad():
        cap = KVCapture()
        r0 = lm.embed(tok)
        lm.run_blocks(r0, 0, capture=cap)
        suffix = lm.run_blocks(r0[:, 5:], 0, past=cap.prefix(5))
        tail = torch.stack([lm.unembed_at(suffix, torch.full((3,), p)) for p in range(4)], 1)
    assert (tail - want[:, 5:]).abs().max() < 1e-12
    # and the prefix provably matters: another prompt's keys and values change the result
    with torch.no_grad():
        other = KVCapture()
        lm.run_blocks(lm.embed(tok.flip(0)), 0, capture=other)
        moved = lm.unembed_at(lm.run_blocks(r0[:, 5:], 0, past=other.prefix(5)), torch.full((3,), 3))
    assert (moved - want[:, 8]).abs().max() > 1e-3


def test_native_route_refuses_shortformer():
    with pytest.raises(ModelInterfaceError, match="shortformer"):
        load_native({**NATIVE, "positional_embedding_type": "shortformer"})


LEGACY = dict(n_layers=2, d_model=64, d_head=16, n_heads=4, d_mlp=256, n_ctx=64, d_vocab=300, act_fn="solu_ln",
              attn_only=True, normalization_type="LN", positional_embedding_type="standard")  # fmt: skip


@pytest.fixture
def legacy_hub(tmp_path, monkeypatch):
    """Serve hub downloads for NeelNanda/... repos from local folders (the legacy loader's hub calls)."""
    import huggingface_hub

    repos: dict[str, object] = {}

    def download(repo_id, filename, **kw):
        return str(repos[repo_id] / filename)

    def listing(self, repo_id, **kw):
        return sorted(p.name for p in repos[repo_id].iterdir())

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", listing)
    return repos, tmp_path


def test_legacy_route_loads_a_transformerlens_format_repo(legacy_hub, gpt2_tokenizer):
    repos, root = legacy_hub
    repos["NeelNanda/Stand_In_2L"] = write_legacy_repo(root / "legacy", LEGACY)
    lm = load_legacy("NeelNanda/Stand_In_2L", dtype=torch.float64, tokenizer=gpt2_tokenizer)
    assert (lm.shape.route, lm.shape.n_layers, lm.shape.n_heads, lm.shape.d_vocab) == ("legacy", 2, 4, 300)
    assert lm.has_hook(lm.hook_name("attn_head", 1)) and not lm.has_hook(lm.hook_name("mlp", 1))
    assert lm.self_check()["blocks"] < EXACT


def test_legacy_route_refuses_shortformer_loudly(legacy_hub, gpt2_tokenizer):
    """TransformerLens 4.3 has no shortformer implementation: a shortformer config (e.g. an attn-only-4l
    stand-in seeded before TransformerLens 4) is refused, naming the fix."""
    repos, root = legacy_hub
    repos["NeelNanda/Short_2L"] = write_legacy_repo(
        root / "short", {**LEGACY, "positional_embedding_type": "shortformer"}
    )
    with pytest.raises(
        ModelInterfaceError, match=r"NeelNanda/Short_2L.*shortformer.*Fix:.*python -m patchbench\.standins"
    ):
        load_legacy("NeelNanda/Short_2L", tokenizer=gpt2_tokenizer)


# ------------------------------------------------------------------------------ the hub route, offline


def test_hub_route_loads_gpt2_by_name_from_an_offline_cache(tmp_path, mirror):
    """``load_transformers("gpt2")`` through a seeded hub cache with HF_HUB_OFFLINE=1 (no network)."""
    import os
    import subprocess
    import sys

    from patchbench.standins import seed_hub_cache

    hub = tmp_path / "hub"
    seed_hub_cache(hub, mirror / "gpt2-tokenizer", ["gpt2"], layers={"gpt2": 2})
    code = (
        "import torch\n"
        "from patchbench.lm import load_transformers\n"
        "lm = load_transformers('gpt2')\n"
        "s = lm.shape\n"
        "print('OK', s.architecture, s.n_layers, s.n_heads, s.d_model, s.d_vocab, lm.tokenizer(' Mary')['input_ids'],"
        " lm.self_check())\n"
    )
    env = dict(os.environ, HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    # the bridge's tokenizer prepends BOS on a plain call (<|endoftext|> = 50256): prompts must keep
    # being tokenized by patchbench.models.load_tokenizer, not by lm.tokenizer
    assert "OK GPT2LMHeadModel 2 12 768 50257 [50256, 5335]" in res.stdout, res.stdout


def test_widths_for_memory_planning(tiny):
    s = tiny["llama"].shape
    assert (s.d_model, s.d_mlp, s.d_vocab) == (64, 128, 1000) and s.n_ctx > 0
