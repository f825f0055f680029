"""GN follows ROME: sigma from the key tokens' own embeddings (ROME's ``collect_embedding_std``), noise
std = nu * sigma, seeded per (prompt, sample), in the model's dtype."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from patchbench.corruption import (
    NoiseSpec,
    draw_noise,
    embedding_sigma,
    noise_seed,
    noise_tensor,
)
from patchbench.engine.setup import setup
from patchbench.engine.sweep import run_sweep
from patchbench.prompts import PromptSet, PromptSetError
from patchbench.sites import SweepSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sigma_by_hand(model, prompts):
    ids = [int(prompts.clean[i][p]) for i in range(len(prompts)) for p in prompts.noise_positions[i]]
    w = model.ht_state_dict()["embed.W_E"].double()[ids]
    by_hand = float(np.std(w.numpy(), ddof=1))
    assert embedding_sigma(model, prompts) == pytest.approx(by_hand, rel=1e-12)
    # prompts with two key tokens contribute both (duplicates counted)
    assert len(ids) == sum(len(p) for p in prompts.noise_positions) > len(prompts)


def test_sigma_from_meta_ids(model, prompts):
    meta = pd.DataFrame({"subject_ids": [[3, 4], [5], [3], [7, 8, 9]]})
    ps = dataclasses.replace(prompts, task="f", meta=meta)
    by_hand = float(model.ht_state_dict()["embed.W_E"].double()[[3, 4, 5, 3, 7, 8, 9]].std())
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
    with model.hooks([("blocks.0.hook_resid_pre", lambda act, name: rec.append(act.detach().clone()))]):
        raw = run_sweep(
            model,
            prompts,
            SweepSpec("gn", "mlp", layers=(2,), noise=NoiseSpec(nu=3.0, seed=5)),
            progress=False,
        )
    sigma = raw.attrs["patchbench"]["sigma"]
    assert sigma == pytest.approx(embedding_sigma(model, prompts))
    assert raw.attrs["patchbench"]["noise_std"] == pytest.approx(3.0 * sigma)
    clean, corrupted = rec[0], rec[1]  # the clean-cache run, then the corrupted run
    rows = np.arange(len(prompts))
    nz = noise_tensor(prompts, rows, np.zeros_like(rows), 64, 3.0 * sigma, 5, dtype=torch.float64)
    assert nz.dtype == model.shape.dtype == torch.float64  # noise in the model's dtype
    mask = prompts.noise_mask()
    assert (nz[~mask] == 0).all() and (nz[mask] != 0).all()
    assert torch.allclose(corrupted - clean, nz, atol=1e-12)
    for i in range(len(prompts)):
        pos = prompts.noise_positions[i]
        want = draw_noise(len(pos), 64, 3.0 * sigma, 5, i, 0, torch.float64)
        assert torch.equal(nz[i, torch.as_tensor(pos)], want)


def test_noise_is_drawn_in_the_models_dtype():
    """float64 models get a float64 draw; float32 and half-precision models the float32 draw, rounded."""
    g = lambda: torch.Generator().manual_seed(noise_seed(1, 2, 3))  # noqa: E731
    f64 = draw_noise(5, 8, 2.0, 1, 2, 3, torch.float64)
    assert f64.dtype == torch.float64 and torch.equal(
        f64, torch.randn(5, 8, generator=g(), dtype=torch.float64) * 2.0
    )
    f32 = draw_noise(5, 8, 2.0, 1, 2, 3)
    assert f32.dtype == torch.float32 and torch.equal(f32, torch.randn(5, 8, generator=g()) * 2.0)
    assert torch.equal(draw_noise(5, 8, 2.0, 1, 2, 3, torch.bfloat16), f32.to(torch.bfloat16))
    assert (f64 - f32.double()).abs().max() > 0.1  # another draw, not a cast of the float32 one


def test_noise_is_independent_of_batching_and_order(prompts):
    a = noise_tensor(prompts, np.array([0, 1, 2, 3]), np.array([0, 0, 0, 0]), 16, 1.0, 7)
    b = noise_tensor(prompts, np.array([3, 1]), np.array([0, 0]), 16, 1.0, 7)
    assert torch.equal(a[3], b[0]) and torch.equal(a[1], b[1])
    c = noise_tensor(prompts, np.array([1]), np.array([1]), 16, 1.0, 7)
    assert not torch.equal(a[1], c[0])  # another sample is another draw
    d = noise_tensor(prompts, np.array([1]), np.array([0]), 16, 1.0, 8)
    assert not torch.equal(a[1], d[0])  # another seed is another draw


def test_str_refuses_unequal_pairs(model, prompts):
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

    def corrupted_tokens(corruption: str) -> torch.Tensor:
        return setup(model, prompts, SweepSpec(corruption, "mlp")).runs["corrupted"].tokens

    assert torch.equal(corrupted_tokens("gn"), prompts.tokens("clean"))
    assert torch.equal(corrupted_tokens("str"), prompts.tokens("corrupted"))
    with pytest.raises(ValueError, match="not a corruption"):
        SweepSpec("noise", "mlp")


def test_noise_spec_validation():
    with pytest.raises(ValueError, match="n_samples"):
        NoiseSpec(n_samples=0)
    with pytest.raises(ValueError, match="nu"):
        NoiseSpec(nu=-1)


def test_sigma_is_romes_collect_embedding_std_on_a_gpt2_saved_by_transformers(tmp_path, gpt2_tokenizer):
    """GN's sigma against ROME's own formula (``experiments/causal_trace.py``)::

        for s in subjects:  # the subject tokenised alone
            with nethook.Trace(model, "transformer.wte") as t: model(**make_inputs(tok, [s]))
            alldata.append(t.output[0])
        noise_level = torch.cat(alldata).std().item()

    on a random GPT-2 written by transformers' ``save_pretrained`` and loaded through patchbench's
    local route (where TransformerLens's weight processing centres W_E in place)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from patchbench.models import ModelSpec, load_model

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2)).save_pretrained(tmp_path)  # GPT-2 small's width and vocabulary
    gpt2_tokenizer.save_pretrained(tmp_path)
    subjects = ["Danielle Darrieux", "Edwin of Northumbria", "Toko Yasuda", "Autonomous University of Madrid"]
    ids = [gpt2_tokenizer(s)["input_ids"] for s in subjects]
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    alldata = []
    hook = hf.transformer.wte.register_forward_hook(lambda mod, inp, out: alldata.append(out[0]))
    with torch.no_grad():
        for i in ids:
            hf(input_ids=torch.tensor([i]))
    hook.remove()
    rome = torch.cat(alldata).std().item()

    lm = load_model(ModelSpec.from_name(str(tmp_path), device="cpu"))
    ps = PromptSet(
        task="factual", clean=[np.array([*i, 13]) for i in ids], corrupted=[np.array([*i, 13]) for i in ids],
        answer_pos=[len(i) for i in ids], answers=[[1]] * 4, wrong=[[2]] * 4,
        noise_positions=[list(range(len(i))) for i in ids], meta=pd.DataFrame({"subject_ids": ids}),
    )  # fmt: skip
    sigma = embedding_sigma(lm, ps)
    flat = torch.tensor([t for i in ids for t in i])
    processed = float(lm.bridge.W_E.detach()[flat].double().std())  # what TransformerLens 3.9's W_E gave
    print(
        f"\nsigma {sigma:.9f}  ROME collect_embedding_std {rome:.9f}  (processed, centred W_E: {processed:.9f})"
    )
    assert sigma == pytest.approx(rome, rel=1e-6)
    assert abs(processed - rome) / rome > 1e-4  # the centred W_E would be measurably off
