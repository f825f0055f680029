"""The practice benchmark (patchbench.practices): scores on hand-made detections, the detection rules,
the permutation null's level, the grid from a config, the verdict rule, and a practice grid on a
two-layer model end to end (sweeps, scores, tables)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_model
from patchbench.analysis.robustness import KnownCircuit, RobustnessSettings
from patchbench.config import load_config, validate_config
from patchbench.detection import detect_signs
from patchbench.practices import advice, rules, scores
from patchbench.practices.benchmark import BenchSettings, pool_seeds, score_seed
from patchbench.practices.grid import canonical_corruption, new_sweeps, practice_plans, seed_of

CIRCUIT = KnownCircuit(
    {"mover": frozenset({"0.0", "1.0"}), "negative_mover": frozenset({"2.0"})}, "hand-made"
)
UNITS = ["0.0", "0.1", "1.0", "1.1", "2.0"]


def truth():
    return scores.Truth.of(UNITS, CIRCUIT, ["negative_mover"])


# ----------------------------------------------------------------------------- scores
def test_scores_on_hand_made_detections():
    t = truth()
    signs = np.array(
        [
            [1, 0, 0, 1, -1],  # D = {0.0, 1.1, 2.0-}: tp 2, fp 1, fn 1
            [1, 1, 1, 1, 1],  # everything, 2.0 with the wrong sign
            [0, 0, 0, 0, 0],  # nothing
            [0, 0, 1, 0, -1],  # exactly the circuit's 1.0 and the negative one
        ],
        dtype=np.int8,
    )
    s = scores.detection_scores(signs, t)
    np.testing.assert_allclose(s["precision"], [2 / 3, 3 / 5, np.nan, 1.0])
    np.testing.assert_allclose(s["recall"], [2 / 3, 1.0, 0.0, 2 / 3])
    np.testing.assert_allclose(s["f1"], [2 / 3, 2 * 3 / (2 * 3 + 2), 0.0, 0.8])
    np.testing.assert_allclose(s["recall_mover"], [0.5, 1.0, 0.0, 0.5])
    np.testing.assert_allclose(s["recall_negative_mover"], [1.0, 1.0, 0.0, 1.0])
    # negative components: only a negative detection counts
    np.testing.assert_allclose(s["neg_recall"], [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(s["neg_precision"], [1.0, np.nan, np.nan, 1.0])
    np.testing.assert_allclose(s["neg_f1"], [1.0, 0.0, 0.0, 1.0])


def test_negative_scores_are_undefined_without_negative_components():
    t = scores.Truth.of(UNITS, CIRCUIT, ["no_such_class"])
    s = scores.detection_scores(np.array([0, 0, 0, 0, -1], dtype=np.int8), t)
    assert np.isnan(s["neg_recall"]) and np.isnan(s["neg_precision"]) and np.isnan(s["neg_f1"])


def test_auroc_is_the_mann_whitney_share():
    member = truth().member  # 0.0, 1.0, 2.0
    got = scores.auroc(
        np.array([[3.0, 0, 2, 1, 5], [0, 3, 1, 2, 0], [1, 1, 1, 1, 1], [3, 1, 0.5, 2, 4]]), member
    )
    # last row: members 3, 0.5, 4 vs non-members 1, 2: pairs won 2 + 0 + 2 of 6
    np.testing.assert_allclose(got, [1.0, 0.0, 0.5, 4 / 6])


# ----------------------------------------------------------------------------- rules
def test_two_sd_is_the_papers_rule_and_top_k_takes_the_k_largest():
    units = rules.Units.of(UNITS, CIRCUIT.members())
    rng = np.random.default_rng(0)
    eff = rng.normal(0, 0.05, (20, 5))
    eff[:, 4] = -1.0
    np.testing.assert_array_equal(rules.two_sd(eff, units), detect_signs(eff, 2.0))
    one = np.array([0.5, -0.1, 0.2, 0.05, -0.9])
    np.testing.assert_array_equal(rules.top_k(one, units, 3), [1, 0, 1, 0, -1])
    np.testing.assert_array_equal(
        rules.top_k(np.zeros(5), units, 2), [1, 1, 0, 0, 0]
    )  # ties: the earlier units


def test_units_collapse_positions_to_the_circuits_granularity():
    units = rules.Units.of(["0.0@1", "0.0@2", "1.0@1", "1.0@2"], CIRCUIT.members())
    assert units.names == ("0.0", "1.0")
    eff = np.array([0.1, -0.5, 0.2, 0.3])
    np.testing.assert_allclose(units.magnitude(eff), [0.5, 0.3])
    np.testing.assert_array_equal(units.collapse(np.array([1, -1, 0, 1]), eff), [-1, 1])
    np.testing.assert_array_equal(units.collapse(np.array([1, 0, 0, 0]), eff), [1, 0])


def test_permutation_rule_detects_an_effect_and_keeps_its_sign():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 60))
    x[3] += 1.0
    x[7] -= 1.0
    units = rules.Units.of([str(i) for i in range(12)], frozenset({"3"}))
    null = rules.sign_flip_null(x, rules.sign_flips(999, 60, 0), 0.05)
    got = rules.permutation(x, x.mean(1), null, units)
    assert got[3] == 1 and got[7] == -1 and np.count_nonzero(got) == 2
    zero = np.zeros((3, 60))  # components with no effect at all (every term 0) are never detected
    null0 = rules.sign_flip_null(zero, rules.sign_flips(999, 60, 0), 0.05)
    assert not rules.permutation(
        zero, zero.mean(1), null0, rules.Units.of(["a", "b", "c"], frozenset())
    ).any()


@pytest.mark.parametrize("kind", ["gauss", "heavy_correlated"])
def test_permutation_null_false_positive_rate_is_within_its_level(kind):
    """A model with no circuit: every component's per-prompt effect is symmetric about zero (the null
    the rule tests). Over many such plots, the share with any detection (the family-wise error the
    max-|Z| rule controls) stays within alpha, up to Monte Carlo error; per component far below."""
    rng = np.random.default_rng(7)
    alpha, reps, n_comp, n_prompts = 0.05, 400, 16, 40
    flips = rules.sign_flips(999, n_prompts, 3)
    units = rules.Units.of([str(i) for i in range(n_comp)], frozenset({"0"}))
    any_hit, per_comp = 0, 0
    for _ in range(reps):
        if kind == "gauss":
            x = rng.standard_normal((n_comp, n_prompts))
        else:  # heavy tails, unequal scales, a shared per-prompt factor (dependence between components)
            shared = rng.standard_t(3, n_prompts) * rng.choice([-1, 1], n_prompts)
            x = rng.standard_t(2, (n_comp, n_prompts)) * rng.uniform(0.01, 5, (n_comp, 1)) + shared
        x *= rng.choice([-1.0, 1.0], size=(1, n_prompts))  # symmetric about zero per prompt
        null = rules.sign_flip_null(x, flips, alpha)
        d = rules.permutation(x, x.mean(1), null, units) != 0
        any_hit += d.any()
        per_comp += d.sum()
    fwer = any_hit / reps
    bound = alpha + 3 * np.sqrt(alpha * (1 - alpha) / reps)
    assert fwer <= bound, f"family-wise false-positive rate {fwer:.3f} above {bound:.3f}"
    assert per_comp / (reps * n_comp) <= alpha


def test_permutation_rule_never_detects_heads_that_write_nothing():
    """On a two-layer model whose second layer's heads write nothing (W_O = 0: they carry no circuit),
    scored against a shuffled circuit.json, their per-prompt effects are exactly zero and the
    permutation rule detects none of them (false-positive rate 0, within 5 %), while top-k must name
    k heads whatever the evidence."""
    from conftest import make_prompts
    from patchbench.engine.sweep import run_sweep
    from patchbench.metrics import components, prompt_terms
    from patchbench.sites import SweepSpec

    model = make_model(torch.float64, n_layers=2, n_heads=4)
    state = model.ht_state_dict()
    state["blocks.1.attn.W_O"] = torch.zeros_like(state["blocks.1.attn.W_O"])
    model.load_ht_state_dict(state)
    prompts = make_prompts(n=24, model=model)
    raw = run_sweep(
        model, prompts, SweepSpec(corruption="str", site="attn_head", position="all"), progress=False
    )
    terms = prompt_terms(raw, ("logit_diff",))
    heads = components(raw).set_index("target").loc[terms.targets, "component"].tolist()
    shuffled = np.random.default_rng(0).permutation(heads)[:2]
    circuit = KnownCircuit({"shuffled": frozenset(shuffled)}, "shuffled circuit.json")
    units = rules.Units.of(heads, circuit.members())
    x = terms.numerators[0]
    silent = np.array([h.startswith("1.") for h in heads])
    assert np.all(x[silent] == 0) and np.any(x[~silent] != 0)
    null = rules.sign_flip_null(x, rules.sign_flips(999, x.shape[1], 0), 0.05)
    found = rules.permutation(x, x.mean(1), null, units)
    assert not found[silent].any()
    assert np.count_nonzero(rules.top_k(x.mean(1), units, 2)) == 2


# ----------------------------------------------------------------------------- the grid from a config
def test_canonical_corruption_and_seeds():
    cfg = load_config("config/demo.yaml")
    assert canonical_corruption("gn@nu=3", cfg) == "gn"  # the config's own nu: the experiments' sweeps
    assert canonical_corruption("gn@nu=3.0", cfg) == "gn"
    assert canonical_corruption("gn@nu=1", cfg) == "gn@nu=1"
    assert canonical_corruption("gn@nu=1,seed=0", cfg) == "gn@nu=1"
    assert canonical_corruption("resample@seed=0", cfg) == "resample"
    cfg["models"]["organism-ioi"]["seeds"] = [0, 1]
    cfg["models"]["organism-ioi-seed1"] = dict(cfg["models"]["organism-ioi"])
    assert seed_of(cfg, "organism-ioi-seed1") == ("organism-ioi", 1)
    assert seed_of(cfg, "organism-ioi") == ("organism-ioi", 0)
    assert seed_of(cfg, "organism-ioi-seed7") == ("organism-ioi-seed7", 0)  # not a listed seed


def test_practice_plans_reuse_the_experiments_and_state_what_is_not_defined(tmp_path):
    cfg = load_config("config/demo.yaml")
    plans, skipped = practice_plans(cfg)
    assert [(p.experiment, p.organism) for p in plans] == [
        ("ioi_heads", "organism-ioi"),
        ("factual_mlp_last", "organism-facts"),
    ]
    ioi, facts = plans
    assert ioi.windows == (1,) and "takes no windows" in ioi.notes[0]
    assert facts.windows == (1, 3, 5)
    undefined = {(s.corruption, s.method) for s in ioi.sweeps[0] if s.cell is None}
    assert undefined == {("mean", "attribution_qk"), ("zero", "attribution_qk")}  # ablations: no QK fix
    assert all("QK fix" in s.reason for s in ioi.sweeps[0] if s.cell is None)
    assert all(s.method != "attribution_qk" or s.cell is None for s in facts.sweeps[0])  # MLPs: no QK fix
    new = new_sweeps(cfg, "ioi_heads", "organism-ioi")
    made = {c.raw_path for cells in new.values() for c in cells}
    assert "results/sweeps/organism-ioi/ioi/str/attn_head-all_w1.parquet" not in made  # the demo sweeps it
    assert "results/sweeps/organism-ioi/ioi/str_noising/attn_head-all_w1.parquet" in made
    assert "results/attrib/organism-ioi/ioi/gn/attn_head-all_w1.qk.raw.parquet" in made
    assert sorted(new) == ["", "mean", "resample", "str"]  # one job for the corruptions that check no prompts
    assert "results/sweeps/organism-ioi/ioi/gn_noising/attn_head-all_w1.parquet" in made  # GN at nu 3: gn
    assert not any("gn@nu=3" in p for p in made)
    # a model without circuit.json is skipped, with a line naming it
    cfg["practices"]["experiments"] = ["ioi_heads", "docstring_heads"]
    cfg["models"]["organism-docstring"]["path"] = str(tmp_path)  # a directory without circuit.json
    plans, skipped = practice_plans(cfg)
    assert [p.experiment for p in plans] == ["ioi_heads"]
    assert len(skipped) == 1 and "organism-docstring" in skipped[0] and "circuit.json" in skipped[0]


def test_practices_config_refuses_unknown_experiments_and_corruptions():
    from patchbench.config import ConfigError, read_yaml

    cfg = read_yaml("config/demo.yaml")
    cfg["practices"] = {"experiments": ["no_such_experiment"]}
    with pytest.raises(ConfigError, match="practices.experiments.*no_such_experiment"):
        validate_config(cfg)
    cfg["practices"] = {"corruptions": ["gn@mu=1"]}
    with pytest.raises(ConfigError, match="practices.corruptions.*mu"):
        validate_config(cfg)


# ----------------------------------------------------------------------------- the verdict rule
def _pooled(values: dict, n_boot: int = 200, sd: float = 0.01) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for key, v in values.items():
        draws = v + rng.normal(0, sd, n_boot)
        out[key] = {"row": {"f1": v}, "draws": {"f1": draws}}
    return out


@pytest.mark.parametrize(("str_f1", "gn_f1", "expected"), [
    (0.9, 0.5, "confirmed"), (0.4, 0.8, "contradicted"), (0.6, 0.6, "not distinguishable on these organisms"),
])  # fmt: skip
def test_verdicts_follow_the_paired_interval(str_f1, gn_f1, expected):
    practices = {}
    for rule in ("two_sd", "top_k"):
        for metric in ("prob", "logit_diff"):
            practices[("str", "denoising", metric, 1, "exact", rule)] = str_f1
            practices[("gn@nu=3", "denoising", metric, 1, "exact", rule)] = gn_f1
    rows = advice.compare({"organism": _pooled(practices)}, 0.95)
    row = next(r for r in rows if r["against"] == "gn@nu=3" and r["organism"] == "all organisms")
    assert row["pairs"] == 4 and row["verdict"] == expected
    assert row["difference"] == pytest.approx(str_f1 - gn_f1)
    untested = next(r for r in rows if r["axis"] == "window" and r["organism"] == "all organisms")
    assert untested["pairs"] == 0 and untested["verdict"] == "cannot be judged"


# ----------------------------------------------------------------------------- a grid on a two-layer model
def test_practice_grid_on_a_two_layer_model(tmp_path):
    """Every corruption x direction x method on a two-layer model (exact sweeps and attribution), scored
    against a circuit: one outcome per practice, pooled over two seeds, tables written."""
    from conftest import make_prompts
    from patchbench.analysis.robustness import light_frame
    from patchbench.attribution import run_attribution
    from patchbench.engine.sweep import run_sweep
    from patchbench.metrics import aggregate, components, effects, prompt_terms
    from patchbench.practices.report import practice_figure, table_markdown
    from patchbench.sites import SweepSpec

    model = make_model(torch.float64, n_layers=2, n_heads=2)
    prompts = make_prompts(n=12, model=model)
    circuit = KnownCircuit(
        {"mover": frozenset({"1.0"}), "negative_mover": frozenset({"1.1"})}, "test circuit"
    )
    frames = {}
    for corruption in ("str", "gn@nu=1", "zero"):
        for direction in ("denoising", "noising"):
            spec = SweepSpec(corruption=corruption, site="attn_head", position="all", direction=direction)
            frames[(corruption, direction, 1, "exact")] = run_sweep(model, prompts, spec, progress=False)
            frames[(corruption, direction, 1, "attribution")] = run_attribution(
                model, prompts, spec, progress=False
            )
    for (corruption, direction, _, method), raw in frames.items():  # noising keeps its sign in the resamples
        terms = prompt_terms(light_frame(raw), ("logit_diff",))
        want = effects(raw, ("logit_diff",)).set_index("component")["effect"]
        got = dict(
            zip(
                components(raw).set_index("target").loc[terms.targets, "component"],
                aggregate(terms)[0],
                strict=True,
            )
        )
        np.testing.assert_allclose(
            [got[c] for c in want.index], want.to_numpy(), err_msg=f"{corruption} {direction} {method}"
        )
    settings = BenchSettings(n_perm=199, bootstrap=RobustnessSettings(n_boot=50))
    per_seed = {seed: score_seed(frames, circuit, settings, "toytask")[0] for seed in (0, 1)}
    out, t = score_seed(frames, circuit, settings, "toytask")
    assert t.size == 2 and len(out) == len(frames) * 3 * 3
    names = scores.score_names(t)
    key = ("str", "denoising", "logit_diff", 1, "exact", "top_k")
    assert len(per_seed[0][key].found) == 2  # top-k: k = the circuit's size
    pooled = pool_seeds({s: per_seed[s][key] for s in per_seed}, names, 0.95)
    row = pooled["row"]
    assert row["n_seeds"] == 2 and row["f1_seed_sd"] == 0.0  # the same frames on both "seeds"
    assert row["f1_low"] <= row["f1"] <= row["f1_high"] and pooled["draws"]["f1"].shape == (50,)
    rows = [{"organism": "two-layer", **dict(zip(("corruption", "direction", "metric", "window", "method", "rule"), k, strict=True)),
             "defined": True, "reason": "", **pool_seeds({0: o}, names, 0.95)["row"]} for k, o in out.items()]  # fmt: skip
    rows.append({"organism": "two-layer", "corruption": "zero", "direction": "denoising", "metric": "prob",
                 "window": 1, "method": "attribution_qk", "rule": "two_sd", "defined": False, "reason": "QK fix not defined"})  # fmt: skip
    table = pd.DataFrame(rows)
    md = table_markdown(table, "toytask")
    assert "## Not defined (1 practices)" in md and "QK fix not defined" in md
    assert (
        md.count("\n| ") == 1 + len(out) + 1 + 1
    )  # header, one row per defined practice, not-defined header + row
    png = tmp_path / "practices.png"
    practice_figure(table, [png], "two-layer")
    assert png.stat().st_size > 0
    json.dumps({k: v for k, v in row.items()})  # a row is plain data
