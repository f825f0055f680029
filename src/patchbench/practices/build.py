"""The practice benchmark's workflow job: every plan scored, pooled over seeds, judged and written.

:func:`run` reads each plan's sweeps (the raw frames of the cells the practice grid defined, minus
the corruptions the prompt set refused, as the ``practices_plan`` checkpoint recorded), scores
every practice on every seed (:func:`patchbench.practices.benchmark.score_seed`), pools the seeds,
compares the paper's recommendations (:func:`patchbench.practices.advice.compare`) and writes one
table and figure per task and the summary (:mod:`patchbench.practices.report`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from patchbench.analysis.robustness import read_known_circuit
from patchbench.atomic import write_text
from patchbench.practices.advice import compare
from patchbench.practices.benchmark import BenchSettings, Outcome, pool_seeds, score_seed
from patchbench.practices.grid import PracticePlan, Sweep
from patchbench.practices.report import (
    ID_COLUMNS,
    front_page_facts,
    practice_figure,
    summary_markdown,
    write_table,
)
from patchbench.practices.scores import score_names
from patchbench.rawframe import metadata, read_frame

__all__ = ["refusals", "run"]


def refusals(plan_file: str | Path) -> dict[str, str]:
    """The corruptions a ``practices_plan`` file records as refused by the prompt set: value -> reason."""
    data = json.loads(Path(plan_file).read_text())
    return {k: v for k, v in data["corruptions"].items() if v}


def _sweep_reason(sweep: Sweep, refused: Mapping[str, str]) -> str:
    if sweep.cell is None:
        return sweep.reason
    return refused.get(sweep.cell.corruption, "")


def _log_plan(log: logging.Logger, sweep: Sweep, raw: pd.DataFrame) -> None:
    """The engine's plan of an exact sweep (suffix reuse, head-output shortcut), as its metadata records it."""
    plan = metadata(raw).get("plan") or {}
    shortcut = plan.get("head_shortcut", "n/a (not a head-output site)")
    log.info("plan of %s: path %s, head_shortcut %s", sweep.cell.label, plan.get("path", "?"), shortcut)


def _organism(plan: PracticePlan, plan_files, settings: BenchSettings, log) -> tuple[list[dict], dict, Any]:
    """One plan's rows (one per practice) and its practices' pooled results (for the advice)."""
    circuit = read_known_circuit(plan.circuit, plan.task)
    outcomes: dict[tuple, dict[int, Outcome]] = {}
    reasons: dict[tuple, str] = {}
    truth = None
    for seed, model in plan.seeds.items():
        refused = refusals(plan_files[(plan.experiment, model)])
        frames = {}
        for sweep in plan.sweeps[seed]:
            reason = _sweep_reason(sweep, refused)
            if reason:
                for metric in settings.metrics:
                    for rule in settings.rules:
                        reasons[
                            (sweep.corruption, sweep.direction, metric, sweep.window, sweep.method, rule)
                        ] = reason
            else:
                frames[sweep.key] = read_frame(sweep.cell.raw_path)
                if sweep.method == "exact":
                    _log_plan(log, sweep, frames[sweep.key])
        log.info("%s seed %d (%s): %d sweeps read", plan.organism, seed, model, len(frames))
        got, truth = score_seed(frames, circuit, settings, plan.task)
        for key, outcome in got.items():
            outcomes.setdefault(key, {})[seed] = outcome
    names = score_names(truth)
    base = {
        "task": plan.task, "experiment": plan.experiment, "organism": plan.organism, "site": plan.site,
        "position": plan.position, "circuit": plan.circuit, "circuit_size": truth.size,
    }  # fmt: skip
    rows, pooled = [], {}
    for key, per_seed in outcomes.items():
        refused = [o.reason for o in per_seed.values() if o.reason]
        if key in reasons or refused:  # not defined on some seed: not defined
            reasons.setdefault(key, refused[0] if refused else "")
            continue
        ident = dict(zip(("corruption", "direction", "metric", "window", "method", "rule"), key, strict=True))
        p = pool_seeds(per_seed, names, settings.bootstrap.ci)
        pooled[key] = p
        rows.append({**base, **ident, "defined": True, "reason": "", **p["row"]})
    for key, reason in reasons.items():
        ident = dict(zip(("corruption", "direction", "metric", "window", "method", "rule"), key, strict=True))
        seeds = ",".join(map(str, plan.seeds))
        rows.append(
            {**base, **ident, "defined": False, "reason": reason, "n_seeds": len(plan.seeds), "seeds": seeds}
        )
    return rows, pooled, truth


def _order(table: pd.DataFrame, grid: Mapping[str, Any]) -> pd.DataFrame:
    """Rows in grid order (the config's order of each axis), organisms as planned."""
    rank = {
        "corruption": {v: i for i, v in enumerate(grid["corruptions"])},
        "direction": {v: i for i, v in enumerate(grid["directions"])},
        "metric": {v: i for i, v in enumerate(grid["metrics"])},
        "method": {v: i for i, v in enumerate(grid["methods"])},
        "rule": {v: i for i, v in enumerate(grid["rules"])},
    }
    keys = {a: table[a].map(r) for a, r in rank.items()}
    out = table.assign(**{f"_{a}": k for a, k in keys.items()}, _org=table["organism"].map({o: i for i, o in enumerate(dict.fromkeys(table["organism"]))}))  # fmt: skip
    by = ["_org", "_corruption", "_direction", "window", "_method", "_metric", "_rule"]
    return (
        out.sort_values(by, kind="stable")
        .drop(columns=[c for c in out.columns if c.startswith("_")])
        .reset_index(drop=True)
    )


def run(
    plans: Sequence[PracticePlan],
    skipped: Sequence[str],
    plan_files: Mapping[tuple[str, str], str],
    settings: BenchSettings,
    grid: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, str]],
    summary: str | Path,
    summary_json: str | Path,
    log: logging.Logger,
) -> None:
    """Score every plan and write ``outputs[task]`` (``csv``, ``md``, ``png``), the ``summary`` and
    the front page's facts (``summary_json``)."""
    for line in skipped:
        log.info("practices: skipping %s", line)
    by_task: dict[str, list[dict]] = {}
    organisms: dict[str, dict] = {}
    facts: dict[str, list[str]] = {}
    for plan in plans:
        rows, pooled, truth = _organism(plan, plan_files, settings, log)
        by_task.setdefault(plan.task, []).extend(rows)
        organisms[f"{plan.organism} ({plan.experiment})"] = pooled
        facts.setdefault(plan.task, []).append(
            f"- {plan.organism}, experiment {plan.experiment} (task {plan.task}, site {plan.site}, position "
            f"{plan.position}): circuit {plan.circuit}, {truth.size} circuit units of {len(truth.units)}, seeds "
            f"{', '.join(map(str, plan.seeds))}" + "".join(f"; {n}" for n in plan.notes) + "."
        )
    b = settings.bootstrap
    method = (
        "Practices scored against the circuit known by construction (circuit.json). Scores: mean over seeds; "
        f"[95 %]: percentile interval over {b.n_boot} bootstrap resamples of the prompts (seed {b.seed}); "
        f"F1 seed SD: the spread over seeds. Permutation rule: sign flips over prompts, {settings.n_perm} flips, "
        f"max-|Z| family-wise level {settings.alpha:g} (patchbench.practices.rules)."
    )
    for task, rows in by_task.items():
        table = _order(pd.DataFrame(rows), grid)
        scores = [c for c in table.columns if c not in ID_COLUMNS and c != "found"]
        table = table.reindex(columns=[*ID_COLUMNS, *scores, "found"])
        files = outputs[task]
        write_table(table, files["csv"], files["md"], task, [method, "", *facts[task]])
        practice_figure(table, [files["png"]], f"Practice benchmark: {task} (F1 per practice, by axis)")
        n_def = int(table["defined"].sum())
        log.info("practices %s: %d practices (%d defined) -> %s", task, len(table), n_def, files["csv"])
    comparisons = compare(organisms, settings.bootstrap.ci)
    lines = [line for task_lines in facts.values() for line in task_lines]
    if not plans:
        lines = [
            "No experiment of this config has a model with a known circuit (circuit.json): nothing to score."
        ]
    lines = ["Organisms:", "", *lines, *(f"- skipped: {s}." for s in skipped), "", method]
    write_text(summary, summary_markdown(comparisons, lines))
    write_text(summary_json, json.dumps(front_page_facts(comparisons), indent=1) + "\n")
    for r in comparisons:
        if r["organism"] == "all organisms":
            log.info(
                "%s: %s vs %s (%s): %s",
                r["recommendation"],
                r["recommended"],
                r["against"],
                r["score"],
                r["verdict"],
            )
