"""Causal suffix reuse (issue 17): position-specific sweeps run only positions >= the patch.

On float64 stand-ins loaded through the transformers route (GPT-2: learned positions; GPT-J:
partial rotary; Llama: rotary and grouped-query attention) and the native route (the toy models'
route, standard and rotary positions), for STR and GN and every
position-specific site (MLP at a named position and at each position, windows 1 and 3; head
output and head values at a named position and by position; ``resid_pre`` at a named position
and by position), on ragged prompts (lengths 6 and 5, right-padded; the named position differs
per prompt; "each" reaches positions after a short prompt's answer):

* the engine's suffix path (the default on these models) equals the forced full recompute
  (``suffix_reuse=False``, and for head outputs ``head_shortcut=False``) within 1e-10 on every raw
  value; head-output sweeps take the head-output shortcut (the patched layer's attention is not
  run: corrupted attention output + the patched heads' change through W_O) on every stand-in;
* every target's answer logits equal one full forward per target with TransformerLens's own
  hooks (``bridge.run_with_hooks``) within 1e-10;
* where TransformerLens has a patching function for the sweep, its normalised logit difference
  equals the engine's within 1e-6 (TransformerLens stores its results in a float32 tensor whatever
  the model's dtype: that, not the engine, limits this comparison);
* the suffix path really runs short suffixes (the patched forwards see fewer positions), and a
  wrong prefix (the clean run's keys and values instead of the corrupted run's) is caught by the
  comparison: the test can fail.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import make_prompts
from lm_models import reference_sweep, save_hf
from patchbench.corruption import NoiseSpec
from patchbench.engine import sweep as sweep_mod
from patchbench.engine.sweep import run_sweep
from patchbench.lm import LM, KVCapture, load_transformers
from patchbench.metrics import effects
from patchbench.sites import SweepSpec
from test_patching import TL_FUNCS, tl_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-10
#: Hugging Face's GPT-J attention computes its scores in float32 whatever the model's dtype
#: (``eager_attention_forward``: "keep the attention weights computation in fp32"), so a suffix
#: run (scores of fewer queries, a differently shaped matmul) differs from the full forward by
#: float32 rounding of the scores: measured 2.6e-10 on logits of size 0.7. The full recompute
#: equals TransformerLens's hooks exactly there (same shapes).
TOLS = {"gpt-j": 1e-8}
STANDINS = {
    "gpt2": ("gpt2-small", dict(n_layer=3, n_embd=64, n_head=4)),
    "gpt-j": ("gpt-j", dict(n_layer=3, n_embd=64, n_head=4, rotary_dim=8)),
    "llama": ("llama", dict()),
    # the native route (the project's toy models, conftest.make_model): TransformerLens's
    # NativeAttention run with the interface's cache; standard and rotary positions
    "native": ("native", dict()),
    "native-rotary": ("native", dict(positional_embedding_type="rotary", rotary_dim=8)),
}
VALUES = ["logit_ans", "logit_wrong", "prob_ans"]


@pytest.fixture(scope="module", params=list(STANDINS))
def model(request, tmp_path_factory) -> LM:
    shape, overrides = STANDINS[request.param]
    if shape == "native":
        from conftest import make_model

        lm = make_model(**overrides)
    else:
        root = tmp_path_factory.mktemp(f"suffix-{request.param}")
        lm = load_transformers(
            str(save_hf(shape, root / "m", dtype=torch.float64, **overrides)), dtype=torch.float64
        )
        shutil.rmtree(root, ignore_errors=True)
    assert lm.shape.kv_reuse and lm.shape.dtype == torch.float64
    lm.name_in_test = request.param
    return lm


@pytest.fixture(scope="module")
def prompts(model):
    return make_prompts(model=model)


def specs(corruption: str) -> list[SweepSpec]:
    return [
        SweepSpec(corruption, "mlp", position="X"),
        SweepSpec(corruption, "mlp", position="X", window=3),
        SweepSpec(corruption, "mlp", position="each"),
        SweepSpec(corruption, "mlp", position="each", window=3),
        SweepSpec(corruption, "attn_head", position="X"),
        SweepSpec(corruption, "attn_head", position="each"),
        SweepSpec(corruption, "head_v", position="X"),
        SweepSpec(corruption, "head_v", position="each"),
        SweepSpec(corruption, "resid_pre", position="X"),
        SweepSpec(corruption, "resid_pre", position="each"),
    ]


def tl_reference(model: LM, prompts, corruption: str, spec: SweepSpec) -> torch.Tensor:
    """TransformerLens's own patching function on the model's bridge (normalised logit difference)."""
    kt, cache, metric = tl_setup(model, prompts, corruption)
    try:
        with torch.no_grad():
            return TL_FUNCS[(spec.site, spec.position)][0](model.bridge, kt, cache, metric).double()
    finally:
        model.bridge.reset_hooks(including_permanent=True)


def _values(raw) -> np.ndarray:
    return raw[VALUES].to_numpy(dtype=np.float64)


@pytest.mark.parametrize("corruption", ["str", "gn"])
def test_suffix_equals_full_recompute_and_transformer_lens(model, prompts, corruption):
    worst: dict[str, float] = {}
    tl_gap: dict[str, float] = {}
    for spec in specs(corruption):
        fast = run_sweep(model, prompts, spec, progress=False)
        full = run_sweep(model, prompts, spec, progress=False, suffix_reuse=False, head_shortcut=False)
        assert fast.attrs["patchbench"]["plan"]["path"] == "suffix"
        assert full.attrs["patchbench"]["plan"]["path"] == "full"
        if spec.site == "attn_head":
            assert fast.attrs["patchbench"]["plan"]["head_shortcut"] is True
            assert full.attrs["patchbench"]["plan"]["head_shortcut"] is False
        key = ["run", "target", "prompt", "sample"]
        assert fast[key].equals(full[key])
        label = f"{spec.site}@{spec.position}/w{spec.window}"
        worst[label] = float(np.abs(_values(fast) - _values(full)).max())
        assert fast.attrs["patchbench"]["sanity"]["self_patch_maxdiff"] < 1e-9
        if spec.window == 1 and (spec.site, spec.position) in TL_FUNCS:
            ref = tl_reference(model, prompts, corruption, spec)
            assert ref.abs().max() > 1e-3
            axes = TL_FUNCS[(spec.site, spec.position)][1]
            mine = torch.full_like(ref, float("nan"))
            for _, row in effects(fast, ["logit_diff"]).iterrows():
                mine[tuple(int(row[a]) for a in axes)] = row["effect"]
            assert not mine.isnan().any()
            tl_gap[label] = float((mine - ref).abs().max())
        ref_logits = reference_sweep(model, prompts, spec)
        ans = torch.tensor([a[0] for a in prompts.answers])
        wr = torch.tensor([w[0] for w in prompts.wrong])
        rows_n = torch.arange(len(prompts))
        gaps = []
        for (_, target), rows in fast[fast.run != "clean"].groupby(["run", "target"]):
            rows = rows.sort_values("prompt")
            lg = ref_logits[int(target)]
            want = torch.stack([lg[rows_n, ans], lg[rows_n, wr]], 1).double()
            got = torch.as_tensor(rows[["logit_ans", "logit_wrong"]].to_numpy(dtype=np.float64))
            gaps.append(float((got - want).abs().max()))
        worst[label + " vs TL hooks"] = max(gaps)
    print(
        f"\n{model.shape.architecture}/{corruption} TL patching: "
        + " ".join(f"{k}={v:.1e}" for k, v in tl_gap.items())
    )
    assert tl_gap and all(v < 1e-6 for v in tl_gap.values()), tl_gap
    print(f"\n{model.shape.architecture}/{corruption}: " + " ".join(f"{k}={v:.1e}" for k, v in worst.items()))
    tol = TOLS.get(model.name_in_test, TOL)
    bad = {k: v for k, v in worst.items() if not v < tol}
    assert not bad, bad


def test_suffix_runs_short_suffixes_and_a_wrong_prefix_is_caught(model, prompts, monkeypatch):
    """The patched forwards of a suffix sweep see only positions >= their patch; swapping in the
    clean run's keys and values (a wrong prefix) changes the results beyond the tolerance."""
    spec = SweepSpec("str", "mlp", position="each")
    lengths: list[tuple[int, int]] = []
    run_blocks = LM.run_blocks

    def spy(self, resid, start, stop=None, *, past=None, capture=None, keep=None):
        if past is not None:
            lengths.append((past.length, int(resid.shape[1])))
        return run_blocks(self, resid, start, stop, past=past, capture=capture, keep=keep)

    with monkeypatch.context() as mp:
        mp.setattr(LM, "run_blocks", spy)
        fast = run_sweep(model, prompts, spec, progress=False, check_identities=False)
    max_len = prompts.tokens("corrupted").shape[1]
    assert lengths and all(p + q == max_len for p, q in lengths)
    # late positions' targets (grouped while the shared suffix stays cheap) run half the positions or fewer
    assert min(q for _, q in lengths) <= max_len // 2
    full = run_sweep(model, prompts, spec, progress=False, suffix_reuse=False)
    assert np.abs(_values(fast) - _values(full)).max() < TOLS.get(model.name_in_test, TOL)

    prepare = sweep_mod.prepare_block

    def wrong_prefix(model_, s, index, rows, capture):
        block = prepare(model_, s, index, rows, capture)
        clean = KVCapture()
        tok = s.setup.prompts.tokens("clean")[torch.as_tensor(block.prompt)]
        model_.run_blocks(model_.embed(tok), 0, capture=clean)
        block.kv = clean
        return block

    with monkeypatch.context() as mp:
        mp.setattr(sweep_mod, "prepare_block", wrong_prefix)
        wrong = run_sweep(model, prompts, spec, progress=False, check_identities=False)
    assert np.abs(_values(wrong) - _values(full)).max() > 1e-3


def test_a_model_without_key_value_reuse_takes_the_full_path(caplog):
    """A model whose interface has no key/value reuse: position-specific sweeps run the full
    recompute, say so, and refuse a forced suffix path."""
    import dataclasses
    import logging

    from conftest import make_model

    lm = make_model()
    lm.shape = dataclasses.replace(lm.shape, kv_reuse=False)
    prompts = make_prompts(model=lm)
    spec = SweepSpec("str", "mlp", position="X")
    with caplog.at_level(logging.INFO, logger="patchbench.engine.sweep"):
        raw = run_sweep(lm, prompts, spec, progress=False)
    assert raw.attrs["patchbench"]["plan"]["path"] == "full"
    assert "path full" in caplog.text and "no key/value reuse" in caplog.text
    with pytest.raises(ValueError, match="kv_reuse"):
        run_sweep(lm, prompts, spec, progress=False, suffix_reuse=True)


@pytest.mark.parametrize("site", ["mlp", "attn_head"])
def test_gn_samples_and_several_blocks(model, prompts, site):
    """GN with two noise samples per prompt and a budget small enough for several prompt blocks:
    each block keeps its own corrupted keys and values (noise included) and, for head outputs, its
    own corrupted head outputs and attention outputs (head-output shortcut), equal to the full
    recompute."""
    window = 3 if site == "mlp" else 1
    noise = NoiseSpec(n_samples=2)
    spec = SweepSpec("gn", site, position="each", window=window, noise=noise, memory_budget_mb=1)
    fast = run_sweep(model, prompts, spec, progress=False)
    full = run_sweep(model, prompts, spec, progress=False, suffix_reuse=False, head_shortcut=False)
    plan = fast.attrs["patchbench"]["plan"]
    assert plan["path"] == "suffix" and plan["rows_per_block"] < 2 * len(prompts), plan
    assert np.abs(_values(fast) - _values(full)).max() < TOLS.get(model.name_in_test, TOL)


@pytest.mark.parametrize("position", ["X", "each", "all"])
def test_head_shortcut_skips_the_patched_layers_attention_and_a_wrong_change_is_caught(
    model, prompts, position, monkeypatch
):
    """Every target of a head-output sweep takes the shortcut (its start layer's attention is
    not run: the block runs with its attention output given, on the patched entries only), equals the
    full recompute (suffix and full paths), and a wrong W_O (the change through W_O dropped) moves the
    results beyond the tolerance: the shortcut's output is what the results are made of."""
    from patchbench.engine import patch as patch_mod

    spec = SweepSpec("str", "attn_head", position=position)
    calls = {"chunks": 0, "targets": 0, "shortcut": 0, "entries": 0}
    patched, shortcut, inject = patch_mod.patched_logits, patch_mod.head_shortcut, LM.run_block_with_attention

    def spy_patched(*args, **kwargs):
        calls["chunks"] += 1
        calls["targets"] += len(args[1])
        return patched(*args, **kwargs)

    def spy_shortcut(*args, **kwargs):
        calls["shortcut"] += args[6]  # the number of targets entering through it
        return shortcut(*args, **kwargs)

    def spy_inject(self, layer, resid, attn_out):
        calls["entries"] += int(resid.shape[0] * resid.shape[1])
        # position-specific targets: one gathered (row, position) entry per batch row; all positions:
        # every entry is patched, and the block runs on whole rows
        assert resid.shape[1] == (prompts.tokens("clean").shape[1] if position == "all" else 1)
        return inject(self, layer, resid, attn_out)

    with monkeypatch.context() as mp:
        mp.setattr(patch_mod, "patched_logits", spy_patched)
        mp.setattr(patch_mod, "head_shortcut", spy_shortcut)
        mp.setattr(LM, "run_block_with_attention", spy_inject)
        fast = run_sweep(model, prompts, spec, progress=False, check_identities=False)
    assert calls["chunks"] > 0 and calls["shortcut"] == calls["targets"] and calls["entries"] > 0, calls
    tol = TOLS.get(model.name_in_test, TOL)
    for suffix in (None, False):
        full = run_sweep(model, prompts, spec, progress=False, suffix_reuse=suffix, head_shortcut=False)
        assert full.attrs["patchbench"]["plan"]["head_shortcut"] is False
        assert np.abs(_values(fast) - _values(full)).max() < tol
    with monkeypatch.context() as mp:
        mp.setattr(LM, "W_O", lambda self, layer: torch.zeros_like(self.bridge.blocks[layer].attn.W_O))
        wrong = run_sweep(model, prompts, spec, progress=False, check_identities=False)
    assert np.abs(_values(wrong) - _values(full)).max() > 1e-3
