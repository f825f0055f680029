"""Independent check of a docstring organism (circuit kind ``docstring``), by plain forward hooks.

On the docstring task's prompts (``patchbench.tasks.docstring``, ACDC's "rest" prompts; STR puts
an unused name in C_def's place in the signature, GN noises C_def): ``clean_p`` (mean P(C_def)),
``gn_ratio``, ``circuit_ablation`` (logit difference C_def - replacement left with the circuit
mean-ablated where it acts: argument movers and last-param heads at the last token, previous-
argument heads at C_def, previous-token heads at B's docstring occurrence) and the details of
``patchbench.toy.checks_common.standard_check``; ``properties`` holds the quantities
``BOUNDS`` states bounds for, ``failures`` the stated properties the organism misses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from patchbench.lm import LM
from patchbench.toy.checks import Measured
from patchbench.toy.checks_common import failed, measured, standard_check
from patchbench.toy.circuit import Circuit

__all__ = ["BOUNDS", "PROPERTIES", "check", "measure"]

#: The stated properties: measured quantity -> (min, max), None for no bound, and why.
BOUNDS = {
    "circuit_ablation": (None, 0.25),
    "random_ablation": (0.75, None),
    "attention_min": (0.5, None),
    "restored_argument_mover": (0.5, None),
}
PROPERTIES = {
    "circuit_ablation": "mean-ablating the circuit leaves at most a quarter of the clean logit difference",
    "random_ablation": "random sets of as many heads outside the circuit leave at least 0.75 (mean of the draws)",
    "attention_min": "each circuit head puts at least 0.5 of its attention where its class says (argument movers: "
    "last token -> C_def; last-param: last token -> B's docstring occurrence; previous-argument: C_def -> B_def; "
    "previous-token: B's docstring occurrence -> the token before it)",
    "restored_argument_mover": "under STR, the argument movers' clean outputs restore at least half of "
    "P(clean) - P(corrupted)",
}


@torch.no_grad()
def check(model: LM, circuit: Circuit, data_dir: str | Path, *, n_prompts: int = 100, seed: int = 0) -> dict:
    """The numbers of the module docstring and the properties the organism misses."""
    from patchbench.tasks import build_task

    if circuit.kind != "docstring":
        raise ValueError(f"not a docstring circuit: {circuit.kind!r}")
    circuit.check_shape(model.shape.n_layers, model.shape.n_heads)
    ps = build_task("docstring", model.tokenizer, data_dir, n_prompts=n_prompts, seed=seed)
    pos = {k: torch.tensor(np.asarray(ps.positions[k], dtype=np.int64)) for k in ("END", "C_def", "B_def")}
    b_doc = torch.tensor(
        [
            max(i for i, t in enumerate(ids) if t == ids[b])
            for ids, b in zip(ps.clean, pos["B_def"].tolist(), strict=True)
        ]
    )
    heads = {cls: [("z", la, h) for la, h in circuit.head(cls)] for cls in circuit.heads}
    where = {
        "argument_mover": "END",
        "last_param": "END",
        "previous_argument": "C_def",
        "previous_token": "B_doc",
    }
    parts = {cls: [(c, where[cls]) for c in cs] for cls, cs in heads.items()}
    at = {"B_doc": b_doc, **pos}
    looks = {
        "argument_mover": (at["END"], at["C_def"]),
        "last_param": (at["END"], b_doc),
        "previous_argument": (at["C_def"], at["B_def"]),
        "previous_token": (b_doc, b_doc - 1),
    }
    attention = {c: looks[cls] for cls, cs in heads.items() for c in cs}
    r = {
        "kind": "docstring",
        **standard_check(model, ps, parts, attention, extra_positions={"B_doc": b_doc}, seed=seed),
    }
    r["properties"] = _properties(r)
    r["failures"] = failed(BOUNDS, r["properties"], PROPERTIES)
    return r


def _properties(r: dict) -> dict[str, float]:
    d = r["details"]
    return {
        "circuit_ablation": r["circuit_ablation"],
        "random_ablation": d["random_ablation"]["mean"],
        "attention_min": min(d["attention"].values(), default=float("nan")),
        "restored_argument_mover": d["restored_under_str"].get("argument_mover", float("nan")),
    }


def measure(model: LM, circuit: Circuit, held, data_dir: str | Path, n_prompts: int, seed: int) -> Measured:
    """``patchbench organisms``' entry: the check as one organism's measurement (``measured``)."""
    return measured("docstring", check(model, circuit, data_dir, n_prompts=n_prompts, seed=seed))
