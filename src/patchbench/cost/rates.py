"""A device's rates and the time model: the seconds a count of work takes on a device.

The time model splits work as ``bench_patching.py --profile`` does, into dense products and the
rest (:class:`patchbench.cost.work.Work`)::

    seconds = flops / matmul(d_model, dtype)                        dense products
            + tokens x (token + element x (e0 + e1 (d_model + d_mlp)))  elementwise work per token
            + scores x score                                        ... per attention-score element
            + calls x call                                         per block call (Python, hooks, launches)
            + readout x (row + vocab x d_vocab)                    read-out over the vocabulary
            + rows x frame_row + sweeps x sweep                    raw-frame rows, a sweep's set-up

The elementwise share of a block is counted in elements: ``e0 + e1 (d_model + d_mlp)`` per token and
layer, which a dispatch mode counts on the model interface's own blocks (``e2`` per attention-score
element likewise, for devices timed by bandwidth), and attention-score elements (heads x keys per
token and layer). Every figure is measured on the device (:mod:`patchbench.cost.measure`), except
for the datasheet GPUs of :data:`DATASHEETS` (:mod:`patchbench.cost.device`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from patchbench.cost.work import Work

__all__ = ["DATASHEETS", "DEVICES", "DeviceRate", "interpolate"]

#: Published figures of GPUs (peak dense rates by dtype, FLOP/s; memory bandwidth, bytes/s), used
#: only where no such device is present to measure: an explicit assumption, named in every output.
DATASHEETS: dict[str, dict[str, Any]] = {
    "h100": {
        "name": "NVIDIA H100 SXM5 80GB (datasheet)",
        # FP32 on CUDA cores (PyTorch's float32 matmul default: no TF32); FP16/BF16 tensor cores, dense
        "matmul": {"float32": 67e12, "float16": 989e12, "bfloat16": 989e12},
        "bandwidth": 3.35e12,
        "memory": 80e9,
    },
    "a100": {
        "name": "NVIDIA A100 SXM4 80GB (datasheet)",
        "matmul": {"float32": 19.5e12, "float16": 312e12, "bfloat16": 312e12},
        "bandwidth": 2.039e12,
        "memory": 80e9,
    },
}
#: Devices :func:`device_rate` knows: measured on this machine, or from a datasheet.
DEVICES = ("cpu", "cuda", *DATASHEETS)


@dataclass(frozen=True)
class DeviceRate:
    """The rates of one device (see the module docstring); seconds unless named otherwise."""

    device: str  # cpu | cuda | a DATASHEETS key
    name: str  # CPU model, GPU name, or the datasheet's
    source: str  # "measured" or "datasheet"
    threads: int
    torch: str
    matmul: dict[str, list[list[float]]]  # dtype -> [[width, FLOP/s], ...]
    call: dict[str, float]  # route -> seconds per block call
    elements: dict[str, list[float]]  # route -> [e0, e1, e2]: elements written (module docstring)
    # route -> seconds per token and layer, per element of the width term, per attention-score element
    element: dict[str, list[float]]
    readout_row: float
    readout_vocab: float  # seconds per row and vocabulary entry
    frame_row: float
    sweep: float  # fixed seconds of one sweep (set-up, fingerprint, frame assembly)
    load_fixed: float  # seconds of loading any model (the transformers route) ...
    load_rate: float  # ... and bytes of weights loaded per second
    hash_rate: float  # bytes of weights hashed per second (a model's fingerprint, once per job)
    startup: float  # seconds from process start to the package imported
    baseline: int  # bytes resident after start-up
    measured_at: str = ""
    load_average: list[float] = field(default_factory=list)

    # -------------------------------------------------------------------------------- predictions

    def matmul_at(self, width: int, dtype: str = "float32") -> float:
        """The dense rate at ``width`` (log-linear between measured widths, flat beyond them)."""
        return interpolate(self.matmul.get(dtype) or self.matmul["float32"], width)

    def seconds(self, work: Work, shape: Any, route: str) -> dict[str, float]:
        """The predicted seconds of ``work`` on a model of ``shape`` (:class:`patchbench.lm.LMShape`)
        by part (``dense``, ``elementwise``, ``calls``, ``readout``, ``frame``) and ``total``."""
        key = "native" if route in ("native", "legacy") else "transformers"
        dtype = str(shape.dtype).removeprefix("torch.")
        e0, e1, _ = self.elements[key]
        per_token, per_element, per_score = self.element[key]
        elems = work.tokens * (e0 + e1 * (shape.d_model + shape.d_mlp))
        parts = {
            "dense": work.flops / self.matmul_at(shape.d_model, dtype),
            "elementwise": elems * per_element + work.scores * per_score + work.tokens * per_token,
            "calls": work.calls * self.call[key],
            "readout": work.readout * (self.readout_row + self.readout_vocab * shape.d_vocab),
            "frame": work.rows * self.frame_row + work.sweeps * self.sweep,
        }
        parts["total"] = sum(parts.values())
        return parts

    def load_seconds(self, weight_bytes: int) -> float:
        """Start-up, loading a model of ``weight_bytes`` and hashing its weights."""
        return self.startup + self.load_fixed + weight_bytes / self.load_rate + weight_bytes / self.hash_rate

    def describe(self) -> str:
        mm = self.matmul_at(1024) / 1e9
        if self.source == "measured":
            load = ", ".join(f"{x:.1f}" for x in self.load_average[:1])
            return (
                f"{self.device} = {self.name}, {self.threads} thread(s), torch {self.torch} (measured "
                f"{self.measured_at}, load average {load} then); dense float32 {mm:.0f} GFLOP/s at width 1024"
            )
        return (
            f"{self.device} = {self.name}: published peak figures, not measured (dense float32 {mm:.0f} "
            f"GFLOP/s); per-call, loading and host figures from this machine's CPU ({self.threads} thread(s), "
            f"measured {self.measured_at})"
        )


def interpolate(table: list[list[float]], width: int) -> float:
    """A dense-rate table ``[[width, FLOP/s], ...]`` at ``width``: log-linear between its widths, flat beyond."""
    import numpy as np

    table = sorted(table)
    return float(np.interp(np.log(max(1, width)), np.log([w for w, _ in table]), [r for _, r in table]))
