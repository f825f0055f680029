"""``claims.csv``: the paper's quantitative statements, recomputed from this run by the paper's own definitions.

Each claim function is pure (frames in, rows out); the rows' columns and the rules shared by
every claim (paper values, scope, "cannot be judged") are in
:mod:`patchbench.analysis.claims.core`. A missing input (an experiment the config does not run)
gives rows whose ``status`` is ``not run`` instead of an exception, so a partial config still
writes a complete file.

- §3.1 GN / STR peak ratio of MLP effects at the last subject token, per window and metric
  (:mod:`~patchbench.analysis.claims.factual`).
- §3.2 name-mover attention (clean, STR, GN) and the logit difference recovered by restoring the
  S-inhibition values (:mod:`~patchbench.analysis.claims.ioi`).
- §4.1 effect summed over layers at the last subject token / at the middle subject tokens.
- §4.2 P(IO) per corruption; the probability floor -P_*(IO) against the detection threshold; the
  known negative name movers that probability overlooks and logit difference detects.
- §5 sliding-window peak / summed single-layer peak at the middle MLP layers, per window.

The paper's claims are about the paper's tasks on the paper's models: rows of a model the paper
ran that experiment on have scope ``paper`` and go to ``claims.csv``; rows of any other model
(a stand-in, a model organism, a user's model) are marked ``paper claim, applied to <model>`` and
go to a separate file (:func:`write_claims`). A user's own task never enters either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from patchbench.analysis.claims.core import (
    BASELINE_COLUMNS,
    CANNOT,
    CLAIM_COLUMNS,
    LD_MIN_DROP,
    NOT_RUN,
    PAPER_MODELS,
    PAPER_SCOPE,
    scope_of,
)
from patchbench.analysis.claims.factual import (
    claims_gn_str_peak,
    claims_last_middle,
    claims_sliding_summed,
    middle_layers,
)
from patchbench.analysis.claims.ioi import claims_negative_heads, claims_nm_attention, claims_p_io
from patchbench.atomic import write_text

__all__ = [
    "BASELINE_COLUMNS",
    "CANNOT",
    "CLAIM_COLUMNS",
    "LD_MIN_DROP",
    "NOT_RUN",
    "PAPER_MODELS",
    "build_claims",
    "claims_gn_str_peak",
    "claims_last_middle",
    "claims_negative_heads",
    "claims_nm_attention",
    "claims_p_io",
    "claims_sliding_summed",
    "middle_layers",
    "split_scope",
    "write_claims",
]

log = logging.getLogger(__name__)


def _models(*frames: pd.DataFrame | None) -> list[str]:
    found: set[str] = set()
    for f in frames:
        if f is not None and len(f) and "model" in f.columns:
            found |= set(f["model"].astype(str))
    return sorted(found)


def _of(frame: pd.DataFrame | None, model: str) -> pd.DataFrame | None:
    if frame is None or not len(frame):
        return None
    out = frame[frame["model"].astype(str) == model] if "model" in frame.columns else frame
    return out if len(out) else None


def _per_model(rows: list[dict], model: str) -> list[dict]:
    return [{**r, "model": model} if r["model"] == "" else r for r in rows]


def build_claims(
    factual_last: pd.DataFrame | None = None,
    factual_categories: pd.DataFrame | None = None,
    ioi_effects: Mapping[str, pd.DataFrame | None] | None = None,
    baselines: pd.DataFrame | None = None,
    nm_attention: pd.DataFrame | None = None,
    nm_recovery: pd.DataFrame | None = None,
    negative_name_movers: Mapping[str, Sequence[str]] | None = None,
    hub_names: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Every claim, in the paper's order of sections, each row with its ``scope``.

    Frames may hold several models (a ``model`` column); each claim is computed per model that has
    its inputs. ``ioi_effects`` maps STR / GN / ABC to head effects; ``baselines`` has
    :data:`BASELINE_COLUMNS`; ``negative_name_movers`` maps a model to its known NNMs (``L.H``);
    ``hub_names`` maps a config model name to its hub name, which decides the scope.
    """
    ioi_effects = dict(ioi_effects or {})
    nnm = dict(negative_name_movers or {})
    rows: list[dict] = []
    rows += claims_gn_str_peak(factual_last, baselines)
    nm_models = _models(nm_attention, nm_recovery)
    for m in nm_models:
        rows += _per_model(claims_nm_attention(_of(nm_attention, m), _of(nm_recovery, m), baselines, m), m)
    if not nm_models:
        rows += claims_nm_attention(None, None)
    rows += claims_last_middle(factual_categories, baselines)
    ioi_models = _models(*ioi_effects.values())
    for m in ioi_models:
        rows += _per_model(
            claims_p_io(baselines, m) + claims_negative_heads(ioi_effects, baselines, m, nnm.get(m)), m
        )
    if not ioi_models:
        rows += claims_p_io(None, "") + claims_negative_heads({}, None, "", None)
    rows += claims_sliding_summed(factual_last, baselines)
    out = pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
    out["scope"] = [scope_of(s, m, hub_names) for s, m in zip(out["section"], out["model"], strict=True)]
    return out


def split_scope(claims: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the paper's models' rows, the rows of claims applied to other models).

    A section without any row on a paper model gets ``not run`` rows in the first table, which say
    where its applied rows are.
    """
    paper = claims[claims["scope"].isin([PAPER_SCOPE, ""])].copy()
    applied = claims[~claims["scope"].isin([PAPER_SCOPE, ""])].copy()
    gaps = []
    for section in dict.fromkeys(claims["section"]):
        if (paper["section"] == section).any():
            continue
        first = claims[claims["section"] == section].iloc[0]
        others = sorted(set(applied.loc[applied["section"] == section, "model"]))
        note = f"no model of the paper runs this experiment here; applied to {', '.join(others)} in the applied table"
        gaps.append({**first.to_dict(), "model": "", "scope": PAPER_SCOPE, "quantity": note, "value": float("nan"),
                     "holds": "", "status": NOT_RUN})  # fmt: skip
    if gaps:
        paper = pd.concat([paper, pd.DataFrame(gaps)], ignore_index=True)
        order = {s: i for i, s in enumerate(dict.fromkeys(claims["section"]))}
        paper = paper.sort_values("section", key=lambda s: s.map(order), kind="stable")
    return paper.reset_index(drop=True), applied.reset_index(drop=True)


def write_claims(
    claims: pd.DataFrame, path: str | Path, applied_path: str | Path | None = None
) -> list[Path]:
    """Write the paper's models' claims to ``path`` and, given ``applied_path``, the applied ones there."""
    paper, applied = split_scope(claims) if applied_path is not None else (claims, None)
    written = []
    for frame, p in ((paper, path), (applied, applied_path)):
        if frame is None:
            continue
        p = Path(p)
        write_text(p, frame.to_csv(index=False, float_format="%.6g"))
        log.info("wrote %s (%d rows: %d hold, %d do not, %d cannot be judged, %d not run)", p, len(frame),
                 int((frame["holds"] == "yes").sum()), int((frame["holds"] == "no").sum()),
                 int((frame["status"] == CANNOT).sum()), int((frame["status"] == NOT_RUN).sum()))  # fmt: skip
        written.append(p)
    return written
