"""Stand-in models and two patchers for the model-interface tests (``tests/test_lm_*.py``).

* ``save_hf``: a random-weight Hugging Face model of a named shape, written with
  ``save_pretrained`` together with the real GPT-2 tokenizer (from the data mirror), so it
  loads offline through ``TransformerBridge.boot_transformers``.
* ``ht_state_dict``: random HookedTransformer-format weights (``embed.W_E``,
  ``blocks.0.attn.W_Q`` [n_heads, d_model, d_head], ...) for the native and legacy routes.
* ``reference_logits``: the plain full-recompute patch, written with TransformerLens's own
  hooks on the whole forward (``bridge.run_with_hooks``); ``interface_logits``: the same patch
  as the engine runs it through :mod:`patchbench.lm` (prefix reuse from the cached corrupted
  residual, and suffix-only runs on the corrupted run's keys and values for position-specific
  patches).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from patchbench.lm import LM, KVCapture

SEED = 0
# the offline data mirror, found as conftest.py finds it
MIRROR = Path(
    os.environ.get("PATCHBENCH_MIRROR", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
TOKENIZER_DIR = MIRROR / "gpt2-tokenizer"

#: transformers config kwargs of each stand-in. Paper shapes keep the real widths, heads,
#: head size, vocabulary and positional scheme; depth is cut to what a 2-core CI machine holds.
SHAPES: dict[str, tuple[str, dict]] = {
    # the paper's models
    "gpt2-small": ("gpt2", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)),
    "gpt2-large": ("gpt2", dict(n_layer=2, n_embd=1280, n_head=20, vocab_size=50257, n_positions=1024)),
    "gpt2-xl": ("gpt2", dict(n_layer=2, n_embd=1600, n_head=25, vocab_size=50257, n_positions=1024)),
    # GPT-J 6B: d_head 256, partial rotary (64 of 256 dims), untied unembedding; width cut to 4 heads
    "gpt-j": (
        "gptj",
        dict(n_layer=2, n_embd=1024, n_head=4, rotary_dim=64, vocab_size=50400, n_positions=2048,
             tie_word_embeddings=False, bos_token_id=50256, eos_token_id=50256),
    ),
    # current families: rotary embeddings and grouped-query attention
    "llama": (
        "llama",
        dict(num_hidden_layers=3, hidden_size=128, num_attention_heads=8, num_key_value_heads=2,
             intermediate_size=256, vocab_size=2000, max_position_embeddings=256, bos_token_id=0,
             eos_token_id=0, pad_token_id=0),
    ),
    "qwen2": (
        "qwen2",
        dict(num_hidden_layers=3, hidden_size=128, num_attention_heads=8, num_key_value_heads=2,
             intermediate_size=256, vocab_size=2000, max_position_embeddings=256, bos_token_id=0,
             eos_token_id=0, pad_token_id=0),
    ),
    # Gemma 2: GQA, alternating sliding-window / global layers (window 4 < prompt length, so the
    # window matters), attention and final-logit soft-capping, sqrt(d_model)-scaled embeddings
    "gemma2": (
        "gemma2",
        dict(num_hidden_layers=3, hidden_size=128, num_attention_heads=8, num_key_value_heads=2,
             head_dim=16, intermediate_size=256, vocab_size=2000, max_position_embeddings=256,
             sliding_window=4, bos_token_id=0, eos_token_id=0, pad_token_id=0),
    ),
}  # fmt: skip


def save_hf(shape: str, directory: Path, *, dtype: torch.dtype = torch.float32, **overrides) -> Path:
    """Write the stand-in ``shape`` (random weights, seeded) with ``save_pretrained`` into ``directory``."""
    import transformers as tf
    from transformers import GPT2TokenizerFast

    kind, kwargs = SHAPES[shape]
    classes = {
        "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel),
        "gptj": (tf.GPTJConfig, tf.GPTJForCausalLM),
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM),
    }
    config_cls, model_cls = classes[kind]
    torch.manual_seed(SEED)
    model = model_cls(config_cls(**{**kwargs, **overrides})).eval()
    model.to(dtype).save_pretrained(directory)
    GPT2TokenizerFast.from_pretrained(str(TOKENIZER_DIR)).save_pretrained(directory)
    return Path(directory)


def ht_state_dict(cfg: dict, seed: int = SEED, scale: float = 0.2) -> dict[str, torch.Tensor]:
    """Random weights in HookedTransformer's format for a config with TransformerBridgeConfig field names."""
    g = torch.Generator().manual_seed(seed)
    d, h, dh, v = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_vocab"]

    def r(*shape):
        return torch.randn(*shape, generator=g) * scale

    sd = {"embed.W_E": r(v, d), "unembed.W_U": r(d, v), "unembed.b_U": r(v)}
    if cfg.get("positional_embedding_type", "standard") == "standard":
        sd["pos_embed.W_pos"] = r(cfg["n_ctx"], d)
    if cfg.get("normalization_type", "LN") == "LN":
        sd |= {"ln_final.w": 1 + r(d), "ln_final.b": r(d)}
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        if cfg.get("normalization_type", "LN") == "LN":
            sd |= {p + "ln1.w": 1 + r(d), p + "ln1.b": r(d)}
        for w in "QKV":
            sd |= {p + f"attn.W_{w}": r(h, d, dh), p + f"attn.b_{w}": r(h, dh)}
        sd |= {p + "attn.W_O": r(h, dh, d), p + "attn.b_O": r(d)}
        if not cfg.get("attn_only", False):
            m = cfg["d_mlp"]
            if cfg.get("normalization_type", "LN") == "LN":
                sd |= {p + "ln2.w": 1 + r(d), p + "ln2.b": r(d)}
            sd |= {
                p + "mlp.W_in": r(d, m),
                p + "mlp.b_in": r(m),
                p + "mlp.W_out": r(m, d),
                p + "mlp.b_out": r(d),
            }
    return sd


def write_legacy_repo(directory: Path, cfg: dict, seed: int = SEED, scale: float = 0.2) -> Path:
    """A TransformerLens-format repository snapshot (TL ``config.json`` + ``model_final.pth``)."""
    directory.mkdir(parents=True, exist_ok=True)
    tl_cfg = {k: v for k, v in cfg.items() if k not in ("normalization_type", "positional_embedding_type")}
    tl_cfg |= {
        "normalization": cfg.get("normalization_type", "LN"),
        "shortformer_pos": cfg.get("positional_embedding_type") == "shortformer",
    }
    (directory / "config.json").write_text(json.dumps(tl_cfg))
    sd = ht_state_dict(cfg, seed, scale)
    if cfg.get("normalization_type") == "LN" and cfg.get("act_fn") == "solu_ln":
        for i in range(cfg["n_layers"]):
            if not cfg.get("attn_only", False):
                sd[f"blocks.{i}.mlp.ln.w"] = torch.ones(cfg["d_mlp"])
                sd[f"blocks.{i}.mlp.ln.b"] = torch.zeros(cfg["d_mlp"])
    torch.save(sd, directory / "model_final.pth")
    return directory


# ---------------------------------------------------------------------------------------------
# the two patchers


@dataclass(frozen=True)
class Patch:
    """Replace ``hook``'s activation with the clean one at ``heads`` (None: all) and ``position`` (None: all)."""

    hook: str
    heads: tuple[int, ...] | None = None
    position: int | None = None


def _put(act: torch.Tensor, src: torch.Tensor, heads, position: int | None) -> torch.Tensor:
    act = act.clone()
    idx: tuple = (slice(None), slice(None) if position is None else position)
    if heads is not None:
        idx = (*idx, list(heads))
    act[idx] = src[idx].to(act.dtype)
    return act


def clean_activations(lm: LM, tokens: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Clean activations at ``names`` from a block-by-block run through the interface (as the engine caches them)."""
    store: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, name: str) -> None:
        store[name] = act.detach().clone()

    with torch.no_grad(), lm.hooks([(n, grab) for n in names]):
        lm.run_blocks(lm.embed(tokens), 0)
    return store


def reference_logits(lm: LM, tokens, patches, clean, noise, answer_pos) -> torch.Tensor:
    """Full forward with TransformerLens's own hooks: GN noise at ``hook_embed``, clean values at the patches."""
    hooks = [(p.hook, lambda act, hook, p=p: _put(act, clean[p.hook], p.heads, p.position)) for p in patches]
    if noise is not None:
        hooks.append(("hook_embed", lambda act, hook: act + noise.to(act.dtype)))
    with torch.no_grad():
        logits = lm.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits[torch.arange(len(tokens)), answer_pos]


def interface_logits(
    lm: LM, tokens, patches, clean, noise, answer_pos, start: int, suffix: bool
) -> torch.Tensor:
    """The engine's way: start at layer ``start`` on the cached corrupted residual; with ``suffix``,
    run only positions >= the patch position on the corrupted run's keys and values."""
    with torch.no_grad():
        keep: list[torch.Tensor] = []
        cap = KVCapture() if suffix else None
        corrupted = lm.unembed_at(
            lm.run_blocks(lm.embed(tokens, noise), 0, keep=keep, capture=cap), answer_pos
        )
        p = 0
        if suffix:
            p = min(x.position for x in patches)  # type: ignore[type-var]
        resid = keep[start][:, p:]
        hooks = [
            (x.hook, lambda act, name, x=x: _put(act, clean[x.hook][:, p:], x.heads, None if x.position is None else x.position - p))
            for x in patches
        ]  # fmt: skip
        with lm.hooks(hooks):
            out = lm.run_blocks(resid, start, past=cap.prefix(p) if cap is not None else None)
        # a row whose answer comes before the patched position is the corrupted run (causality)
        before = answer_pos < p
        patched = lm.unembed_at(out, torch.where(before, 0, answer_pos - p))
        return torch.where(before[:, None], corrupted, patched)


def ht_forward(sd: dict[str, torch.Tensor], cfg: dict, tokens: torch.Tensor) -> torch.Tensor:
    """HookedTransformer's forward written out (LN, GELU MLP, standard positions, no weight processing)."""
    import torch.nn.functional as F

    def ln(x, w, b):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w + b

    n = tokens.shape[1]
    x = sd["embed.W_E"][tokens] + sd["pos_embed.W_pos"][:n]
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        h = ln(x, sd[p + "ln1.w"], sd[p + "ln1.b"])
        q, k, v = (
            torch.einsum("bpd,hde->bphe", h, sd[p + f"attn.W_{w}"]) + sd[p + f"attn.b_{w}"] for w in "QKV"
        )
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / cfg["d_head"] ** 0.5
        z = torch.einsum("bhqk,bkhe->bqhe", scores.masked_fill(future, float("-inf")).softmax(-1), v)
        x = x + torch.einsum("bqhe,hed->bqd", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        if not cfg.get("attn_only", False):
            h = ln(x, sd[p + "ln2.w"], sd[p + "ln2.b"])
            x = (
                x
                + F.gelu(h @ sd[p + "mlp.W_in"] + sd[p + "mlp.b_in"]) @ sd[p + "mlp.W_out"]
                + sd[p + "mlp.b_out"]
            )
    return ln(x, sd["ln_final.w"], sd["ln_final.b"]) @ sd["unembed.W_U"] + sd["unembed.b_U"]


# ---------------------------------------------------------------------------------------------
# the engine's sweeps against a full recompute


def reference_sweep(lm: LM, prompts, spec) -> dict[int, torch.Tensor]:
    """Answer-position logits of every target of ``spec``, one full forward per target with
    TransformerLens's own hooks (:func:`reference_runs`): target id -> [rows, d_vocab]; -1 is the
    corrupted run."""
    out = reference_runs(lm, prompts, spec)
    return {-1: out["corrupted"], **{t: v for t, v in out.items() if isinstance(t, int)}}


# ---------------------------------------------------------------------------------------------
# every corruption, direction and site against one full forward per target


def _index(act: torch.Tensor, layout: str, row: int, heads, pos) -> tuple:
    """The index of (row, heads, position) in an activation of ``layout`` (bpd / bphd / bhqk)."""
    pos = slice(None) if pos is None else pos
    heads = slice(None) if heads is None else list(heads)
    if layout == "bpd":
        return (row, pos)
    if layout == "bphd":
        return (row, pos, heads)
    return (row, heads, pos)  # a pattern: [batch, head, dest, src]; positions are destinations


def _entries(part, prompts, row: int):
    """(heads, position) a HookPatch patches in prompt ``row`` (None: every head / position)."""
    pos = part.position
    if pos == -1:
        pos = None
    elif isinstance(pos, str):
        pos = int(prompts.named_position(pos)[row])
    return part.heads, pos


def reference_runs(lm: LM, prompts, spec) -> dict:
    """Answer-position logits of every target of ``spec`` (any corruption, direction and site), each
    from one full forward with TransformerLens's own hooks (``bridge.run_with_hooks``), none of the
    engine's code: the clean run reads the clean prompts; the corrupted run reads the STR prompts,
    the clean ones with GN's draw added at ``hook_embed``, the resampled prompts, or the clean ones
    with every patched activation of the sweep (its union) replaced by zero or by its mean over the
    clean runs of the prompts of the same template and length (TransformerLens's own cache). Denoising
    writes the clean run's activations (TransformerLens's cache) into the corrupted run at each
    target's entries, the corrupted run's ablation staying in place elsewhere; noising writes the
    corrupted run's into the clean run. Returns ``{"clean": [P, V], "corrupted": [R, V], target id:
    [R, V]}`` over the (prompt, sample) rows of the sweep."""
    import numpy as np

    from patchbench.interventions.corruptions.base import template_groups
    from patchbench.interventions.corruptions.gn import noise_scale, noise_tensor
    from patchbench.interventions.corruptions.resample import pairing
    from patchbench.interventions.sites import SITES
    from patchbench.sites import enumerate_targets

    site = SITES[spec.site]
    corruption = spec.intervention
    clean_tok = prompts.tokens("clean")
    n, max_len = clean_tok.shape
    k = spec.n_samples
    pr, sa = np.repeat(np.arange(n), k), np.tile(np.arange(k), n)
    targets = enumerate_targets(spec, lm.shape.n_layers, site.n_heads(lm.shape), max_len)
    names = sorted({h for t in targets for h in t.hooks})
    answer = torch.as_tensor(prompts.answer_pos)[pr]

    def run(tokens, hooks):
        with torch.no_grad():
            logits = lm.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
        return logits[torch.arange(len(tokens)), answer[: len(tokens)]]

    def cache_of(tokens, hooks):
        with torch.no_grad(), lm.bridge.hooks(fwd_hooks=hooks):
            _, cache = lm.bridge.run_with_cache(tokens, names_filter=lambda x: x in names)
        return {h: cache[h].clone() for h in names}

    clean_cache = cache_of(clean_tok, [])
    # the corrupted run: its tokens, embedding noise and ablation
    tokens, base_hooks = clean_tok[pr], []
    if corruption.name == "str":
        tokens = prompts.tokens("corrupted")[pr]
    elif corruption.name == "resample":
        tokens = clean_tok[pairing(prompts, corruption.seed)][pr]
    elif corruption.name == "gn":
        _, std = noise_scale(lm, prompts, corruption)
        noise = noise_tensor(
            prompts, pr, sa, lm.shape.d_model, std, corruption.seed, max_len, dtype=lm.shape.dtype
        )
        base_hooks.append(("hook_embed", lambda act, hook: act + noise.to(act.dtype)))
    else:  # an ablation of every entry any target patches
        groups = template_groups(prompts, corruption="mean")
        group_of = {i: key for key, idx in groups.items() for i in idx}

        def ablate(name):
            def fn(act, hook):
                act = act.clone()
                for r in range(len(act)):
                    p = int(pr[r])
                    members = groups[group_of[p]]
                    value = clean_cache[name][members].double().mean(0).to(act.dtype)
                    for t in targets:
                        for part in t.patches:
                            if part.hook == name:
                                idx = _index(act, site.layout, r, *_entries(part, prompts, p))
                                act[idx] = 0.0 if corruption.name == "zero" else value[idx[1:]]
                return act

            return fn

        base_hooks += [(h, ablate(h)) for h in names]
    corrupted_cache = cache_of(tokens, base_hooks)

    def write(part, source):
        def fn(act, hook):
            act = act.clone()
            for r in range(len(act)):
                idx = _index(act, site.layout, r, *_entries(part, prompts, int(pr[r])))
                act[idx] = source[part.hook][r][idx[1:]].to(act.dtype)
            return act

        return fn

    out = {"clean": run(clean_tok, [])[:n] if k == 1 else None, "corrupted": run(tokens, base_hooks)}
    with torch.no_grad():
        full = lm.bridge.run_with_hooks(clean_tok, fwd_hooks=[])
    out["clean"] = full[torch.arange(n), torch.as_tensor(prompts.answer_pos)]
    clean_rows = {h: v[pr] for h, v in clean_cache.items()}
    for t in targets:
        if spec.direction == "denoising":  # the corrupted run, its ablation kept, the target's clean entries
            hooks = base_hooks + [(p.hook, write(p, clean_rows)) for p in t.patches]
            out[t.id] = run(tokens, hooks)
        else:  # the clean run, the target's corrupted entries
            out[t.id] = run(clean_tok[pr], [(p.hook, write(p, corrupted_cache)) for p in t.patches])
    return out
