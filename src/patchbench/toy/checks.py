"""Independent checks of the model organisms: what their shipped weights do, measured with plain
forward hooks on the model (attention patterns, direct logit attribution, mean / resample
ablation), never through the patching engine.

One check per circuit kind, registered in :data:`CHECKS` (``kind -> "module:function"``; the
function takes ``(model, circuit, held, data_dir, n_prompts, seed)``, ``held`` the organism's
held-out combinations (``heldout.json``), and returns a :class:`Measured`). :func:`check_organism` loads an organism directory, checks its ``circuit.json``
against the model, runs its kind's check and compares the measured properties with the ones
``circuit.json`` states (``properties: {name: [min, max]}``; without them, the check module's
``BOUNDS``). ``patchbench organisms [--check]``
prints one :meth:`OrganismStats.line` per organism (and seed).

The four numbers of every line:

- ``clean_p``: the mean clean probability of the answer on the check's prompts;
- ``gn_ratio``: the mean answer probability under the paper's Gaussian noise (nu = the config
  default, 3, times ROME's sigma, on the task's key tokens) over ``clean_p``;
- ``circuit_ablation``: the logit difference left after mean-ablating the whole circuit, as a
  fraction of the clean one;
- ``backup_compensation``: where the organism has backup components, the share of the ablated
  components' direct effect that the backups recover (else None, printed ``-``).
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchbench.toy.circuit import check_circuit_file

__all__ = ["CHECKS", "Measured", "OrganismStats", "check_organism", "failed_properties", "organism_dirs"]

#: circuit kind -> "module:function" of its check (imported when used)
CHECKS: dict[str, str] = {
    "ioi": "patchbench.toy.checks_ioi:measure_ioi",
    **{
        k: f"patchbench.toy.checks_{k}:measure"
        for k in ("factual", "greater_than", "arithmetic", "docstring")
    },
}


@dataclass(frozen=True)
class Measured:
    """What one kind's check measured on one organism."""

    task: str
    clean_p: float
    gn_ratio: float
    circuit_ablation: float
    backup_compensation: float | None
    properties: Mapping[str, float]  # every measured quantity a circuit.json may state bounds for
    details: Mapping[str, Any] = field(default_factory=dict)  # per-head numbers and the rest


@dataclass(frozen=True)
class OrganismStats:
    """One organism's line of ``patchbench organisms`` and what stands behind it."""

    name: str
    seed: int
    heads: int
    measured: Measured
    failures: tuple[str, ...] = ()

    def line(self) -> str:
        m = self.measured

        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        return (
            f"organism {self.name} task {m.task} seed {self.seed} heads {self.heads} clean_p {f(m.clean_p)} "
            f"gn_ratio {f(m.gn_ratio)} circuit_ablation {f(m.circuit_ablation)} "
            f"backup_compensation {f(m.backup_compensation)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the line, the measurement and the failed stated properties (``checks.json``)."""
        return {"line": self.line(), **asdict(self)}


def failed_properties(
    stated: Mapping[str, tuple[float | None, float | None]], measured: Mapping[str, float]
) -> list[str]:
    """Each stated property the measurement misses: ``name = value, stated [min, max]``."""
    out = []
    for name, (lo, hi) in stated.items():
        bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        if name not in measured:
            out.append(f"{name} is not measured by this organism's check (stated {bounds})")
            continue
        v = float(measured[name])
        if math.isnan(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            out.append(f"{name} = {v:.4g}, stated {bounds}")
    return out


def _check_of(kind: str) -> tuple[Callable[..., Measured], Mapping[str, tuple[float | None, float | None]]]:
    """The kind's check and its default stated properties (the module's ``BOUNDS``, if any: what a
    ``circuit.json`` without ``properties`` is held to)."""
    if kind not in CHECKS:
        raise ValueError(f"no organism check for circuit kind {kind!r}; known: {sorted(CHECKS)}")
    name, func = CHECKS[kind].split(":")
    module = importlib.import_module(name)
    return getattr(module, func), getattr(module, "BOUNDS", {})


def check_organism(
    model_dir: str | Path,
    data_dir: str | Path = "data/toy",
    n_prompts: int = 200,
    seed: int = 0,
    heldout: str | Path | None = None,
    train_seed: int | None = None,
) -> OrganismStats:
    """Measure one organism directory (its ``circuit.json`` checked first) and compare it with
    the properties its ``circuit.json`` states. ``seed`` seeds the check's prompts and draws;
    ``heldout`` is the held-out file (default ``heldout.json`` in the directory); ``train_seed``
    the organism's training seed (default: its ``provenance.json``'s)."""
    from patchbench.toy.corpus import HeldOut
    from patchbench.toy.model import load_toy

    model_dir = Path(model_dir)
    circuit = check_circuit_file(model_dir)
    if circuit is None:
        raise ValueError(f"{model_dir} has no circuit.json: it is not a model organism")
    model = load_toy(model_dir)
    held = HeldOut.from_json(Path(heldout or model_dir / "heldout.json").read_text())
    check, bounds = _check_of(circuit.kind)
    measured = check(model, circuit, held, data_dir, n_prompts, seed)
    prov = model_dir / "provenance.json"
    if train_seed is None:
        train_seed = int(json.loads(prov.read_text())["seed"]) if prov.exists() else -1
    return OrganismStats(
        name=model_dir.name,
        seed=train_seed,
        heads=model.shape.n_layers * model.shape.n_heads,
        measured=measured,
        failures=tuple(failed_properties(circuit.properties or bounds, measured.properties)),
    )


def organism_dirs(root: str | Path) -> list[Path]:
    """The organism directories (those with a ``circuit.json``) under ``root``, sorted by name."""
    return sorted(p.parent for p in Path(root).glob("*/circuit.json"))
