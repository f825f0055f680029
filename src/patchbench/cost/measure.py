"""Measuring a device's rates with the engine's own pieces (:func:`measure`, 1-3 minutes).

Dense ``[2048, w] @ [w, 4w]`` products at several widths ``w`` (per dtype; fewer rows where a
dtype is slow), the model interface's blocks (:meth:`patchbench.lm.LM.run_blocks`) of random models
of the native and the transformers route at two widths and two lengths (one token: the per-call
time; 2048 tokens: the elementwise time, the dense time at the measured rate taken off; the rates
fitted exactly to the three timed shapes), the elements their non-matmul operations write (a
dispatch mode), :func:`patchbench.engine.readout.answer_values` at two vocabulary sizes,
:func:`patchbench.rawframe.patched_rows`, a tiny sweep (its fixed set-up), loading saved models of
two sizes (:func:`patchbench.lm.load_transformers`), hashing, and the process's start-up time and
memory. Run it on a quiet machine: whatever else runs slows every figure.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from patchbench.cost.rates import DeviceRate, interpolate
from patchbench.cost.work import layer_flops

__all__ = ["device_name", "matmul_rate", "measure"]

#: Widths of the dense products measured (``[2048, w] @ [w, 4w]``).
WIDTHS = (64, 128, 256, 512, 1024, 2048)
#: Token rows of the measured blocks and dense products.
TOKENS = 2048
#: Widths of the random models whose blocks are timed (d_mlp = 4 d_model).
BLOCK_WIDTHS = (128, 512)


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
                r: _block_rates(r, device, Path(tmp), partial(interpolate, f32))
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
