"""claims.csv: each claim from synthetic frames with known answers; missing inputs -> 'not run'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import bump, layer_effects, nm_attention_frame
from patchbench.analysis.claims import (
    CLAIM_COLUMNS,
    build_claims,
    claims_gn_str_peak,
    claims_last_middle,
    claims_negative_heads,
    claims_nm_attention,
    claims_p_io,
    claims_sliding_summed,
    write_claims,
)
from patchbench.analysis.positions import category_effects, rome_position_categories
from patchbench.analysis.windows import summed_single_layers


def _by_quantity(rows) -> dict[str, dict]:
    return {r["quantity"]: r for r in rows}


def test_gn_twice_as_tall_as_str_gives_ratio_two():
    curves = {}
    for w, (gn, st) in {1: (0.4, 0.2), 5: (0.9, 0.15)}.items():
        for metric in ("prob", "logit_diff"):
            curves[("gn", metric, w)] = bump(gn)
            curves[("str", metric, w)] = bump(st)
    rows = _by_quantity(claims_gn_str_peak(layer_effects(curves)))
    r1 = rows["gpt2-xl, Probability, window 1: GN peak / STR peak"]
    assert r1["value"] == pytest.approx(2.0) and r1["holds"] == "yes" and r1["paper_value"] == "2-5"
    r5 = rows["gpt2-xl, Logit difference, window 5: GN peak / STR peak"]
    assert r5["value"] == pytest.approx(6.0) and r5["holds"] == "yes"
    low = claims_gn_str_peak(layer_effects({("gn", "prob", 1): bump(0.1), ("str", "prob", 1): bump(0.2)}))
    assert low[0]["value"] == pytest.approx(0.5) and low[0]["holds"] == "no"
    only_str = claims_gn_str_peak(layer_effects({("str", "prob", 1): bump(0.2)}))
    assert only_str[0]["status"] == "not run" and only_str[0]["holds"] == ""


def test_sliding_vs_summed_ratio_from_known_curves():
    single = bump(0.1)
    summed3 = summed_single_layers(layer_effects({("gn", "prob", 1): single}), 3)
    # summed by hand: layer 6 sums layers 5, 6, 7 (window_layers: [l - 1, l + 2))
    assert summed3.set_index("layer").loc[6, "effect"] == pytest.approx(single[5:8].sum())
    assert summed3.set_index("layer").loc[0, "effect"] == pytest.approx(
        single[0:2].sum()
    )  # truncated at the edge
    sliding = 1.5 * summed3.sort_values("layer")["effect"].to_numpy()
    rows = claims_sliding_summed(layer_effects({("gn", "prob", 1): single, ("gn", "prob", 3): sliding}))
    assert len(rows) == 1 and rows[0]["value"] == pytest.approx(1.5) and rows[0]["holds"] == "yes"
    assert claims_sliding_summed(layer_effects({("gn", "prob", 3): sliding}))[0]["status"] == "not run"


def _raw(prompts_probs: dict[str, list[float]], samples=1, ld=(3.0, 0.0)) -> pd.DataFrame:
    rows = []
    for run, probs in prompts_probs.items():
        for i, p in enumerate(probs):
            for s in range(samples):
                rows.append(dict(run=run, target=-1, site="attn_head", layer=-1, layers="", head=-1, position=-1, window=1,
                                 prompt=i, sample=s, logit_ans=ld[0] if run == "clean" else ld[1], logit_wrong=0.0,
                                 prob_ans=p, prob_wrong=0.1, kl=0.0))  # fmt: skip
    return pd.DataFrame(rows)


def test_p_io_and_negative_head_floor():
    raws = {
        "STR": _raw({"clean": [0.6, 0.4], "corrupted": [0.05, 0.07]}),
        "GN": _raw({"clean": [0.6, 0.4], "corrupted": [0.2, 0.3]}, samples=3),
        "ABC": _raw({"clean": [0.6, 0.4], "corrupted": [0.001, 0.001]}),
    }
    rows = _by_quantity(claims_p_io(raws))
    assert rows["P(IO) in the clean run"]["value"] == pytest.approx(0.5)
    assert rows["P(IO) in the STR corrupted run"]["value"] == pytest.approx(0.06)
    assert rows["P(IO) in the GN corrupted run"]["value"] == pytest.approx(0.25)
    assert rows["P_GN(IO) / P_STR(IO)"]["holds"] == "yes"
    assert rows["P_ABC(IO) - P_STR(IO)"]["holds"] == "yes"
    assert claims_p_io({"STR": raws["STR"]})[-1]["status"] == "not run"  # GN and ABC missing

    # head effects: 144 heads, prob effects mean 0, SD s; one head at -3 SD detected negatively by LD only
    rng = np.random.default_rng(0)
    recs = []
    for metric in ("prob", "logit_diff"):
        eff = rng.normal(0, 0.01, 144)
        for k in range(144):
            det = "negative" if (metric == "logit_diff" and k == 5) else ""
            recs.append(dict(model="gpt2", task="ioi", corruption="str", site="attn_head", window=1, method="exact",
                             component=f"{k // 12}.{k % 12}", layer=k // 12, head=k % 12, position=-1, metric=metric,
                             effect=eff[k], effect_sd=0.0, n_prompts=2, detected=det))  # fmt: skip
    effects = pd.DataFrame(recs)
    rows = _by_quantity(claims_negative_heads({"STR": effects, "ABC": effects.assign(task="ioi_abc")}, raws))
    prob = effects[effects["metric"] == "prob"]["effect"]
    thr = prob.mean() - 2 * prob.std(ddof=0)
    assert rows["STR: negative detection threshold mu - 2 SD (probability)"]["value"] == pytest.approx(thr)
    assert rows["STR: probability floor -P_*(IO)"]["value"] == pytest.approx(-0.06)
    assert (
        rows["STR: (floor - threshold) / SD"]["holds"] == "no"
    )  # -0.06 is ~4 SD below a threshold of ~-0.02
    assert (
        rows["ABC: (floor - threshold) / SD"]["holds"] == "yes"
    )  # -0.001 lies above it: no negative detection possible
    neg = [q for q in rows if q.startswith("STR: negative heads detected")][0]
    assert rows[neg]["value"] == -1 and rows[neg]["holds"] == "yes"
    abc = [q for q in rows if q.startswith("ABC: negative heads detected")][0]
    assert rows[abc]["holds"] == "yes"
    assert rows["GN: negative heads detected, probability vs logit difference"]["status"] == "not run"


def test_last_middle_ratio_per_metric_and_corruption():
    rows = []
    for corr, (prob_last, ld_last) in {"str": (6.0, 2.0), "gn": (1.0, 3.0)}.items():
        for metric, last in (("prob", prob_last), ("logit_diff", ld_last)):
            for layer in range(4):
                for category, effect in (("Last subject token", last / 4), ("Middle subject tokens", 0.5)):
                    rows.append(
                        dict(
                            model="m",
                            corruption=corr,
                            window=1,
                            layer=layer,
                            category=category,
                            metric=metric,
                            effect=effect,
                        )
                    )
    got = _by_quantity(claims_last_middle(pd.DataFrame(rows)))
    assert got["m, STR, 1: Probability last / middle subject-token ratio"]["value"] == pytest.approx(3.0)
    assert got["m, STR, 1: Logit difference last / middle subject-token ratio"]["value"] == pytest.approx(1.0)
    assert got["m, STR, 1: probability ratio - logit-difference ratio"]["holds"] == "yes"
    assert got["m, GN, 1: probability ratio - logit-difference ratio"]["holds"] == "no"


def test_category_effects_from_a_raw_each_position_sweep():
    # prompt 0: subject [1, 3], last token 5 -> middle = {2}; prompt 1: subject [0, 1], last 3 -> no middle
    cats = rome_position_categories(np.array([1, 0]), np.array([3, 1]), np.array([5, 3]))
    c0 = cats[cats["prompt"] == 0].groupby("category")["position"].apply(list).to_dict()
    assert c0 == {"First subject token": [1], "Middle subject tokens": [2], "Last subject token": [3],
                  "First subsequent token": [4], "Last token": [5]}  # fmt: skip
    c1 = cats[cats["prompt"] == 1].groupby("category")["position"].apply(list).to_dict()
    assert (
        "Middle subject tokens" not in c1 and c1["First subsequent token"] == [2] and c1["Last token"] == [3]
    )
    rows = []
    base = dict(
        target=-1,
        site="mlp",
        layer=-1,
        layers="",
        head=-1,
        position=-1,
        window=1,
        sample=0,
        logit_wrong=0.0,
        prob_wrong=0.0,
    )
    for i in (0, 1):
        rows.append(base | dict(run="clean", prompt=i, logit_ans=4.0, prob_ans=0.8, kl=0.0))
        rows.append(base | dict(run="corrupted", prompt=i, logit_ans=0.0, prob_ans=0.1, kl=2.0))
    for i, length in ((0, 6), (1, 4)):
        for p in range(length):
            val = 0.5 if (i, p) in {(0, 3), (1, 1)} else 0.2  # the last subject token restores more
            rows.append(base | dict(run="patched", target=p, layer=0, layers="0:1", position=p, prompt=i,
                                    logit_ans=4.0 * (val - 0.1) / 0.7, prob_ans=val, kl=1.0))  # fmt: skip
    eff = category_effects(pd.DataFrame(rows).assign(model="m", corruption="str"), cats)
    get = eff.set_index(["metric", "category"])["effect"]
    assert get[("prob", "Last subject token")] == pytest.approx(0.4)
    assert get[("prob", "Middle subject tokens")] == pytest.approx(0.1)
    assert get[("logit_diff", "Last subject token")] == pytest.approx((0.5 - 0.1) / 0.7)
    assert get[("kl", "Last token")] == pytest.approx(1.0)
    assert eff.set_index(["metric", "category"])["n_prompts"][("prob", "Middle subject tokens")] == 1


def test_nm_attention_and_si_recovery():
    rec = pd.DataFrame(
        {"model": "gpt2", "corruption": ["str", "gn"], "metric": "logit_diff", "effect": [0.95, 0.3]}
    )
    rows = _by_quantity(claims_nm_attention(nm_attention_frame(), rec))
    assert (
        rows["clean: NM attention to IO"]["value"] == pytest.approx(0.6)
        and rows["clean: NM attention to IO"]["holds"] == "yes"
    )
    assert rows["STR: attention to S1 / clean attention to IO (roles switched)"]["value"] == pytest.approx(
        0.58 / 0.6
    )
    assert rows["GN: share of IO in the attention to IO + S1"]["value"] == pytest.approx(0.5)
    assert rows["GN: share of IO in the attention to IO + S1"]["holds"] == "yes"
    assert rows["patched NM attention: distance to clean, GN - STR"]["value"] == pytest.approx(0.3 - 0.05)
    assert rows["recovered logit difference, STR - GN"]["value"] == pytest.approx(0.65)
    assert rows["recovered logit difference, STR - GN"]["holds"] == "yes"
    assert rows["STR: normalised logit difference with S-inhibition values restored"]["holds"] == "yes"
    missing = claims_nm_attention(None, None)
    assert all(r["status"] == "not run" for r in missing) and len(missing) == 2


def test_build_claims_with_nothing_run_writes_a_complete_csv(tmp_path):
    claims = build_claims()
    assert list(claims.columns) == list(CLAIM_COLUMNS)
    assert (claims["status"] == "not run").all()
    assert set(claims["section"]) == {"3.1", "3.2", "4.1", "4.2", "5"}
    path = write_claims(claims, tmp_path / "claims.csv")
    back = pd.read_csv(path, keep_default_na=False)
    assert len(back) == len(claims)
    full = build_claims(
        factual_last=layer_effects({("gn", "prob", 1): bump(0.4), ("str", "prob", 1): bump(0.1)})
    )
    assert full.loc[full["section"] == "3.1", "value"].iloc[0] == pytest.approx(4.0)


def test_build_claims_computes_each_claim_per_model():
    raw_a = _raw({"clean": [0.6], "corrupted": [0.1]}).assign(model="a")
    raw_b = _raw({"clean": [0.6], "corrupted": [0.3]}).assign(model="b")
    claims = build_claims(ioi_raws={"STR": pd.concat([raw_a, raw_b])})
    p = claims[claims["quantity"] == "P(IO) in the STR corrupted run"].set_index("model")["value"]
    assert p.to_dict() == pytest.approx({"a": 0.1, "b": 0.3})
    assert (claims.loc[claims["section"] == "3.1", "status"] == "not run").all()
