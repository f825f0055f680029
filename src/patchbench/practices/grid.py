"""The practice grid: which sweeps the benchmark reads, on which organisms and seeds, and which are not defined.

A *practice* is one choice on each of six axes (:data:`AXES`): corruption, direction, metric,
window, method (exact patching, attribution patching, attribution with AtP*'s QK fix) and
detection rule. The grid is the config's ``practices`` section (its defaults are the schema's);
it is swept on every experiment it names (``practices.experiments``; null: every experiment), on
those of the experiment's models that have a known circuit for its task: ``models.<m>.circuit``,
else ``circuit.json`` beside the model's weights (:func:`circuit_file`). A model without one is
skipped, named in the benchmark's log and summary (:attr:`PracticePlan.skipped`).

Metric and rule are read from a sweep after the fact, so one sweep (:class:`Sweep`: corruption,
direction, window, method) serves every metric and rule. A sweep is a :class:`patchbench.cell.Cell`,
so a practice that the demo's own experiments already swept (same Cell, same path) is read from
their files, and only the rest is computed (:func:`new_sweeps`).

Organisms and seeds: a model ``<name>-seed<S>`` whose ``<name>`` is a model of the config listing
seed S in its ``seeds`` is seed S of organism ``<name>`` (the config's ``all_seeds`` expansion);
every other model is seed 0 of itself (:func:`seed_of`).

Not defined (listed in the tables with the reason, never dropped):

* AtP*'s QK fix outside whole head outputs at every position under a token-level corruption
  (:data:`patchbench.qk_fix.NOT_DEFINED`, the rule :func:`patchbench.qk_fix.qk_fix_applies`);
* a metric that attribution did not differentiate (the task's metrics only);
* a corruption the prompt set refuses (e.g. resample with a prompt alone in its template): decided
  by the corruption's own check on the prompts, in the workflow's ``practices_plan`` checkpoint.

Windows apply where the site takes windows (:data:`patchbench.interventions.sites.SITES`); other
sites are swept at window 1 only, which the tables state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchbench.cell import Cell, attribution_cells, experiment_cells
from patchbench.interventions import corruptions
from patchbench.interventions.sites import SITES
from patchbench.layout import Layout

__all__ = [
    "AXES",
    "METHODS",
    "RULES",
    "PracticePlan",
    "Sweep",
    "UNCHECKED",
    "canonical_corruption",
    "checks_prompts",
    "circuit_file",
    "existing_paths",
    "new_sweeps",
    "practice_plans",
    "seed_of",
    "sweeps_of",
]

#: The axes of a practice, in the order tables list them.
AXES: tuple[str, ...] = ("corruption", "direction", "metric", "window", "method", "rule")
#: The methods: exact patching, attribution patching, attribution with AtP*'s QK fix.
METHODS: tuple[str, ...] = ("exact", "attribution", "attribution_qk")
#: The detection rules (:mod:`patchbench.practices.rules`).
RULES: tuple[str, ...] = ("two_sd", "top_k", "permutation")


def canonical_corruption(value: str, config: Mapping[str, Any]) -> str:
    """The corruption value a cell of this config uses for ``value``: its settings that equal the
    config's own (its section) dropped, so that ``gn@nu=3`` under ``noise.nu: 3`` is the cell ``gn``
    the experiments already swept (same numbers, same files)."""
    cls, overrides = corruptions.parse(value)
    section = config[cls.section] if cls.section else {}
    kept = {k: v for k, v in overrides.items() if k not in section or section[k] != v}
    if not kept:
        return cls.name
    written = dict(item.split("=", 1) for item in value.partition("@")[2].split(","))
    return f"{cls.name}@" + ",".join(f"{k}={written[k]}" for k in kept)


_SEED = re.compile(r"^(?P<base>.+)-seed(?P<seed>[0-9]+)$")


def seed_of(config: Mapping[str, Any], model: str) -> tuple[str, int]:
    """``(organism, seed)`` of a model of the config (see the module docstring)."""
    m = _SEED.match(model)
    if m is not None:
        base, seed = m["base"], int(m["seed"])
        entry = config["models"].get(base)
        if entry is not None and seed in (entry.get("seeds") or ()):
            return base, seed
    return model, 0


def circuit_file(config: Mapping[str, Any], model: str) -> str | None:
    """The circuit known by construction for ``model``: ``models.<model>.circuit`` when set, else the
    ``circuit.json`` beside its weights (toy and local models), else None."""
    entry = config["models"][model]
    if entry.get("circuit"):
        return str(entry["circuit"])
    path = entry.get("path")
    beside = Path(path, "circuit.json") if path and entry["source"] in ("toy", "local") else None
    return str(beside) if beside is not None and beside.is_file() else None


@dataclass(frozen=True)
class Sweep:
    """One sweep the grid reads: a (corruption, direction, window, method) of one experiment on one model.

    ``corruption`` is the value as the grid names it (``gn@nu=3``); ``cell`` the sweep that computes
    it (its corruption canonical, :func:`canonical_corruption`), None when the practice is not
    defined (``reason`` says why).
    """

    corruption: str
    direction: str
    window: int
    method: str
    cell: Cell | None
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.corruption, self.direction, int(self.window), self.method)


@dataclass(frozen=True)
class PracticePlan:
    """The grid on one experiment and one organism: its seeds' models and every sweep of each."""

    experiment: str
    organism: str
    task: str
    site: str
    position: str
    circuit: str
    seeds: Mapping[int, str]  # seed -> model
    sweeps: Mapping[int, tuple[Sweep, ...]]  # seed -> its sweeps, in grid order
    windows: tuple[int, ...]
    notes: tuple[str, ...] = field(default=())


def _windows(config: Mapping[str, Any], site: str) -> tuple[int, ...]:
    wanted = tuple(int(w) for w in config["practices"]["windows"])
    return wanted if SITES[site].windows else (1,)


def sweeps_of(config: Mapping[str, Any], experiment: str, model: str) -> tuple[Sweep, ...]:
    """Every sweep of the grid on ``experiment`` and ``model``, in grid order."""
    from patchbench.qk_fix import NOT_DEFINED, qk_fix_applies

    exp, grid = config["experiments"][experiment], config["practices"]
    layout = Layout.of(config)
    heads = None if exp["heads"] is None else tuple((int(a), int(b)) for a, b in exp["heads"])
    out = []
    for value in grid["corruptions"]:
        corruption = canonical_corruption(value, config)
        for direction in grid["directions"]:
            for window in _windows(config, exp["site"]):
                cell = Cell(model, exp["task"], corruption, exp["site"], exp["position"], window, heads,
                            "exact", layout, config, direction)  # fmt: skip
                for method in grid["methods"]:
                    if method == "exact":
                        out.append(Sweep(value, direction, window, method, cell))
                    elif method == "attribution":
                        out.append(
                            Sweep(value, direction, window, method, cell.as_method(method).with_qk_fix(False))
                        )
                    elif qk_fix_applies(cell):
                        qk = cell.as_method("attribution").with_qk_fix(True)
                        out.append(Sweep(value, direction, window, method, qk))
                    else:
                        out.append(
                            Sweep(
                                value, direction, window, method, None, f"QK fix not defined: {NOT_DEFINED}"
                            )
                        )
    return tuple(out)


def practice_plans(config: Mapping[str, Any]) -> tuple[list[PracticePlan], list[str]]:
    """The grid's plans (one per experiment and organism with a known circuit for the task) and one
    line per model skipped for want of one."""
    from patchbench.analysis.robustness import read_known_circuit

    grid = config["practices"]
    names = grid["experiments"] if grid["experiments"] is not None else list(config["experiments"])
    plans, skipped = [], []
    for name in names:
        exp = config["experiments"][name]
        organisms: dict[str, dict[int, str]] = {}
        circuits: dict[str, str] = {}
        for model in exp["models"]:
            organism, seed = seed_of(config, model)
            path = circuit_file(config, model)
            if path is None:
                skipped.append(
                    f"model {model} of experiment {name}: no circuit.json beside its weights and no "
                    f"models.{model}.circuit, so the practice grid has no ground truth to score it against"
                )
                continue
            if not read_known_circuit(path, exp["task"]).applies_to(exp["task"]):
                skipped.append(
                    f"model {model} of experiment {name}: its circuit ({path}) is not for task {exp['task']}"
                )
                continue
            organisms.setdefault(organism, {})[seed] = model
            circuits.setdefault(organism, path)
        for organism, seeds in organisms.items():
            notes = ()
            if not SITES[exp["site"]].windows and set(grid["windows"]) != {1}:
                notes = (f"site {exp['site']} takes no windows: swept at window 1 only",)
            plans.append(PracticePlan(
                name, organism, exp["task"], exp["site"], exp["position"], circuits[organism],
                dict(sorted(seeds.items())), {s: sweeps_of(config, name, m) for s, m in sorted(seeds.items())},
                _windows(config, exp["site"]), notes,
            ))  # fmt: skip
    return plans, skipped


def existing_paths(config: Mapping[str, Any], model: str) -> set[str]:
    """The raw frames of ``model`` that the experiments' own sweep and attribution rules write."""
    out = set()
    for name, exp in config["experiments"].items():
        if model in exp["models"]:
            out |= {c.raw_path for c in experiment_cells(config, name, model=model)}
            out |= {c.raw_path for c in attribution_cells(config, name, model=model)}
    return out


#: The job group of the corruptions whose sweeps do not depend on a check of the prompt set.
UNCHECKED = ""


def checks_prompts(corruption: str) -> bool:
    """Whether a corruption can refuse a prompt set (its class has its own ``check``, e.g. resample's
    templates): its sweeps then run only where the ``practices_plan`` checkpoint found it defined."""
    return corruptions.parse(corruption)[0].check is not corruptions.Corruption.check


def new_sweeps(config: Mapping[str, Any], experiment: str, model: str) -> dict[str, list[Cell]]:
    """The grid's cells of ``experiment`` on ``model`` that no experiment computes, in job groups: one
    per corruption that checks the prompt set (:func:`checks_prompts`; its key is the canonical
    corruption), one for all the others (key :data:`UNCHECKED`). The workflow runs each group as one job."""
    have = existing_paths(config, model)
    out: dict[str, list[Cell]] = {}
    for sweep in sweeps_of(config, experiment, model):
        if sweep.cell is None or sweep.cell.raw_path in have:
            continue
        corruption = sweep.cell.corruption
        cells = out.setdefault(corruption if checks_prompts(corruption) else UNCHECKED, [])
        if all(c.raw_path != sweep.cell.raw_path for c in cells):
            cells.append(sweep.cell)
    return out
