"""claims.csv: each claim from synthetic frames with known answers, by the paper's definitions;
ill-conditioned quantities -> 'cannot be judged'; missing inputs -> 'not run'; scope by model."""

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
    middle_layers,
    split_scope,
    write_claims,
)
from patchbench.analysis.positions import category_effects, rome_position_categories
from patchbench.analysis.windows import summed_single_layers


def _by_quantity(rows) -> dict[str, dict]:
    return {r["quantity"]: r for r in rows}


def _starting(rows, prefix: str) -> dict:
    found = [r for r in rows if r["quantity"].startswith(prefix)]
    assert len(found) == 1, [r["quantity"] for r in rows]
    return found[0]


def _baselines(model="gpt2-xl", task="factual", **ld) -> pd.DataFrame:
    """Baselines per corruption: ld[c] = (clean LD, corrupted LD); P(answer) 0.5 clean, 0.1 corrupted."""
    return pd.DataFrame([dict(model=model, task=task, corruption=c, clean_logit_diff=a, corrupted_logit_diff=b,
                              clean_prob_ans=0.5, corrupted_prob_ans=0.1) for c, (a, b) in ld.items()])  # fmt: skip


def test_gn_str_peak_ratio_by_the_papers_definition():
    curves = {}
    for w, (gn, st) in {1: (0.4, 0.2), 5: (0.9, 0.15)}.items():
        for metric in ("prob", "logit_diff"):
            curves[("gn", metric, w)] = bump(gn)
            curves[("str", metric, w)] = bump(st)
    rows = claims_gn_str_peak(layer_effects(curves))
    r1 = _starting(rows, "Probability, window 1: GN peak / STR peak")
    assert r1["value"] == pytest.approx(2.0) and r1["holds"] == "yes" and r1["paper_value"] == "2-5"
    assert "§3.1" in r1["paper_source"] and "GPT-2 XL" in r1["paper_source"]
    assert "peak value of GN to be 2×–5× higher than STR" in r1["rule"]
    r5 = _starting(rows, "Logit difference, window 5: GN peak / STR peak")
    assert r5["value"] == pytest.approx(6.0) and r5["holds"] == "yes"
    low = claims_gn_str_peak(layer_effects({("gn", "prob", 1): bump(0.1), ("str", "prob", 1): bump(0.2)}))
    assert low[0]["value"] == pytest.approx(0.5) and low[0]["holds"] == "no"
    only_str = claims_gn_str_peak(layer_effects({("str", "prob", 1): bump(0.2)}))
    assert only_str[0]["status"] == "not run" and only_str[0]["holds"] == ""


def test_gn_str_peak_cannot_be_judged_when_ill_conditioned():
    curves = {("gn", "logit_diff", 1): bump(0.4), ("str", "logit_diff", 1): bump(0.2),
              ("gn", "prob", 1): bump(0.4), ("str", "prob", 1): bump(0.005)}  # fmt: skip
    # GN lowers the LD from 10 to 9.5: the normalised LD divides by 0.5 = 5% of the clean value
    rows = claims_gn_str_peak(layer_effects(curves), _baselines(STR=(10.0, -10.0), GN=(10.0, 9.5)))
    ld = _starting(rows, "Logit difference, window 1")
    assert ld["status"] == "cannot be judged" and ld["holds"].startswith("cannot be judged: GN lowers")
    assert ld["value"] == pytest.approx(2.0)  # the number is still reported
    # the STR probability peak 0.005 lies within 2 standard errors (0.05 / sqrt(50)) of 0
    prob = _starting(rows, "Probability, window 1")
    assert prob["status"] == "cannot be judged" and "2 standard errors" in prob["holds"]
    fine = claims_gn_str_peak(layer_effects(curves), _baselines(STR=(10.0, -10.0), GN=(10.0, 5.0)))
    assert _starting(fine, "Logit difference, window 1")["holds"] == "yes"


def test_sliding_vs_summed_at_the_middle_layers_is_reported_not_judged():
    single = bump(0.1)
    summed3 = summed_single_layers(layer_effects({("gn", "prob", 1): single}), 3)
    # summed by hand: layer 6 sums layers 5, 6, 7 (window_layers: [l - 1, l + 2))
    assert summed3.set_index("layer").loc[6, "effect"] == pytest.approx(single[5:8].sum())
    assert summed3.set_index("layer").loc[0, "effect"] == pytest.approx(
        single[0:2].sum()
    )  # truncated at the edge
    sliding = 1.5 * summed3.sort_values("layer")["effect"].to_numpy()
    sliding[0] = 10.0  # a peak outside the middle layers does not count
    rows = claims_sliding_summed(layer_effects({("gn", "prob", 1): single, ("gn", "prob", 3): sliding}))
    assert len(rows) == 1 and rows[0]["value"] == pytest.approx(1.5)
    assert rows[0]["holds"] == "" and rows[0]["status"] == "ok"  # the ratio is reported, no verdict
    assert rows[0]["paper_value"] == "1.40" and "Fig. 5" in rows[0]["paper_source"]
    assert (
        "layers 3-8" in rows[0]["quantity"]
        and "maximum patching effect at the middle MLP layers" in rows[0]["rule"]
    )
    assert list(middle_layers(12)) == list(range(3, 9)) and list(middle_layers(48)) == list(range(12, 36))
    assert claims_sliding_summed(layer_effects({("gn", "prob", 3): sliding}))[0]["status"] == "not run"
    flat = claims_sliding_summed(layer_effects({("gn", "prob", 1): 0 * single, ("gn", "prob", 3): sliding}))
    assert flat[0]["status"] == "cannot be judged" and "summed peak" in flat[0]["holds"]


def _head_frame(model, task, corruption, effects: dict[str, np.ndarray], detected: dict[str, dict[int, str]]):
    recs = []
    for metric, eff in effects.items():
        for k, e in enumerate(eff):
            recs.append(dict(model=model, task=task, corruption=corruption, site="attn_head", window=1, method="exact",
                             component=f"{k // 12}.{k % 12}", layer=k // 12, head=k % 12, position=-1, metric=metric,
                             effect=e, effect_sd=0.0, n_prompts=2, detected=detected.get(metric, {}).get(k, "")))  # fmt: skip
    return pd.DataFrame(recs)


def test_p_io_from_the_baselines():
    base = pd.concat([_baselines("gpt2", "ioi", STR=(3.0, -3.0), GN=(3.0, 1.0)),
                      _baselines("gpt2", "ioi_abc", STR=(3.0, 0.0))])  # fmt: skip
    base.loc[base["corruption"] == "GN", "corrupted_prob_ans"] = 0.25
    base.loc[base["task"] == "ioi_abc", "corrupted_prob_ans"] = 1e-5
    rows = _by_quantity(claims_p_io(base, "gpt2"))
    assert rows["P(IO) in the clean run"]["value"] == pytest.approx(0.5)
    assert rows["P(IO) in the clean run"]["paper_value"] == "0.481"
    assert rows["P(IO) in the STR corrupted run"]["value"] == pytest.approx(0.1)
    assert rows["P(IO) in the STR corrupted run"]["paper_value"] == "0.03"
    assert rows["P(IO) in the GN corrupted run"]["value"] == pytest.approx(0.25)
    abc = rows["P(IO) in the ABC corrupted run"]
    assert abc["value"] == pytest.approx(1e-5) and abc["holds"] == "" and abc["paper_value"] == "5e-4"
    assert rows["P_GN(IO) / P_STR(IO)"]["holds"] == "yes"
    assert rows["P(IO) in the GN corrupted run"]["status"] == "ok"
    assert (
        _by_quantity(claims_p_io(base[base["task"] == "ioi"], "gpt2"))["P(IO) in the ABC corrupted run"][
            "status"
        ]
        == "not run"
    )


def test_the_papers_negative_head_case():
    """§4.2: a known NNM that logit difference detects and probability leaves inside 2 SD (as 11.10)."""
    rng = np.random.default_rng(0)
    prob = rng.normal(0.003, 0.015, 144)
    prob[127] = -0.022  # "11.10 receives -0.022"
    ld = rng.normal(0, 0.01, 144)
    ld[[127, 124]] = -0.5
    str_eff = _head_frame("gpt2", "ioi", "str", {"prob": prob, "logit_diff": ld},
                          {"logit_diff": {127: "negative", 124: "negative"}, "prob": {124: "negative"}})  # fmt: skip
    abc_eff = _head_frame("gpt2", "ioi_abc", "str", {"prob": prob, "logit_diff": ld},
                          {"logit_diff": {127: "negative"}})  # fmt: skip
    base = pd.concat(
        [_baselines("gpt2", "ioi", STR=(3.0, -3.0)), _baselines("gpt2", "ioi_abc", STR=(3.0, 0.0))]
    )
    base["corrupted_prob_ans"] = [0.03, 5e-4]
    nnm = ["10.4", "10.7"]  # components 124 and 127
    rows = claims_negative_heads({"STR": str_eff, "ABC": abc_eff}, base, "gpt2", nnm)
    q = _by_quantity(rows)
    thr = prob.mean() - 2 * prob.std(ddof=0)
    assert q["STR: negative threshold mu - 2 SD (probability)"]["value"] == pytest.approx(thr)
    assert q["STR: negative threshold mu - 2 SD (probability)"]["paper_value"] == "-0.027"
    assert q["STR: probability floor -P_*(IO)"]["value"] == pytest.approx(-0.03)
    room = _starting(rows, "STR: (floor - threshold) / SD")
    assert room["value"] == pytest.approx((-0.03 - thr) / prob.std(ddof=0))
    assert room["holds"] == ("yes" if -0.03 > thr - 1.0 * prob.std(ddof=0) else "no")
    assert "threshold ours" in room["rule"].lower()
    missed = _starting(rows, "STR: NNMs logit difference detects and probability overlooks: 10.7")
    assert missed["value"] == 1 and missed["holds"] == "yes" and missed["paper_value"] == "1 (11.10)"
    sd = _starting(rows, "STR: probability effect of 10.7 in SDs")
    assert sd["value"] == pytest.approx((-0.022 - prob.mean()) / prob.std(ddof=0))
    abc = _starting(rows, "ABC: probability detects no NNM and logit difference detects one or more")
    assert abc["holds"] == "yes"
    assert _starting(rows, "GN: known negative name movers")["status"] == "not run"
    unknown = claims_negative_heads({"STR": str_eff}, base, "gpt2", [])
    assert _starting(unknown, "STR: known negative name movers")["status"] == "cannot be judged"


def test_last_middle_ratio_per_metric_and_corruption():
    rows = []
    for corr, (prob_last, ld_last) in {"str": (6.0, 2.0), "gn": (1.0, 3.0)}.items():
        for window in (1, 5):
            for metric, last in (("prob", prob_last), ("logit_diff", ld_last)):
                for layer in range(4):
                    for category, effect in (
                        ("Last subject token", last / 4),
                        ("Middle subject tokens", 0.5),
                    ):
                        rows.append(dict(model="m", corruption=corr, window=window, layer=layer, category=category,
                                         metric=metric, effect=effect))  # fmt: skip
    got = claims_last_middle(pd.DataFrame(rows))
    q = _by_quantity(got)
    assert q["STR, window 1: Probability last / middle subject-token ratio"]["value"] == pytest.approx(3.0)
    assert (
        q["STR, window 1: Probability last / middle subject-token ratio"]["paper_value"] == ""
    )  # window 5 only
    assert q["STR, window 5: Probability last / middle subject-token ratio"]["paper_value"] == "4.33"
    assert q["GN, window 5: Logit difference last / middle subject-token ratio"]["paper_value"] == "0.77"
    assert q["STR, window 1: Logit difference last / middle subject-token ratio"]["value"] == pytest.approx(
        1.0
    )
    assert q["STR, window 1: probability ratio - logit-difference ratio"]["holds"] == "yes"
    assert q["GN, window 1: probability ratio - logit-difference ratio"]["holds"] == "no"
    assert "sum of effects (over all layers) on the last subject token" in got[0]["rule"]
    # GN barely lowers the logit difference: the LD ratio and the comparison cannot be judged
    base = _baselines("m", "factual", STR=(5.0, -5.0), GN=(5.0, 4.8))
    q = _by_quantity(claims_last_middle(pd.DataFrame(rows).assign(task="factual"), base))
    assert q["GN, window 1: probability ratio - logit-difference ratio"]["status"] == "cannot be judged"
    assert q["GN, window 1: Probability last / middle subject-token ratio"]["status"] == "ok"
    assert q["STR, window 1: probability ratio - logit-difference ratio"]["holds"] == "yes"


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
            val = {(0, 3): 0.5, (1, 1): 0.6}.get((i, p), 0.2)  # the last subject token restores more
            rows.append(base | dict(run="patched", target=p, layer=0, layers="0:1", position=p, prompt=i,
                                    logit_ans=4.0 * (val - 0.1) / 0.7, prob_ans=val, kl=1.0))  # fmt: skip
    eff = category_effects(pd.DataFrame(rows).assign(model="m", corruption="str"), cats)
    get = eff.set_index(["metric", "category"])["effect"]
    assert get[("prob", "Last subject token")] == pytest.approx(0.45)
    sd = eff.set_index(["metric", "category"])["effect_sd"]
    assert sd[("prob", "Last subject token")] == pytest.approx(np.std([0.4, 0.5], ddof=1))
    assert sd[("logit_diff", "Last subject token")] == pytest.approx(np.std([0.4 / 0.7, 0.5 / 0.7], ddof=1))
    assert get[("prob", "Middle subject tokens")] == pytest.approx(0.1)
    assert get[("logit_diff", "Last subject token")] == pytest.approx(0.45 / 0.7)
    assert get[("kl", "Last token")] == pytest.approx(1.0)
    assert eff.set_index(["metric", "category"])["n_prompts"][("prob", "Middle subject tokens")] == 1


def test_nm_attention_and_si_recovery():
    rec = pd.DataFrame(
        {"model": "gpt2", "corruption": ["str", "gn"], "metric": "logit_diff", "effect": [0.95, 0.3]}
    )
    rows = _by_quantity(claims_nm_attention(nm_attention_frame(), rec, model="gpt2"))
    clean = rows["clean: NM attention to IO"]
    assert clean["value"] == pytest.approx(0.6) and clean["paper_value"] == "0.58" and clean["holds"] == ""
    switched = rows["STR: NM attention to S1 / clean NM attention to IO (roles switched)"]
    assert switched["value"] == pytest.approx(0.58 / 0.6) and "Threshold ours" in switched["rule"]
    share = rows["GN: IO's share of the NM attention to IO + S1"]
    assert share["value"] == pytest.approx(0.5) and share["holds"] == "yes" and share["paper_value"] == "0.55"
    assert (
        rows["GN: NM attention to IO"]["paper_value"] == "0.26"
        and rows["GN: NM attention to S1"]["paper_value"] == "0.21"
    )
    assert rows["patched NM attention to IO, distance to clean: GN - STR"]["value"] == pytest.approx(
        0.3 - 0.05
    )
    diff = rows["recovered logit difference, STR - GN"]
    assert diff["value"] == pytest.approx(0.65) and diff["holds"] == "yes"
    restored = rows["STR: normalised logit difference with the S-inhibition values restored"]
    assert restored["holds"] == "yes" and restored["paper_value"] == "1.04"
    assert (
        rows["GN: normalised logit difference with the S-inhibition values restored"]["paper_value"] == "0.49"
    )
    # GN lowers the logit difference by 2%: its recovery and the comparison cannot be judged
    base = _baselines("gpt2", "ioi", STR=(4.0, -4.0), GN=(4.0, 3.92))
    rows = _by_quantity(claims_nm_attention(nm_attention_frame(), rec, base, model="gpt2"))
    assert rows["recovered logit difference, STR - GN"]["status"] == "cannot be judged"
    assert (
        "2.0% of it" in rows["GN: normalised logit difference with the S-inhibition values restored"]["holds"]
    )
    assert rows["STR: normalised logit difference with the S-inhibition values restored"]["holds"] == "yes"
    missing = claims_nm_attention(None, None)
    assert all(r["status"] == "not run" for r in missing) and len(missing) == 2


def test_every_row_quotes_the_paper_and_names_its_source():
    curves = {
        (c, m, w): bump(h)
        for c, h in (("gn", 0.4), ("str", 0.1))
        for m in ("prob", "logit_diff")
        for w in (1, 3)
    }
    rec = pd.DataFrame(
        {"model": "gpt2", "corruption": ["str", "gn"], "metric": "logit_diff", "effect": [0.95, 0.3]}
    )
    claims = build_claims(
        factual_last=layer_effects(curves), nm_attention=nm_attention_frame(), nm_recovery=rec
    )
    ok = claims[claims["status"] != "not run"]
    assert len(ok) > 10
    assert ok["rule"].str.contains("§").all() and ok["rule"].str.contains('"').all()
    assert (ok.loc[ok["paper_value"] != "", "paper_source"] != "").all()
    assert (ok["paper_value"] != "").sum() >= 8


def test_build_claims_with_nothing_run_writes_complete_files(tmp_path):
    claims = build_claims()
    assert list(claims.columns) == list(CLAIM_COLUMNS)
    assert (claims["status"] == "not run").all()
    assert set(claims["section"]) == {"3.1", "3.2", "4.1", "4.2", "5"}
    paths = write_claims(claims, tmp_path / "claims.csv", tmp_path / "claims_applied.csv")
    back = pd.read_csv(paths[0], keep_default_na=False)
    assert len(back) == len(claims) and len(pd.read_csv(paths[1])) == 0
    full = build_claims(
        factual_last=layer_effects({("gn", "prob", 1): bump(0.4), ("str", "prob", 1): bump(0.1)})
    )
    assert full.loc[full["section"] == "3.1", "value"].iloc[0] == pytest.approx(4.0)


def test_paper_claims_on_other_models_go_to_the_applied_table(tmp_path):
    curves = {("gn", "prob", 1): bump(0.4), ("str", "prob", 1): bump(0.1)}
    effects = pd.concat([layer_effects(curves, model="xl"), layer_effects(curves, model="mine")])
    claims = build_claims(factual_last=effects, hub_names={"xl": "gpt2-xl", "mine": "/home/me/my-model"})
    scope = claims[claims["section"] == "3.1"].set_index("model")["scope"]
    assert scope["xl"] == "paper" and scope["mine"] == "paper claim, applied to mine"
    paper, applied = split_scope(claims)
    assert set(paper.loc[paper["section"] == "3.1", "model"]) == {"xl"}
    assert set(applied["model"]) == {"mine"} and (applied["scope"] == "paper claim, applied to mine").all()
    # a section run only on other models reads 'not run' in the paper's table, pointing at the applied one
    only_mine = build_claims(factual_last=layer_effects(curves, model="mine"), hub_names={"mine": None})
    paper, applied = split_scope(only_mine)
    gap = paper[paper["section"] == "3.1"]
    assert (
        len(gap) == 1 and gap["status"].iloc[0] == "not run" and "applied to mine" in gap["quantity"].iloc[0]
    )


def test_build_claims_computes_each_claim_per_model():
    base = pd.concat([_baselines("a", "ioi", STR=(3.0, -3.0)), _baselines("b", "ioi", STR=(3.0, -3.0))])
    base["corrupted_prob_ans"] = [0.1, 0.3]
    eff = pd.concat([_head_frame(m, "ioi", "str", {"prob": np.linspace(-1, 1, 144), "logit_diff": np.zeros(144)}, {})
                     for m in ("a", "b")])  # fmt: skip
    claims = build_claims(ioi_effects={"STR": eff}, baselines=base)
    p = claims[claims["quantity"] == "P(IO) in the STR corrupted run"].set_index("model")["value"]
    assert p.to_dict() == pytest.approx({"a": 0.1, "b": 0.3})
    assert (claims.loc[claims["section"] == "3.1", "status"] == "not run").all()
