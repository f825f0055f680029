"""Attribution patching against the exact engine on a tiny float64 model.

* its clean and corrupted rows are the engine's (same targets, same GN noise draw);
* finite differences: as the corruption shrinks (GN with nu -> 0 moves the corrupted embeddings
  towards the clean ones), the first-order estimate converges to the exact patch effect, for every
  site and position mode and for the AtP* QK fix;
* gradients reach every hook of every site, finite and nonzero;
* attribution rows go through metrics.effects, detection, Parquet I/O and the analysis selectors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_model as make_conftest_model
from patchbench.analysis.frames import select, validate_effects
from patchbench.analysis.tables import head_detections
from patchbench.attribution import attribution_effects, grad_columns, run_attribution, site_gradients
from patchbench.corruption import NoiseSpec
from patchbench.detection import detect
from patchbench.engine.cache import clean_cache
from patchbench.engine.sweep import run_sweep
from patchbench.errors import InputError
from patchbench.lm import LM
from patchbench.metrics import effects
from patchbench.prompts import PromptSet
from patchbench.rawframe import read_frame, write_frame
from patchbench.sites import SweepSpec

N_LAYERS, N_HEADS, D_MODEL, VOCAB = 3, 4, 32, 60
KEYS = ["run", "target", "prompt", "sample"]


def make_model() -> LM:
    shape = dict(
        n_layers=N_LAYERS, n_heads=N_HEADS, d_model=D_MODEL, d_head=8, d_mlp=64, d_vocab=VOCAB, n_ctx=16
    )
    return make_conftest_model(seed=1, initializer_range=0.3, **shape)


def make_prompts(n: int = 4, seed: int = 0) -> PromptSet:
    rng = np.random.default_rng(seed)
    clean, corrupted, pos_x, noise = [], [], [], []
    for i in range(n):
        c = rng.integers(1, VOCAB, 7 if i % 2 == 0 else 6)
        x = 1 + i % 3
        k = c.copy()
        k[x] = 1 + (c[x] + int(rng.integers(1, VOCAB - 2))) % (VOCAB - 1)
        clean.append(c)
        corrupted.append(k)
        pos_x.append(x)
        noise.append([x, x + 1])
    return PromptSet(
        task="tiny",
        clean=clean,
        corrupted=corrupted,
        answer_pos=[len(c) - 1 for c in clean],
        answers=[[int(a)] for a in rng.integers(1, VOCAB, n)],
        wrong=[[int(w)] for w in rng.integers(1, VOCAB, n)],
        noise_positions=noise,
        positions={"X": np.array(pos_x), "Y": np.array([2, -1, 2, -1])},
        pad_id=0,
    )


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def prompts():
    return make_prompts()


def deltas(raw: pd.DataFrame, col: str) -> np.ndarray:
    """Per patched row: change of ``col`` (``ld`` = logit difference) from the corrupted run."""
    val = (raw["logit_ans"] - raw["logit_wrong"]) if col == "ld" else raw[col]
    raw = raw.assign(_v=val)
    c = raw[raw["run"] == "corrupted"].set_index(["prompt", "sample"])["_v"]
    p = raw[raw["run"] == "patched"].sort_values(["target", "prompt", "sample"])
    return p["_v"].to_numpy() - c.reindex(pd.MultiIndex.from_frame(p[["prompt", "sample"]])).to_numpy()


def rel_err(exact: np.ndarray, approx: np.ndarray) -> float:
    return float(np.linalg.norm(exact - approx) / np.linalg.norm(exact))


@pytest.mark.parametrize("corruption", ["str", "gn"])
def test_clean_and_corrupted_rows_are_the_engines(model, prompts, corruption):
    spec = SweepSpec(corruption, "attn_head", noise=NoiseSpec(n_samples=2, seed=3))
    ex = run_sweep(model, prompts, spec, progress=False)
    at = run_attribution(model, prompts, spec, progress=False)
    assert at.attrs["patchbench"]["method"] == "attribution"
    assert at.attrs["patchbench"]["components"] == ex.attrs["patchbench"]["components"]
    a = ex.sort_values(KEYS).reset_index(drop=True)
    b = at.sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        a[KEYS + ["site", "layer", "layers", "head", "position", "window"]],
        b[KEYS + ["site", "layer", "layers", "head", "position", "window"]],
    )
    base = a["run"] != "patched"
    for col in ("logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl"):
        np.testing.assert_allclose(b.loc[base, col], a.loc[base, col], rtol=1e-9, atol=1e-12)
    assert len(set(a.loc[a["run"] == "corrupted", "sample"])) == (2 if corruption == "gn" else 1)


@pytest.mark.parametrize(
    "site,position", [("attn_head", "all"), ("attn_head", "each"), ("mlp", "X"), ("resid_pre", "all")]
)
def test_finite_difference_convergence(model, prompts, site, position):
    """Relative error of the first-order estimate falls ~linearly with the size of the corruption.

    GN with nu -> 0 interpolates the corrupted embeddings towards the clean ones. For whole heads
    the AtP* QK-fixed estimate must converge too (with a larger constant: it drops cross terms).
    """
    variants = [False, True] if (site, position) == ("attn_head", "all") else [False]
    errs: dict = {}
    nus = (0.3, 0.03, 0.003)
    for nu in nus:
        spec = SweepSpec("gn", site, position=position, noise=NoiseSpec(nu=nu, seed=1))
        ex = run_sweep(model, prompts, spec, progress=False)
        for qk in variants:
            at = run_attribution(
                model, prompts, spec, metrics=("logit_diff", "prob"), qk_fix=qk, progress=False
            )
            errs[nu, qk] = {c: rel_err(deltas(ex, c), deltas(at, c)) for c in ("ld", "prob_ans")}
    for qk in variants:
        for c in ("ld", "prob_ans"):
            for big, small in zip(
                nus, nus[1:], strict=False
            ):  # ten times less noise, at least 2.5 times less error
                assert errs[small, qk][c] < 0.4 * errs[big, qk][c], (qk, c, errs)
            assert errs[nus[-1], qk][c] < (0.1 if qk else 0.05), (qk, c, errs)


def test_window_is_the_sum_of_single_layer_estimates(model, prompts):
    kw = dict(metrics=("logit_diff",), progress=False)
    w1 = run_attribution(model, prompts, SweepSpec("str", "mlp", position="X"), **kw)
    w3 = run_attribution(model, prompts, SweepSpec("str", "mlp", position="X", window=3), **kw)
    d1 = deltas(w1, "ld").reshape(N_LAYERS, -1)
    d3 = deltas(w3, "ld").reshape(N_LAYERS, -1)
    np.testing.assert_allclose(d3[1], d1[0] + d1[1] + d1[2], rtol=1e-10, atol=1e-12)  # layer 1: layers 0..2
    np.testing.assert_allclose(d3[0], d1[0] + d1[1], rtol=1e-10, atol=1e-12)  # layer 0: window cut at 0


@pytest.mark.parametrize("site", ["attn_head", "head_v", "mlp", "resid_pre"])
def test_gradients_reach_every_site(model, prompts, site):
    for out in ("ld", "prob_ans", "kl"):
        grads = site_gradients(model, prompts, SweepSpec("str", site), out)
        assert len(grads) == N_LAYERS
        for hook, g in grads.items():
            assert torch.isfinite(g).all(), (hook, out)
            if g.dim() == 4:  # [batch, pos, head, d_head]: every head gets gradient
                per_head = g.abs().sum((0, 1, 3))
                assert (per_head > 0).all(), (hook, out, per_head)
            else:
                assert g.abs().sum() > 0, (hook, out)
            # causal model: nothing after the answer position can matter
            for i, a in enumerate(prompts.answer_pos):
                assert g[i, a + 1 :].abs().sum() == 0


def test_requested_metrics_only(model, prompts):
    assert grad_columns(("logit_diff",)) == ["ld"]
    assert grad_columns(("stolfo", "prob")) == ["prob_ans", "prob_wrong"]
    raw = run_attribution(
        model, prompts, SweepSpec("str", "resid_pre"), metrics=("logit_diff",), progress=False
    )
    pat = raw[raw["run"] == "patched"]
    assert pat[["prob_ans", "prob_wrong", "kl"]].isna().all().all()
    corr = raw[raw["run"] == "corrupted"].set_index("prompt")["logit_wrong"]
    np.testing.assert_array_equal(pat["logit_wrong"].to_numpy(), corr.reindex(pat["prompt"]).to_numpy())
    eff = attribution_effects(raw)
    assert set(eff["metric"]) == {"logit_diff"} and eff["effect"].notna().all()
    # resid_pre at layer 0, all positions: the estimated LD change is (clean - corrupted residual) . dLD/dresid
    spec = SweepSpec("str", "resid_pre", layers=(0,))
    hook = "blocks.0.hook_resid_pre"
    grad = site_gradients(model, prompts, spec, "ld")[hook]
    with torch.no_grad():
        delta = model.embed(prompts.tokens("clean")) - model.embed(prompts.tokens("corrupted"))
    by_hand = (delta * grad).sum((1, 2)).numpy()
    est = deltas(raw, "ld")[
        (raw[raw["run"] == "patched"].sort_values(["target", "prompt"])["layer"] == 0).to_numpy()
    ]
    np.testing.assert_allclose(est, by_hand, rtol=1e-9, atol=1e-12)
    assert np.abs(by_hand).max() > 1e-3


def test_refusals(model, prompts):
    with pytest.raises(InputError, match="qk_fix on sweep str/attn_head pos=each"):
        run_attribution(
            model, prompts, SweepSpec("str", "attn_head", position="each"), qk_fix=True, progress=False
        )
    with pytest.raises(ValueError, match="unknown metrics"):
        run_attribution(model, prompts, SweepSpec("str", "mlp"), metrics=("accuracy",), progress=False)
    with pytest.raises(ValueError, match="absent"):
        run_attribution(model, prompts, SweepSpec("str", "mlp", position="Y"), progress=False)


def test_rows_round_trip_through_effects_detection_and_tables(model, prompts, tmp_path):
    spec = SweepSpec("str", "attn_head")
    cache = clean_cache(model, prompts, spec)
    raw = run_attribution(
        model, prompts, spec, cache, metrics=("prob", "logit_diff", "kl", "stolfo"), progress=False
    )
    write_frame(raw, tmp_path / "raw.parquet")
    back = read_frame(tmp_path / "raw.parquet")
    pd.testing.assert_frame_equal(back, raw.reset_index(drop=True), check_like=False)
    eff = detect(attribution_effects(back, model="tiny-model"))
    assert set(eff["method"]) == {"attribution"}
    assert set(eff["metric"]) == {"prob", "logit_diff", "kl", "stolfo"}
    assert eff["effect"].notna().all() and len(eff) == 4 * N_LAYERS * N_HEADS
    exact = effects(run_sweep(model, prompts, spec, cache, progress=False), model="tiny-model")
    assert sorted(eff["component"].unique()) == sorted(exact["component"].unique())
    write_frame(eff, tmp_path / "effects.parquet")
    eff2 = validate_effects(read_frame(tmp_path / "effects.parquet"))
    assert eff2.attrs["patchbench"]["method"] == "attribution"
    plot = select(eff2, method="attribution", site="attn_head")
    assert len(plot) == len(eff)
    for metric in ("prob", "logit_diff", "kl"):
        heads = head_detections(plot, "STR", metric)
        expect = eff[(eff["metric"] == metric) & (eff["detected"] != "")]["component"]
        assert sorted(heads) == sorted(expect)


def test_batched_backward_equals_one_pass_per_output(model, prompts):
    spec = SweepSpec("gn", "attn_head", position="each", noise=NoiseSpec(n_samples=2))
    kw = dict(metrics=("prob", "logit_diff", "kl", "stolfo"), progress=False)
    a = run_attribution(model, prompts, spec, batched_backward=True, **kw)
    b = run_attribution(model, prompts, spec, batched_backward=False, **kw)
    cols = ["logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl"]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-12, atol=1e-14)
    assert not a[cols].isna().any().any()
