"""Independent check of an arithmetic organism (circuit kind ``arithmetic``), by plain forward hooks.

On the arithmetic tasks' prompts (``patchbench.tasks.arithmetic``: addition and subtraction with
operands up to 40, the demo's setting, and multiplication; STR redraws X3 and Y3, GN noises
them): per operator and as their mean, ``clean_p``, ``gn_ratio``, ``circuit_ablation`` (the
operand movers and the result MLPs mean-ablated at the last token) and the details of
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

__all__ = ["BOUNDS", "PROPERTIES", "TASKS", "check", "measure"]

#: The tasks checked and their options (the demo's: operands up to 40 for + and -).
TASKS = {"arithmetic_add": {"max_n": 40}, "arithmetic_sub": {"max_n": 40}, "arithmetic_mul": {}}

#: The stated properties: measured quantity -> (min, max), None for no bound, and why.
BOUNDS = {
    "circuit_ablation": (None, 0.25),
    "random_ablation": (0.75, None),
    "attention_min": (0.5, None),
    "restored_operand_mover": (0.5, None),
    "restored_result": (0.5, None),
}
PROPERTIES = {
    "circuit_ablation": "for every operator, mean-ablating the circuit leaves at most a quarter of the clean "
    "logit difference (the largest of the three)",
    "random_ablation": "random sets of as many components outside the circuit leave at least 0.75 (mean of the "
    "draws; the smallest of the three operators)",
    "attention_min": "x movers put at least 0.5 of their last-token attention on X3, y movers on Y3 (every operator)",
    "restored_operand_mover": "under STR, the movers' clean outputs restore at least half of P(clean) - "
    "P(corrupted) (every operator)",
    "restored_result": "under STR, the result MLPs' clean outputs restore at least half of it (every operator)",
}


@torch.no_grad()
def check(model: LM, circuit: Circuit, data_dir: str | Path, *, n_prompts: int = 100, seed: int = 0) -> dict:
    """The numbers of the module docstring and the properties the organism misses."""
    from patchbench.tasks import build_task

    if circuit.kind != "arithmetic":
        raise ValueError(f"not an arithmetic circuit: {circuit.kind!r}")
    circuit.check_shape(model.shape.n_layers, model.shape.n_heads)
    xs = [("z", la, h) for la, h in circuit.head("x_mover")]
    ys = [("z", la, h) for la, h in circuit.head("y_mover")]
    parts = {
        "operand_mover": [(c, "END") for c in xs + ys],
        "result": [(("mlp", la, None), "END") for la in circuit.mlp("result")],
    }
    per_task = {}
    for task, options in TASKS.items():
        ps = build_task(task, model.tokenizer, data_dir, n_prompts=n_prompts, seed=seed, **options)
        end, px, py = (torch.tensor(np.asarray(ps.positions[k], dtype=np.int64)) for k in ("END", "X3", "Y3"))
        attention = {c: (end, px) for c in xs} | {c: (end, py) for c in ys}
        per_task[task] = standard_check(model, ps, parts, attention, seed=seed)
    r = {
        "kind": "arithmetic",
        "n_prompts": sum(t["n_prompts"] for t in per_task.values()),
        **{
            k: float(np.mean([t[k] for t in per_task.values()]))
            for k in ("clean_p", "gn_ratio", "circuit_ablation")
        },
        "backup_compensation": None,
        "details": per_task,
    }
    r["properties"] = _properties(r)
    r["failures"] = failed(BOUNDS, r["properties"], PROPERTIES)
    return r


def _properties(r: dict) -> dict[str, float]:
    per = [t["details"] for t in r["details"].values()]
    return {
        "circuit_ablation": max(t["circuit_ablation"] for t in r["details"].values()),
        "random_ablation": min(d["random_ablation"]["mean"] for d in per),
        "attention_min": min(min(d["attention"].values(), default=float("nan")) for d in per),
        **{
            f"restored_{cls}": min(d["restored_under_str"][cls] for d in per)
            for cls in per[0]["restored_under_str"]
        },
    }


def measure(model: LM, circuit: Circuit, held, data_dir: str | Path, n_prompts: int, seed: int) -> Measured:
    """``patchbench organisms``' entry: the check as one organism's measurement (``measured``)."""
    return measured("arithmetic", check(model, circuit, data_dir, n_prompts=n_prompts, seed=seed))
