"""Known circuits: read them, and score each cell's detections against one (precision, recall).

A :class:`KnownCircuit` names the components of each class of a circuit known for a model (Wang
et al.'s GPT-2-small IOI heads; a model organism's ``circuit.json``); :func:`score_circuit` gives
precision and recall per cell and class, with bootstrap intervals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchbench.analysis.robustness.grid import AXES, GridDraws, RobustnessError, _labels, percentile_interval
from patchbench.toy.circuit import KINDS, OUTSIDE_ROLE


# ----------------------------------------------------------------------------- known circuit
def _base(component: str) -> str:
    return str(component).split("@", 1)[0]


def _component_name(c) -> str:
    if isinstance(c, list | tuple):
        if len(c) == 2:
            return f"{int(c[0])}.{int(c[1])}"
        if len(c) == 1:
            return f"{int(c[0])}"
        raise ValueError(f"a component is [layer, head] or [layer], got {c!r}")
    return str(c)


@dataclass(frozen=True)
class KnownCircuit:
    """A circuit known for a model: class -> component names (``L.H`` heads, ``L`` layers, ``…@POS``)."""

    classes: Mapping[str, frozenset[str]]
    source: str
    tasks: frozenset[str] | None = None  # the tasks it is known for; None = any

    def members(self) -> frozenset[str]:
        return frozenset().union(*self.classes.values()) if self.classes else frozenset()

    def classes_of(self, component: str) -> list[str]:
        c = str(component)
        return [k for k, v in self.classes.items() if c in v or _base(c) in v]

    def applies_to(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


#: The tasks a circuit of each kind is known for (``patchbench.toy.circuit.KINDS``: the IOI circuit
#: serves every IOI variant).
CIRCUIT_TASKS: dict[str, tuple[str, ...]] = {kind: spec.tasks for kind, spec in KINDS.items()}


def _organism_classes(data: Mapping[str, Any], path: Path) -> tuple[dict, tuple[str, ...]]:
    """Classes and tasks of an organism's ``circuit.json`` (issue 13, ``patchbench.toy.circuit``):
    ``{"kind", "heads": {class: ["L.H", ...]}, "mlps": {role: [L, ...]}}``; the ``outside`` role
    lists layers that are not in the circuit, so it is no class."""
    kind = data["kind"]
    if kind not in CIRCUIT_TASKS:
        raise RobustnessError(f"{path}: circuit kind {kind!r} is not one of {sorted(CIRCUIT_TASKS)}")
    heads, mlps = data.get("heads") or {}, data.get("mlps") or {}
    both = set(heads) & set(mlps)
    if both:
        raise RobustnessError(f"{path}: {sorted(both)} name both heads and MLP layers")
    classes = {**heads, **{r: v for r, v in mlps.items() if r != OUTSIDE_ROLE}}
    return {c: v for c, v in classes.items() if v}, CIRCUIT_TASKS[kind]


def read_known_circuit(path: str | Path, task: str | None = None) -> KnownCircuit:
    """Read a known-circuit JSON.

    Accepted layouts: ``{"classes": {class: [component, ...]}, "tasks": [task, ...]}`` (``tasks``
    optional: the tasks the circuit is known for), ``{"by_task": {task: {class: [...]}}}`` (several
    tasks; ``task`` selects one), Wang et al.'s file ``data/ioi_heads_gpt2_small.json``
    (``all_classes``: the full published IOI circuit, tasks ioi, ioi_s1io, ioi_abc), a model
    organism's ``circuit.json`` (``{"kind": "ioi" | "factual" | ..., "heads": {class: [...]}, "mlps":
    {role: [layer, ...]}}``, its tasks by :data:`CIRCUIT_TASKS`; the ``outside`` role is no class),
    or a bare ``{class: [...]}``. A component is ``"L.H"`` (head), ``"L"`` or an integer (layer),
    either with ``@POS``, or ``[layer, head]`` / ``[layer]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"known-circuit file {path} does not exist (see config/README.md, robustness)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RobustnessError(f"{path}: not valid JSON ({err})") from None
    tasks = None
    if "by_task" in data:
        if task is None or task not in data["by_task"]:
            raise RobustnessError(
                f"{path}: circuits are given per task ({sorted(data['by_task'])}); "
                f"task {task!r} has none (pass one of them)"
            )
        classes, tasks = data["by_task"][task], [task]
    elif "classes" in data:
        classes, tasks = data["classes"], data.get("tasks")
    elif "all_classes" in data:  # Wang et al. (2023): the full IOI circuit of GPT-2 small
        classes, tasks = data["all_classes"], CIRCUIT_TASKS["ioi"]
    elif "kind" in data:  # a model organism's circuit, known by construction
        classes, tasks = _organism_classes(data, path)
    else:
        classes = {k: v for k, v in data.items() if not str(k).startswith("_")}
    if not isinstance(classes, dict) or not all(isinstance(v, list) for v in classes.values()):
        raise RobustnessError(
            f"{path}: expected classes as {{class: [component, ...]}} (components 'L.H', 'L' or [layer, head])"
        )
    try:
        parsed = {str(k): frozenset(_component_name(c) for c in v) for k, v in classes.items()}
    except (TypeError, ValueError) as err:
        raise RobustnessError(f"{path}: {err}") from None
    return KnownCircuit(parsed, source=str(path), tasks=None if tasks is None else frozenset(tasks))


def score_circuit(grid: GridDraws, circuit: KnownCircuit) -> pd.DataFrame:
    """Precision and recall of each cell's detections against ``circuit``, per class, with intervals.

    A detection counts at the circuit's granularity: a component ``L.H@p`` detected at any position
    counts as ``L.H`` when the circuit names ``L.H``. Either sign counts (negative components are
    detected negatively). Rows: one per cell x class, plus class ``all`` (the whole circuit);
    ``precision`` (detected members / detected) is the same for every class of a cell. Only circuit
    members among the experiment's components count; none at all raises :class:`RobustnessError`.
    """
    s = grid.settings
    names = grid.comps["component"].astype(str).tolist()
    exact = [n in circuit.members() for n in names]
    keys = names if any(exact) else [_base(n) for n in names]
    units = sorted(set(keys))
    uidx = {u: i for i, u in enumerate(units)}
    M = np.zeros((len(names), len(units)), dtype=np.float64)  # component -> unit
    M[np.arange(len(names)), [uidx[k] for k in keys]] = 1.0
    present = {k: frozenset(v) & set(units) for k, v in circuit.classes.items()}
    members = frozenset().union(*present.values()) if present else frozenset()
    if not members:
        raise RobustnessError(
            f"none of the known circuit's components ({sorted(circuit.members())[:6]}...) is among this "
            f"experiment's components ({units[:6]}...): the circuit is for another model or site"
        )
    point_s, draw_s = grid.signs()
    det_p = (np.abs(point_s).astype(np.float64) @ M) > 0  # (C, U)
    det_d = (np.abs(draw_s).astype(np.float64) @ M) > 0  # (C, B, U)
    in_all = np.array([u in members for u in units])
    labels = _labels(grid.cells)
    rows = []

    def ratio(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, a / np.maximum(b, 1), np.nan)

    for c in range(len(grid.cells)):
        n_det_p, n_det_d = det_p[c].sum(), det_d[c].sum(-1)
        prec_p = ratio((det_p[c] & in_all).sum(), n_det_p)
        prec_d = ratio((det_d[c] & in_all).sum(-1), n_det_d)
        for cls, mem in [("all", members), *present.items()]:
            if not mem:
                continue
            mask = np.array([u in mem for u in units])
            rec_p = (det_p[c] & mask).sum() / mask.sum()
            rec_d = (det_d[c] & mask).sum(-1) / mask.sum()
            found = [u for u, d, m in zip(units, det_p[c], mask, strict=True) if d and m]
            rows.append({
                "cell": labels[c], **{a: grid.cells.iloc[c][a] for a in AXES}, "class": cls,
                "size": int(mask.sum()), "detected": int(n_det_p), "found": ", ".join(found),
                "precision": float(prec_p),
                **dict(zip(("precision_low", "precision_high"), percentile_interval(prec_d, s.ci), strict=True)),
                "recall": float(rec_p),
                **dict(zip(("recall_low", "recall_high"), percentile_interval(rec_d, s.ci), strict=True)),
            })  # fmt: skip
    return pd.DataFrame(rows)
