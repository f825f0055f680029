"""Independent check of a greater-than organism (circuit kind ``greater_than``), by plain forward hooks.

On the greater-than task's prompts (``patchbench.tasks.greater_than``; STR sets YY to "01", GN
noises YY): ``clean_p`` (mean P(ZZ > YY)), ``gn_ratio``, ``circuit_ablation`` (logit difference
mean logit(ZZ > YY) - mean logit(ZZ < YY) left with the year movers and the comparison MLPs
mean-ablated at the last token) and the details of ``patchbench.toy.checks_common.standard_check``;
``properties`` holds the quantities ``BOUNDS`` states bounds for, ``failures`` the stated properties
the organism misses.
"""

from __future__ import annotations

from pathlib import Path

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
    "restored_year_mover": (0.5, None),
    "restored_comparison": (0.5, None),
}
PROPERTIES = {
    "circuit_ablation": "mean-ablating the circuit leaves at most a quarter of the clean logit difference",
    "random_ablation": "random sets of as many components outside the circuit leave at least 0.75 (mean of the draws)",
    "attention_min": "every year mover puts at least 0.5 of its last-token attention on YY",
    "restored_year_mover": "under STR, the year movers' clean outputs restore at least half of P(clean) - P(corrupted)",
    "restored_comparison": "under STR, the comparison MLPs' clean outputs restore at least half of it",
}


@torch.no_grad()
def check(model: LM, circuit: Circuit, data_dir: str | Path, *, n_prompts: int = 150, seed: int = 0) -> dict:
    """The numbers of the module docstring and the properties the organism misses."""
    from patchbench.tasks import build_task

    if circuit.kind != "greater_than":
        raise ValueError(f"not a greater-than circuit: {circuit.kind!r}")
    circuit.check_shape(model.shape.n_layers, model.shape.n_heads)
    ps = build_task("greater_than", model.tokenizer, data_dir, n_prompts=n_prompts, seed=seed)
    movers = [("z", la, h) for la, h in circuit.head("year_mover")]
    parts = {
        "year_mover": [(c, "END") for c in movers],
        "comparison": [(("mlp", la, None), "END") for la in circuit.mlp("comparison")],
    }
    end = torch.tensor(ps.positions["END"])
    yy = torch.tensor(ps.positions["YY"])
    r = {
        "kind": "greater_than",
        **standard_check(model, ps, parts, {c: (end, yy) for c in movers}, seed=seed),
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
        **{f"restored_{cls}": v for cls, v in d["restored_under_str"].items()},
    }


def measure(model: LM, circuit: Circuit, held, data_dir: str | Path, n_prompts: int, seed: int) -> Measured:
    """``patchbench organisms``' entry: the check as one organism's measurement (``measured``)."""
    return measured("greater_than", check(model, circuit, data_dir, n_prompts=n_prompts, seed=seed))
