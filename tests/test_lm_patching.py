"""Every site the engine patches, through the model interface, equals a plain full recompute.

Stand-ins of the paper's models (GPT-2 small at full size; GPT-2 large / XL and GPT-J with their
real widths, heads, head size, vocabularies and positional schemes but fewer layers;
attn-only-4l's shape through the legacy route), of three current families with rotary
embeddings and grouped-query attention (Llama, Qwen2, Gemma 2 with sliding-window layers and
soft-capping) and of the project's own models (native route, HookedTransformer-format weights).
All random weights, saved with ``save_pretrained`` (or TransformerLens's legacy format) and
loaded offline through the real loading routes, float32.

For STR and GN, each site (head output ``hook_z``, head values ``hook_v`` -- key-value heads on
grouped-query models --, MLP output over a window of layers, ``resid_pre``) at all positions and
at one position: the interface's way (start at the patched layer on the cached corrupted
residual; a position-specific patch runs only positions >= its position, on the corrupted run's
keys and values) agrees within 1e-5 with TransformerLens's own hooks on a full forward. The
sanity identities hold through the interface: patching a target with the corrupted run's own
activations gives the corrupted logits, and the clean ``resid_pre`` of layer 0 gives the clean ones.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
import torch

from lm_models import (
    Patch,
    clean_activations,
    ht_state_dict,
    interface_logits,
    reference_logits,
    reference_sweep,
    save_hf,
    write_legacy_repo,
)
from patchbench.lm import LM, load_legacy, load_native, load_transformers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-5
HF_MODELS = ["gpt2-small", "gpt2-large", "gpt2-xl", "gpt-j", "llama", "qwen2", "gemma2"]
# attn-only-4l's shape (TransformerLens format). TransformerLens 4.3 has no shortformer positional
# embeddings, so this stand-in uses standard ones (see docs/model-interface.md).
ATTN_ONLY_4L = dict(
    n_layers=4,
    d_model=512,
    d_head=64,
    n_heads=8,
    d_mlp=2048,
    n_ctx=1024,
    d_vocab=48262,
    act_fn="solu_ln",
    attn_only=True,
    normalization_type="LN",
    positional_embedding_type="standard",
)
TOYS = {
    "toy": dict(n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=256, n_ctx=64, d_vocab=300, act_fn="gelu",
                normalization_type="LN", positional_embedding_type="standard", attn_only=False),
    "toy-attn-only": dict(n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512, n_ctx=64, d_vocab=300,
                          act_fn="gelu", normalization_type="LN", positional_embedding_type="standard", attn_only=True),
}  # fmt: skip
MODELS = [*HF_MODELS, "attn-only-4l", *TOYS]
LENGTH, KEY = 9, 3
ANSWER_POS = torch.tensor([8, 8, 6])  # the last row is a shorter prompt, right-padded


@pytest.fixture(scope="module", params=MODELS)
def model(request, tmp_path_factory, gpt2_tokenizer):
    name = request.param
    root = tmp_path_factory.mktemp(f"lm-{name}")
    if name in HF_MODELS:
        lm = load_transformers(str(save_hf(name, root / name)))
    elif name == "attn-only-4l":
        import huggingface_hub

        repo = write_legacy_repo(root / "repo", ATTN_ONLY_4L, scale=0.05)
        with pytest.MonkeyPatch.context() as mp:  # the legacy loader's two hub calls, answered locally
            mp.setattr(
                huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: str(repo / filename)
            )
            mp.setattr(
                huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, **kw: ["model_final.pth"]
            )
            lm = load_legacy("NeelNanda/Attn_Only_4L512W_C4_Code", tokenizer=gpt2_tokenizer)
    else:
        lm = load_native(TOYS[name], ht_state_dict(TOYS[name], scale=0.1))
    shutil.rmtree(root, ignore_errors=True)
    yield name, lm


@dataclass
class Run:
    clean: torch.Tensor
    corrupted: torch.Tensor
    noise: torch.Tensor | None


def make_run(lm: LM, corruption: str) -> Run:
    g = torch.Generator().manual_seed(3)
    vocab = min(lm.shape.d_vocab, 1000)
    clean = torch.randint(1, vocab, (3, LENGTH), generator=g)
    if corruption == "str":
        corrupted = clean.clone()
        corrupted[:, KEY] = (clean[:, KEY] + torch.randint(1, vocab - 1, (3,), generator=g)) % (vocab - 1) + 1
        return Run(clean, corrupted, None)
    # GN: 3 sigma on the key tokens, sigma from the model's raw token embeddings (ROME)
    sigma = lm.raw_token_embeddings(clean[:, KEY - 1 : KEY + 1].reshape(-1)).double().std().item()
    noise = torch.zeros(3, LENGTH, lm.shape.d_model)
    noise[:, KEY - 1 : KEY + 1] = 3 * sigma * torch.randn(3, 2, lm.shape.d_model, generator=g)
    return Run(clean, clean, noise)


def targets(lm: LM) -> list[tuple[str, int, list[Patch]]]:
    """(label, start layer, patches): each site at all positions and at one position."""
    s = lm.shape
    a, last = (s.n_layers - 1) // 2, s.n_layers - 1  # a < last: a middle-ish layer
    hook = lm.hook_name
    out = [
        ("head_z all", a, [Patch(hook("attn_head", a), (1,))]),
        ("head_z @key", a, [Patch(hook("attn_head", a), (s.n_heads - 1,), KEY)]),
        ("head_v all", a, [Patch(hook("head_v", a), (s.n_kv_heads - 1,))]),
        ("head_v @5", last, [Patch(hook("head_v", last), (0,), 5)]),
        ("resid_pre @key", a, [Patch(hook("resid_pre", a), None, KEY)]),
        ("resid_pre all", last, [Patch(hook("resid_pre", last))]),
    ]
    if lm.has_hook(hook("mlp", 0)):
        out += [
            ("mlp window all", a, [Patch(hook("mlp", a)), Patch(hook("mlp", a + 1))]),
            ("mlp @end", last, [Patch(hook("mlp", last), None, LENGTH - 1)]),
            ("mlp window @key", a, [Patch(hook("mlp", a), None, KEY), Patch(hook("mlp", a + 1), None, KEY)]),
        ]
    return out


@pytest.mark.parametrize("corruption", ["str", "gn"])
def test_every_site_equals_the_full_recompute(model, corruption):
    name, lm = model
    run = make_run(lm, corruption)
    ts = targets(lm)
    names = sorted({p.hook for _, _, ps in ts for p in ps})
    clean = clean_activations(lm, run.clean, names)
    with torch.no_grad():  # the library's own cache agrees with the interface's clean activations
        _, tl_cache = lm.bridge.run_with_cache(run.clean, names_filter=lambda n: n in names)
    for n in names:
        assert (clean[n] - tl_cache[n]).abs().max() < TOL, n
    corrupted = reference_logits(lm, run.corrupted, [], clean, run.noise, ANSWER_POS)
    worst = {}
    for label, start, patches in ts:
        ref = reference_logits(lm, run.corrupted, patches, clean, run.noise, ANSWER_POS)
        suffix = lm.shape.kv_reuse and all(p.position is not None for p in patches)
        got = interface_logits(lm, run.corrupted, patches, clean, run.noise, ANSWER_POS, start, suffix)
        worst[label] = (float((got - ref).abs().max()), float((ref - corrupted).abs().max()))
    print(f"\n{name}/{corruption} maxdiff " + " ".join(f"{k}={v[0]:.1e}" for k, v in worst.items()))
    bad = {k: v for k, v in worst.items() if not v[0] < TOL}
    assert not bad, f"{name}/{corruption}: interface vs full recompute (maxdiff, effect) {bad}"
    # a patch that silently does nothing cannot pass: every target moves the logits
    inert = {k: v for k, v in worst.items() if not v[1] > 100 * TOL}
    assert not inert, f"{name}/{corruption}: targets without effect {inert}"


@pytest.mark.parametrize("corruption", ["str", "gn"])
def test_sanity_identities_hold_in_compatibility_mode(model, corruption):
    name, lm = model
    run = make_run(lm, corruption)
    last = lm.shape.n_layers - 1
    resid0 = lm.hook_name("resid_pre", 0)
    z = lm.hook_name("attn_head", last)
    own = clean_activations_with_noise(lm, run.corrupted, run.noise, [z])
    clean = clean_activations(lm, run.clean, [resid0])
    with torch.no_grad():
        want_corrupted = lm.unembed_at(lm.run_blocks(lm.embed(run.corrupted, run.noise), 0), ANSWER_POS)
        want_clean = lm.unembed_at(lm.run_blocks(lm.embed(run.clean), 0), ANSWER_POS)
    # 1. the corrupted run's own head outputs, patched in from the cached residual (and a suffix)
    for suffix, patch in ((False, Patch(z, (0,))), (lm.shape.kv_reuse, Patch(z, (0,), KEY))):
        got = interface_logits(lm, run.corrupted, [patch], own, run.noise, ANSWER_POS, last, suffix)
        assert (got - want_corrupted).abs().max() < TOL
    # 2. the clean residual stream at layer 0, every position: the clean run
    got = interface_logits(lm, run.corrupted, [Patch(resid0)], clean, run.noise, ANSWER_POS, 0, False)
    assert (got - want_clean).abs().max() < TOL
    assert (want_clean - want_corrupted).abs().max() > 100 * TOL  # the corruption does something


def clean_activations_with_noise(lm: LM, tokens, noise, names) -> dict[str, torch.Tensor]:
    store: dict[str, torch.Tensor] = {}
    with torch.no_grad(), lm.hooks([(n, lambda act, nm: store.__setitem__(nm, act.clone())) for n in names]):
        lm.run_blocks(lm.embed(tokens, noise), 0)
    return store


# ------------------------------------------------------------------------------ the real engine


def engine_prompts(lm: LM):
    """Three prompts (the last one shorter, right-padded) with a named position KEY and GN key tokens."""
    from patchbench.prompts import PromptSet

    g = torch.Generator().manual_seed(5)
    vocab = min(lm.shape.d_vocab, 1000)
    clean = [torch.randint(1, vocab, (n,), generator=g).numpy() for n in (LENGTH, LENGTH, ANSWER_POS[-1] + 1)]
    corrupted = [c.copy() for c in clean]
    for c in corrupted:
        c[KEY] = 1 + (c[KEY] + 7) % (vocab - 1)
    pick = lambda: [[int(x)] for x in torch.randint(1, vocab, (3,), generator=g)]  # noqa: E731
    return PromptSet(
        task="standin", clean=clean, corrupted=corrupted, answer_pos=ANSWER_POS.numpy(), answers=pick(),
        wrong=pick(), noise_positions=[[KEY - 1, KEY]] * 3, positions={"KEY": torch.full((3,), KEY).numpy()},
    )  # fmt: skip


def engine_specs(lm: LM, corruption: str):
    """Every site and position mode the engine has, cut to a few layers and heads per model."""
    from patchbench.sites import SweepSpec

    s = lm.shape
    a, last = (s.n_layers - 1) // 2, s.n_layers - 1
    specs = [
        SweepSpec(corruption, "attn_head", layers=(a,)),
        SweepSpec(corruption, "attn_head", position="KEY", heads=((a, 0), (a, s.n_heads - 1))),
        SweepSpec(corruption, "head_v", layers=(a,)),
        SweepSpec(corruption, "head_v", position="each", heads=((last, 0), (last, s.n_kv_heads - 1))),
        SweepSpec(corruption, "resid_pre", position="each", layers=(a,)),
    ]
    if s.d_mlp:
        specs += [SweepSpec(corruption, "mlp", window=3), SweepSpec(corruption, "mlp", position="KEY")]
    return specs


@pytest.mark.parametrize("corruption", ["str", "gn"])
def test_run_sweep_equals_the_full_recompute(model, corruption, caplog):
    """The engine itself (``run_sweep``: prefix reuse, batching, the generic patch, the head-output
    shortcut, its sanity identities) on every stand-in: every target's answer logits within 1e-5 of one full forward per
    target with TransformerLens's own hooks; head_v on grouped-query models patches key-value heads."""
    import logging

    from patchbench.attribution import run_attribution
    from patchbench.engine.sweep import run_sweep

    name, lm = model
    prompts = engine_prompts(lm)
    worst, effect = {}, {}
    for spec in engine_specs(lm, corruption):
        with caplog.at_level(logging.INFO, logger="patchbench.engine.sweep"):
            caplog.clear()
            raw = run_sweep(lm, prompts, spec, progress=False)
        meta = raw.attrs["patchbench"]
        assert meta["sanity"]["passed"], meta["sanity"]  # run_sweep raises before this on a failure
        # causal suffix reuse (issue 17) wherever the route supports it and the targets are position-specific
        want = "suffix" if lm.shape.kv_reuse and spec.position != "all" else "full"
        assert meta["plan"]["path"] == want, (spec.label, meta["plan"])
        # head outputs take the head-output shortcut (the patched layer's attention not run) on every route
        assert meta["plan"].get("head_shortcut") is (True if spec.site == "attn_head" else None), meta["plan"]
        ref = reference_sweep(lm, prompts, spec)
        ans = torch.tensor([a[0] for a in prompts.answers])
        wr = torch.tensor([w[0] for w in prompts.wrong])
        gaps = []
        for (_, target), rows in raw[raw.run != "clean"].groupby(["run", "target"]):
            rows = rows.sort_values("prompt")
            logits = ref[int(target)]
            want = torch.stack([logits[torch.arange(3), ans], logits[torch.arange(3), wr]], 1).double()
            got = torch.as_tensor(rows[["logit_ans", "logit_wrong"]].to_numpy())
            gaps.append(float((got - want).abs().max()))
        label = f"{spec.site}-{spec.position}" + (f"-w{spec.window}" if spec.window > 1 else "")
        worst[label] = max(gaps)
        effect[label] = max(float((ref[t] - ref[-1]).abs().max()) for t in ref if t != -1)
        if spec.site == "head_v":
            kv = lm.shape.grouped_query
            assert meta["head_axis"] == {
                "heads": "key-value" if kv else "query",
                "n_heads": lm.shape.n_kv_heads,
                "query_heads_per_head": lm.shape.n_heads // lm.shape.n_kv_heads,
            }
            assert ("key-value head" in caplog.text) == kv
            if spec.position == "all":
                assert sorted(raw[raw.run == "patched"]["head"].unique()) == list(range(lm.shape.n_kv_heads))
                # attribution patching estimates the same targets (key-value heads) and says so too
                with caplog.at_level(logging.INFO, logger="patchbench.attribution"):
                    caplog.clear()
                    at = run_attribution(lm, prompts, spec, metrics=("logit_diff",), progress=False)
                assert at.attrs["patchbench"]["components"] == meta["components"]
                assert at.attrs["patchbench"]["head_axis"] == meta["head_axis"]
                assert ("key-value head" in caplog.text) == kv
    print(f"\n{name}/{corruption} run_sweep maxdiff " + " ".join(f"{k}={v:.1e}" for k, v in worst.items()))
    bad = {k: v for k, v in worst.items() if not v < TOL}
    assert not bad, f"{name}/{corruption}: run_sweep vs full recompute {bad}"
    inert = {k: v for k, v in effect.items() if not v > 100 * TOL}
    assert not inert, f"{name}/{corruption}: sweeps without effect {inert}"
