"""What every claim row shares: its columns, the paper's numbers, its scope and when it cannot be judged.

A row (:func:`row`) has the columns :data:`CLAIM_COLUMNS`:

``section`` (of the paper), ``model``, ``scope`` (``paper``: a model the paper ran that
experiment on; ``paper claim, applied to <model>`` otherwise), ``claim`` (the paper's statement,
shortened), ``quantity`` (what is computed, naming corruption / metric / window), ``paper_value``
and ``paper_source`` (the paper's number and where it stands: section, figure or table, model),
``value`` (this run), ``holds`` (``yes`` / ``no``; empty for rows that report a number without a
verdict; ``cannot be judged: <reason>`` when the quantity is ill-conditioned on this model),
``status`` (``ok`` / ``not run`` / ``cannot be judged``) and ``rule`` (the paper's words, quoted,
and how the verdict is decided; a threshold the paper does not state says "threshold ours" and why).

Ill-conditioned quantities (:func:`ld_unjudged`, :func:`ratio_unjudged`):

- the normalised logit difference (LD_pt - LD_*) / (LD_cl - LD_*) divides by the drop the
  corruption causes; when that drop is below :data:`LD_MIN_DROP` of the clean logit difference
  (or the clean logit difference is not positive), any value of it is noise amplified by more
  than 1 / LD_MIN_DROP, so a claim on it cannot be judged;
- a ratio of two effects is not defined by the data when its denominator lies within
  :data:`SE_K` standard errors of zero (or below it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from patchbench.analysis.ioi_classes import GPT2_SMALL_ALIASES
from patchbench.analysis.labels import corruption_label
from patchbench.detection import PAPER_K

__all__ = [
    "BASELINE_COLUMNS",
    "CANNOT",
    "CLAIM_COLUMNS",
    "LD_MIN_DROP",
    "NOT_RUN",
    "PAPER_MODELS",
    "SE_K",
    "Paper",
    "baseline",
    "ld_unjudged",
    "missing",
    "paper_rows",
    "ratio",
    "ratio_unjudged",
    "row",
    "scope_of",
]

CLAIM_COLUMNS = (
    "section", "model", "scope", "claim", "quantity", "paper_value", "paper_source", "value", "holds",
    "status", "rule",
)  # fmt: skip
NOT_RUN = "not run"
CANNOT = "cannot be judged"
PAPER_SCOPE = "paper"

#: Threshold ours: the normalised logit difference is judged only when the corruption removes at
#: least this share of the clean logit difference (below it, 1 / denominator amplifies noise more
#: than tenfold).
LD_MIN_DROP = 0.1
#: Threshold ours: a ratio's denominator must lie more than this many standard errors above 0
#: (the paper's own 2-SD convention).
SE_K = PAPER_K

#: The clean / corrupted baselines the claims read (from the effects files' metadata).
BASELINE_COLUMNS = (
    "model", "task", "corruption", "clean_logit_diff", "corrupted_logit_diff", "clean_prob_ans",
    "corrupted_prob_ans",
)  # fmt: skip

#: The models the paper ran each family of experiments on (hub names, lower case): factual recall
#: on GPT-2 XL (§3-5), GPT-2 large (App. G.4) and GPT-J (App. G.5); IOI on GPT-2 small.
PAPER_MODELS: dict[str, frozenset[str]] = {
    "factual": frozenset(
        {
            "gpt2-xl",
            "openai-community/gpt2-xl",
            "gpt2-large",
            "openai-community/gpt2-large",
            "eleutherai/gpt-j-6b",
        }
    ),
    "ioi": frozenset(GPT2_SMALL_ALIASES),
}
SECTION_FAMILY = {"3.1": "factual", "4.1": "factual", "5": "factual", "3.2": "ioi", "4.2": "ioi"}


@dataclass(frozen=True)
class Paper:
    """One number of the paper and where it stands (section / figure / table, model)."""

    value: str
    source: str


def scope_of(section: str, model: str, hub_names: Mapping[str, str | None] | None) -> str:
    """``paper`` when ``model`` (a config name; its hub name from ``hub_names``) is one the paper ran
    this section's experiment on, else ``paper claim, applied to <model>``; empty for no model."""
    if not model:
        return ""
    hub = (hub_names or {}).get(model) or ""
    known = PAPER_MODELS[SECTION_FAMILY[section]]
    return PAPER_SCOPE if hub.lower() in known else f"paper claim, applied to {model}"


def row(
    section: str,
    claim: str,
    quantity: str,
    value: float | None = np.nan,
    holds: bool | None = None,
    *,
    paper: Paper | None = None,
    rule: str = "",
    status: str = "ok",
    model: str = "",
    unjudged: str | None = None,
) -> dict:
    """One claims row; ``unjudged`` (a reason) replaces the verdict with ``cannot be judged: <reason>``."""
    verdict = "" if holds is None or status != "ok" else ("yes" if holds else "no")
    if unjudged and status == "ok":
        status, verdict = CANNOT, f"{CANNOT}: {unjudged}"
    return {
        "section": section,
        "model": model,
        "scope": "",
        "claim": claim,
        "quantity": quantity,
        "paper_value": paper.value if paper else "",
        "paper_source": paper.source if paper else "",
        "value": float(value) if value is not None else np.nan,
        "holds": verdict,
        "status": status,
        "rule": rule,
    }


def missing(
    section: str, claim: str, quantity: str, rule: str = "", paper: Paper | None = None
) -> list[dict]:
    """A ``not run`` row: the config runs no experiment that gives this quantity."""
    return [row(section, claim, quantity, status=NOT_RUN, rule=rule, paper=paper)]


def ratio(a: float, b: float) -> float:
    return a / b if b != 0.0 and np.isfinite(b) else np.nan


def ld_unjudged(base: Mapping[str, float] | None, corruption: str) -> str | None:
    """Why the normalised logit difference under ``corruption`` cannot be judged, or None."""
    if base is None:
        return None
    cl, co = float(base["clean_logit_diff"]), float(base["corrupted_logit_diff"])
    if not (np.isfinite(cl) and np.isfinite(co)):
        return None
    if cl <= 0:
        return f"the clean logit difference {cl:.3g} is not positive (the model does not prefer the answer)"
    drop = cl - co
    if drop < LD_MIN_DROP * cl:
        return (
            f"{corruption} lowers the logit difference only from {cl:.3g} to {co:.3g} ({drop / cl:.1%} of it); "
            f"the normalised logit difference divides by that drop (threshold ours: {LD_MIN_DROP:.0%} of the clean value)"
        )
    return None


def ratio_unjudged(what: str, denominator: float, se: float | None) -> str | None:
    """Why a ratio to ``denominator`` (standard error ``se``) is not defined by the data, or None."""
    if not np.isfinite(denominator):
        return None
    if denominator <= 0:
        return f"the {what} {denominator:.3g} is not positive, so the ratio to it has no meaning"
    if se is not None and np.isfinite(se) and denominator <= SE_K * se:
        return (
            f"the {what} {denominator:.3g} lies within {SE_K:g} standard errors ({SE_K * se:.3g}) of 0 "
            f"(threshold ours: {SE_K:g} SE, the paper's 2-SD convention)"
        )
    return None


def baseline(baselines: pd.DataFrame | None, model: str, task: str, corruption: str) -> dict | None:
    """The clean / corrupted baselines of (model, task, corruption), or None when not known."""
    if baselines is None or not len(baselines):
        return None
    b = baselines[
        (baselines["model"].astype(str) == str(model))
        & (baselines["task"].astype(str) == task)
        & (baselines["corruption"].map(corruption_label) == corruption_label(corruption))
    ]
    return b.iloc[0].to_dict() if len(b) else None


def paper_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the paper's own setting: STR and GN, denoising (clean into corrupted) where a
    frame records a direction; other corruptions and directions are outside its claims."""
    out = df[df["corruption"].map(corruption_label).isin(["STR", "GN"])]
    if "direction" in out.columns:
        out = out[out["direction"].fillna("denoising").astype(str) == "denoising"]
    return out
