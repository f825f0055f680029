"""``patchbench estimate``: a config's jobs with their predicted FLOPs, time and peak memory, printed.

    patchbench estimate --configfile config/demo.yaml [--device cpu|cuda|h100|a100] [--threads N]
                        [--cells] [--measure]

The config is checked exactly as the workflow checks it (:func:`patchbench.preflight.check_workflow_config`:
a config that does not validate gets its own error); several ``--configfile`` are merged in order, as
Snakemake merges them. No weights are loaded: shapes come from :mod:`patchbench.cost.shapes`, prompts
from :func:`patchbench.cost.jobs.job_prompts`, rates from :func:`patchbench.cost.device.device_rate`
(measured on first use and cached; ``--measure`` measures again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from patchbench.cost.device import DeviceRate, device_rate
from patchbench.cost.jobs import Job, JobEstimate, estimate_jobs
from patchbench.cost.shapes import ModelShape

__all__ = ["estimate_command", "format_estimates", "human_time", "load_configs", "merge"]


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``base`` (nested mappings key by key), as Snakemake merges config files."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def load_configs(files: Sequence[str | Path]) -> dict[str, Any]:
    """The workflow config of ``files`` (merged in order), checked as the Snakefile checks it."""
    from patchbench.config import read_yaml
    from patchbench.preflight import check_workflow_config

    config: dict[str, Any] = {}
    for f in files:
        merge(config, read_yaml(f) or {})
    check_workflow_config(config, [str(f) for f in files])
    return config


def human_time(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _shape_line(name: str, shape: ModelShape) -> str:
    s = shape.model.shape
    return (
        f"  {name}: {s.n_layers} layers x {s.n_heads} heads ({s.n_kv_heads} kv), d_model {s.d_model}, "
        f"d_mlp {s.d_mlp}, vocab {s.d_vocab}, {str(s.dtype).removeprefix('torch.')}, {shape.route} route, "
        f"weights {shape.weight_bytes / 2**30:.2f} GiB; shape from {shape.source}"
    )


def format_estimates(estimates: Sequence[JobEstimate], cells: bool = False) -> list[str]:
    """The table of jobs (and, with ``cells``, their cells) and the totals."""
    head = (
        f"{'job':<44} {'device':>6} {'prompts':>7} {'len':>4} {'GFLOP':>11} {'compute':>9} {'load':>8} "
        f"{'total':>9} {'host MiB':>9} {'GPU MiB':>8}  prompts from"
    )
    lines = [head, "-" * len(head)]
    for e in estimates:
        lines.append(
            f"{e.job.name:<44} {e.device:>6} {e.prompts:>7} {e.max_len:>4} {e.work.flops / 1e9:>11.1f} "
            f"{human_time(e.seconds):>9} {human_time(e.load_seconds):>8} {human_time(e.total_seconds):>9} "
            f"{e.host_bytes / 2**20:>9.0f} {e.device_bytes / 2**20:>8.0f}  {e.prompts_source}"
        )
        if cells:
            lines += [f"    {label:<40} {human_time(t):>9}" for label, t in e.cells.items()]
    lines.append("-" * len(head))
    total = sum(e.total_seconds for e in estimates)
    sweeps = [e for e in estimates if e.job.rule.startswith("sweep_")]
    lines.append(
        f"{'total (' + str(len(estimates)) + ' jobs, one after another)':<44} {'':>6} {'':>7} {'':>4} "
        f"{sum(e.work.flops for e in estimates) / 1e9:>11.1f} {human_time(sum(e.seconds for e in estimates)):>9} "
        f"{human_time(sum(e.load_seconds for e in estimates)):>8} {human_time(total):>9} "
        f"{max((e.host_bytes for e in estimates), default=0) / 2**20:>9.0f} "
        f"{max((e.device_bytes for e in estimates), default=0) / 2**20:>8.0f}  (memory: the largest job)"
    )
    lines.append(
        f"sweep jobs: {len(sweeps)}, {sum(e.work.flops for e in sweeps) / 1e12:.2f} TFLOP, compute "
        f"{human_time(sum(e.seconds for e in sweeps))}, with loading {human_time(sum(e.total_seconds for e in sweeps))}"
    )
    return lines


def estimate_command(args: Any) -> None:
    """The ``estimate`` subcommand (``args``: configfile, device, threads, cells, measure)."""
    config = load_configs(args.configfile)
    rates: dict[tuple[str, int], DeviceRate] = {}
    shapes: dict[str, ModelShape] = {}

    def threads_of(model: str) -> int:
        return int(args.threads or config["models"][model]["resources"]["threads"])

    # every dtype a (device, threads) pair serves, measured together (one cached file per pair)
    dtypes: dict[int, set[str]] = {}
    for name, entry in config["models"].items():
        dtypes.setdefault(threads_of(name), set()).add(entry["dtype"])

    def rate_of(device: str, job: Job, shape: ModelShape) -> DeviceRate:
        shapes.setdefault(job.model, shape)
        key = (device, threads_of(job.model))
        if key not in rates:
            rate = device_rate(device, key[1], sorted(dtypes[key[1]]), remeasure=args.measure)
            assert rate is not None
            rates[key] = rate
        return rates[key]

    estimates = estimate_jobs(config, lambda job: args.device, rate_of)
    print(f"patchbench estimate: {', '.join(map(str, args.configfile))} on {args.device}")
    print("devices:")
    for rate in {id(r): r for r in rates.values()}.values():
        print(f"  {rate.describe()}")
    print("models:")
    for name, shape in shapes.items():
        print(_shape_line(name, shape))
    for line in format_estimates(estimates, cells=args.cells):
        print(line)
    print(
        "compute: the counted work at the device's rates (patchbench.cost); load: start-up, weights and "
        "the clean cache; host MiB: peak resident memory; prompts generated before the correctness "
        "filter make an upper bound"
    )
