"""``claims.csv``: the paper's quantitative statements, recomputed from this run.

Each claim function is pure: frames in, rows out. A missing input (an experiment the config does
not run) gives rows whose ``status`` is ``not run`` instead of an exception, so a partial config
still writes a complete ``claims.csv``. Columns (:data:`CLAIM_COLUMNS`):

``section`` (of the paper), ``claim`` (the paper's qualitative statement), ``quantity`` (what is
computed here, naming model / corruption / metric / window), ``paper_value`` (the paper's number
where the available paper text states it, else empty), ``value`` (this run), ``holds`` (``yes`` /
``no``, empty for context rows that carry no verdict), ``status`` (``ok`` / ``not run``), ``rule``
(how ``holds`` is decided).

Claims:

- §3.1 GN / STR peak ratio of MLP effects at the last subject token, per window and metric
  (paper: 2x-5x). Holds when the ratio is at least 2.
- §4.1 Sum over layers of the effect at the last subject token / at the middle subject tokens, per
  corruption, metric and window; holds when the probability ratio exceeds the logit-difference one.
- §4.2 P(IO) in clean, STR, GN and ABC runs; the probability floor -P_*(IO) of a negative head
  next to the detection threshold mu - 2 SD; and whether probability detects fewer negative heads
  than logit difference (none at all under ABC).
- §5 Peak of sliding-window patching / peak of the summed single layers, per window, metric and
  corruption; holds when above 1.
- §3.2 Name-mover attention split (clean, STR, GN) and logit difference recovered by restoring the
  S-inhibition values, STR vs GN.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from patchbench.analysis.frames import select, validate_effects, validate_sweep
from patchbench.analysis.labels import corruption_label, metric_label
from patchbench.analysis.robustness import FLOOR_ROOM, floor_hides_negatives
from patchbench.analysis.windows import summed_single_layers
from patchbench.atomic import write_text
from patchbench.detection import thresholds

__all__ = [
    "CLAIM_COLUMNS",
    "build_claims",
    "claims_gn_str_peak",
    "claims_last_middle",
    "claims_negative_heads",
    "claims_nm_attention",
    "claims_p_io",
    "claims_sliding_summed",
    "corrupted_probabilities",
    "write_claims",
]

log = logging.getLogger(__name__)

CLAIM_COLUMNS = ("section", "model", "claim", "quantity", "paper_value", "value", "holds", "status", "rule")
NOT_RUN = "not run"


def _row(
    section,
    claim,
    quantity,
    value=np.nan,
    holds: bool | None = None,
    paper="",
    rule="",
    status="ok",
    model="",
) -> dict:
    return {
        "section": section,
        "model": model,
        "claim": claim,
        "quantity": quantity,
        "paper_value": paper,
        "value": float(value) if value is not None else np.nan,
        "holds": "" if holds is None or status != "ok" else ("yes" if holds else "no"),
        "status": status,
        "rule": rule,
    }


def _missing(section: str, claim: str, quantity: str, rule: str = "") -> list[dict]:
    return [_row(section, claim, quantity, status=NOT_RUN, rule=rule)]


def _empty(df: pd.DataFrame | None) -> bool:
    return df is None or len(df) == 0


def _ratio(a: float, b: float) -> float:
    return a / b if b not in (0.0,) and np.isfinite(b) else np.nan


# ----------------------------------------------------------------------------- §3.1
CLAIM_31 = "Across window sizes, the peak MLP effect at the last subject token is 2x-5x higher under GN than under STR."


def claims_gn_str_peak(effects: pd.DataFrame | None) -> list[dict]:
    """§3.1: max over layers of the GN curve / max of the STR curve, per model, window and metric."""
    rule = "holds if GN peak / STR peak >= 2 (paper range 2-5)"
    if _empty(effects):
        return _missing("3.1", CLAIM_31, "GN / STR peak ratio", rule)
    df = validate_effects(effects)
    df = df[df["metric"].isin(["prob", "logit_diff"])]
    rows = []
    for (model, window, metric), g in df.groupby(["model", "window", "metric"]):
        peaks = g.groupby("corruption")["effect"].max()
        q = f"{model}, {metric_label(metric)}, window {window}: GN peak / STR peak"
        if not {"STR", "GN"} <= set(peaks.index):
            rows += [{**r, "model": model} for r in _missing("3.1", CLAIM_31, q, rule)]
            continue
        r = _ratio(peaks["GN"], peaks["STR"])
        rows.append(_row("3.1", CLAIM_31, q, r, r >= 2, paper="2-5", rule=rule, model=model))
    return rows or _missing("3.1", CLAIM_31, "GN / STR peak ratio", rule)


# ----------------------------------------------------------------------------- §4.1
CLAIM_41 = (
    "Probability assigns more of the effect to the last subject token (vs the middle subject tokens) "
    "than logit difference does, under both corruptions."
)


def claims_last_middle(cat_effects: pd.DataFrame | None) -> list[dict]:
    """§4.1: sum over layers at the last subject token / sum at the middle subject tokens."""
    rule = "holds if the probability ratio exceeds the logit-difference ratio"
    if _empty(cat_effects):
        return _missing("4.1", CLAIM_41, "last / middle subject-token effect ratio", rule)
    df = cat_effects.copy()
    df["corruption"] = df["corruption"].map(corruption_label)
    df["category"] = df["category"].astype(str)
    rows = []
    keys = [k for k in ("model", "corruption", "window") if k in df.columns]
    for key, g in df.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(str(k) for k in key)
        model = str(key[0]) if "model" in keys else ""
        first = len(rows)
        ratios = {}
        for metric in ("prob", "logit_diff"):
            m = g[g["metric"] == metric]
            last = m.loc[m["category"] == "Last subject token", "effect"].sum()
            mid = m.loc[m["category"] == "Middle subject tokens", "effect"]
            ratios[metric] = _ratio(last, mid.sum()) if len(mid) else np.nan
            rows.append(
                _row(
                    "4.1",
                    CLAIM_41,
                    f"{label}: {metric_label(metric)} last / middle subject-token ratio",
                    ratios[metric],
                )
            )
        ok = bool(np.isfinite(ratios["prob"]) and np.isfinite(ratios["logit_diff"]))
        rows.append(
            _row(
                "4.1",
                CLAIM_41,
                f"{label}: probability ratio - logit-difference ratio",
                ratios["prob"] - ratios["logit_diff"] if ok else np.nan,
                (
                    ratios["prob"] > ratios["logit_diff"]
                    and not np.isclose(ratios["prob"], ratios["logit_diff"])
                )
                if ok
                else None,
                rule=rule,
                status="ok" if ok else NOT_RUN,
            )  # fmt: skip
        )
        for r in rows[first:]:
            r["model"] = model
    return rows


# ----------------------------------------------------------------------------- §4.2
CLAIM_42_P = (
    "Under STR the corrupted run's P(IO) is near zero; GN leaves far more of it; ABC makes it negligible."
)
CLAIM_42_FLOOR = (
    "A probability effect is at least -P_*(IO), so when P_*(IO) is near zero a negative head cannot fall "
    "2 SD below the mean: probability overlooks negative heads."
)
CLAIM_42_NEG = "Probability detects fewer negative heads than logit difference (none under ABC); logit difference still detects them."


def corrupted_probabilities(raw: pd.DataFrame, condition: str) -> dict[str, float]:
    """Mean P(answer) in the clean and corrupted runs of a raw sweep (GN samples averaged per prompt)."""
    raw = validate_sweep(raw)
    base = raw[raw["run"].isin(["clean", "corrupted"])]
    per = base.groupby(["run", "prompt"])["prob_ans"].mean().groupby("run").mean()
    return {"clean": float(per.get("clean", np.nan)), condition: float(per.get("corrupted", np.nan))}


def claims_p_io(raws: dict[str, pd.DataFrame | None]) -> list[dict]:
    """§4.2 P(IO): ``raws`` maps STR / GN / ABC to a raw IOI sweep of that corruption (or None)."""
    rows, p = [], {}
    for cond in ("STR", "GN", "ABC"):
        raw = raws.get(cond)
        if _empty(raw):
            rows += _missing("4.2", CLAIM_42_P, f"P(IO) in the {cond} corrupted run")
            continue
        probs = corrupted_probabilities(raw, cond)
        p[cond] = probs[cond]
        p.setdefault("clean", probs["clean"])
        rows.append(_row("4.2", CLAIM_42_P, f"P(IO) in the {cond} corrupted run", p[cond]))
    if "clean" in p:
        rows.insert(0, _row("4.2", CLAIM_42_P, "P(IO) in the clean run", p["clean"]))
    if {"STR", "GN"} <= set(p):
        rows.append(_row("4.2", CLAIM_42_P, "P_GN(IO) / P_STR(IO)", _ratio(p["GN"], p["STR"]), p["GN"] > p["STR"],
                         rule="holds if GN leaves more P(IO) than STR"))  # fmt: skip
    if {"STR", "ABC"} <= set(p):
        rows.append(_row("4.2", CLAIM_42_P, "P_ABC(IO) - P_STR(IO)", p["ABC"] - p["STR"], p["ABC"] <= p["STR"],
                         rule="holds if ABC leaves no more P(IO) than STR"))  # fmt: skip
    return rows


def claims_negative_heads(
    effects: dict[str, pd.DataFrame | None], raws: dict[str, pd.DataFrame | None]
) -> list[dict]:
    """§4.2: probability floor vs detection threshold, and negative detections prob vs logit diff.

    ``effects`` maps STR / GN / ABC to the head effects of that IOI corruption, ``raws`` the same to
    the raw sweeps (for P_*(IO)).
    """
    rows = []
    for cond in ("STR", "GN", "ABC"):
        eff = effects.get(cond)
        if _empty(eff):
            rows += _missing(
                "4.2", CLAIM_42_NEG, f"{cond}: negative heads detected, probability vs logit difference"
            )
            continue
        eff = validate_effects(eff)
        eff = eff[(eff["head"] >= 0) & (eff["window"] == 1)]
        prob = eff[eff["metric"] == "prob"]
        ld = eff[eff["metric"] == "logit_diff"]
        if len(prob):
            rule = thresholds(prob["effect"].to_numpy())
            threshold, sd = float(rule.low), float(rule.sd)
            rows.append(
                _row(
                    "4.2",
                    CLAIM_42_FLOOR,
                    f"{cond}: negative detection threshold mu - 2 SD (probability)",
                    threshold,
                )
            )
            raw = raws.get(cond)
            if not _empty(raw):
                floor = -corrupted_probabilities(raw, cond)[cond]
                rows.append(_row("4.2", CLAIM_42_FLOOR, f"{cond}: probability floor -P_*(IO)", floor))
                rows.append(_row("4.2", CLAIM_42_FLOOR, f"{cond}: (floor - threshold) / SD", _ratio(floor - threshold, sd),
                                 floor_hides_negatives(floor, threshold, sd),
                                 rule=f"holds if the floor lies above, or less than {FLOOR_ROOM:g} SD below, the threshold"))  # fmt: skip
            else:
                rows += _missing("4.2", CLAIM_42_FLOOR, f"{cond}: probability floor -P_*(IO)")
        if len(prob) and len(ld):
            n_prob = int((prob["detected"] == "negative").sum())
            n_ld = int((ld["detected"] == "negative").sum())
            if cond == "ABC":
                holds, rule = (
                    n_prob == 0 and n_ld > 0,
                    "holds if probability detects no negative head and logit difference some",
                )
            else:
                holds, rule = (
                    n_prob <= n_ld,
                    "holds if probability detects no more negative heads than logit difference",
                )
            rows.append(_row("4.2", CLAIM_42_NEG, f"{cond}: negative heads detected, probability - logit difference (counts {n_prob} vs {n_ld})",
                             n_prob - n_ld, holds, rule=rule))  # fmt: skip
        else:
            rows += _missing(
                "4.2", CLAIM_42_NEG, f"{cond}: negative heads detected, probability vs logit difference"
            )
    return rows


# ----------------------------------------------------------------------------- §5
CLAIM_5 = "Sliding-window patching gives a larger peak effect than summing single-layer effects over the same window."


def claims_sliding_summed(effects: pd.DataFrame | None) -> list[dict]:
    """§5: max over layers of the sliding-window curve / max of the summed single-layer curve."""
    rule = "holds if the ratio exceeds 1"
    if _empty(effects):
        return _missing("5", CLAIM_5, "sliding / summed peak ratio", rule)
    df = validate_effects(effects)
    windows = sorted(set(df["window"]) - {1})
    if 1 not in set(df["window"]) or not windows:
        return _missing("5", CLAIM_5, "sliding / summed peak ratio (needs window 1 and a window > 1)", rule)
    rows = []
    for w in windows:
        summed = summed_single_layers(df, w)
        for (model, corr, metric), g in df[df["window"] == w].groupby(["model", "corruption", "metric"]):
            if metric not in ("prob", "logit_diff"):
                continue
            s = select(summed, model=model, corruption=corr, metric=metric)
            r = _ratio(g["effect"].max(), s["effect"].max()) if len(s) else np.nan
            rows.append(_row("5", CLAIM_5, f"{model}, {corr}, {metric_label(metric)}, window {w}: sliding peak / summed peak",
                             r, bool(r > 1) if np.isfinite(r) else None, rule=rule,
                             status="ok" if np.isfinite(r) else NOT_RUN, model=model))  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- §3.2
CLAIM_32_ATT = (
    "Name movers attend to IO on clean prompts; STR preserves the pattern with IO and S1 switched; "
    "GN splits their attention between IO and S1."
)
CLAIM_32_REC = (
    "Restoring the S-inhibition heads' values recovers the logit difference under STR but much less "
    "under GN, and restores the NMs' attention under STR but not under GN."
)


def claims_nm_attention(attention: pd.DataFrame | None, recovery: pd.DataFrame | None) -> list[dict]:
    """§3.2 from the attention and recovery frames of :mod:`patchbench.analysis.nm_attention`."""
    from patchbench.analysis.nm_attention import validate_attention

    rows: list[dict] = []
    if _empty(attention):
        rows += _missing("3.2", CLAIM_32_ATT, "NM attention to IO / S1 (clean, STR, GN)")
    else:
        att = validate_attention(attention)

        def a(corr: str, tgt: str, patched: bool = False) -> float:
            v = att[(att["corruption"] == corr) & (att["target"] == tgt) & (att["patched"] == patched)][
                "attention"
            ]
            return float(v.mean()) if len(v) else np.nan

        c_io, c_s1 = a("clean", "IO"), a("clean", "S1")
        rows.append(
            _row(
                "3.2",
                CLAIM_32_ATT,
                "clean: NM attention to IO",
                c_io,
                c_io > c_s1,
                rule="holds if above the attention to S1",
            )
        )
        rows.append(_row("3.2", CLAIM_32_ATT, "clean: NM attention to S1", c_s1))
        for corr in ("STR", "GN"):
            io, s1 = a(corr, "IO"), a(corr, "S1")
            if not np.isfinite(io):
                rows += _missing("3.2", CLAIM_32_ATT, f"{corr}: NM attention to IO / S1")
                continue
            rows.append(_row("3.2", CLAIM_32_ATT, f"{corr}: NM attention to IO", io))
            rows.append(_row("3.2", CLAIM_32_ATT, f"{corr}: NM attention to S1", s1))
            share = _ratio(io, io + s1)
            if corr == "STR":
                rows.append(_row("3.2", CLAIM_32_ATT, "STR: attention to S1 / clean attention to IO (roles switched)",
                                 _ratio(s1, c_io), 0.8 <= _ratio(s1, c_io) <= 1.25,
                                 rule="holds if within 0.8-1.25 (pattern preserved)"))  # fmt: skip
            else:
                rows.append(_row("3.2", CLAIM_32_ATT, "GN: share of IO in the attention to IO + S1", share, 0.25 <= share <= 0.75,
                                 rule="holds if within 0.25-0.75 (shared)"))  # fmt: skip
        dist = {}
        for corr in ("STR", "GN"):
            pio = a(corr, "IO", True)
            if np.isfinite(pio):
                dist[corr] = abs(pio - c_io)
                rows.append(
                    _row(
                        "3.2",
                        CLAIM_32_REC,
                        f"{corr}, S-inhibition values restored: |NM attention to IO - clean|",
                        dist[corr],
                    )
                )
        if len(dist) == 2:
            rows.append(_row("3.2", CLAIM_32_REC, "patched NM attention: distance to clean, GN - STR", dist["GN"] - dist["STR"],
                             dist["STR"] < dist["GN"], rule="holds if STR's patched attention is closer to clean than GN's"))  # fmt: skip
    if _empty(recovery):
        rows += _missing(
            "3.2", CLAIM_32_REC, "logit difference recovered by the S-inhibition values (STR, GN)"
        )
        return rows
    rec = recovery.copy()
    rec["corruption"] = rec["corruption"].map(corruption_label)
    rec = rec[rec["metric"] == "logit_diff"]
    vals = {
        c: float(rec.loc[rec["corruption"] == c, "effect"].mean())
        for c in ("STR", "GN")
        if (rec["corruption"] == c).any()
    }
    for c, v in vals.items():
        rows.append(_row("3.2", CLAIM_32_REC, f"{c}: normalised logit difference with S-inhibition values restored", v,
                         (v >= 0.8) if c == "STR" else None, rule="holds if >= 0.8 (nearly full recovery)" if c == "STR" else ""))  # fmt: skip
    if len(vals) == 2:
        rows.append(_row("3.2", CLAIM_32_REC, "recovered logit difference, STR - GN", vals["STR"] - vals["GN"],
                         vals["STR"] > vals["GN"], rule="holds if STR recovers more than GN"))  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- all
def _models(*frames: pd.DataFrame | None) -> list[str]:
    found: set[str] = set()
    for f in frames:
        if not _empty(f) and "model" in f.columns:
            found |= set(f["model"].astype(str))
    return sorted(found)


def _of(frame: pd.DataFrame | None, model: str) -> pd.DataFrame | None:
    if _empty(frame):
        return None
    if "model" not in frame.columns:
        return frame
    out = frame[frame["model"].astype(str) == model]
    return out if len(out) else None


def build_claims(
    factual_last: pd.DataFrame | None = None,
    factual_categories: pd.DataFrame | None = None,
    ioi_effects: dict[str, pd.DataFrame | None] | None = None,
    ioi_raws: dict[str, pd.DataFrame | None] | None = None,
    nm_attention: pd.DataFrame | None = None,
    nm_recovery: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every claim, in the paper's order of sections; missing inputs give ``not run`` rows.

    Frames may hold several models (a ``model`` column; raw sweeps get one from
    :func:`patchbench.analysis.frames.read_sweeps`); each claim is computed per model that has its
    inputs, and ``not run`` appears only when no model has them.
    """
    ioi_effects, ioi_raws = ioi_effects or {}, ioi_raws or {}
    rows: list[dict] = []
    rows += claims_gn_str_peak(factual_last)
    nm_models = _models(nm_attention, nm_recovery)
    for m in nm_models:
        rows += [{**r, "model": m} for r in claims_nm_attention(_of(nm_attention, m), _of(nm_recovery, m))]
    if not nm_models:
        rows += claims_nm_attention(None, None)
    rows += claims_last_middle(factual_categories)
    ioi_models = _models(*ioi_effects.values(), *ioi_raws.values())
    for m in ioi_models:
        raws = {k: _of(v, m) for k, v in ioi_raws.items()}
        effs = {k: _of(v, m) for k, v in ioi_effects.items()}
        rows += [{**r, "model": m} for r in claims_p_io(raws) + claims_negative_heads(effs, raws)]
    if not ioi_models:
        rows += claims_p_io({}) + claims_negative_heads({}, {})
    rows += claims_sliding_summed(factual_last)
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def write_claims(claims: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    write_text(path, claims.to_csv(index=False, float_format="%.6g"))
    log.info("wrote %s (%d claims, %d hold, %d not run)", path, len(claims),
             int((claims["holds"] == "yes").sum()), int((claims["status"] == NOT_RUN).sum()))  # fmt: skip
    return path
