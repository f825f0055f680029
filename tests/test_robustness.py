"""Localization robustness on simulated prompts with known answers (issue 15).

The simulator draws per-prompt clean / corrupted runs and, for each patch target, a patched run
whose expected effect is set by construction: target t restores the fraction ``a[t]`` of the
clean-minus-corrupted logit difference (so its ratio-of-means logit-difference effect is
``a[t]``) and the fraction ``b[t]`` of the probability gap (``b < 0``: it removes the share ``-b``
of the corrupted P(answer), the §4.2 situation).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from patchbench.analysis import robustness as rb
from patchbench.analysis.robustness.explain import _summed_matrix
from patchbench.detection import detect, detect_signs
from patchbench.metrics import aggregate, effects, prompt_terms

COLS = ["run", "target", "site", "layer", "layers", "head", "position", "window", "prompt", "sample",
        "logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl"]  # fmt: skip
P_CLEAN = (0.5, 0.9)  # uniform range of the clean P(answer)
KL_CORRUPT = (1.0, 2.0)  # uniform range of the corrupted run's KL to the clean distribution


def simulate_raw(
    rng: np.random.Generator,
    n_prompts: int,
    a,
    b=None,
    *,
    corruption: str = "str",
    p_corrupt: tuple[float, float] = (0.1, 0.3),
    noise: float = 1.0,
    n_samples: int = 1,
    window: int = 1,
    site: str = "attn_head",
    task: str = "ioi",
    model: str = "m",
    n_heads: int = 4,
) -> pd.DataFrame:
    """A raw sweep frame (docs/architecture.md) with known expected effects (module docstring).

    Heads: target t is head ``t // n_heads . t % n_heads``; ``site="mlp"``: target t is layer t.
    Expected effects: logit_diff a, kl a·E[KL_*] (= 1.5 a), prob :func:`expected_prob`.
    """
    a = np.asarray(a, dtype=float)
    b = a if b is None else np.asarray(b, dtype=float)
    P, S = n_prompts, n_samples
    ld_cl = rng.normal(3.0, 1.0, P)
    p_cl = rng.uniform(*P_CLEAN, P)
    ld_c = rng.normal(-1.0, 1.0, (P, S))
    p_c = rng.uniform(*p_corrupt, (P, S))
    kl_c = rng.uniform(*KL_CORRUPT, (P, S))
    prompt = np.repeat(np.arange(P), S)
    sample = np.tile(np.arange(S), P)
    parts = [
        pd.DataFrame({"run": "clean", "target": -1, "prompt": np.arange(P), "sample": 0,
                      "logit_ans": ld_cl, "prob_ans": p_cl, "kl": 0.0}),
        pd.DataFrame({"run": "corrupted", "target": -1, "prompt": prompt, "sample": sample,
                      "logit_ans": ld_c.ravel(), "prob_ans": p_c.ravel(), "kl": kl_c.ravel()}),
    ]  # fmt: skip
    for t in range(len(a)):
        ld_pt = ld_c + a[t] * (ld_cl[:, None] - ld_c) + rng.normal(0.0, noise, (P, S))
        jitter = rng.uniform(-0.02, 0.02, (P, S)) * min(1.0, p_corrupt[0] * 10)
        if b[t] >= 0:
            p_pt = p_c + b[t] * (p_cl[:, None] - p_c) + jitter
        else:
            p_pt = p_c * (1.0 + b[t]) * (1.0 + jitter)
        kl_pt = (1.0 - a[t]) * kl_c + jitter
        layer, head = (t // n_heads, t % n_heads) if site != "mlp" else (t, -1)
        parts.append(pd.DataFrame({
            "run": "patched", "target": t, "layer": layer, "head": head, "prompt": prompt, "sample": sample,
            "logit_ans": ld_pt.ravel(), "prob_ans": p_pt.ravel(), "kl": kl_pt.ravel(),
        }))  # fmt: skip
    df = pd.concat(parts, ignore_index=True)
    df["site"] = site
    df["layer"] = df["layer"].fillna(-1).astype(np.int64)
    df["head"] = df["head"].fillna(-1).astype(np.int64)
    half = window // 2  # the engine's window span, [l - w//2, l + ceil(w/2)), clipped to the layers
    top = int(df["layer"].max()) + 1
    lo, hi = (df["layer"] - half).clip(lower=0), (df["layer"] - half + window).clip(upper=top)
    df["layers"] = np.where(df["run"] == "patched", lo.astype(str) + ":" + hi.astype(str), "")
    df["position"] = -1
    df["window"] = window
    df["logit_wrong"] = 0.0
    df["prob_wrong"] = 0.1
    df = df[COLS]
    df.attrs["patchbench"] = {"model": model, "task": task, "corruption": corruption,
                              "spec": {"position": "all", "site": site, "window": window}}  # fmt: skip
    return df


def expected_prob(b, p_corrupt: tuple[float, float]) -> np.ndarray:
    """The probability effect ``simulate_raw`` builds: b (E P_cl − E P_*) for b >= 0, b E P_* below."""
    b = np.asarray(b, dtype=float)
    return np.where(b >= 0, b * (np.mean(P_CLEAN) - np.mean(p_corrupt)), b * np.mean(p_corrupt))


def settings(**kw) -> rb.RobustnessSettings:
    return rb.RobustnessSettings(**{"n_boot": 300, **kw})


# ----------------------------------------------------------------------------- one definition
def test_aggregate_is_effects_and_a_resample_is_the_resampled_dataset():
    """Uniform weights give effects(); count weights equal effects() of the resampled prompts, so the
    logit difference's denominator is recomputed per resample (a ratio of means, not a mean of ratios)."""
    rng = np.random.default_rng(0)
    raw = simulate_raw(rng, 12, [0.0, 0.3, -0.2, 0.8], n_samples=2)
    ms = ("prob", "logit_diff", "kl", "stolfo")
    terms = prompt_terms(raw, ms)
    eff = effects(raw, ms).set_index(["metric", "component"])["effect"]
    point = aggregate(terms)
    for i, m in enumerate(ms):
        np.testing.assert_allclose(point[i], eff[m].loc[["0.0", "0.1", "0.2", "0.3"]].to_numpy(), rtol=1e-12)
    pick = rng.integers(0, 12, 12)  # one bootstrap resample, written out as a dataset
    counts = np.bincount(pick, minlength=12)
    copies = []
    for new, old in enumerate(pick):
        rows = raw[raw["prompt"] == old].copy()
        rows["prompt"] = new
        copies.append(rows)
    resampled = pd.concat(copies, ignore_index=True)
    resampled.attrs = raw.attrs
    expect = effects(resampled, ms).set_index(["metric", "component"])["effect"]
    got = aggregate(terms, counts[None, :])[0]
    for i, m in enumerate(ms):
        np.testing.assert_allclose(got[i], expect[m].loc[["0.0", "0.1", "0.2", "0.3"]].to_numpy(), rtol=1e-10)
    # a mean of per-prompt ratios differs: the test above would catch that implementation
    per_prompt = effects(resampled, ["logit_diff"], per_prompt=True).groupby("component")["effect"].mean()
    assert not np.allclose(per_prompt.to_numpy(), got[1])


def test_detect_signs_is_the_rule_of_detect():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 25))
    x[:, 3] += 4.0
    x[:, 7] -= 4.0
    frame = pd.DataFrame({
        "model": "m", "task": "t", "corruption": "str", "site": "attn_head", "window": 1, "method": "exact",
        "metric": np.repeat([f"m{i}" for i in range(40)], 25), "component": np.tile(np.arange(25), 40),
        "effect": x.ravel(),
    })  # fmt: skip
    det = detect(frame)["detected"].to_numpy().reshape(40, 25)
    signs = detect_signs(x)
    assert (det == np.where(signs > 0, "positive", np.where(signs < 0, "negative", ""))).all()
    assert (signs == 1).sum() > 20 and (signs == -1).sum() > 20  # the comparison is not vacuous
    assert (detect_signs(np.ones((3, 5))) == 0).all() and (detect_signs(np.array([[1.0]])) == 0).all()


# ----------------------------------------------------------------------------- uncertainty
def test_bootstrap_ci_coverage_is_near_nominal():
    """Fresh simulated datasets, the CI of every component and metric against its true effect.

    Prompts carry two GN noise samples, so a bootstrap over rows instead of prompts would be too
    narrow; the logit difference is a ratio of means, so a fixed denominator would be too narrow.
    Also: the intervals are as wide as the estimates' spread over datasets (the bootstrap's SE is
    the sampling SE)."""
    rng = np.random.default_rng(11)
    a = np.array([0.0, 0.1, 0.2, 0.5, -0.2, -0.05])
    truth = {"logit_diff": a, "prob": expected_prob(a, (0.1, 0.3)), "kl": a * np.mean(KL_CORRUPT)}
    levels = (0.95, 0.8)
    hits: dict[float, list] = {lv: [] for lv in levels}
    estimates, widths = [], []
    for rep in range(100):
        raw = simulate_raw(rng, 200, a, noise=1.5, n_samples=2, n_heads=6)
        grid = rb.bootstrap_grid([raw], settings(seed=rep))
        for lv in levels:
            s = rb.cell_summary(replace(grid, settings=settings(seed=rep, ci=lv)))
            true = np.array(
                [truth[m][int(c.split(".")[1])] for m, c in zip(s["metric"], s["component"], strict=True)]
            )
            hits[lv].append((s["ci_low"].to_numpy() <= true) & (true <= s["ci_high"].to_numpy()))
            if lv == 0.95:
                estimates.append(s["effect"].to_numpy())
                widths.append((s["ci_high"] - s["ci_low"]).to_numpy())
    for lv in levels:
        coverage = np.mean(hits[lv])
        per_metric = np.mean(hits[lv], axis=0).reshape(3, len(a)).mean(axis=1)
        print(f"coverage at {lv:.0%}: {coverage:.3f} (prob, logit_diff, kl: {np.round(per_metric, 3)})")
        assert abs(coverage - lv) < 0.03
        assert np.all(np.abs(per_metric - lv) < 0.05)
    # mean 95 % width against 2 x 1.96 x the SD of the estimates over the 100 datasets, per metric
    ratio = (
        (np.mean(widths, axis=0) / (2 * 1.959964 * np.std(estimates, axis=0))).reshape(3, len(a)).mean(axis=1)
    )
    print(f"CI width / (2 x 1.96 x sampling SD) per metric: {np.round(ratio, 3)}")
    assert np.all(np.abs(ratio - 1.0) < 0.15)


def _borderline(n_null: int, big: float) -> float:
    """b with b = mean + 2 SD of the noise-free effects [0]*n_null + [big, b] (fixed point)."""
    lo, hi = 0.0, big
    for _ in range(100):
        b = (lo + hi) / 2
        e = np.array([0.0] * n_null + [big, b])
        lo, hi = (b, hi) if b < e.mean() + 2 * e.std() else (lo, b)
    return b


def test_detection_probability_follows_the_distance_to_the_threshold():
    rng = np.random.default_rng(5)
    border = _borderline(22, 1.0)
    a = np.array([0.0] * 22 + [1.0, border])
    s = rb.cell_summary(rb.bootstrap_grid([simulate_raw(rng, 150, a, noise=0.8)], settings()))
    ld = s[s["metric"] == "logit_diff"].set_index("component")
    big, edge, nulls = ld.loc["5.2"], ld.loc["5.3"], ld.iloc[:22]
    assert big["p_positive"] == 1.0 and big["status"] == "positive"
    assert 0.1 < edge["p_positive"] < 0.9 and edge["status"] == "uncertain"
    assert nulls["p_positive"].max() + nulls["p_negative"].max() <= 0.1
    assert (nulls["status"] == "absent").all()
    assert ((ld["ci_low"] <= ld["effect"]) & (ld["effect"] <= ld["ci_high"])).all()
    v = rb.verdicts(s).set_index("component")
    assert v.loc["5.3", "verdict"] == "unstable" and v.loc["5.3", "point_verdict"] != "unstable"
    assert v.loc["5.2", "verdict"] == v.loc["5.2", "point_verdict"] == "robust"


def test_resamples_are_seeded_and_shared_by_the_cells():
    rng = np.random.default_rng(1)
    a = [0.0, 0.1, 0.6, 0.0, 0.05]
    raws = [simulate_raw(rng, 40, a), simulate_raw(rng, 40, a, corruption="gn")]
    g1, g2 = rb.bootstrap_grid(raws, settings(seed=4)), rb.bootstrap_grid(raws, settings(seed=4))
    np.testing.assert_array_equal(g1.draws, g2.draws)
    assert not np.array_equal(g1.draws, rb.bootstrap_grid(raws, settings(seed=5)).draws)
    # the same dataset as STR and as GN: identical draws, because both cells see the same resamples
    twin = raws[0].copy()
    twin.attrs = {"patchbench": {**raws[0].attrs["patchbench"], "corruption": "gn"}}
    g = rb.bootstrap_grid([raws[0], twin], settings())
    np.testing.assert_array_equal(g.draws[g.cells.index[g.cells["corruption"] == "STR"]],
                                  g.draws[g.cells.index[g.cells["corruption"] == "GN"]])  # fmt: skip


# ----------------------------------------------------------------------------- verdicts
def _coords(corruptions=("STR", "GN"), metrics=("prob", "logit_diff", "kl"), windows=(1,)):
    return pd.DataFrame(
        [(c, m, w) for w in windows for c in corruptions for m in metrics],
        columns=["corruption", "metric", "window"],
    )


@pytest.mark.parametrize(
    ("rule", "verdict"),
    [
        (lambda c, m, w: "positive", "robust"),
        (lambda c, m, w: "negative", "robust"),
        (lambda c, m, w: "absent", "not detected"),
        (lambda c, m, w: "positive" if c == "STR" else "absent", "depends on corruption"),
        (lambda c, m, w: "positive" if c == "STR" else "negative", "depends on corruption"),
        (lambda c, m, w: "absent" if m == "prob" else "negative", "depends on metric"),
        (lambda c, m, w: "positive" if w == 5 else "absent", "depends on window"),
        (
            lambda c, m, w: "positive" if (c, m) == ("STR", "logit_diff") else "absent",
            "depends on corruption × metric",
        ),
        (lambda c, m, w: "positive" if (c == "GN" and w > 1) else "absent", "depends on corruption × window"),
        (lambda c, m, w: "uncertain" if (c, m, w) == ("GN", "kl", 3) else "positive", "unstable"),
        (lambda c, m, w: "uncertain" if m == "prob" else "absent", "unstable"),
    ],
)
def test_verdicts_on_constructed_grids(rule, verdict):
    coords = _coords(windows=(1, 3, 5))
    status = pd.Series([rule(c, m, w) for c, m, w in coords.itertuples(index=False)])
    assert rb.verdict_of(status, coords)[0] == verdict


def test_axes_with_one_value_are_not_blamed():
    coords = _coords(corruptions=("STR",))
    status = pd.Series(["absent" if m == "prob" else "positive" for m in coords["metric"]])
    assert rb.verdict_of(status, coords) == ("depends on metric", "metric")


def test_verdicts_end_to_end_on_simulated_sweeps():
    """Head 5.0 restores under STR only, 5.1 under both; GN's effects are otherwise the same."""
    rng = np.random.default_rng(2)
    nulls = [0.0] * 20
    str_raw = simulate_raw(rng, 120, [*nulls, 0.9, 0.9], noise=0.5)
    gn_raw = simulate_raw(rng, 120, [*nulls, 0.0, 0.9], noise=0.5, corruption="gn")
    g = rb.bootstrap_grid([str_raw, gn_raw], settings())
    v = rb.verdicts(rb.cell_summary(g)).set_index("component")
    assert v.loc["5.1", "verdict"] == v.loc["5.1", "point_verdict"] == "robust"
    assert v.loc["5.0", "verdict"] == v.loc["5.0", "point_verdict"] == "depends on corruption"
    assert v.loc["5.0", "detected_in"] == "STR/P +1.00; STR/LD +1.00; STR/KL +1.00"
    assert (v.loc[[f"{i // 4}.{i % 4}" for i in range(20)], "verdict"] == "not detected").all()
    assert list(v.index[:2]) == ["5.1", "5.0"]  # robust first


# ----------------------------------------------------------------------------- explanations
def _negative_head_grid(p_str: tuple[float, float]):
    """A negative head 5.1 (a = −0.8, removes 90 % of P_*), a strong positive 5.0, 20 null heads."""
    rng = np.random.default_rng(8)
    a = [0.0] * 20 + [0.9, -0.8]
    b = [0.0] * 20 + [0.9, -0.9]
    raws = [
        simulate_raw(rng, 150, a, b, noise=0.3, p_corrupt=p_str),
        simulate_raw(rng, 150, a, b, noise=0.3, p_corrupt=(0.3, 0.5), corruption="gn"),
    ]
    return rb.bootstrap_grid(raws, settings())


def test_floor_flag_when_the_corrupted_probability_is_near_zero():
    g = _negative_head_grid(p_str=(0.001, 0.003))
    s = rb.cell_summary(g)
    ex = rb.explanations(g, s)
    floor = ex[ex["section"] == "4.2"]
    assert list(floor["component"]) == ["5.1"] and list(floor["corruption"]) == ["STR"]
    st = s[(s["component"] == "5.1") & (s["corruption"] == "STR")].set_index("metric")
    assert st.loc["logit_diff", "detected"] == "negative" and st.loc["prob", "detected"] == ""
    p_star = g.cells.set_index(["corruption", "metric"]).loc[("STR", "prob"), "p_answer_corrupted"]
    assert st.loc["prob", "effect"] >= -p_star  # the floor
    assert f"P_*(answer) = {p_star:.3g}" in floor["text"].iloc[0]
    assert f"{-p_star:.3g}" in floor["text"].iloc[0]
    # under GN P_* is large: probability detects the negative head, and nothing needs explaining
    gn = s[(s["component"] == "5.1") & (s["corruption"] == "GN")].set_index("metric")
    assert gn.loc["prob", "detected"] == "negative"
    v = rb.verdicts(s, ex).set_index("component")
    assert "§4.2 floor" in v.loc["5.1", "explanation"]


def test_no_floor_flag_when_probability_has_room():
    g = _negative_head_grid(p_str=(0.3, 0.5))
    ex = rb.explanations(g)
    assert (ex["section"] != "4.2").all()
    s = rb.cell_summary(g)
    assert (s.loc[(s["component"] == "5.1") & (s["metric"] == "prob"), "detected"] == "negative").all()


def test_gn_only_detection_is_explained_by_section_3():
    rng = np.random.default_rng(4)
    nulls = [0.0] * 20
    # 5.1 restores under both corruptions (an outlier that keeps chance detections away), 5.0 under GN only
    raws = [simulate_raw(rng, 100, [*nulls, 0.0, 0.8], noise=0.4),
            simulate_raw(rng, 100, [*nulls, 0.8, 0.8], noise=0.4, corruption="gn")]  # fmt: skip
    ex = rb.explanations(rb.bootstrap_grid(raws, settings()))
    sec3 = ex[ex["section"] == "3"]
    assert set(sec3["component"]) == {"5.0"} and set(sec3["metric"]) == {"prob", "logit_diff", "kl"}
    assert "a peak under GN" in sec3["text"].iloc[0]


def _window_grid(rng, sliding_extra: float):
    """12 MLP layers; window 3 at layer l = sum of single layers over l-1..l+1, plus ``sliding_extra`` at 6."""
    single = np.zeros(12)
    single[5:8] = [0.05, 0.08, 0.05]
    summed = np.array([single[max(0, la - 1) : la + 2].sum() for la in range(12)])
    sliding = summed.copy()
    sliding[6] += sliding_extra
    return [
        simulate_raw(rng, 150, single, site="mlp", noise=0.05, task="factual"),
        simulate_raw(rng, 150, sliding, site="mlp", noise=0.05, task="factual", window=3),
    ]


def test_sliding_window_peak_above_the_summed_layers_is_explained_by_section_5():
    ex = rb.explanations(rb.bootstrap_grid(_window_grid(np.random.default_rng(6), 0.5), settings()))
    sec5 = ex[ex["section"] == "5"]
    assert set(sec5["component"]) == {"6"} and set(sec5["window"]) == {3}
    assert "summed over the same layers" in sec5["text"].iloc[0]


def test_summed_layers_are_the_spans_the_engine_patched():
    """§5 sums over the raw frame's recorded spans; without them, over sites.window_layers: the same."""
    grid = rb.bootstrap_grid(_window_grid(np.random.default_rng(6), 0.0), settings())
    recorded = _summed_matrix(grid, 3)
    assert recorded[6].nonzero()[0].tolist() == [5, 6, 7] and recorded[0].nonzero()[0].tolist() == [0, 1]
    np.testing.assert_array_equal(recorded, _summed_matrix(replace(grid, spans=None), 3))


def test_no_section_5_when_the_window_is_the_sum_of_its_layers():
    ex = rb.explanations(rb.bootstrap_grid(_window_grid(np.random.default_rng(6), 0.0), settings()))
    assert (ex["section"] != "5").all()


# ----------------------------------------------------------------------------- agreement, circuit
def test_average_ranks_are_scipys():
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(3, 7, 40)).astype(float)  # many ties
    np.testing.assert_allclose(rb.average_ranks(x), rankdata(x, axis=-1))
    y = rng.normal(size=(2, 9))
    np.testing.assert_allclose(rb.average_ranks(y), rankdata(y, axis=-1))


def _effects_frame(effects_by_cell: dict[tuple[str, str], list[float]], names=None) -> pd.DataFrame:
    rows = []
    for (corr, metric), eff in effects_by_cell.items():
        for i, e in enumerate(eff):
            comp = names[i] if names else f"0.{i}"
            layer, head = (int(x) for x in comp.split("@")[0].split("."))
            rows.append({"model": "m", "task": "ioi", "corruption": corr, "site": "attn_head", "window": 1,
                         "method": "exact", "component": comp, "layer": layer, "head": head, "position": -1,
                         "metric": metric, "effect": e, "effect_sd": 0.0, "n_prompts": 50, "detected": "",
                         "positions": "all"})  # fmt: skip
    return pd.DataFrame(rows)


def test_pairwise_agreement_jaccard_and_spearman():
    base = [0.0] * 12
    up = [*base, 1.0, 0.0]  # detects 0.12
    other = [*base, 0.0, 1.0]  # detects 0.13
    eff = _effects_frame({("str", "prob"): up, ("str", "logit_diff"): up, ("gn", "prob"): other})
    pairs = rb.pairwise_agreement(rb.normal_grid([eff], settings())).set_index(["cell_a", "cell_b"])
    same = pairs.loc[("STR/P", "STR/LD")]
    assert same["jaccard"] == 1.0 and same["spearman"] == pytest.approx(1.0) and same["n_both"] == 1
    assert same["same"] == "corruption+window"
    diff = pairs.loc[("STR/P", "GN/P")]
    assert diff["jaccard"] == 0.0 and diff["n_a"] == 1 and diff["n_b"] == 1
    assert diff["jaccard_low"] == diff["jaccard_high"] == 0.0  # zero SD: every draw is the point


def test_known_circuit_precision_and_recall_per_class(tmp_path):
    names = [f"{la}.{h}" for la in range(4) for h in range(10)]
    e = np.zeros(40)
    e[[names.index(n) for n in ("0.0", "0.1", "1.2")]] = 1.0  # detected positive
    e[names.index("2.4")] = -1.0  # detected negative
    eff = _effects_frame({("str", "logit_diff"): list(e)}, names)
    path = tmp_path / "circuit.json"
    path.write_text(
        json.dumps({"tasks": ["ioi"], "classes": {"movers": ["0.0", [1, 2], "1.3"], "negative": ["2.4"]}})
    )
    circuit = rb.read_known_circuit(path)
    assert circuit.applies_to("ioi") and not circuit.applies_to("factual")
    sc = rb.score_circuit(rb.normal_grid([eff], settings()), circuit).set_index("class")
    assert sc.loc["all", "precision"] == pytest.approx(3 / 4) and sc.loc["all", "recall"] == pytest.approx(
        3 / 4
    )
    assert sc.loc["movers", "recall"] == pytest.approx(2 / 3) and sc.loc["negative", "recall"] == 1.0
    assert sc.loc["movers", "found"] == "0.0, 1.2"
    v = rb.verdicts(rb.cell_summary(rb.normal_grid([eff], settings())), circuit=circuit).set_index(
        "component"
    )
    assert v.loc["1.2", "classes"] == "movers" and v.loc["2.4", "classes"] == "negative"


#: An organism's circuit.json as issue 13 writes it beside the weights (patchbench.toy.circuit.write_circuit:
#: ``{**Circuit.to_dict(), "description": ...}``), here the IOI organism's.
ORGANISM_IOI = {
    "kind": "ioi",
    "heads": {
        "previous_token": ["0.0"], "duplicate_token": ["0.1"], "induction": ["1.0"], "s_inhibition": ["2.0", "2.1"],
        "name_mover": ["3.0", "3.1"], "negative_name_mover": ["3.2"],
    },
    "mlps": {},
    "description": "imposed in training by patchbench.toy.impose (SIIT-style)",
}  # fmt: skip


def test_an_organisms_circuit_json_is_scored_per_class(tmp_path):
    names = [f"{la}.{h}" for la in range(4) for h in range(8)]
    e = np.zeros(len(names))
    for n in ("2.0", "3.0", "3.1", "1.5"):  # three members and one head outside the circuit
        e[names.index(n)] = 1.0
    e[names.index("3.2")] = -1.0  # the negative name mover, detected negative
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(ORGANISM_IOI, indent=1))
    circuit = rb.read_known_circuit(path)
    assert circuit.applies_to("ioi") and circuit.applies_to("ioi_s1io") and not circuit.applies_to("factual")
    assert set(circuit.classes) == set(ORGANISM_IOI["heads"]) and len(circuit.members()) == 8
    grid = rb.normal_grid([_effects_frame({("str", "logit_diff"): list(e)}, names)], settings())
    assert (grid.signs()[0] != 0).sum() == 5
    sc = rb.score_circuit(grid, circuit).set_index("class")
    assert sc.loc["all", "precision"] == pytest.approx(4 / 5)
    assert sc.loc["all", "recall"] == pytest.approx(4 / 8)
    assert sc.loc["name_mover", "recall"] == 1.0 and sc.loc["negative_name_mover", "recall"] == 1.0
    assert sc.loc["s_inhibition", "recall"] == 0.5 and sc.loc["previous_token", "recall"] == 0.0
    assert sc.loc["all", "found"] == "2.0, 3.0, 3.1, 3.2"


def test_a_factual_organisms_outside_layers_are_no_class(tmp_path):
    """The factual organism's circuit.json: MLP roles, ``outside`` = layers trained to carry nothing."""
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps({"kind": "factual", "heads": {"subject_composition": ["1.2"]},
                                "mlps": {"subject_enrichment": [3, 4], "outside": [0, 1, 2, *range(5, 16)]}}))  # fmt: skip
    circuit = rb.read_known_circuit(path)
    assert circuit.applies_to("factual") and not circuit.applies_to("ioi")
    assert circuit.classes == {"subject_composition": {"1.2"}, "subject_enrichment": {"3", "4"}}
    e = np.zeros(16)
    e[[3, 6]] = 1.0  # one enrichment layer and one outside layer detected
    rows = [{"model": "m", "task": "factual", "corruption": "str", "site": "mlp", "window": 1, "method": "exact",
             "component": f"{la}@subject_last", "layer": la, "head": -1, "position": -1, "metric": "logit_diff",
             "effect": e[la], "effect_sd": 0.0, "n_prompts": 50, "detected": "", "positions": "subject_last"}
            for la in range(16)]  # fmt: skip
    sc = rb.score_circuit(rb.normal_grid([pd.DataFrame(rows)], settings()), circuit).set_index("class")
    assert set(sc.index) == {"all", "subject_enrichment"}  # the heads' class has no member among MLP layers
    assert sc.loc["all", "precision"] == 0.5 and sc.loc["subject_enrichment", "recall"] == 0.5
    path.write_text(json.dumps({"kind": "poetry", "heads": {}}))
    with pytest.raises(rb.RobustnessError, match="kind 'poetry'"):
        rb.read_known_circuit(path)


def test_per_position_detections_count_at_the_circuits_granularity(tmp_path):
    names = [f"{la}.{h}@{p}" for la in range(2) for h in range(4) for p in range(3)]
    e = np.zeros(len(names))
    e[names.index("1.2@2")] = 1.0
    eff = _effects_frame({("str", "logit_diff"): list(e)}, names)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"classes": {"x": ["1.2", "0.0"]}}))
    sc = rb.score_circuit(rb.normal_grid([eff], settings()), rb.read_known_circuit(path)).set_index("class")
    assert sc.loc["x", "recall"] == 0.5 and sc.loc["all", "precision"] == 1.0


def test_wang_et_al_circuit_file_reads_as_the_full_ioi_circuit(root):
    c = rb.read_known_circuit(root / "data" / "ioi_heads_gpt2_small.json")
    assert c.applies_to("ioi") and c.applies_to("ioi_abc") and not c.applies_to("greater_than")
    assert {"9.9", "10.0", "9.6"} == c.classes["name_mover"] and "11.10" in c.classes["negative_name_mover"]
    assert len(c.members()) == 26


def test_a_circuit_of_another_model_is_refused_with_a_reason(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"classes": {"x": ["9.9"]}}))
    eff = _effects_frame({("str", "prob"): [0.0, 1.0, 0.0]})
    with pytest.raises(rb.RobustnessError, match="another model or site"):
        rb.score_circuit(rb.normal_grid([eff], settings()), rb.read_known_circuit(path))


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_problem(tmp_path):
    rng = np.random.default_rng(0)
    a = [0.0, 0.5, 0.1]
    one = simulate_raw(rng, 10, a)
    other_task = simulate_raw(rng, 10, a, task="ioi_abc", corruption="gn")
    with pytest.raises(rb.RobustnessError, match="mix several tasks.*b.parquet: 'ioi_abc'"):
        rb.bootstrap_grid([one, other_task], settings(), names=["a.parquet", "b.parquet"])
    with pytest.raises(rb.RobustnessError, match="two inputs give cell STR / prob / window 1"):
        rb.bootstrap_grid([one, one], settings())
    fewer = simulate_raw(rng, 10, a[:2], corruption="gn")
    with pytest.raises(rb.RobustnessError, match="components differ"):
        rb.bootstrap_grid([one, fewer], settings())
    with pytest.raises(rb.RobustnessError, match="no patched rows"):
        rb.bootstrap_grid([one[one["run"] != "patched"]], settings())
    with pytest.raises(ValueError, match="at least 10 resamples"):
        rb.RobustnessSettings(n_boot=3)
    with pytest.raises(ValueError, match="must be below"):
        rb.RobustnessSettings(robust=0.1, unstable=0.5)
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"by_task": {"ioi": {"x": ["0.1"]}}}))
    with pytest.raises(rb.RobustnessError, match="task 'factual' has none"):
        rb.read_known_circuit(bad, "factual")
    bad.write_text(json.dumps({"classes": {"x": [[1, 2, 3]]}}))
    with pytest.raises(rb.RobustnessError, match=r"\[layer, head\]"):
        rb.read_known_circuit(bad)


def test_recommendations_say_when_the_2sd_rule_cannot_detect_anything():
    """With n components the largest |z| is sqrt(n - 1): five components can never pass 2 SD."""
    from patchbench.analysis.robustness_report import analyse, recommendations

    rng = np.random.default_rng(9)
    for n, possible in ((5, False), (6, True)):
        a = [0.0] * (n - 1) + [0.9]
        res = analyse("e", rb.bootstrap_grid([simulate_raw(rng, 60, a, noise=0.2)], settings()))
        said = any(r.startswith("Detection is impossible") for r in recommendations(res))
        assert said is not possible
        assert bool((res.cells["detected"] != "").any()) is possible
