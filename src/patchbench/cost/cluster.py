"""Cluster requests from the cost estimate, and the partition-limit check, both while a run is planned.

The workflow's model-loading jobs (:func:`patchbench.cost.jobs.jobs_of`) ask SLURM for memory and
time. Where a model's ``resources`` write ``mem_mb`` or ``runtime``, that is the request (a sweep
job asks for ``runtime`` per cell). Where they do not and the config names a ``cluster_device``
(the SLURM profile sets it), the request is the job's estimate on that device (jobs of models with
``gpu: 0`` on the CPU) times ``cluster_safety_factor``: ``mem_mb`` from the predicted peak host
memory, ``runtime`` from the predicted start-up, loading and compute. With ``cluster_partitions``
(the SLURM plugin's partition file) every job's request is checked against the partitions' limits
before anything is submitted: a job that fits no partition (runtime, memory, CPUs or GPUs) is
refused with one message naming it, the limit and the keys to change.

Estimating needs this machine's CPU rates (measured once by ``patchbench estimate``) and each
job's prompts (:func:`patchbench.cost.jobs.job_prompts`); when either is missing the run is refused
with the command that provides it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchbench.config import ConfigError
from patchbench.cost.device import DATASHEETS, DEVICES, DeviceRate, device_rate
from patchbench.cost.jobs import Job, JobEstimate, estimate_jobs, jobs_of
from patchbench.cost.shapes import ModelShape
from patchbench.errors import InputError

__all__ = ["PartitionError", "cluster_requests", "job_key", "read_partitions", "written_resources"]

#: The request keys an estimate derives, and the partition limits each one is checked against.
LIMITS = {
    "runtime": ("max_runtime",),
    "mem_mb": ("max_mem_mb",),
    "threads": ("max_cpus_per_task", "max_threads"),
    "gpu": ("max_gpu",),
}


class PartitionError(InputError):
    """A job's request fits no partition of the profile's partition file."""


def written_resources(config: Mapping[str, Any]) -> dict[str, set[str]]:
    """Per model, the ``resources`` keys the config writes itself: read before the schema's defaults are
    filled in (the Snakefile calls it first), so a default is not mistaken for a choice."""
    models = config.get("models") if isinstance(config, Mapping) else None
    if not isinstance(models, Mapping):
        return {}
    out = {}
    for name, entry in models.items():
        res = entry.get("resources") if isinstance(entry, Mapping) else None
        out[str(name)] = set(res) if isinstance(res, Mapping) else set()
    return out


def job_key(rule: str, model: str, task: str = "") -> tuple[str, str, str]:
    """A job's key in the requests: ``(rule, model, task)``, the task empty for per-experiment jobs."""
    return (rule, model, "" if rule.startswith(("sweep_", "attribution_")) else task)


def _key(job: Job) -> tuple[str, str, str]:
    return job_key(job.rule, job.model, job.task)


def read_partitions(path: str | Path) -> dict[str, dict[str, float]]:
    """The limits of each partition in a snakemake-executor-plugin-slurm partition file (runtimes in
    minutes, or SLURM time strings such as ``2-00:00:00``)."""
    from patchbench.config import read_yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config key 'cluster_partitions': {p} does not exist. Fix: copy "
            "profiles/slurm/partitions.example.yaml there and fill in your partitions, or unset the key"
        )
    data = read_yaml(p)
    parts = data.get("partitions") if isinstance(data, Mapping) else None
    if not isinstance(parts, Mapping) or not parts:
        raise ConfigError(f"{p}: no `partitions:` mapping (see profiles/slurm/partitions.example.yaml)")
    out: dict[str, dict[str, float]] = {}
    for name, limits in parts.items():
        limits = dict(limits or {})
        if isinstance(limits.get("max_runtime"), str):
            from snakemake_executor_plugin_slurm.utils import parse_time_to_minutes

            limits["max_runtime"] = parse_time_to_minutes(limits["max_runtime"])
        out[str(name)] = {k: float(v) for k, v in limits.items() if k.startswith("max_") and v is not None}
    return out


def _exceeded(request: Mapping[str, float], limits: Mapping[str, float]) -> list[str]:
    """The limits of one partition that ``request`` exceeds."""
    over = []
    for key, names in LIMITS.items():
        for name in names:
            if name in limits and request.get(key, 0) > limits[name]:
                over.append(name)
    if request.get("gpu", 0) > limits.get("max_gpu", 0):
        over.append("max_gpu")
    return list(dict.fromkeys(over))


def _refusal(
    job: Job, request: Mapping[str, Any], parts: Mapping[str, Mapping[str, float]], path: str
) -> str:
    gpu = request.get("gpu", 0)
    candidates = {n: lim for n, lim in parts.items() if lim.get("max_gpu", 0) >= gpu}
    if not candidates:
        most = max(lim.get("max_gpu", 0) for lim in parts.values())
        return (
            f"job {job.name} asks for {gpu} GPU(s), more than any partition's max_gpu ({most:g}) in {path}. "
            f"Fix: models.{job.model}.resources.gpu, or max_gpu in {path}"
        )
    problems = []
    for key, names in LIMITS.items():
        for name in names:
            values = [lim[name] for lim in candidates.values() if name in lim]
            if key != "gpu" and values and request[key] > max(values):
                best = max(candidates, key=lambda n: candidates[n].get(name, 0))
                problems.append(f"{key} {request[key]:g} > {name} {max(values):g} (partition {best})")
    why = request.get("why", {})
    keys = {
        "runtime": why.get("runtime", f"models.{job.model}.resources.runtime"),
        "mem_mb": why.get("mem_mb", f"models.{job.model}.resources.mem_mb"),
        "threads": f"models.{job.model}.resources.threads",
    }
    fixes = [keys[p.split()[0]] for p in problems if p.split()[0] in keys]
    return (
        f"job {job.name} fits no partition of {path}: " + "; ".join(problems) + ". "
        f"Fix: {'; '.join(dict.fromkeys(fixes))}; or the partitions' limits in {path}"
    )


def _rate_of(config: Mapping[str, Any]):
    rates: dict[tuple, DeviceRate] = {}

    def rate(device: str, job: Job, shape: ModelShape) -> DeviceRate:
        threads = int(config["models"][job.model]["resources"]["threads"])
        dtype = str(shape.model.shape.dtype).removeprefix("torch.")
        key = (device, threads, dtype)
        if key not in rates:
            found = device_rate(device, threads, [dtype], allow_measure=False)
            if found is None:
                raise InputError(
                    f"cluster_device {config['cluster_device']}: the jobs' requests come from the cost estimate, "
                    f"which needs this machine's rates for {device} ({threads} thread(s), {dtype}), not measured "
                    "yet. Fix: measure them once, on a quiet machine: patchbench estimate --configfile <this config>"
                    + (f" --device {device}" if device != "cpu" else "")
                )
            rates[key] = found
        return rates[key]

    return rate


def cluster_requests(
    config: Mapping[str, Any], written: Mapping[str, set[str]]
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every model-loading job's request (module docstring), keyed by :func:`job_key`; the partition
    check when ``cluster_partitions`` is set. Empty when the config names no cluster device and no
    partitions (the rules then read the config's resources as written)."""
    device, path = config["cluster_device"], config["cluster_partitions"]
    if device is None and path is None:
        return {}
    if device is not None and device not in DEVICES:
        raise ConfigError(
            f"config key 'cluster_device' (the SLURM profile sets it: profiles/slurm/config.yaml): {device!r} is "
            f"not a known device; known: {', '.join(DEVICES)} (datasheet GPUs: {', '.join(DATASHEETS)}). "
            "Fix: name one of them, or leave it unset to use models.<name>.resources as written"
        )
    safety = float(config["cluster_safety_factor"])
    jobs = jobs_of(config)
    models = config["models"]

    def resource(job: Job, key: str) -> float:
        value = models[job.model]["resources"][key]
        return value * max(1, len(job.cells)) if key == "runtime" and job.cells else value

    def derive(job: Job) -> bool:
        return device is not None and not {"mem_mb", "runtime"} <= written.get(job.model, set())

    def on(job: Job) -> str:
        gpu = int(models[job.model]["resources"]["gpu"])
        return device if gpu > 0 and device != "cpu" else "cpu"

    estimates: dict[tuple, JobEstimate] = {}
    todo = [j for j in jobs if derive(j)]
    if todo:
        for e in estimate_jobs(config, on, _rate_of(config), todo):
            estimates[_key(e.job)] = e
    requests: dict[tuple[str, str, str], dict[str, Any]] = {}
    for job in jobs:
        req: dict[str, Any] = {k: resource(job, k) for k in ("mem_mb", "runtime", "threads", "gpu")}
        req["why"] = {}
        e = estimates.get(_key(job))
        if e is not None:
            factor = f"a smaller cluster_safety_factor (now {safety:g})"
            if "mem_mb" not in written.get(job.model, set()):
                req["mem_mb"] = math.ceil(safety * e.host_bytes / 2**20)
                req["why"]["mem_mb"] = (
                    f"a smaller models.{job.model}.memory_budget_mb, {factor}, or models.{job.model}.resources.mem_mb "
                    "written by hand"
                )
            if "runtime" not in written.get(job.model, set()):
                req["runtime"] = math.ceil(safety * e.total_seconds / 60)
                name = job.rule.split("_", 1)[1]
                cells = f", fewer cells in experiments.{name} (corruptions, windows)" if job.cells else ""
                req["why"]["runtime"] = (
                    f"a faster cluster_device (now {e.device}), {factor}{cells}, or "
                    f"models.{job.model}.resources.runtime written by hand"
                )
            sheet = DATASHEETS.get(e.device)
            if sheet is not None and e.device_bytes * safety > sheet["memory"]:
                raise PartitionError(
                    f"job {job.name} needs {e.device_bytes * safety / 2**30:.0f} GiB of GPU memory (estimate x "
                    f"{safety:g}), more than {sheet['name']} has. Fix: models.{job.model}.memory_budget_mb"
                )
        requests[_key(job)] = req
    if path is not None:
        parts = read_partitions(path)
        bad = [job for job in jobs if all(_exceeded(requests[_key(job)], lim) for lim in parts.values())]
        if bad:
            more = f" ({len(bad) - 1} more job(s) do not fit either: {', '.join(j.name for j in bad[1:4])}{', ...' if len(bad) > 4 else ''})"
            raise PartitionError(
                f"config key 'cluster_partitions': {_refusal(bad[0], requests[_key(bad[0])], parts, str(path))}"
                + (more if len(bad) > 1 else "")
            )
    return requests
