"""Independent check of a greater-than organism (circuit kind ``greater_than``), by plain forward hooks.

On the greater-than task's prompts (``patchbench.tasks.greater_than``; STR sets YY to "01", GN
noises YY): ``clean_p`` (mean P(ZZ > YY)), ``gn_ratio``, ``circuit_ablation`` (logit difference
mean logit(ZZ > YY) - mean logit(ZZ < YY) left with the year movers and the comparison MLPs
mean-ablated at the last token) and the details of ``patchbench.toy.checks.common.standard_check``;
``failures`` lists the stated properties (``PROPERTIES``) the organism misses.
"""

from __future__ import annotations

from pathlib import Path

import torch

from patchbench.lm import LM
from patchbench.toy.checks.common import standard_check
from patchbench.toy.circuit import Circuit

__all__ = ["PROPERTIES", "check"]

PROPERTIES = {
    "circuit_ablation": "mean-ablating the circuit leaves at most 0.25 of the clean logit difference, "
    "random sets of as many components outside it at least 0.75 (mean of the draws)",
    "attention": "every year mover puts at least 0.5 of its last-token attention on YY",
    "restoration": "under STR, the year movers' clean outputs restore at least half of P(clean) - P(corrupted), "
    "and so do the comparison MLPs'",
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
    r["failures"] = _failures(r)
    return r


def _failures(r: dict) -> list[str]:
    d, bad = r["details"], []
    if not (r["circuit_ablation"] <= 0.25 and d["random_ablation"]["mean"] >= 0.75):
        bad.append(
            f"circuit_ablation {r['circuit_ablation']:.3f}, random {d['random_ablation']['mean']:.3f}: "
            f"{PROPERTIES['circuit_ablation']}"
        )
    low = {k: v for k, v in d["attention"].items() if v < 0.5}
    if low:
        bad.append(f"attention {low}: {PROPERTIES['attention']}")
    weak = {k: v for k, v in d["restored_under_str"].items() if v < 0.5}
    if weak:
        bad.append(f"restoration {weak}: {PROPERTIES['restoration']}")
    return bad
