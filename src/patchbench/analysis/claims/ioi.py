"""The IOI claims of one model: §3.2 (name movers under GN) and §4.2 (probability overlooks negative heads).

Inputs: the clean / corrupted baselines (P(IO) and the logit difference of the ``ioi`` and
``ioi_abc`` tasks, :data:`~patchbench.analysis.claims.core.BASELINE_COLUMNS`), the head effects
of the STR, GN and ABC sweeps (single window), the model's known negative name movers (the head
classes Table 1 uses), and the §3.2 attention and recovery frames of
:mod:`patchbench.analysis.nm_attention`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from patchbench.analysis.claims.core import (
    Paper,
    baseline,
    ld_unjudged,
    missing,
    ratio,
    row,
)
from patchbench.analysis.frames import head_label, validate_effects
from patchbench.analysis.labels import corruption_label
from patchbench.analysis.robustness import FLOOR_ROOM, floor_hides_negatives
from patchbench.detection import PAPER_K, thresholds

__all__ = ["claims_negative_heads", "claims_nm_attention", "claims_p_io"]

SMALL = "GPT-2 small"
#: The corruption of each §4.2 condition: (task, corruption of that task's sweep).
CONDITIONS = {"STR": ("ioi", "STR"), "GN": ("ioi", "GN"), "ABC": ("ioi_abc", "STR")}


# ----------------------------------------------------------------------------- §4.2 P(IO)
CLAIM_42_P = (
    "Under STR the corrupted run's P(IO) is small; GN leaves far more of it; under ABC it is negligible."
)
QUOTE_42_P = (
    '§4.2: "In the corrupted run of STR, the average probability of outputting the original IO is [0.03]" … '
    '"By contrast, under GN corruption, the average probability of IO is [0.129]. Intuitively, this makes a lot '
    'more space for NNMs" … (ABC) "the probability of outputting the IO of the original IOI sentence is '
    'negligible ([5e-4])".'
)
PAPER_P = {
    "clean": Paper("0.481", f"App. B, {SMALL}"),
    "STR": Paper("0.03", f"§4.2, {SMALL}"),
    "GN": Paper("0.129", f"§4.2 and App. B, {SMALL}"),
    "ABC": Paper("5e-4", f"§4.2, {SMALL}"),
}


def _p_io(baselines: pd.DataFrame | None, model: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for cond, (task, corr) in CONDITIONS.items():
        b = baseline(baselines, model, task, corr)
        if b is not None:
            out.setdefault("clean", float(b["clean_prob_ans"]))
            out[cond] = float(b["corrupted_prob_ans"])
    return out


def claims_p_io(baselines: pd.DataFrame | None, model: str) -> list[dict]:
    """§4.2: P(IO) in the clean run and in the STR, GN and ABC corrupted runs of ``model``."""
    p = _p_io(baselines, model)
    rows = []
    for cond in ("clean", "STR", "GN", "ABC"):
        q = "P(IO) in the clean run" if cond == "clean" else f"P(IO) in the {cond} corrupted run"
        if cond in p:
            rows.append(row("4.2", CLAIM_42_P, q, p[cond], paper=PAPER_P[cond], rule=QUOTE_42_P, model=model))
        else:
            rows += missing("4.2", CLAIM_42_P, q, QUOTE_42_P, PAPER_P[cond])
    if {"STR", "GN"} <= set(p):
        rows.append(row("4.2", CLAIM_42_P, "P_GN(IO) / P_STR(IO)", ratio(p["GN"], p["STR"]), p["GN"] > p["STR"],
                        paper=Paper("4.3", f"§4.2 (0.129 / 0.03), {SMALL}"), model=model,
                        rule=QUOTE_42_P + " Holds if GN leaves more P(IO) than STR."))  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- §4.2 floor and NNMs
CLAIM_42_FLOOR = (
    "A probability effect is at least -P_*(IO); under STR that floor is already close to the negative threshold "
    "mu - 2 SD, so a negative head can hardly be detected; GN leaves room; under ABC probability cannot detect one."
)
QUOTE_42_FLOOR = (
    '§4.2: "the patching effect in probability … is at least [-0.03] … This is already close to 2 SD below the '
    'mean ([-0.027])" (STR); "under GN … this makes a lot more space for NNMs"; (ABC) "negligible … As a '
    'result, using probability detects neither NNMs". Threshold ours: "close" = the floor lies above, or less '
    f"than robustness.floor_room = {FLOOR_ROOM:g} SD below, the threshold (the paper's floor is 0.2 SD below)."
)
#: What the paper says the floor does per condition: hides negative heads (True) or leaves room (False).
FLOOR_HIDES = {"STR": True, "GN": False, "ABC": True}
CLAIM_42_NNM = (
    "Probability overlooks a negative name mover that logit difference detects: 11.10 under STR; "
    "both NNMs under ABC, where logit difference still detects them."
)
QUOTE_42_NNM = (
    '§4.2: "In our previous experiments on STR, both are detected, except when using probability as the metric '
    "where 11.10 is overlooked. In fact, the patching effect of 11.10 under STR in probability is well within "
    '2 SD from the mean (mean [0.003], SD [0.015], and 11.10 receives [-0.022])"; (ABC) "using probability '
    'detects neither NNMs. On the other hand, we find that logit difference still can." NNMs: the known negative '
    "name movers of the model (the head classes of Table 1)."
)
PAPER_STATS = {
    "STR": {
        "mean": Paper("0.003", f"§4.2, {SMALL}, STR, probability"),
        "sd": Paper("0.015", f"§4.2, {SMALL}, STR, probability"),
        "threshold": Paper("-0.027", f"§4.2, {SMALL}, STR, probability"),
        "floor": Paper("-0.03", f"§4.2, {SMALL}"),
        "room": Paper("-0.2", f"§4.2 ((-0.03 + 0.027) / 0.015), {SMALL}"),
    },
    "GN": {"floor": Paper("-0.129", f"§4.2 and App. B, {SMALL}")},
    "ABC": {"floor": Paper("-5e-4", f"§4.2, {SMALL}")},
}
PAPER_NNM = {
    ("STR", "logit_diff"): Paper("2 (10.7, 11.10)", f"§4.2 and Table 5, {SMALL}"),
    ("STR", "prob"): Paper("1 (10.7)", f"§4.2 and Table 5, {SMALL}"),
    ("GN", "logit_diff"): Paper("2 (10.7, 11.10)", f"Table 5, {SMALL}"),
    ("GN", "prob"): Paper("2 (10.7, 11.10)", f"Table 5, {SMALL}"),
    ("ABC", "prob"): Paper("0", f"§4.2 and App. H.3, {SMALL}"),
    ("ABC", "logit_diff"): Paper(">= 1 ('still can')", f"§4.2 and App. H.3, {SMALL}"),
}


def _plot(effects: pd.DataFrame | None, model: str, metric: str) -> pd.DataFrame:
    if effects is None or not len(effects):
        return pd.DataFrame()
    eff = validate_effects(effects)
    eff = eff[(eff["model"].astype(str) == model) & (eff["head"] >= 0) & (eff["window"] == 1)]
    if "direction" in eff.columns:
        eff = eff[eff["direction"].fillna("denoising").astype(str) == "denoising"]
    return eff[eff["metric"] == metric]


def _negatives(plot: pd.DataFrame, heads: Sequence[str]) -> list[str]:
    neg = plot[plot["detected"] == "negative"]
    found = {head_label(la, h) for la, h in zip(neg["layer"], neg["head"], strict=True)}
    return [h for h in heads if h in found]


def claims_negative_heads(
    effects: Mapping[str, pd.DataFrame | None],
    baselines: pd.DataFrame | None,
    model: str,
    nnm: Sequence[str] | None,
) -> list[dict]:
    """§4.2 on ``model``: the probability floor against the detection threshold, and which known
    negative name movers (``nnm``, ``L.H``) probability and logit difference detect, per condition.

    ``effects`` maps STR / GN / ABC to head effects (several models allowed).
    """
    rows: list[dict] = []
    p = _p_io(baselines, model)
    for cond in ("STR", "GN", "ABC"):
        prob = _plot(effects.get(cond), model, "prob")
        ld = _plot(effects.get(cond), model, "logit_diff")
        paper = PAPER_STATS.get(cond, {})
        if not len(prob):
            rows += missing("4.2", CLAIM_42_FLOOR, f"{cond}: probability floor vs threshold", QUOTE_42_FLOOR)
        else:
            th = thresholds(prob["effect"].to_numpy())
            mu, sd, low = float(th.mu), float(th.sd), float(th.low)
            for q, v, key in ((f"{cond}: mean of the heads' probability effects", mu, "mean"),
                              (f"{cond}: SD of the heads' probability effects", sd, "sd"),
                              (f"{cond}: negative threshold mu - {PAPER_K:g} SD (probability)", low, "threshold")):  # fmt: skip
                rows.append(
                    row("4.2", CLAIM_42_FLOOR, q, v, paper=paper.get(key), rule=QUOTE_42_FLOOR, model=model)
                )
            if cond in p:
                floor = -p[cond]
                rows.append(row("4.2", CLAIM_42_FLOOR, f"{cond}: probability floor -P_*(IO)", floor,
                                paper=paper.get("floor"), rule=QUOTE_42_FLOOR, model=model))  # fmt: skip
                hides = floor_hides_negatives(floor, low, sd)
                verdict = "hides negative heads" if FLOOR_HIDES[cond] else "leaves room for negative heads"
                rows.append(row("4.2", CLAIM_42_FLOOR, f"{cond}: (floor - threshold) / SD (the paper: the floor {verdict})",
                                ratio(floor - low, sd), hides == FLOOR_HIDES[cond], paper=paper.get("room"),
                                rule=QUOTE_42_FLOOR, model=model))  # fmt: skip
            else:
                rows += missing(
                    "4.2",
                    CLAIM_42_FLOOR,
                    f"{cond}: probability floor -P_*(IO)",
                    QUOTE_42_FLOOR,
                    paper.get("floor"),
                )
        rows += _nnm_rows(cond, prob, ld, model, nnm)
    return rows


def _nnm_rows(
    cond: str, prob: pd.DataFrame, ld: pd.DataFrame, model: str, nnm: Sequence[str] | None
) -> list[dict]:
    what = f"{cond}: known negative name movers detected negatively"
    if not len(prob) or not len(ld):
        return missing("4.2", CLAIM_42_NNM, what, QUOTE_42_NNM)
    if not nnm:
        return [row("4.2", CLAIM_42_NNM, what, rule=QUOTE_42_NNM, model=model, holds=False,
                    unjudged=f"no known negative name mover for {model} (the head classes of Table 1 list none)")]  # fmt: skip
    rows = []
    found = {}
    for metric, plot in (("logit_diff", ld), ("prob", prob)):
        found[metric] = _negatives(plot, nnm)
        name = "logit difference" if metric == "logit_diff" else "probability"
        rows.append(row("4.2", CLAIM_42_NNM, f"{what} by {name} (of {', '.join(nnm)}): {', '.join(found[metric]) or 'none'}",
                        len(found[metric]), paper=PAPER_NNM.get((cond, metric)), rule=QUOTE_42_NNM, model=model))  # fmt: skip
    missed = [h for h in found["logit_diff"] if h not in found["prob"]]
    if cond == "STR":
        rows.append(row("4.2", CLAIM_42_NNM, f"STR: NNMs logit difference detects and probability overlooks: {', '.join(missed) or 'none'}",
                        len(missed), bool(missed), paper=Paper("1 (11.10)", f"§4.2, {SMALL}"), model=model,
                        rule=QUOTE_42_NNM + " Holds if probability overlooks at least one NNM that logit difference detects."))  # fmt: skip
        th = thresholds(prob["effect"].to_numpy())
        by_head = {
            head_label(la, h): e for la, h, e in zip(prob["layer"], prob["head"], prob["effect"], strict=True)
        }
        for h in missed:
            rows.append(row("4.2", CLAIM_42_NNM, f"STR: probability effect of {h} in SDs from the mean",
                            ratio(by_head[h] - float(th.mu), float(th.sd)),
                            paper=Paper("-1.67 (11.10: (-0.022 - 0.003) / 0.015)", f"§4.2, {SMALL}"),
                            rule=QUOTE_42_NNM, model=model))  # fmt: skip
    elif cond == "ABC":
        rows.append(row("4.2", CLAIM_42_NNM, "ABC: probability detects no NNM and logit difference detects one or more",
                        len(found["logit_diff"]) - len(found["prob"]), not found["prob"] and bool(found["logit_diff"]),
                        paper=Paper("2 - 0", f"§4.2 and App. H.3, {SMALL}"), model=model,
                        rule=QUOTE_42_NNM + " Holds if probability detects none of the NNMs and logit difference at least one."))  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- §3.2
CLAIM_32_ATT = (
    "Name movers attend to IO on clean prompts; STR preserves the pattern with IO and S1 switched; "
    "GN shares their attention between IO and S1."
)
QUOTE_32_ATT = (
    '§3.2: "on clean IOI prompts, the NMs assign an average of [0.58] attention probability to IO. In the '
    "corrupted runs, since STR simply exchanges IO by S1, the attention patterns of NMs are preserved (with the "
    "role of IO and S1 switched). On the other hand, with GN corruption, we see that the attention is shared "
    'between IO and S1 ([0.26] and [0.21])."'
)
CLAIM_32_REC = (
    "Restoring the S-inhibition heads' values fully recovers the logit difference under STR, far less under GN, "
    "and restores the NMs' attention under STR but not under GN."
)
QUOTE_32_REC = (
    "§3.2: \"we can fully recover model's logit on IO in STR (logit difference: [1.04]) by restoring the values "
    "of the S-Inhibition Heads. The same intervention, however, is fairly unsuccessful under GN (logit "
    'difference: [0.49])." … "patching nearly restores the NMs\' in-distribution attention pattern under STR, '
    'but fails under GN corruption."'
)


def _attention(att: pd.DataFrame, corr: str, target: str, patched: bool = False) -> float:
    v = att[(att["corruption"] == corr) & (att["target"] == target) & (att["patched"] == patched)][
        "attention"
    ]
    return float(v.mean()) if len(v) else np.nan


def claims_nm_attention(
    attention: pd.DataFrame | None,
    recovery: pd.DataFrame | None,
    baselines: pd.DataFrame | None = None,
    model: str = "",
) -> list[dict]:
    """§3.2 on ``model`` from the attention and recovery frames of :mod:`patchbench.analysis.nm_attention`."""
    from patchbench.analysis.nm_attention import validate_attention

    rows: list[dict] = []
    fig_a = f"§3.2, Fig. 3(a), {SMALL}"
    if attention is None or not len(attention):
        rows += missing("3.2", CLAIM_32_ATT, "NM attention to IO / S1 (clean, STR, GN)", QUOTE_32_ATT)
    else:
        att = validate_attention(attention)
        c_io, c_s1 = _attention(att, "clean", "IO"), _attention(att, "clean", "S1")
        rows.append(row("3.2", CLAIM_32_ATT, "clean: NM attention to IO", c_io, paper=Paper("0.58", fig_a), rule=QUOTE_32_ATT, model=model))  # fmt: skip
        rows.append(
            row("3.2", CLAIM_32_ATT, "clean: NM attention to S1", c_s1, rule=QUOTE_32_ATT, model=model)
        )
        for corr in ("STR", "GN"):
            io, s1 = _attention(att, corr, "IO"), _attention(att, corr, "S1")
            if not np.isfinite(io):
                rows += missing("3.2", CLAIM_32_ATT, f"{corr}: NM attention to IO / S1", QUOTE_32_ATT)
                continue
            gn = corr == "GN"
            rows.append(row("3.2", CLAIM_32_ATT, f"{corr}: NM attention to IO", io, paper=Paper("0.26", fig_a) if gn else None, rule=QUOTE_32_ATT, model=model))  # fmt: skip
            rows.append(row("3.2", CLAIM_32_ATT, f"{corr}: NM attention to S1", s1, paper=Paper("0.21", fig_a) if gn else None, rule=QUOTE_32_ATT, model=model))  # fmt: skip
            if not gn:
                r = ratio(s1, c_io)
                rows.append(row("3.2", CLAIM_32_ATT, "STR: NM attention to S1 / clean NM attention to IO (roles switched)", r,
                                0.8 <= r <= 1.25, model=model,
                                rule=QUOTE_32_ATT + ' Threshold ours: "preserved" = within 0.8-1.25 (a quarter either way on a '
                                "log scale); the paper gives no tolerance."))  # fmt: skip
            else:
                share = ratio(io, io + s1)
                rows.append(row("3.2", CLAIM_32_ATT, "GN: IO's share of the NM attention to IO + S1", share, 0.25 <= share <= 0.75,
                                paper=Paper("0.55", f"§3.2 (0.26 / (0.26 + 0.21)), Fig. 3(a), {SMALL}"), model=model,
                                rule=QUOTE_32_ATT + ' Threshold ours: "shared" = neither name gets more than three quarters '
                                "of the two; the paper gives no bound."))  # fmt: skip
        dist = {}
        for corr in ("STR", "GN"):
            pio = _attention(att, corr, "IO", True)
            if np.isfinite(pio):
                dist[corr] = abs(pio - c_io)
                rows.append(row("3.2", CLAIM_32_REC, f"{corr}, S-inhibition values restored: |NM attention to IO - clean|",
                                dist[corr], rule=QUOTE_32_REC, model=model))  # fmt: skip
        if len(dist) == 2:
            rows.append(row("3.2", CLAIM_32_REC, "patched NM attention to IO, distance to clean: GN - STR", dist["GN"] - dist["STR"],
                            dist["STR"] < dist["GN"], model=model,
                            rule=QUOTE_32_REC + " Holds if STR's patched attention lies closer to the clean one than GN's."))  # fmt: skip
    if recovery is None or not len(recovery):
        return rows + missing(
            "3.2", CLAIM_32_REC, "logit difference recovered by the S-inhibition values", QUOTE_32_REC
        )
    rec = recovery.copy()
    rec["corruption"] = rec["corruption"].map(corruption_label)
    rec = rec[rec["metric"] == "logit_diff"]
    vals = {c: float(rec.loc[rec["corruption"] == c, "effect"].mean()) for c in ("STR", "GN") if (rec["corruption"] == c).any()}  # fmt: skip
    why = {c: ld_unjudged(baseline(baselines, model, "ioi", c), c) for c in vals}
    papers = {
        "STR": Paper("1.04", f"§3.2, Fig. 3(b), {SMALL}"),
        "GN": Paper("0.49", f"§3.2, Fig. 3(b), {SMALL}"),
    }
    for c, v in vals.items():
        strc = c == "STR"
        rows.append(row("3.2", CLAIM_32_REC, f"{c}: normalised logit difference with the S-inhibition values restored", v,
                        (v >= 0.8) if strc else None, paper=papers[c], model=model, unjudged=why[c],
                        rule=QUOTE_32_REC + (' Threshold ours: "fully recover" = at least 0.8 (the paper\'s 1.04 is 1 '
                                             "within noise; the paper gives no bound)." if strc else "")))  # fmt: skip
    if len(vals) == 2:
        rows.append(row("3.2", CLAIM_32_REC, "recovered logit difference, STR - GN", vals["STR"] - vals["GN"],
                        vals["STR"] > vals["GN"], paper=Paper("0.55", f"§3.2 (1.04 - 0.49), {SMALL}"), model=model,
                        unjudged=why["STR"] or why["GN"], rule=QUOTE_32_REC + " Holds if STR recovers more than GN."))  # fmt: skip
    return rows
