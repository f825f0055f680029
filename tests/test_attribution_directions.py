"""Attribution patching in both directions and for every corruption, and where it is refused.

* Its clean and corrupted rows are the exact engine's for every corruption and direction (the one
  engine setup builds both engines' runs); in noising its base is the clean run.
* Noising with GN converges to exact noising as the noise shrinks (nu -> 0), as denoising does
  (``test_attribution.py``).
* For the activation-level corruptions (no scale to shrink) the estimate is, target by target,
  the first-order formula written out: (source - base activation) . dLD/d(activation) at the base
  run, with the base run's ablation in place (denoising) or the clean run (noising).
* AtP*'s QK fix is refused, naming the sweep and why, where it is not defined (an ablation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from patchbench.attribution import run_attribution, site_gradients
from patchbench.corruption import NoiseSpec
from patchbench.engine.cache import clean_cache
from patchbench.engine.sweep import run_sweep
from patchbench.errors import InputError
from patchbench.interventions.corruptions import NAMES
from patchbench.interventions.directions import DIRECTIONS
from patchbench.sites import SweepSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEYS = ["run", "target", "prompt", "sample"]


@pytest.fixture(scope="module")
def templated(prompts):
    """The tiny prompts with a template each (two per template and length: resample and mean apply)."""
    return dataclasses.replace(prompts, meta=pd.DataFrame({"template": ["a"] * len(prompts)}))


def base_change(raw: pd.DataFrame, direction: str) -> np.ndarray:
    """Per patched row (target-major): its LD change from the base run (corrupted or clean)."""
    ld = raw["logit_ans"] - raw["logit_wrong"]
    raw = raw.assign(_v=ld)
    base = "corrupted" if direction == "denoising" else "clean"
    b = raw[raw["run"] == base].groupby("prompt")["_v"].mean()
    p = raw[raw["run"] == "patched"].sort_values(["target", "prompt", "sample"])
    return p["_v"].to_numpy() - b.reindex(p["prompt"]).to_numpy()


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("corruption", NAMES)
def test_clean_and_corrupted_rows_are_the_engines(model, templated, corruption, direction):
    spec = SweepSpec(corruption, "attn_head", noise=NoiseSpec(n_samples=2, seed=3), direction=direction)
    ex = run_sweep(model, templated, spec, progress=False)
    at = run_attribution(model, templated, spec, progress=False)
    assert at.attrs["patchbench"]["components"] == ex.attrs["patchbench"]["components"]
    assert at.attrs["patchbench"].get("direction") == ex.attrs["patchbench"].get("direction")
    a = ex[ex["run"] != "patched"].sort_values(KEYS).reset_index(drop=True)
    b = at[at["run"] != "patched"].sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    for col in ("logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-9, atol=1e-12)


def rel_err(exact: np.ndarray, approx: np.ndarray) -> float:
    return float(np.linalg.norm(exact - approx) / np.linalg.norm(exact))


def test_noising_converges_to_exact_noising(model, prompts):
    errs = []
    nus = (0.3, 0.03, 0.003)
    for nu in nus:
        spec = SweepSpec("gn", "attn_head", noise=NoiseSpec(nu=nu, seed=1), direction="noising")
        ex = run_sweep(model, prompts, spec, progress=False)
        at = run_attribution(model, prompts, spec, metrics=("logit_diff",), progress=False)
        errs.append(rel_err(base_change(ex, "noising"), base_change(at, "noising")))
    assert errs[1] < 0.4 * errs[0] and errs[2] < 0.4 * errs[1] and errs[2] < 0.05, errs


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("corruption", ["mean", "zero"])
def test_ablation_estimates_are_the_first_order_formula(model, templated, corruption, direction):
    spec = SweepSpec(corruption, "mlp", direction=direction)
    at = run_attribution(model, templated, spec, metrics=("logit_diff",), progress=False)
    grads = site_gradients(model, templated, spec, "ld")
    hooks = list(grads)
    clean = clean_cache(model, templated, hooks)
    n = len(templated)
    # the ablation value of every prompt: 0, or the mean over the prompts of its template and length
    lengths = templated.lengths
    value = {}
    for h in hooks:
        if corruption == "zero":
            value[h] = torch.zeros_like(clean[h])
        else:
            value[h] = torch.stack([clean[h][lengths == lengths[i]].double().mean(0) for i in range(n)])
    by_hand = []
    for h in hooks:  # one target per layer, every position
        src, base = (clean[h], value[h]) if direction == "denoising" else (value[h], clean[h])
        by_hand.append(((src.double() - base.double()) * grads[h].double()).sum((1, 2)).numpy())
    np.testing.assert_allclose(base_change(at, direction), np.concatenate(by_hand), rtol=1e-8, atol=1e-10)
    assert np.abs(np.concatenate(by_hand)).max() > 1e-3


@pytest.mark.parametrize("corruption", ["mean", "zero"])
def test_qk_fix_is_refused_for_an_ablation(model, templated, corruption):
    spec = SweepSpec(corruption, "attn_head", direction="noising")
    with pytest.raises(
        InputError, match=rf"qk_fix on sweep {corruption}/attn_head pos=all w=1 noising: .*token-level"
    ):
        run_attribution(model, templated, spec, qk_fix=True, progress=False)
