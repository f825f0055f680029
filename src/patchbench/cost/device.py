"""A device's rates, measured once and cached, and the seconds a count of work takes on it.

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
token and layer); their rates (per element, per score element, and a per-token constant) are fitted
exactly to three timed block shapes (two widths, two sequence lengths).

Every rate is measured on the device by :func:`measure` with the engine's own pieces: dense
``[2048, w] @ [w, 4w]`` products at several widths ``w`` (per dtype), the model interface's blocks
(:meth:`patchbench.lm.LM.run_blocks`) of random models of the native and the transformers route
at two widths and two lengths (one token: the per-call time; 2048 tokens: the elementwise time, the
dense time at the measured rate taken off), a tiny sweep (its fixed set-up), :func:`patchbench.engine.readout.answer_values` at two vocabulary
sizes, :func:`patchbench.rawframe.patched_rows`, and loading a saved model
(:func:`patchbench.lm.load_transformers`; bytes per second, and the process's start-up time and
memory). Rates are cached as JSON under :func:`cache_dir`, one file per (device, its name, torch
version, threads): a rate measured on one machine is never used for another.

Datasheet devices (:data:`DATASHEETS`: ``h100``, ``a100``) are GPUs this machine does not have:
their dense rates are the vendor's published peak figures and their elementwise rate follows from
the memory bandwidth and the element counts of the model interface's blocks (counted on this
machine); the per-call, read-out row, frame and loading figures are the local CPU's. Every
prediction for them says so: it is an assumption, not a measurement.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from patchbench.cost.work import Work, layer_flops

__all__ = [
    "DATASHEETS",
    "DEVICES",
    "DeviceRate",
    "cache_dir",
    "cache_file",
    "device_rate",
    "matmul_rate",
    "measure",
    "store",
]

#: Widths of the dense products measured (``[2048, w] @ [w, 4w]``).
WIDTHS = (64, 128, 256, 512, 1024, 2048)
#: Token rows of the measured blocks and dense products.
TOKENS = 2048
#: Widths of the random models whose blocks are timed (d_mlp = 4 d_model).
BLOCK_WIDTHS = (128, 512)

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


def cache_dir() -> Path:
    """Where measured rates are cached: ``$PATCHBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/patchbench``
    (``~/.cache/patchbench``)."""
    env = os.environ.get("PATCHBENCH_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "patchbench"


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
        return _interp(self.matmul.get(dtype) or self.matmul["float32"], width)

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


def _interp(table: list[list[float]], width: int) -> float:
    import numpy as np

    table = sorted(table)
    return float(np.interp(np.log(max(1, width)), np.log([w for w, _ in table]), [r for _, r in table]))


# ---------------------------------------------------------------------------------------------
# measuring


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best(
    fn: Callable[[], Any], device: str, repeats: int = 3, seconds: float = 0.5, budget: float = 3.0
) -> float:
    """The best wall time of ``fn()`` (after one warm-up call) over ``repeats`` runs, more while under
    ``seconds`` and fewer once ``budget`` seconds are spent (at least one)."""
    fn()
    _sync(device)
    best, spent, n = float("inf"), 0.0, 0
    while n == 0 or (n < repeats and spent < budget) or (spent < seconds and n < 50):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        best, spent, n = min(best, dt), spent + dt, n + 1
    return best


def matmul_rate(device: str, width: int, dtype: torch.dtype = torch.float32, tokens: int = TOKENS) -> float:
    """Dense rate (FLOP/s) of ``[tokens, width] @ [width, 4 width]`` on ``device`` (best of a few).

    Fewer token rows where the product is slow (float16 on most CPUs runs at a few GFLOP/s): as
    many as take about a tenth of a second, at least 16."""

    def rate(n: int) -> float:
        a = torch.randn(n, width, device=device).to(dtype)
        b = torch.randn(width, 4 * width, device=device).to(dtype)
        return 2 * n * width * 4 * width / _best(partial(torch.matmul, a, b), device, seconds=0.3)

    a = torch.randn(16, width, device=device).to(dtype)
    b = torch.randn(width, 4 * width, device=device).to(dtype)
    t0 = time.perf_counter()
    torch.matmul(a, b)
    _sync(device)
    rough = 2 * 16 * width * 4 * width / (time.perf_counter() - t0)
    return rate(int(min(tokens, max(16, 0.1 * rough / (8 * width * width)))))


def _random_model(route: str, width: int, device: str, root: Path):
    from patchbench.lm import load_native, load_transformers

    heads = max(1, width // 64)
    if route == "native":
        cfg = dict(n_layers=2, d_model=width, n_heads=heads, d_head=width // heads, d_mlp=4 * width,
                   d_vocab=1000, n_ctx=128, act_fn="gelu", normalization_type="LN", seed=0)  # fmt: skip
        return load_native(cfg, device=device, check=False)
    import transformers as tf

    path = root / f"gpt2-{width}"
    cfg = tf.GPT2Config(n_layer=2, n_embd=width, n_head=heads, vocab_size=1000, n_positions=128)
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(cfg).save_pretrained(path)
    return load_transformers(str(path), device=device, check=False)


def _elements(model: Any, tokens: torch.Tensor) -> float:
    """Elements written by the non-matmul operations of one forward through every block, per token
    and layer (counted by a dispatch mode: what the elementwise share moves)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    dense = {"aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm"}
    total = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            views = any(r.alias_info is not None for r in func._schema.returns)
            if str(func.overloadpacket) not in dense and not views:
                outs = out if isinstance(out, (tuple, list)) else [out]
                total[0] += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))
            return out

    with torch.no_grad():
        x = model.embed(tokens)
        with Count():
            model.run_blocks(x, 0)
    return total[0] / (tokens.numel() * model.shape.n_layers)


def _block_rates(route: str, device: str, root: Path, mm: Callable[[int], float]) -> dict[str, Any]:
    """``route``'s blocks: per-call seconds, element counts ``[e0, e1, e2]`` and the elementwise rates
    ``[per token, per element, per score element]`` (module docstring), from random models of two widths."""
    models = [_random_model(route, w, device, root) for w in BLOCK_WIDTHS]
    ids = lambda rows, n: torch.zeros(rows, n, dtype=torch.long, device=device)  # noqa: E731
    # elements per token and layer at (width 1, 32 keys), (width 2, 32 keys), (width 1, 8 keys)
    e11, e21, e12 = (
        _elements(models[0], ids(2, 32)),
        _elements(models[1], ids(2, 32)),
        _elements(models[0], ids(2, 8)),
    )
    (s1, s2) = (m.shape for m in models)
    w1, w2 = (s.d_model + s.d_mlp for s in (s1, s2))
    e2 = (e11 - e12) / (s1.n_heads * 24)
    e1 = (e21 - e11 - e2 * 32 * (s2.n_heads - s1.n_heads)) / (w2 - w1)
    e0 = e11 - e1 * w1 - e2 * 32 * s1.n_heads
    call, per_token = float("inf"), []
    for model, length in ((models[0], 32), (models[1], 32), (models[0], 128)):
        s = model.shape
        with torch.no_grad():
            x1, xb = model.embed(ids(1, 1)), model.embed(ids(TOKENS // length, length))
            t1 = _best(partial(model.run_blocks, x1, 0), device) / s.n_layers
            tb = _best(partial(model.run_blocks, xb, 0), device) / s.n_layers
        call = min(call, t1)
        dense = TOKENS // length * layer_flops(s, length, length) / mm(s.d_model)
        per_token.append(max(0.0, (tb - t1 - dense) / TOKENS))
    # per token and layer: token + element x (e0 + e1 w) + score x heads x keys, at the three timed shapes
    ew1, ew2 = e0 + e1 * w1, e0 + e1 * w2
    y0, y1, y2 = per_token
    per_score = max(0.0, (y2 - y0) / (s1.n_heads * (128 - 32)))
    per_element = max(0.0, (y1 - y0 - per_score * 32 * (s2.n_heads - s1.n_heads)) / (ew2 - ew1))
    token = y0 - per_element * ew1 - per_score * 32 * s1.n_heads
    if token < 0:  # noise: no per-token constant, the element rate from the larger width
        token, per_element = 0.0, max(0.0, (y1 - per_score * 32 * s2.n_heads) / ew2)
    return {"call": call, "elements": [e0, e1, e2], "element": [token, per_element, per_score]}


def _readout_rates(device: str) -> tuple[float, float]:
    from patchbench.engine.readout import AnswerIds, answer_values

    times = []
    for vocab in (1000, 50000):
        rows = 256
        logits = torch.randn(rows, vocab, device=device)
        clean = torch.log_softmax(torch.randn(rows, vocab, device=device).double(), -1)
        ids = AnswerIds(
            torch.zeros(rows, 1, dtype=torch.long, device=device),
            torch.ones(rows, 1, dtype=torch.float64, device=device),
        )
        times.append(_best(partial(answer_values, logits, clean, ids, ids), device) / rows)
    per_vocab = max(0.0, (times[1] - times[0]) / 49000)
    return max(0.0, times[0] - 1000 * per_vocab), per_vocab


def _frame_row() -> float:
    import numpy as np

    from patchbench.rawframe import VALUE_COLUMNS, patched_rows
    from patchbench.sites import SweepSpec, enumerate_targets

    targets = enumerate_targets(SweepSpec("str", "mlp", position="each"), 4, 1, 50)
    n = 100
    values = {c: np.zeros((len(targets), n)) for c in VALUE_COLUMNS}
    pos = np.zeros((len(targets), n), dtype=np.int64)
    prompt = np.arange(n)
    return _best(lambda: patched_rows(targets, prompt, prompt * 0, values, pos), "cpu") / (len(targets) * n)


def _sweep_seconds(device: str, rate: DeviceRate) -> float:
    """The fixed seconds of one sweep: a tiny sweep's time (mlp at the last position of 4 prompts on a
    2-layer model) less what the other rates predict of it."""
    import numpy as np

    from patchbench.cost.work import sweep_work
    from patchbench.engine.cache import clean_cache
    from patchbench.engine.sweep import run_sweep
    from patchbench.lm import load_native
    from patchbench.prompts import PromptSet
    from patchbench.sites import SweepSpec

    cfg = dict(n_layers=2, d_model=64, n_heads=2, d_head=32, d_mlp=256, d_vocab=100, n_ctx=16, act_fn="gelu",
               normalization_type="LN", seed=0)  # fmt: skip
    model = load_native(cfg, device=device, check=False)
    rng = np.random.default_rng(0)
    clean = [rng.integers(1, 100, 8) for _ in range(4)]
    corrupted = [np.where(np.arange(8) == 2, (c + 1) % 99 + 1, c) for c in clean]
    prompts = PromptSet(task="probe", clean=clean, corrupted=corrupted, answer_pos=[7] * 4, answers=[[1]] * 4,
                        wrong=[[2]] * 4, noise_positions=[[2]] * 4, positions={"END": np.full(4, 7)})  # fmt: skip
    spec = SweepSpec("str", "mlp", position="END")
    cache = clean_cache(model, prompts, [spec])
    took = _best(partial(run_sweep, model, prompts, spec, cache, progress=False), device)
    work = sweep_work(model, prompts, spec).work
    return max(0.0, took - (rate.seconds(work, model.shape, "native")["total"] - rate.sweep))


def _hash_rate() -> float:
    import hashlib

    data = torch.zeros(2**26, dtype=torch.uint8).numpy().tobytes()
    return len(data) / _best(lambda: hashlib.sha256(data).hexdigest(), "cpu", repeats=2)


def _startup() -> tuple[float, int]:
    """Seconds to start Python and import the model interface, and the bytes then resident."""
    import subprocess
    import sys

    # VmHWM: this process's own peak (getrusage's ru_maxrss keeps the forking parent's across exec)
    code = (
        "import patchbench.lm, transformer_lens; "
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, int(out.stdout.split()[-1]) * 1024


def _load_rate(device: str, root: Path) -> tuple[float, float]:
    """Loading a saved model through the transformers route (reading, the bridge, weight processing,
    the self-check): fixed seconds and bytes per second, from two model sizes."""
    import transformers as tf

    from patchbench.lm import load_transformers

    points = []
    for n_layer, width in ((2, 256), (6, 512)):
        path = root / f"load-{n_layer}-{width}"
        torch.manual_seed(0)
        cfg = tf.GPT2Config(n_layer=n_layer, n_embd=width, n_head=8, n_positions=64)
        tf.GPT2LMHeadModel(cfg).save_pretrained(path)
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        points.append((size, _best(partial(load_transformers, str(path), device=device), device, repeats=1)))
    (s1, t1), (s2, t2) = points
    rate = (s2 - s1) / max(t2 - t1, 1e-9)
    if t2 <= t1:  # noise: all of it per byte
        return 0.0, s2 / t2
    return max(0.0, t1 - s1 / rate), rate


def measure(
    device: str = "cpu", threads: int | None = None, dtypes: Iterable[str] = ("float32",)
) -> DeviceRate:
    """Measure ``device``'s rates (``cpu`` at ``threads`` torch threads, or ``cuda``): 20-60 s. Run it
    on a quiet machine: whatever else runs slows every figure, and the figures are cached."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        table = {
            dt: [[w, matmul_rate(device, w, getattr(torch, dt))] for w in WIDTHS]
            for dt in dict.fromkeys(dtypes)
        }
        f32 = table.get("float32") or [[w, matmul_rate(device, w)] for w in WIDTHS]
        with tempfile.TemporaryDirectory() as tmp:
            blocks = {
                r: _block_rates(r, device, Path(tmp), partial(_interp, f32))
                for r in ("native", "transformers")
            }
            load_fixed, load_rate = _load_rate(device, Path(tmp))
        readout_row, readout_vocab = _readout_rates(device)
        startup, baseline = _startup()
        rate = DeviceRate(
            device=device,
            name=device_name(device),
            source="measured",
            threads=torch.get_num_threads(),
            torch=torch.__version__,
            matmul=table,
            call={r: b["call"] for r, b in blocks.items()},
            elements={r: b["elements"] for r, b in blocks.items()},
            element={r: b["element"] for r, b in blocks.items()},
            readout_row=readout_row,
            readout_vocab=readout_vocab,
            frame_row=_frame_row(),
            sweep=0.0,
            load_fixed=load_fixed,
            load_rate=load_rate,
            hash_rate=_hash_rate(),
            startup=startup,
            baseline=baseline,
            measured_at=time.strftime("%Y-%m-%d %H:%M:%S"),
            load_average=list(os.getloadavg()),
        )
        return dataclasses.replace(rate, sweep=_sweep_seconds(device, rate))
    finally:
        torch.set_num_threads(old)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        return _datasheet(device, log)
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


def _datasheet(device: str, log: Callable[[str], None]) -> DeviceRate:
    """A datasheet GPU: its published dense rates, and elementwise work at its memory bandwidth (one
    float32 read and write per element counted on this machine's blocks); the per-call, read-out
    row, frame, loading and start-up figures are this machine's CPU's."""
    sheet = DATASHEETS[device]
    cpu = device_rate("cpu", log=log)
    assert cpu is not None
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
