"""The notebook API (patchbench.api): the grid on the workflow's engine, as one tidy frame."""

from __future__ import annotations

import pandas as pd
import pytest

import patchbench
from conftest import make_model, make_prompts
from patchbench.analysis.robustness import RobustnessSettings
from patchbench.detection import detect
from patchbench.engine.sweep import run_sweep
from patchbench.errors import InputError
from patchbench.metrics import effects
from patchbench.sites import SweepSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    model = make_model()
    return model, make_prompts(n=6, model=model)


def test_grid_is_the_engines_effects_with_detections_and_intervals(setup):
    model, prompts = setup
    kw = dict(sites=["mlp", "attn_head"], positions="X", windows=[1, 3], progress=False, filter_correct=False)
    df = patchbench.grid(model, prompts, intervals=True, settings=RobustnessSettings(n_boot=50), **kw)
    cells = df[["corruption", "site", "window"]].drop_duplicates()
    # mlp at windows 1 and 3, heads at window 1 only; STR and GN (the schema's default corruptions)
    assert sorted(map(tuple, cells.to_numpy().tolist())) == sorted(
        (c, s, w) for c in ("str", "gn") for s, w in (("mlp", 1), ("mlp", 3), ("attn_head", 1))
    )
    assert len(df) == 2 * (3 + 3 + 12) * 3  # corruptions x (mlp w1, w3 layers + heads) x metrics
    assert {"detected", "ci_low", "ci_high", "p_positive", "p_negative", "status"} <= set(df.columns)
    assert (df["ci_low"] <= df["effect"] + 1e-12).all() and (df["effect"] <= df["ci_high"] + 1e-12).all()
    # one cell, computed directly: the same numbers
    spec = SweepSpec("gn", "mlp", position="X", window=3)
    direct = detect(effects(run_sweep(model, prompts, spec, progress=False)))
    mine = df[(df["corruption"] == "gn") & (df["site"] == "mlp") & (df["window"] == 3)]
    cols = ["component", "metric", "effect", "effect_sd", "detected"]
    pd.testing.assert_frame_equal(
        mine[cols].reset_index(drop=True), direct[cols].reset_index(drop=True), check_exact=False, rtol=1e-9
    )


def test_per_prompt_rows_carry_the_means_detection(setup):
    model, prompts = setup
    raws = patchbench.sweeps(model, prompts, sites="resid_pre", corruptions="str", progress=False,
                             filter_correct=False)  # fmt: skip
    per = patchbench.effects_table(raws, per_prompt=True)
    mean = patchbench.effects_table(raws)
    assert len(per) == len(mean) * len(prompts) and set(per["prompt"]) == set(range(len(prompts)))
    joined = per.merge(mean, on=["component", "metric"], suffixes=("", "_mean"))
    assert (joined["detected"] == joined["detected_mean"]).all()
    result = patchbench.robustness(raws, "resid", settings=RobustnessSettings(n_boot=20))
    assert set(result.verdicts["component"]) == set(mean["component"])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(sites="mlp", directions=["noising"]), "one direction only"),
        (dict(sites="attn_head", windows=[3]), "no site of ['attn_head'] takes windows [3]"),
        (dict(sites="mlp", heads=[[0, 1]]), "no site of ['mlp'] takes heads"),
        (dict(sites="heads"), "unknown site 'heads'"),
        (dict(sites="mlp", corruptions=["noise"]), "unknown corruption 'noise'"),
        (dict(sites="mlp", positions="NOPE"), "no named position 'NOPE'"),
    ],
)
def test_a_bad_grid_is_refused_before_any_sweep(setup, kw, message):
    model, prompts = setup
    with pytest.raises(InputError) as err:
        patchbench.sweeps(model, prompts, progress=False, filter_correct=False, **kw)
    assert message in str(err.value)
