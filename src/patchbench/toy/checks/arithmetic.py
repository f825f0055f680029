"""Independent check of an arithmetic organism (circuit kind ``arithmetic``), by plain forward hooks.

On the arithmetic tasks' prompts (``patchbench.tasks.arithmetic``: addition and subtraction with
operands up to 40, the demo's setting, and multiplication; STR redraws X3 and Y3, GN noises
them): per operator and as their mean, ``clean_p``, ``gn_ratio``, ``circuit_ablation`` (the
operand movers and the result MLPs mean-ablated at the last token) and the details of
``patchbench.toy.checks.common.standard_check``; ``failures`` lists the stated properties
(``PROPERTIES``) the organism misses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from patchbench.lm import LM
from patchbench.toy.checks.common import standard_check
from patchbench.toy.circuit import Circuit

__all__ = ["PROPERTIES", "TASKS", "check"]

#: The tasks checked and their options (the demo's: operands up to 40 for + and -).
TASKS = {"arithmetic_add": {"max_n": 40}, "arithmetic_sub": {"max_n": 40}, "arithmetic_mul": {}}

PROPERTIES = {
    "circuit_ablation": "for every operator, mean-ablating the circuit leaves at most 0.25 of the clean logit "
    "difference, random sets of as many components outside it at least 0.75 (mean of the draws)",
    "attention": "x movers put at least 0.5 of their last-token attention on X3, y movers on Y3 (every operator)",
    "restoration": "under STR, the movers' clean outputs restore at least half of P(clean) - P(corrupted), and so "
    "do the result MLPs' (every operator)",
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
    r["failures"] = [f"{task}: {f}" for task, t in per_task.items() for f in _failures(t)]
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
