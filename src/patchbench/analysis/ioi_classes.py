"""IOI attention-head classes: Wang et al.'s published GPT-2-small lists and an automatic classifier.

Table 1 of Zhang & Nanda counts, per corruption x metric, how many heads of each IOI class
(Name Mover, Duplicate Token, S-Inhibition, Negative Name Mover, Induction) patching detects.
For GPT-2 small the classes are Wang et al. (2023)'s published lists, kept in
``data/ioi_heads_gpt2_small.json`` with the citation; for a model organism they are its
``circuit.json`` (known by construction, :func:`read_classes`), beside which the classifier's
classes are reported with their agreement (:func:`class_agreement`). Any other model has no known
circuit, so this module labels its heads by their behaviour on the clean IOI prompts, with the
rules of Wang et al.'s own head descriptions:

=====================  =======================================  ===============================
class                  attention (mean prob. over prompts)      direct logit attribution (DLA)
=====================  =======================================  ===============================
name_mover             END -> IO  >= ``attention``              DLA >= +``dla`` x max|DLA|
negative_name_mover    END -> IO  >= ``attention``              DLA <= -``dla`` x max|DLA|
s_inhibition           END -> S2  >= ``attention``              (none)
duplicate_token        S2  -> S1  >= ``attention``              (none)
induction              S2  -> S1+1 >= ``attention``             (none)
=====================  =======================================  ===============================

DLA is the head's output at END, passed through the final norm's linear part (centred for a
LayerNorm, divided by the run's own final-norm scale, times the norm weight:
:meth:`patchbench.lm.LM.final_norm_linear`) and projected on
``W_U[:, IO] - W_U[:, S]``: the head's direct contribution to the IOI logit difference. The DLA
threshold is relative to the largest |DLA| of any head, so it carries across model sizes.
Defaults (:class:`Thresholds`): attention 0.3, DLA 0.2. A head may satisfy several rules and then
belongs to several classes (so do a few of Wang et al.'s heads).

:func:`classifier_inputs` computes the per-head statistics from a model (:class:`patchbench.lm.LM`) and an IOI
``PromptSet`` (named positions IO, S1, S2, END); :func:`classify_heads` applies the rules. Both are
separate so that the rules are testable on synthetic statistics without a model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from patchbench.lm import LM

__all__ = [
    "CLASSES",
    "CLASS_LABELS",
    "GPT2_SMALL_ALIASES",
    "HEAD_STAT_COLUMNS",
    "Thresholds",
    "class_agreement",
    "class_frame",
    "classifier_inputs",
    "classify_heads",
    "default_classes_path",
    "head_classes_for",
    "published_classes",
    "read_classes",
]

log = logging.getLogger(__name__)

#: Table 1's classes, in the paper's column order.
CLASSES: tuple[str, ...] = (
    "name_mover",
    "duplicate_token",
    "s_inhibition",
    "negative_name_mover",
    "induction",
)
CLASS_LABELS: dict[str, str] = {
    "name_mover": "NM",
    "duplicate_token": "DT",
    "s_inhibition": "SI",
    "negative_name_mover": "Negative NM",
    "induction": "Induction",
}
#: Model names under which the published GPT-2-small lists apply.
GPT2_SMALL_ALIASES = frozenset({"gpt2", "gpt2-small", "openai-community/gpt2"})

#: Columns of the per-head statistics frame (one row per head).
HEAD_STAT_COLUMNS: tuple[str, ...] = (
    "layer", "head", "end_to_io", "end_to_s1", "end_to_s2", "s2_to_s1", "s2_to_s1_next", "dla",
)  # fmt: skip

REQUIRED_POSITIONS = ("IO", "S1", "S2", "END")


@dataclass(frozen=True)
class Thresholds:
    """Classifier thresholds (see the module docstring for the rules)."""

    attention: float = 0.3  # mean attention probability from the query to the key position
    dla: float = 0.2  # |DLA| as a fraction of the largest |DLA| over all heads

    def __post_init__(self) -> None:
        if not 0.0 < self.attention <= 1.0:
            raise ValueError(f"attention threshold {self.attention} must lie in (0, 1]")
        if not 0.0 < self.dla <= 1.0:
            raise ValueError(f"DLA threshold {self.dla} must lie in (0, 1] (a fraction of max |DLA|)")


# --------------------------------------------------------------------------- published lists
def default_classes_path() -> Path:
    """``data/ioi_heads_gpt2_small.json`` of the repository this package is installed from."""
    return Path(__file__).resolve().parents[3] / "data" / "ioi_heads_gpt2_small.json"


def class_frame(classes: dict[str, list[tuple[int, int]] | list[list[int]]]) -> pd.DataFrame:
    """``{class: [(layer, head), ...]}`` -> long frame with columns class, layer, head."""
    rows = [(c, int(layer), int(head)) for c, heads in classes.items() for layer, head in heads]
    df = pd.DataFrame(rows, columns=["class", "layer", "head"])
    return df.astype({"layer": np.int64, "head": np.int64})


def published_classes(path: str | Path | None = None, which: str = "table1_classes") -> pd.DataFrame:
    """Wang et al.'s GPT-2-small head classes (``table1_classes`` or ``all_classes``)."""
    path = Path(path) if path is not None else default_classes_path()
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; it ships with the repository (data/ioi_heads_gpt2_small.json)"
        )
    data = json.loads(path.read_text())
    if which not in data:
        raise KeyError(f"{path} has no {which!r}; choose one of {[k for k in data if k.endswith('classes')]}")
    return class_frame(data[which])


def read_classes(path: str | Path) -> pd.DataFrame:
    """A class frame from the published JSON (``table1_classes``), an organism's ``circuit.json``
    (its head classes, the truth by construction: ``patchbench.toy.circuit``) or a classifier CSV
    (class, layer, head)."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "kind" in data:
            from patchbench.toy.circuit import Circuit

            return class_frame(dict(Circuit.from_config(data).heads))
        return published_classes(path)
    df = pd.read_csv(path)
    missing = {"class", "layer", "head"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a head-class file, columns {sorted(missing)} are missing")
    return df[["class", "layer", "head"]].astype({"layer": np.int64, "head": np.int64})


def class_agreement(truth: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
    """Per Table-1 class, the heads of the truth (a circuit known by construction) and of the
    classifier, both, and the classifier's precision and recall against the truth (NaN for an
    empty denominator). Both frames are class frames (class, layer, head)."""

    def heads(frame: pd.DataFrame, cls: str) -> set[str]:
        sub = frame[frame["class"] == cls]
        return {f"{la}.{h}" for la, h in zip(sub["layer"], sub["head"], strict=True)}

    def key(name: str) -> tuple[int, int]:
        la, h = name.split(".")
        return int(la), int(h)

    rows = []
    for cls in CLASSES:
        t, f = heads(truth, cls), heads(found, cls)
        both = t & f
        rows.append({
            "class": CLASS_LABELS[cls], "truth": ", ".join(sorted(t, key=key)),
            "classifier": ", ".join(sorted(f, key=key)), "both": len(both),
            "precision": len(both) / len(f) if f else float("nan"),
            "recall": len(both) / len(t) if t else float("nan"),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["class", "truth", "classifier", "both", "precision", "recall"])


# --------------------------------------------------------------------------- classifier
def classify_heads(stats: pd.DataFrame, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """Label heads from their statistics (columns :data:`HEAD_STAT_COLUMNS`).

    Returns the long class frame (class, layer, head), heads sorted within a class.
    """
    missing = [c for c in HEAD_STAT_COLUMNS if c not in stats.columns]
    if missing:
        raise ValueError(f"head statistics lack columns {missing}; build them with classifier_inputs()")
    a = thresholds.attention
    max_dla = float(np.abs(stats["dla"]).max()) if len(stats) else 0.0
    dla_cut = thresholds.dla * max_dla
    if max_dla == 0.0:
        log.warning("every head has zero direct logit attribution; no (negative) name movers can be found")
    rules = {
        "name_mover": (stats["end_to_io"] >= a) & (stats["dla"] >= dla_cut) & (stats["dla"] > 0),
        "duplicate_token": stats["s2_to_s1"] >= a,
        "s_inhibition": stats["end_to_s2"] >= a,
        "negative_name_mover": (stats["end_to_io"] >= a) & (stats["dla"] <= -dla_cut) & (stats["dla"] < 0),
        "induction": stats["s2_to_s1_next"] >= a,
    }
    parts = []
    for cls in CLASSES:
        hit = stats.loc[rules[cls], ["layer", "head"]].sort_values(["layer", "head"])
        parts.append(hit.assign(**{"class": cls})[["class", "layer", "head"]])
    return pd.concat(parts, ignore_index=True).astype({"layer": np.int64, "head": np.int64})


def head_classes_for(
    model: str,
    stats: pd.DataFrame | None = None,
    thresholds: Thresholds = Thresholds(),
    published_path: str | Path | None = None,
) -> tuple[pd.DataFrame, str]:
    """The class frame Table 1 uses for ``model`` and where it came from.

    GPT-2 small (any alias in :data:`GPT2_SMALL_ALIASES`) -> the published lists, source
    ``"Wang et al. (2023)"``; any other model -> :func:`classify_heads` on ``stats``, source
    ``"automatic classifier"``.
    """
    if model in GPT2_SMALL_ALIASES:
        return published_classes(published_path), "Wang et al. (2023)"
    if stats is None:
        raise ValueError(
            f"model {model!r} has no published IOI head classes; pass its head statistics "
            "(classifier_inputs(model, prompts).pipe(...)) to classify it automatically"
        )
    return classify_heads(stats, thresholds), "automatic classifier"


def _named_positions(prompts) -> dict[str, torch.Tensor]:
    missing = [p for p in REQUIRED_POSITIONS if p not in prompts.positions]
    if missing:
        raise ValueError(
            f"PromptSet of task {prompts.task!r} lacks named positions {missing}; "
            "the classifier needs an IOI PromptSet with positions IO, S1, S2 and END"
        )
    pos = {k: torch.as_tensor(np.asarray(prompts.positions[k]).copy()) for k in REQUIRED_POSITIONS}
    for k, v in pos.items():
        if bool((v < 0).any()):
            raise ValueError(
                f"position {k} is absent (-1) in some prompts; the classifier needs it in every prompt"
            )
    return pos


@torch.no_grad()
def classifier_inputs(model: LM, prompts, batch_size: int = 32) -> pd.DataFrame:
    """Per-head statistics on the clean IOI prompts (columns :data:`HEAD_STAT_COLUMNS`).

    Runs the clean prompts in batches through the model interface and averages over prompts:
    attention probabilities END->IO, END->S1, END->S2, S2->S1, S2->(S1+1), and each head's direct
    logit attribution to IO - S at END (``z @ W_O`` through the final norm's linear part at the
    run's own residual, see the module docstring). IO and S are the prompt's ``answers[0]`` and
    ``wrong[0]``; ``prompts`` is a ``patchbench.prompts.PromptSet``.
    """
    pos = _named_positions(prompts)
    n_layers, n_heads = model.shape.n_layers, model.shape.n_heads
    device = model.shape.device
    tokens = prompts.tokens("clean")
    io_tok = torch.as_tensor([int(a[0]) for a in prompts.answers])
    s_tok = torch.as_tensor([int(w[0]) for w in prompts.wrong])
    s1_next = pos["S1"] + 1
    sums = {k: torch.zeros(n_layers, n_heads, dtype=torch.float64) for k in HEAD_STAT_COLUMNS[2:]}
    names = [model.hook_name(site, layer) for layer in range(n_layers) for site in ("pattern", "attn_head")]
    n = len(prompts)
    cache: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, name: str) -> None:
        cache[name] = act

    for start in tqdm(range(0, n, batch_size), desc="IOI head statistics", disable=n <= batch_size):
        sl = slice(start, min(start + batch_size, n))
        batch = torch.arange(sl.stop - sl.start)
        with model.hooks([(name, grab) for name in names]):
            resid = model.run_blocks(model.embed(tokens[sl].to(device)), 0)
        end = pos["END"][sl].to(device)
        direction = model.W_U[:, io_tok[sl].to(device)] - model.W_U[:, s_tok[sl].to(device)]  # d_model batch
        resid_end = resid[batch, end][:, None, :]  # batch 1 d_model
        for layer in range(n_layers):
            pattern = cache[model.hook_name("pattern", layer)]  # batch head q k
            for key, q, k in (
                ("end_to_io", pos["END"], pos["IO"]),
                ("end_to_s1", pos["END"], pos["S1"]),
                ("end_to_s2", pos["END"], pos["S2"]),
                ("s2_to_s1", pos["S2"], pos["S1"]),
                ("s2_to_s1_next", pos["S2"], s1_next),
            ):
                vals = pattern[batch, :, q[sl].to(device), k[sl].to(device)]  # batch head
                sums[key][layer] += vals.sum(0).double().cpu()
            z = cache[model.hook_name("attn_head", layer)][batch, end]  # batch head d_head
            result = torch.einsum("bhd,hdm->bhm", z, model.W_O(layer))  # batch head d_model
            mapped = model.final_norm_linear(result, resid_end)
            dla = torch.einsum("bhm,mb->bh", mapped, direction)
            sums["dla"][layer] += dla.sum(0).double().cpu()
    layers, heads = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    out = {"layer": layers.ravel().astype(np.int64), "head": heads.ravel().astype(np.int64)}
    out.update({k: (v / n).numpy().ravel() for k, v in sums.items()})
    return pd.DataFrame(out, columns=list(HEAD_STAT_COLUMNS))
