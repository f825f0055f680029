"""Every corruption, direction and site equals one full forward per target with TransformerLens's hooks.

On the three routes of the model interface (GPT-2 through transformers: learned positions; Llama
through transformers: rotary positions and grouped-query attention, so that key / value sites
index key-value heads; the native route of the project's own models), in float64 and float32: for
every site of :data:`patchbench.interventions.sites.SITES` and every corruption of the registry
(STR, GN with two noise samples, resample, mean, zero), in both directions, the engine's raw frame
(``run_sweep``: prefix reuse, batching, causal suffix reuse on position-specific sweeps and the
head-output shortcut, each taken in every case, the ablated base run kept in the patched forward) equals, for every target and
row, the answer logits of one full forward with TransformerLens's own hooks
(:func:`lm_models.reference_runs`, none of the engine's code) within 1e-10 in float64 and 1e-5 in
float32; so do its clean and corrupted rows. Every sweep also passes its own sanity identities
(patching nothing gives the base run; patching everything the source run) and moves the logits by
more than ten times its gap to the reference (a patch that did nothing would not).
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_model
from lm_models import reference_runs, save_hf
from patchbench.corruption import NoiseSpec
from patchbench.engine.sweep import run_sweep
from patchbench.interventions.corruptions import NAMES
from patchbench.interventions.directions import DIRECTIONS
from patchbench.interventions.sites import SITES
from patchbench.lm import LM, load_transformers
from patchbench.prompts import PromptSet
from patchbench.sites import SweepSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
ROUTES = {
    "gpt2": ("gpt2-small", dict(n_layer=3, n_embd=64, n_head=4)),
    "llama": ("llama", dict()),
    "native": ("native", dict()),
}


@pytest.fixture(scope="module", params=[(r, d) for r in ROUTES for d in ("float64", "float32")], ids=str)
def model(request, tmp_path_factory) -> LM:
    route, dtype = request.param
    dtype = getattr(torch, dtype)
    shape, overrides = ROUTES[route]
    if shape == "native":
        return make_model(dtype)
    root = tmp_path_factory.mktemp(f"interventions-{route}")
    lm = load_transformers(str(save_hf(shape, root / "m", dtype=dtype, **overrides)), dtype=dtype)
    shutil.rmtree(root, ignore_errors=True)
    return lm


def template_prompts(model: LM) -> PromptSet:
    """Six prompts of two templates (lengths 7 and 6, right-padded), named position X, the STR
    counterpart replacing X; answers the model's top clean prediction, wrong answers its top corrupted one."""
    rng = np.random.default_rng(1)
    clean, corrupted, xs, noise, meta = [], [], [], [], []
    for i in range(6):
        length, x = (7, 2) if i < 3 else (6, 3)
        c = rng.integers(1, 99, length)
        k = c.copy()
        k[x] = c[x] % 98 + 1
        clean.append(c), corrupted.append(k), xs.append(x), noise.append([x])
        meta.append({"template": "first" if i < 3 else "second"})
    ans, wrong = [], []
    with torch.no_grad():
        for c, k in zip(clean, corrupted, strict=True):
            a = int(model.logits(torch.as_tensor(c)[None])[0, -1].argmax())
            order = model.logits(torch.as_tensor(k)[None])[0, -1].argsort(descending=True)
            ans.append([a]), wrong.append([int(order[0]) if int(order[0]) != a else int(order[1])])
    return PromptSet(
        task="templated", clean=clean, corrupted=corrupted, answer_pos=[len(c) - 1 for c in clean],
        answers=ans, wrong=wrong, noise_positions=noise, positions={"X": np.array(xs)},
        meta=pd.DataFrame(meta),
    )  # fmt: skip


def specs(model: LM, corruption: str, direction: str) -> list[SweepSpec]:
    """Every site, at every position, a named position or each position (few targets each: one layer,
    two heads), with a window on a site that takes windows."""
    n = model.shape.n_layers
    out = []
    for i, site in enumerate(SITES.values()):
        position = ("all", "X", "each")[i % 3]
        heads = None
        if site.has_heads and not site.joint_heads:
            heads = ((1, 0), (n - 1, site.n_heads(model.shape) - 1))
        elif site.joint_heads:
            heads = ((1, 0), (1, site.n_heads(model.shape) - 1))
        layers = None if site.has_heads else (1, n - 1)
        window = 3 if site.windows and position != "each" else 1
        out.append(
            SweepSpec(
                corruption,
                site.name,
                position=position,
                heads=heads,
                layers=layers,
                window=window,
                noise=NoiseSpec(n_samples=2),
                direction=direction,
            )  # fmt: skip
        )
    return out


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("corruption", NAMES)
def test_every_site_equals_one_forward_per_target(model, corruption, direction):
    prompts = template_prompts(model)
    tol = TOL[model.shape.dtype]
    worst, moved = {}, {}
    for spec in specs(model, corruption, direction):
        raw = run_sweep(model, prompts, spec, progress=False)
        meta = raw.attrs["patchbench"]
        assert meta["sanity"]["passed"], meta["sanity"]
        assert meta.get("direction", "denoising") == direction
        # the fast paths apply to every corruption and direction (each is exact there)
        assert meta["plan"]["path"] == ("suffix" if spec.position != "all" else "full"), meta["plan"]
        assert meta["plan"].get("head_shortcut") is (True if SITES[spec.site].shortcut else None)
        ref = reference_runs(model, prompts, spec)
        ans = torch.tensor([a[0] for a in prompts.answers])
        wr = torch.tensor([w[0] for w in prompts.wrong])
        gaps, moves = [], []
        for (run, target), rows in raw.groupby(["run", "target"]):
            rows = rows.sort_values(["prompt", "sample"])
            logits = ref[run if run != "patched" else int(target)]
            pr = torch.tensor(rows["prompt"].to_numpy())
            r = torch.arange(len(rows)) if run != "clean" else pr
            want = torch.stack([logits[r, ans[pr]], logits[r, wr[pr]]], 1).double()
            got = torch.tensor(rows[["logit_ans", "logit_wrong"]].to_numpy())
            gaps.append(float((got - want).abs().max()))
            if run == "patched":
                base = ref["corrupted" if direction == "denoising" else "clean"]
                base = base if direction == "denoising" else base[pr]
                moves.append(float((logits - base).abs().max()))
        label = f"{spec.site}-{spec.position}"
        worst[label], moved[label] = max(gaps), max(moves)
    print(f"\n{corruption}/{direction} maxdiff " + " ".join(f"{k}={v:.1e}" for k, v in worst.items()))
    bad = {k: v for k, v in worst.items() if not v < tol}
    assert not bad, f"{corruption}/{direction}: engine vs one forward per target {bad}"
    # a patch that did nothing would leave the unpatched logits: every sweep moves them by far more than
    # its gap to the reference, so the comparison tells a working patch from a no-op
    inert = {k: v for k, v in moved.items() if not v > 10 * max(worst[k], 1e-12)}
    assert not inert, f"{corruption}/{direction}: sweeps whose patches move nothing {inert}"
