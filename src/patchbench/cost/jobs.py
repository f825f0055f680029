"""The workflow's model-loading jobs of a config, each with its predicted FLOPs, seconds and memory.

A config's jobs that load a model (the ones whose cost grows with the model and the grid) are, per
(model, task): ``filter_correct`` (every generated prompt through the model) and ``clean_cache``;
per (experiment, model): ``sweep_<experiment>`` (its cells, one :func:`patchbench.engine.sweep.run_sweep`
each, counted by :func:`patchbench.cost.work.sweep_work`) and, where the DAG holds it,
``attribution_<experiment>``. Every other rule (prompt generation, effects, tables, figures) asks
for a small fixed amount and is not estimated.

The prompts a job's count is made from (:func:`job_prompts`, its ``source`` printed beside it): the
prompt set the workflow wrote (``results/prompts/<model>/<task>.parquet``: exact), else the
generated set before the correctness filter (its ``.all.parquet``, or generated here with the
model's tokenizer and the task's data, no weights: an upper bound, since the filter only removes
prompts).

Attribution jobs are not counted from a plan: they are estimated as three forwards (one forward,
its backward at about twice its cost) of the clean and corrupted runs per cell, an assumption.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchbench.cell import Cell, attribution_cells, experiment_cells
from patchbench.cost.device import DeviceRate
from patchbench.cost.shapes import ModelShape, model_shape
from patchbench.cost.work import Work, clean_cache_work, filter_work, forward_work, sweep_work
from patchbench.engine.budget import bytes_per_row, rows_per_forward
from patchbench.layout import Layout
from patchbench.prompts import PromptSet
from patchbench.rawframe import RAW_COLUMNS

__all__ = ["Job", "JobEstimate", "estimate_jobs", "job_prompts", "jobs_of"]

#: A raw-frame row in memory: one 8-byte value per column, twice (the pieces and their concatenation).
RAW_ROW_BYTES = 2 * 8 * len(RAW_COLUMNS)


@dataclass(frozen=True)
class Job:
    """One model-loading job of the workflow."""

    rule: str
    model: str
    task: str
    cells: tuple[Cell, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.rule} {self.model}" + ("" if self.cells else f"/{self.task}")


@dataclass(frozen=True)
class JobEstimate:
    """A job's prediction on one device."""

    job: Job
    device: str
    work: Work
    seconds: float  # compute (cells or forwards)
    load_seconds: float  # start-up, weights, clean cache
    host_bytes: int  # peak resident memory of the process
    device_bytes: int  # peak GPU memory (0 on the CPU)
    prompts: int
    max_len: int
    prompts_source: str
    cells: dict[str, float] = field(default_factory=dict)  # cell label -> predicted seconds

    @property
    def total_seconds(self) -> float:
        return self.seconds + self.load_seconds


def jobs_of(config: Mapping[str, Any]) -> list[Job]:
    """The config's model-loading jobs (see the module docstring), in a stable order."""
    from patchbench.cell import agreement_cells

    jobs: list[Job] = []
    pairs = dict.fromkeys((m, e["task"]) for e in config["experiments"].values() for m in e["models"])
    for rule in ("filter_correct", "clean_cache"):
        jobs += [Job(rule, m, t) for m, t in pairs]
    for name, exp in config["experiments"].items():
        for m in exp["models"]:
            jobs.append(Job(f"sweep_{name}", m, exp["task"], tuple(experiment_cells(config, name, model=m))))
    every = config["engine"]["method"] == "attribution"
    wanted = {
        c.raw_path for t in config["attribution"]["tasks"] for m, task in pairs if task == t
        for c in agreement_cells(config, m, t)
    }  # fmt: skip
    for name, exp in config["experiments"].items():
        for m in exp["models"]:
            cells = attribution_cells(config, name, model=m)
            if cells and (every or any(c.raw_path in wanted for c in cells)):
                jobs.append(Job(f"attribution_{name}", m, exp["task"], tuple(cells)))
    return jobs


def job_prompts(
    config: Mapping[str, Any], model: str, task: str, *, filtered: bool = True, cache: dict | None = None
) -> tuple[PromptSet, str]:
    """The prompts a job of (model, task) runs on, and where they came from (module docstring)."""
    layout = Layout.of(config)
    cache = {} if cache is None else cache
    if filtered and Path(layout.prompts(model, task)).is_file():
        key = (model, task, "filtered")
        if key not in cache:
            cache[key] = PromptSet.from_parquet(layout.prompts(model, task)), layout.prompts(model, task)
        return cache[key]
    key = (model, task, "generated")
    if key not in cache:
        path = layout.prompts(model, task, unfiltered=True)
        if Path(path).is_file():
            cache[key] = PromptSet.from_parquet(path), path
        else:
            from patchbench.models import ModelSpec, load_tokenizer
            from patchbench.tasks import build_task

            spec = ModelSpec.from_config(model, config["models"][model], config["results_dir"])
            entry = config["tasks"][task]
            ps = build_task(task, load_tokenizer(spec), Path(config["data_dir"]), n_prompts=entry["n_prompts"],
                            seed=entry["seed"], **entry["options"])  # fmt: skip
            cache[key] = ps, "generated here"
    prompts, source = cache[key]
    if filtered and config["filter_correct"]:
        source += " (before the filter)"
    return prompts, source


def _cache_bytes(shape: ModelShape, prompts: PromptSet, cells: Sequence[Cell]) -> int:
    """The clean cache a job holds in memory (every hook its cells read, answer logits, tokens)."""
    from patchbench.engine.cache import required_hooks

    s = shape.model.shape
    max_len = int(prompts.tokens("clean").shape[1])
    width = {"hook_z": s.n_heads * s.d_head, "hook_v": s.n_kv_heads * s.d_head}
    hooks = required_hooks(shape.model, [c.sweep_spec for c in cells]) if cells else []
    elems = sum(width.get(h.rsplit(".", 1)[-1], s.d_model) for h in hooks) * len(prompts) * max_len
    return elems * s.dtype.itemsize + len(prompts) * (s.d_vocab * 4 + max_len * 8)


def estimate_job(
    job: Job,
    config: Mapping[str, Any],
    shape: ModelShape,
    rate: DeviceRate,
    prompts_cache: dict | None = None,
) -> JobEstimate:
    """One job's prediction on ``rate``'s device."""
    model, s = shape.model, shape.model.shape
    prompts, source = job_prompts(config, job.model, job.task, filtered=job.rule != "filter_correct",
                                  cache=prompts_cache)  # fmt: skip
    max_len = int(prompts.tokens("clean").shape[1])
    budget = int(config["models"][job.model]["memory_budget_mb"]) * 2**20
    cells: dict[str, float] = {}
    working = 0
    rows = 0
    if job.rule == "filter_correct":
        work = filter_work(model, prompts)
    elif job.rule == "clean_cache":
        work = clean_cache_work(model, prompts, budget // 2**20)
        step = rows_per_forward(s, max_len, budget // 2**20)
        working = min(len(prompts), step) * bytes_per_row(s, max_len)
    elif job.rule.startswith("sweep_"):
        work = Work()
        for c in job.cells:
            sw = sweep_work(model, prompts, c.sweep_spec, check_identities=c.check_identities)
            cells[c.label] = rate.seconds(sw.work, s, shape.route)["total"]
            work += sw.work
            working = max(working, sum(sw.memory.values()))
            rows = max(rows, sw.work.rows)
    else:  # attribution: three forwards of the clean and corrupted runs per cell (module docstring)
        one = forward_work(model, len(prompts), max_len, unembed=len(prompts)).scaled(6)
        work = Work()
        for c in job.cells:
            cells[c.label] = rate.seconds(one, s, shape.route)["total"]
            work += one
        working = budget
    seconds = sum(cells.values()) if cells else rate.seconds(work, s, shape.route)["total"]
    cache = _cache_bytes(shape, prompts, job.cells) if job.rule != "filter_correct" else 0
    load = rate.load_seconds(shape.weight_bytes) + (cache / rate.load_rate if job.cells else 0)
    gpu = rate.device != "cpu"
    host = rate.baseline + shape.weight_bytes + cache + rows * RAW_ROW_BYTES + (0 if gpu else working)
    device_bytes = shape.weight_bytes + working if gpu else 0
    return JobEstimate(job, rate.device, work, seconds, load, int(host), int(device_bytes), len(prompts),
                       max_len, source, cells)  # fmt: skip


def estimate_jobs(
    config: Mapping[str, Any],
    device_of: Callable[[Job], str],
    rate_of: Callable[[str, Job, ModelShape], DeviceRate],
    jobs: Sequence[Job] | None = None,
) -> list[JobEstimate]:
    """Every model-loading job of ``config`` (or ``jobs``) estimated on ``device_of(job)``, with the
    rates ``rate_of(device, job, shape)``."""
    shapes: dict[tuple[str, str], ModelShape] = {}
    prompts_cache: dict = {}
    out = []
    for job in jobs if jobs is not None else jobs_of(config):
        device = device_of(job)
        key = (job.model, device)
        if key not in shapes:
            shapes[key] = model_shape(dict(config), job.model, "cpu" if device == "cpu" else "cuda")
        shape = shapes[key]
        out.append(estimate_job(job, config, shape, rate_of(device, job, shape), prompts_cache))
    return out


def minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


def predict_sweep(
    model: Any, prompts: PromptSet, spec: Any, *, check_identities: bool = True
) -> dict[str, Any]:
    """The prediction a sweep job logs before it runs a cell on a loaded ``model``: its GFLOP and,
    when this device's rates are cached (a job never measures them), its predicted seconds by part
    and the rates' description."""
    import torch

    from patchbench.cost.device import device_rate

    s = model.shape
    sw = sweep_work(model, prompts, spec, check_identities=check_identities)
    device = "cpu" if str(s.device) == "cpu" else "cuda"
    rate = device_rate(
        device, torch.get_num_threads(), [str(s.dtype).removeprefix("torch.")], allow_measure=False
    )
    out: dict[str, Any] = {"gflop": sw.work.flops / 1e9, "seconds": None, "rate": None}
    if rate is not None:
        out["parts"] = rate.seconds(sw.work, s, s.route)
        out["seconds"] = out["parts"]["total"]
        out["rate"] = rate.describe()
    return out
