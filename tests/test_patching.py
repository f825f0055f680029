"""The patching engine equals TransformerLens's own patching, for every shared site and both corruptions.

A small random model (3 layers, 4 heads, d_model 64, vocab 100, MLPs) in float64, so that 1e-5
agreement on the normalised logit difference is a real test (random models have tiny clean -
corrupted gaps, which the normalisation amplifies). Prompts have two lengths (right padding).
The references are TransformerLens 4's own ``patching`` functions and hooks, run on the model's
``TransformerBridge`` in compatibility mode (``model.bridge``): the library's full forward, not
the engine's block-by-block pieces.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from transformer_lens import patching as tlp

from conftest import D_MODEL, N_HEADS, N_LAYERS, make_model, make_prompts
from patchbench import rawframe
from patchbench.corruption import NoiseSpec, embedding_sigma, noise_tensor
from patchbench.engine import patch
from patchbench.engine.cache import clean_cache
from patchbench.engine.patch import SanityError
from patchbench.engine.patterns import capture_patterns
from patchbench.engine.sweep import run_sweep
from patchbench.metrics import effects
from patchbench.sites import SweepSpec, enumerate_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ TL reference


def tl_setup(model, prompts, corruption, noise_spec: NoiseSpec | None = None):
    """TransformerLens inputs: corrupted tokens, clean cache, normalised-LD metric; GN via a hook_embed hook."""
    noise_spec = noise_spec or NoiseSpec()
    ct = prompts.tokens("clean")
    ans = torch.tensor([a[0] for a in prompts.answers])
    wr = torch.tensor([w[0] for w in prompts.wrong])
    apos = torch.as_tensor(prompts.answer_pos)

    def ld(logits):
        last = logits[torch.arange(len(prompts)), apos]
        return (last.gather(1, ans[:, None]) - last.gather(1, wr[:, None])).mean()

    tl = model.bridge
    tl.reset_hooks(including_permanent=True)
    with torch.no_grad():
        _, cache = tl.run_with_cache(ct)
        lc = ld(tl(ct))
    tl.reset_hooks(including_permanent=True)
    if corruption == "gn":
        std = noise_spec.nu * embedding_sigma(model, prompts)
        rows = np.arange(len(prompts))
        nz = noise_tensor(
            prompts,
            rows,
            np.zeros_like(rows),
            model.shape.d_model,
            std,
            noise_spec.seed,
            dtype=model.shape.dtype,
        )
        tl.add_hook("hook_embed", lambda act, hook: act + nz, is_permanent=True)
        kt = ct
    else:
        kt = prompts.tokens("corrupted")
    with torch.no_grad():
        lk = ld(tl(kt))
    metric = lambda logits: (ld(logits) - lk) / (lc - lk)  # noqa: E731
    return kt, cache, metric


TL_FUNCS = {
    ("resid_pre", "each"): (tlp.get_act_patch_resid_pre, ("layer", "position")),
    ("attn_head", "all"): (tlp.get_act_patch_attn_head_out_all_pos, ("layer", "head")),
    ("attn_head", "each"): (tlp.get_act_patch_attn_head_out_by_pos, ("layer", "position", "head")),
    ("mlp", "each"): (tlp.get_act_patch_mlp_out, ("layer", "position")),
    ("head_v", "all"): (tlp.get_act_patch_attn_head_v_all_pos, ("layer", "head")),
    ("head_v", "each"): (tlp.get_act_patch_attn_head_v_by_pos, ("layer", "position", "head")),
}


@pytest.mark.parametrize("corruption", ["str", "gn"])
@pytest.mark.parametrize("site,position", list(TL_FUNCS))
def test_equals_transformer_lens(model, prompts, corruption, site, position):
    spec = SweepSpec(corruption, site, position=position)
    raw = run_sweep(model, prompts, spec, progress=False)
    eff = effects(raw, ["logit_diff"])
    func, axes = TL_FUNCS[(site, position)]
    kt, cache, metric = tl_setup(model, prompts, corruption)
    try:
        with torch.no_grad():
            ref = func(model.bridge, kt, cache, metric).double()
    finally:
        model.bridge.reset_hooks(including_permanent=True)
    assert ref.abs().max() > 1e-3  # the comparison is not between two all-zero arrays
    mine = torch.full_like(ref, float("nan"))
    for _, row in eff.iterrows():
        mine[tuple(int(row[a]) for a in axes)] = row["effect"]
    assert not mine.isnan().any(), "every TransformerLens entry has a patchbench target"
    print(
        f"\n{site}/{position}/{corruption}: max |patchbench - TransformerLens| {float((mine - ref).abs().max()):.1e}"
    )
    assert (mine - ref).abs().max() < 1e-5
    # float64: the sanity identities hold to rounding
    s = raw.attrs["patchbench"]["sanity"]
    assert s["passed"] and s["self_patch_maxdiff"] < 1e-9 and s["clean_resid0_maxdiff"] < 1e-9


def test_float32_model_matches_transformer_lens_logits():
    """In float32, raw patched logit differences match TL's per-target logit differences closely."""
    model = make_model(torch.float32)
    prompts = make_prompts(model=model)
    raw = run_sweep(model, prompts, SweepSpec("str", "attn_head"), progress=False)
    kt, cache, _ = tl_setup(model, prompts, "str")
    apos = torch.as_tensor(prompts.answer_pos)
    ans = torch.tensor([a[0] for a in prompts.answers])
    wr = torch.tensor([w[0] for w in prompts.wrong])

    def mean_ld(logits):
        last = logits[torch.arange(len(prompts)), apos]
        return (last.gather(1, ans[:, None]) - last.gather(1, wr[:, None])).mean()

    with torch.no_grad():
        ref = tlp.get_act_patch_attn_head_out_all_pos(model.bridge, kt, cache, mean_ld)
    p = raw[raw.run == "patched"]
    mine = (
        (p.logit_ans - p.logit_wrong)
        .groupby([p["layer"], p["head"]])
        .mean()
        .to_numpy()
        .reshape(N_LAYERS, N_HEADS)
    )
    assert np.abs(mine - ref.numpy()).max() < 1e-5


# ------------------------------------------------------------------------------ engine behaviour


def manual_patch(model, tokens, hooks_clean, apos, noise=None):
    """Reference: a full TL forward with clean activations written into ``hooks_clean`` {name: (clean, index_fn)}."""
    hooks = [(n, (lambda act, hook, c=c, f=f: f(act, c))) for n, (c, f) in hooks_clean.items()]
    if noise is not None:
        hooks.append(("hook_embed", lambda act, hook: act + noise.to(act.dtype)))
    with torch.no_grad():
        logits = model.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits[torch.arange(len(tokens)), torch.as_tensor(apos)]


def test_mlp_window_and_named_position_match_manual_hooks(model, prompts):
    """Window 3 at the last layer (truncated to [1, 3)) at the named position X, STR."""
    L = N_LAYERS
    raw = run_sweep(model, prompts, SweepSpec("str", "mlp", position="X", window=3), progress=False)
    _, cache = model.bridge.run_with_cache(prompts.tokens("clean"))
    x = torch.as_tensor(prompts.positions["X"])
    rows = torch.arange(len(prompts))

    def put(act, c):
        act = act.clone()
        act[rows, x] = c[rows, x]
        return act

    p = raw[(raw.run == "patched") & (raw.layer == L - 1)].sort_values("prompt")
    assert (p["layers"] == f"{L - 2}:{L}").all() and (p["position"].to_numpy() == x.numpy()).all()
    hooks = {f"blocks.{i}.hook_mlp_out": (cache[f"blocks.{i}.hook_mlp_out"], put) for i in (L - 2, L - 1)}
    logits = manual_patch(model, prompts.tokens("corrupted"), hooks, prompts.answer_pos)
    ref = logits.gather(1, torch.tensor([[a[0]] for a in prompts.answers]))[:, 0]
    assert np.abs(p["logit_ans"].to_numpy() - ref.numpy()).max() < 1e-9


def test_head_v_heads_patched_together_match_manual_hooks(model, prompts):
    heads = ((0, 1), (1, 2), (1, 3))
    raw = run_sweep(model, prompts, SweepSpec("gn", "head_v", heads=heads), progress=False)
    p = raw[raw.run == "patched"]
    assert p["target"].nunique() == 1 and (p["layers"] == "0:2").all()
    _, cache = model.bridge.run_with_cache(prompts.tokens("clean"))
    std = 3.0 * embedding_sigma(model, prompts)
    rows = np.arange(len(prompts))
    nz = noise_tensor(prompts, rows, np.zeros_like(rows), D_MODEL, std, 0, dtype=model.shape.dtype)

    def put(hs):
        def f(act, c):
            act = act.clone()
            act[:, :, hs] = c[:, :, hs]
            return act

        return f

    hooks = {
        "blocks.0.attn.hook_v": (cache["blocks.0.attn.hook_v"], put([1])),
        "blocks.1.attn.hook_v": (cache["blocks.1.attn.hook_v"], put([2, 3])),
    }
    logits = manual_patch(model, prompts.tokens("clean"), hooks, prompts.answer_pos, noise=nz)
    ref = logits.gather(1, torch.tensor([[w[0]] for w in prompts.wrong]))[:, 0]
    assert np.abs(p.sort_values("prompt")["logit_wrong"].to_numpy() - ref.numpy()).max() < 1e-9
    assert p["logit_wrong"].to_numpy() != pytest.approx(raw[raw.run == "corrupted"]["logit_wrong"].to_numpy())


def test_window_edges():
    L = 4
    spec = SweepSpec("str", "mlp", window=5)
    t = {x.layer: x.layers for x in enumerate_targets(spec, L, 1, 3)}
    assert t == {0: (0, 3), 1: (0, 4), 2: (0, 4), 3: (1, 4)}
    t4 = {x.layer: x.layers for x in enumerate_targets(SweepSpec("str", "mlp", window=4), L, 1, 3)}
    assert t4 == {0: (0, 2), 1: (0, 3), 2: (0, 4), 3: (1, 4)}
    t1 = {x.layer: x.layers for x in enumerate_targets(SweepSpec("str", "mlp"), L, 1, 3)}
    assert t1 == {i: (i, i + 1) for i in range(L)}
    with pytest.raises(ValueError, match="window"):
        SweepSpec("str", "attn_head", window=3)


def test_chunking_equals_one_batch(model, prompts):
    spec = SweepSpec("gn", "attn_head", position="each", noise=NoiseSpec(n_samples=2))
    tiny = SweepSpec("gn", "attn_head", position="each", noise=NoiseSpec(n_samples=2), memory_budget_mb=1)
    big = run_sweep(model, prompts, spec, progress=False)
    small = run_sweep(model, prompts, tiny, progress=False)
    pb, ps = big.attrs["patchbench"]["plan"], small.attrs["patchbench"]["plan"]
    assert ps["rows_per_block"] < len(prompts) * 2 <= pb["rows_per_block"]
    assert ps["targets_per_chunk"] < pb["targets_per_chunk"]
    pd.testing.assert_frame_equal(big, small, check_exact=False, rtol=0, atol=1e-10)
    assert len(big) == len(prompts) + 2 * len(prompts) * (1 + N_LAYERS * N_HEADS * 6)


def test_gn_same_noise_in_corrupted_and_patched_runs(model, prompts):
    """Patching positions after a prompt's answer_pos cannot change it: those rows equal the corrupted run."""
    raw = run_sweep(
        model,
        prompts,
        SweepSpec("gn", "resid_pre", position="each", noise=NoiseSpec(n_samples=2)),
        progress=False,
    )
    corr = raw[raw.run == "corrupted"].set_index(["prompt", "sample"])
    # the two noise samples are different draws
    assert not np.allclose(corr.xs(0, level="sample")["logit_ans"], corr.xs(1, level="sample")["logit_ans"])
    short = [i for i in range(len(prompts)) if prompts.lengths[i] == 5]
    p = raw[(raw.run == "patched") & raw.prompt.isin(short) & (raw.position == 5)]
    assert len(p) == N_LAYERS * len(short) * 2
    ref = corr.loc[list(zip(p.prompt, p["sample"], strict=True)), "logit_ans"].to_numpy()
    assert np.abs(p["logit_ans"].to_numpy() - ref).max() < 1e-12
    # ...while patching the noised position at layer 0 does change it
    x = raw[
        (raw.run == "patched")
        & (raw.layer == 0)
        & (raw.position == int(prompts.noise_positions[0][0]))
        & (raw.prompt == 0)
    ]
    assert np.abs(x["logit_ans"].to_numpy() - corr.loc[0, "logit_ans"].to_numpy()).min() > 1e-6


@pytest.mark.parametrize("position", ["all", "X", "each"])
def test_noop_patch_is_caught(model, prompts, monkeypatch, position):
    """A patch that does nothing fails the clean layer-0 identity, also where the identity runs on the
    suffix path (position-specific sweeps: from the first position where clean and corrupted inputs
    differ, attending to the corrupted run's keys and values before it)."""
    spec = SweepSpec("str", "mlp", position=position)
    ok = run_sweep(model, prompts, spec, progress=False).attrs["patchbench"]["sanity"]
    first = int(np.min(prompts.named_position("X")))
    assert ok["passed"] and ok["clean_resid0_from"] == (0 if position == "all" else first) and first > 0
    real = patch.build_mask
    monkeypatch.setattr(patch, "build_mask", lambda *a, **k: torch.zeros_like(real(*a, **k)))
    with pytest.raises(SanityError, match="layer 0"):
        run_sweep(model, prompts, spec, progress=False)


def test_identical_corruption_is_refused(model, prompts):
    same = dataclasses.replace(prompts, task="same", corrupted=prompts.clean)
    with pytest.raises(SanityError, match="does nothing"):
        run_sweep(model, same, SweepSpec("str", "mlp"), progress=False)


def test_clean_cache_is_reused_and_checked(model, prompts):
    spec = SweepSpec("str", "attn_head")
    cache = clean_cache(model, prompts, [spec, SweepSpec("gn", "mlp", window=3)])
    assert {"blocks.0.attn.hook_z", "blocks.2.hook_mlp_out", "blocks.0.hook_resid_pre"} <= set(cache)
    a = run_sweep(model, prompts, spec, cache, progress=False)
    b = run_sweep(model, prompts, spec, progress=False)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(KeyError, match="clean_cache"):
        run_sweep(model, prompts, SweepSpec("str", "head_v"), cache, progress=False)
    other = make_prompts(seed=1)
    with pytest.raises(ValueError, match="other prompts"):
        run_sweep(model, other, spec, cache, progress=False)


def test_absent_named_position_is_refused(model, prompts):
    pos = prompts.positions["X"].copy()
    pos[1] = -1
    bad = dataclasses.replace(prompts, task="t", positions={"X": pos})
    with pytest.raises(ValueError, match=r"absent.*\[1\]"):
        run_sweep(model, bad, SweepSpec("str", "mlp", position="X"), progress=False)
    with pytest.raises(ValueError, match="no named position 'Y'"):
        run_sweep(model, prompts, SweepSpec("str", "mlp", position="Y"), progress=False)


def test_raw_frame_schema_and_io(model, prompts, tmp_path):
    raw = run_sweep(model, prompts, SweepSpec("str", "attn_head", layers=(1,)), progress=False)
    assert list(raw.columns) == list(rawframe.RAW_COLUMNS)
    assert set(raw.run) == {"clean", "corrupted", "patched"}
    assert (raw[raw.run != "patched"].target == -1).all()
    assert sorted(raw[raw.run == "patched"]["head"].unique()) == list(range(N_HEADS))
    path = tmp_path / "raw.parquet"
    rawframe.write_frame(raw, path)
    back = rawframe.read_frame(path)
    pd.testing.assert_frame_equal(raw, back)
    assert back.attrs["patchbench"]["spec"]["site"] == "attn_head"
    assert back.attrs["patchbench"]["sanity"]["passed"] is True


def test_capture_patterns(model, prompts):
    heads = ((2, 0), (1, 3))
    si = SweepSpec("str", "head_v", heads=((1, 2), (1, 0)))
    cap = capture_patterns(model, prompts, heads, "str", si)
    _, cache = model.bridge.run_with_cache(prompts.tokens("clean"))
    assert torch.allclose(cap.clean[:, 0], cache["blocks.2.attn.hook_pattern"][:, 0].float(), atol=1e-6)
    _, kc = model.bridge.run_with_cache(prompts.tokens("corrupted"))
    assert torch.allclose(cap.corrupted[:, 1], kc["blocks.1.attn.hook_pattern"][:, 3].float(), atol=1e-6)
    # patching layer-1 values changes layer-2 patterns but cannot change layer-1 patterns
    assert (cap.patched[:, 0] - cap.corrupted[:, 0]).abs().max() > 1e-6
    assert torch.allclose(cap.patched[:, 1], cap.corrupted[:, 1], atol=1e-6)
    df = cap.attention(prompts, "X", "X")
    assert set(df.run) == {"clean", "corrupted", "patched"} and len(df) == 3 * 2 * len(prompts)
