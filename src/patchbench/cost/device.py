"""A device's rates, measured once and cached, or published figures for a GPU that is not here.

:func:`device_rate` returns the :class:`~patchbench.cost.rates.DeviceRate` of ``cpu`` or ``cuda``
from its cache file (:func:`cache_file`: one per device, its name, the torch version and the
thread count, under :func:`cache_dir`; a rate measured on one machine is never used for another),
measuring it first (:func:`patchbench.cost.measure.measure`) when there is none. Datasheet devices
(:data:`~patchbench.cost.rates.DATASHEETS`: ``h100``, ``a100``) are GPUs this machine does not
have: their dense rates are the vendor's published peak figures and their elementwise rate follows
from the memory bandwidth and the element counts of the model interface's blocks (counted on this
machine); the per-call, read-out row, frame, loading and start-up figures are the local CPU's.
Every prediction for them says so: it is an assumption, not a measurement.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import torch

from patchbench.cost.measure import WIDTHS, device_name, measure
from patchbench.cost.rates import DATASHEETS, DEVICES, DeviceRate

__all__ = ["DATASHEETS", "DEVICES", "DeviceRate", "cache_dir", "cache_file", "device_rate", "store"]


def cache_dir() -> Path:
    """Where measured rates are cached: ``$PATCHBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/patchbench``
    (``~/.cache/patchbench``)."""
    env = os.environ.get("PATCHBENCH_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "patchbench"


def cache_file(device: str, threads: int) -> Path:
    """The cache file of ``device``'s rates at ``threads`` threads on this machine and torch version."""
    name = "".join(c if c.isalnum() else "-" for c in device_name(device)).strip("-")
    return cache_dir() / "device" / f"{device}-{name}-torch{torch.__version__}-t{threads}.json"


def device_rate(
    device: str,
    threads: int | None = None,
    dtypes: Iterable[str] = ("float32",),
    *,
    remeasure: bool = False,
    allow_measure: bool = True,
    log: Callable[[str], None] = print,
) -> DeviceRate | None:
    """``device``'s rates: cached (measured once, :func:`measure`), or from :data:`DATASHEETS`.

    ``threads``: CPU threads (default: torch's), at most this machine's CPUs. A cached file that lacks
    one of ``dtypes``' dense rates is measured again. Without a cached file and with
    ``allow_measure=False``: None (a workflow job never measures: its neighbours would slow it).
    """
    if device in DATASHEETS:
        return _datasheet(device, threads, allow_measure, log)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: no CUDA device is visible here; use cpu or a datasheet device "
                         f"({', '.join(DATASHEETS)})")  # fmt: skip
    threads = min(threads or torch.get_num_threads(), os.cpu_count() or 1) if device == "cpu" else 1
    path = cache_file(device, threads)
    dtypes = list(dict.fromkeys(["float32", *dtypes]))
    if path.exists() and not remeasure:
        fields = json.loads(path.read_text())
        if set(fields) == {f.name for f in dataclasses.fields(DeviceRate)}:  # else an older format: again
            rate = DeviceRate(**fields)
            if all(d in rate.matmul for d in dtypes):
                return rate
    if not allow_measure:
        return None
    log(f"measuring {device} ({threads} thread(s)) once, about a minute; cached in {path}. "
        "Close other work first: anything else running slows the figures.")  # fmt: skip
    busy = os.getloadavg()[0]
    if busy > 0.5:
        log(f"warning: load average {busy:.1f} (other work is running): every figure comes out slow and is "
            "cached as measured; measure again on a quiet machine (patchbench estimate ... --measure)")  # fmt: skip
    rate = measure(device, threads, dtypes)
    store(rate)
    return rate


def store(rate: DeviceRate) -> Path:
    """Write measured rates to their :func:`cache_file`."""
    from patchbench.atomic import write_text

    path = cache_file(rate.device, rate.threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(asdict(rate), indent=1))
    return path


def _datasheet(
    device: str, threads: int | None, allow_measure: bool, log: Callable[[str], None]
) -> DeviceRate | None:
    """A datasheet GPU: its published dense rates, and elementwise work at its memory bandwidth (one
    float32 read and write per element counted on this machine's blocks); the per-call, read-out
    row, frame, loading and start-up figures are this machine's CPU's (None while those are not
    measured and ``allow_measure`` is False)."""
    sheet = DATASHEETS[device]
    cpu = device_rate("cpu", threads, allow_measure=allow_measure, log=log)
    if cpu is None:
        return None
    table = {dt: [[w, rate] for w in WIDTHS] for dt, rate in sheet["matmul"].items()}
    per_element = 2 * 4 / sheet["bandwidth"]
    return dataclasses.replace(
        cpu,
        device=device,
        name=sheet["name"],
        source="datasheet",
        matmul=table,
        element={r: [0.0, per_element, per_element * cpu.elements[r][2]] for r in cpu.element},
        # the read-out: about six float64 passes (read and write) over the vocabulary per row
        readout_vocab=6 * 2 * 8 / sheet["bandwidth"],
    )
