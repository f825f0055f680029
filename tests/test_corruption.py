"""GN follows ROME: sigma from the key tokens' embeddings, noise std = nu * sigma, seeded per (prompt, sample)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from patchbench.corruption import (
    NoiseSpec,
    corrupted_tokens,
    draw_noise,
    embedding_sigma,
    noise_seed,
    noise_tensor,
)
from patchbench.engine.sweep import run_sweep
from patchbench.prompts import PromptSet, PromptSetError
from patchbench.sites import SweepSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sigma_by_hand(model, prompts):
    ids = [int(prompts.clean[i][p]) for i in range(len(prompts)) for p in prompts.noise_positions[i]]
    w = model.W_E.detach().double()[ids]
    by_hand = float(np.std(w.numpy(), ddof=1))
    assert embedding_sigma(model, prompts) == pytest.approx(by_hand, rel=1e-12)
    # prompts with two key tokens contribute both (duplicates counted)
    assert len(ids) == sum(len(p) for p in prompts.noise_positions) > len(prompts)


def test_sigma_from_meta_ids(model, prompts):
    meta = pd.DataFrame({"subject_ids": [[3, 4], [5], [3], [7, 8, 9]]})
    ps = dataclasses.replace(prompts, task="f", meta=meta)
    by_hand = float(model.W_E.detach().double()[[3, 4, 5, 3, 7, 8, 9]].std())
    assert embedding_sigma(model, ps) == pytest.approx(by_hand, rel=1e-12)
    assert embedding_sigma(model, ps, source="noise_positions") == pytest.approx(
        embedding_sigma(model, prompts)
    )


def test_noise_scale_is_three_sigma(model, prompts):
    sigma = embedding_sigma(model, prompts)
    big = draw_noise(4000, 64, 3.0 * sigma, seed=0, prompt=0, sample=0)
    assert float(big.double().std()) == pytest.approx(3.0 * sigma, rel=0.01)
    # exactly 3 sigma times the generator's standard normal draw
    g = torch.Generator().manual_seed(noise_seed(0, 0, 0))
    assert torch.equal(big, torch.randn(4000, 64, generator=g) * (3.0 * sigma))


def test_noise_added_by_the_corrupted_run_is_nu_sigma(model, prompts):
    """The GN run's residual entering block 0 differs from the clean run's by exactly the drawn noise."""
    rec = []
    model.add_hook(
        "blocks.0.hook_resid_pre", lambda act, hook: rec.append(act.detach().clone()), is_permanent=True
    )
    try:
        raw = run_sweep(
            model,
            prompts,
            SweepSpec("gn", "mlp", layers=(2,), noise=NoiseSpec(nu=3.0, seed=5)),
            progress=False,
        )
    finally:
        model.reset_hooks(including_permanent=True)
    sigma = raw.attrs["patchbench"]["sigma"]
    assert sigma == pytest.approx(embedding_sigma(model, prompts))
    assert raw.attrs["patchbench"]["noise_std"] == pytest.approx(3.0 * sigma)
    clean, corrupted = rec[0], rec[1]  # the clean-cache run, then the corrupted run
    nz = noise_tensor(prompts, np.arange(len(prompts)), np.zeros(len(prompts), np.int64), 64, 3.0 * sigma, 5)
    mask = prompts.noise_mask()
    assert (nz[~mask] == 0).all() and (nz[mask] != 0).all()
    assert torch.allclose(corrupted - clean, nz.double(), atol=1e-12)
    for i in range(len(prompts)):
        pos = prompts.noise_positions[i]
        assert torch.equal(nz[i, torch.as_tensor(pos)], draw_noise(len(pos), 64, 3.0 * sigma, 5, i, 0))


def test_noise_is_independent_of_batching_and_order(prompts):
    a = noise_tensor(prompts, np.array([0, 1, 2, 3]), np.array([0, 0, 0, 0]), 16, 1.0, 7)
    b = noise_tensor(prompts, np.array([3, 1]), np.array([0, 0]), 16, 1.0, 7)
    assert torch.equal(a[3], b[0]) and torch.equal(a[1], b[1])
    c = noise_tensor(prompts, np.array([1]), np.array([1]), 16, 1.0, 7)
    assert not torch.equal(a[1], c[0])  # another sample is another draw
    d = noise_tensor(prompts, np.array([1]), np.array([0]), 16, 1.0, 8)
    assert not torch.equal(a[1], d[0])  # another seed is another draw


def test_str_refuses_unequal_pairs(prompts):
    bad = [c.copy() for c in prompts.corrupted]
    bad[2] = np.append(bad[2], 5)
    with pytest.raises(PromptSetError, match="prompt 2.*equal token length"):
        PromptSet(
            task="t",
            clean=prompts.clean,
            corrupted=bad,
            answer_pos=prompts.answer_pos,
            answers=prompts.answers,
            wrong=prompts.wrong,
            noise_positions=prompts.noise_positions,
        )
    assert torch.equal(corrupted_tokens(prompts, "gn"), prompts.tokens("clean"))
    assert torch.equal(corrupted_tokens(prompts, "str"), prompts.tokens("corrupted"))
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupted_tokens(prompts, "zero")


def test_noise_spec_validation():
    with pytest.raises(ValueError, match="n_samples"):
        NoiseSpec(n_samples=0)
    with pytest.raises(ValueError, match="nu"):
        NoiseSpec(nu=-1)
