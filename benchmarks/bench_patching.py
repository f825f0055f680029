"""Benchmark: patchbench's engine against TransformerLens's patching, same process, same inputs.

Random-weight Hugging Face models (``save_pretrained`` into a temporary directory, loaded through
:func:`patchbench.lm.load_transformers`: the transformers route) and one native-route model; TransformerLens runs on the same model's bridge (``model.bridge``,
compatibility mode). Prompts: STR, one token replaced a third of the way in; the answer and wrong
tokens are the model's own top clean / corrupted predictions at the last position. Cases, each
against TransformerLens in the same run (time, ratio, max abs difference of the normalised logit
difference, peak memory):

* ``heads_all``: every head's output over all positions (``get_act_patch_attn_head_out_all_pos``),
  GPT-2-small shape;
* ``mlp_end``: MLP output, window 1, at END (the last position) of a 2-shot-arithmetic-length
  prompt, GPT-J-like shape scaled to fit (28 layers, d_model 512, partial rotary);
* ``mlp_subject_last_w5`` / ``_w10``: MLP windows at the last subject token (a different position
  per prompt), GPT-2-XL-like shape scaled to fit (48 layers, d_model 256);
* ``mlp_each_w5``: MLP window 5 at every position, the same shape;
* ``heads_each``: every head at every position of a docstring-length prompt
  (``get_act_patch_attn_head_out_by_pos``);
* ``mlp_end_native``: ``mlp_end``'s sweep on a GPT-J-like model of the native route (the toy
  models' route: :func:`patchbench.lm.load_native`, TransformerLens's own attention, which the
  interface runs with its key/value cache).

TransformerLens's side of the MLP cases is the ``run_with_hooks`` loop a user writes (one full
forward per target; TransformerLens has no window patching function). Each case also prints its
distance to the floor: the sweep's FLOPs as the engine's plan runs them (:mod:`patchbench.cost`,
counted exactly as ``torch.utils.flop_counter`` counts them: the corrupted run, each chunk's patched
rows from their entry layer on the chunk's suffix, a head target's own layer without attention,
one unembedding per row, the sanity identities) divided by patchbench's time, as a fraction of a
dense float32 matmul throughput the script measures at its start (printed again at the end);
TransformerLens's loop gets the same figure (one full forward per target), the rate the model's
own forward code reaches. Each case ends with one line
``case NAME speedup X.Xx maxdiff Y floor Z%``; the last line reads ``speedup X.Xx maxdiff Y`` for
``heads_all``. The machine's load average is printed at the start and end: the ratios are
measured side by side in one process, the absolute times depend on the load. Not a test: run it
by hand.

    python benchmarks/bench_patching.py            # every case (about 10 minutes on 2 CPU cores)
    python benchmarks/bench_patching.py --small    # smoke run, shapes cut down
    python benchmarks/bench_patching.py --cases mlp_end,heads_all
    python benchmarks/bench_patching.py --threads 1  # a loaded machine: no thread oversubscription
    python benchmarks/bench_patching.py --device cuda
    python benchmarks/bench_patching.py --profile  # + where each sweep's time goes (dense products or not)
    python benchmarks/bench_patching.py --scaling  # time against sequence length and depth (benchmarks/scaling.py)
    python benchmarks/bench_patching.py --scaling --quick  # the same on tiny sizes (a smoke run)
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import threading
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-patch progress bars

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformer_lens import patching as tlp  # noqa: E402

from patchbench.cost.measure import matmul_rate  # noqa: E402
from patchbench.cost.work import forward_work, sweep_work, unembed_flops  # noqa: E402
from patchbench.engine.cache import clean_cache  # noqa: E402
from patchbench.engine.heap import keep_freed_memory  # noqa: E402
from patchbench.engine.sweep import run_sweep  # noqa: E402
from patchbench.lm import LM, load_native, load_transformers  # noqa: E402
from patchbench.metrics import effects  # noqa: E402
from patchbench.prompts import PromptSet  # noqa: E402
from patchbench.sites import SweepSpec, enumerate_targets, window_layers  # noqa: E402


class PeakMemory:
    """Peak memory of a phase: RSS above its start (CPU, sampled) or CUDA max allocated."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self._rss()
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._rss() - self.base)
                time.sleep(0.005)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() - self.base)

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def timed(fn, device: str):
    """``fn()``, its wall time and peak memory. As ``timeit`` does, Python's garbage collector does not
    run inside the timing (it is run before it): otherwise the first phase after another one pays for
    collecting the other's objects (measured: 0.25 s of ``mlp_end``'s patchbench run after the
    TransformerLens loop)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    gc.collect()
    gc.disable()
    try:
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            out = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
    finally:
        gc.enable()
    return out, dt, mem.mib


#: Hugging Face shapes of the cases (full size; ``--small`` cuts them down). Weights are drawn with
#: std 0.1 (``initializer_range``; Hugging Face's default 0.02 leaves a random model's clean and
#: corrupted logit differences ~1e-3 apart, and the normalisation would amplify float32 rounding)
INIT = 0.1
SHAPES = {
    "gpt2-small": ("gpt2", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)),
    "gpt-j-scaled": (
        "gptj",
        dict(n_layer=28, n_embd=512, n_head=4, rotary_dim=32, vocab_size=50400, n_positions=2048,
             tie_word_embeddings=False, bos_token_id=50256, eos_token_id=50256),
    ),
    "gpt2-xl-scaled": ("gpt2", dict(n_layer=48, n_embd=256, n_head=4, vocab_size=50257, n_positions=1024)),
    "docstring": ("gpt2", dict(n_layer=4, n_embd=256, n_head=8, vocab_size=5000, n_positions=1024)),
    # the native route (the toy models' route: TransformerLens's own NativeAttention), GPT-J-like
    "native-gpt-j-scaled": (
        "native",
        dict(n_layers=28, d_model=512, n_heads=4, d_head=128, d_mlp=2048, d_vocab=50400, n_ctx=2048,
             act_fn="gelu_new", normalization_type="LN", positional_embedding_type="rotary", rotary_dim=32),
    ),
}  # fmt: skip
SMALL = dict(n_layer=4, n_embd=64, n_head=4, vocab_size=2000)

#: name -> (shape, site, position, window, prompts, tokens)
CASES = {
    "mlp_end": ("gpt-j-scaled", "mlp", "END", 1, 8, 32),
    "mlp_subject_last_w5": ("gpt2-xl-scaled", "mlp", "SUBJ", 5, 8, 16),
    "mlp_subject_last_w10": ("gpt2-xl-scaled", "mlp", "SUBJ", 10, 8, 16),
    "mlp_each_w5": ("gpt2-xl-scaled", "mlp", "each", 5, 2, 12),
    "heads_each": ("docstring", "attn_head", "each", 1, 2, 40),
    "mlp_end_native": ("native-gpt-j-scaled", "mlp", "END", 1, 8, 32),
    "heads_all": ("gpt2-small", "attn_head", "all", 1, 8, 15),
}


def load_model(shape: str, small: bool, device: str, seed: int, root: str) -> LM:
    import transformers as tf

    kind, kwargs = SHAPES[shape]
    if kind == "native":
        if small:
            kwargs = {
                **kwargs,
                "n_layers": 4,
                "d_model": 64,
                "d_head": 16,
                "d_mlp": 256,
                "d_vocab": 2000,
                "rotary_dim": 8,
            }
        return load_native({**kwargs, "seed": seed, "initializer_range": INIT}, device=device)
    if small:
        kwargs = {**kwargs, **SMALL}
        if kind == "gptj":
            kwargs["rotary_dim"] = 8
    classes = {"gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel), "gptj": (tf.GPTJConfig, tf.GPTJForCausalLM)}
    config_cls, model_cls = classes[kind]
    torch.manual_seed(seed)
    directory = os.path.join(root, shape)
    if not os.path.exists(directory):
        model_cls(config_cls(**kwargs, initializer_range=INIT)).eval().save_pretrained(directory)
    return load_transformers(directory, device=device)


def make_prompts(model: LM, n_prompts: int, seq_len: int, seed: int) -> PromptSet:
    dev = model.shape.device
    d_vocab = model.shape.d_vocab
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, d_vocab, (n_prompts, seq_len))
    corrupted = clean.copy()
    swap = seq_len // 3
    corrupted[:, swap] = (clean[:, swap] + 1 + rng.integers(0, d_vocab - 1, n_prompts)) % d_vocab
    # the last subject token: the replaced token or up to two after it (a different position per prompt)
    subject_last = swap + rng.integers(0, 3, n_prompts)
    with torch.no_grad():
        lc = model.logits(torch.as_tensor(clean, device=dev))[:, -1]
        lk = model.logits(torch.as_tensor(corrupted, device=dev))[:, -1]
    ans = lc.argmax(-1).cpu()
    top2 = lk.topk(2, dim=-1).indices.cpu()
    wrong = torch.where(top2[:, 0] == ans, top2[:, 1], top2[:, 0])
    return PromptSet(
        task="bench",
        clean=list(clean),
        corrupted=list(corrupted),
        answer_pos=np.full(n_prompts, seq_len - 1),
        answers=[[int(a)] for a in ans],
        wrong=[[int(w)] for w in wrong],
        noise_positions=[[swap]] * n_prompts,
        positions={"END": np.full(n_prompts, seq_len - 1), "SUBJ": subject_last},
    )


def plan_flops(model: LM, prompts: PromptSet, spec: SweepSpec, check_identities: bool = True) -> float:
    """The sweep's FLOPs as the engine's plan runs them (:func:`patchbench.cost.work.sweep_work`: the
    corrupted run, each chunk's patched rows from their entry layer on their suffix, a head-output
    target's own layer as the shortcut runs it, one unembedding per row, the sanity identities)."""
    return sweep_work(model, prompts, spec, check_identities=check_identities).work.flops


def tl_flops(model: LM, prompts: PromptSet, spec: SweepSpec) -> float:
    """FLOPs of TransformerLens's side: one full forward per target, unembedding every position."""
    s = model.shape
    P = prompts.tokens("corrupted").shape[1]
    n = len(targets_of(model, spec, P))
    one = forward_work(model, len(prompts), P).flops + unembed_flops(s, len(prompts) * P)
    return float(n * one)


def targets_of(model: LM, spec: SweepSpec, max_len: int) -> list:
    return enumerate_targets(spec, model.shape.n_layers, model.site_heads(spec.site), max_len)


def tl_reference(model: LM, prompts: PromptSet, site: str, position: str, window: int, kt, cache, metric):
    """TransformerLens's side: its patching functions for heads, a run_with_hooks loop for MLP windows."""
    tl = model.bridge
    L = model.shape.n_layers
    if site == "attn_head":
        func = (
            tlp.get_act_patch_attn_head_out_all_pos
            if position == "all"
            else tlp.get_act_patch_attn_head_out_by_pos
        )
        return func(tl, kt, cache, metric)
    P = kt.shape[1]
    rows = torch.arange(kt.shape[0])
    out = torch.zeros(L, P) if position == "each" else torch.zeros(L)
    for lay in range(L):
        a, b = window_layers(lay, window, L)
        for pos in range(P) if position == "each" else [None]:
            at = (
                torch.full((len(rows),), pos)
                if pos is not None
                else torch.as_tensor(prompts.named_position(position))
            )

            def put(act, hook, at=at):
                act[rows, at] = cache[hook.name][rows, at]
                return act

            logits = tl.run_with_hooks(kt, fwd_hooks=[(f"blocks.{i}.hook_mlp_out", put) for i in range(a, b)])
            if pos is None:
                out[lay] = metric(logits).item()
            else:
                out[lay, pos] = metric(logits).item()
    return out


def effects_of(raw, ref: torch.Tensor, site: str, position: str) -> torch.Tensor:
    """patchbench's normalised logit differences laid out as TransformerLens's result ``ref``."""
    mine = torch.full(ref.shape, float("nan"), dtype=torch.float64)
    for _, row in effects(raw, ["logit_diff"]).iterrows():
        if site == "attn_head":
            idx = (
                (int(row["layer"]), int(row["head"]))
                if position == "all"
                else (int(row["layer"]), int(row["position"]), int(row["head"]))
            )
        else:
            idx = (int(row["layer"]), int(row["position"])) if position == "each" else (int(row["layer"]),)
        mine[idx] = row["effect"]
    assert not mine.isnan().any(), "every TransformerLens entry has a patchbench target"
    return mine


def run_case(name: str, args, root: str, rate: float) -> dict:
    shape, site, position, window, n_prompts, seq_len = CASES[name]
    if args.small:
        n_prompts, seq_len = min(n_prompts, 3), min(seq_len, 12)
    dev = args.device
    model = load_model(shape, args.small, dev, args.seed, root)
    prompts = make_prompts(model, n_prompts, seq_len, args.seed)
    tl = model.bridge
    L, H = model.shape.n_layers, model.shape.n_heads
    ct = prompts.tokens("clean").to(dev)
    kt = prompts.tokens("corrupted").to(dev)
    ans = torch.tensor([a[0] for a in prompts.answers], device=dev)
    wr = torch.tensor([w[0] for w in prompts.wrong], device=dev)

    def ld(logits):
        last = logits[:, -1].double()
        return (last.gather(1, ans[:, None]) - last.gather(1, wr[:, None])).mean()

    # Clean activations once, outside the timings, for both (the clean run is shared by every sweep)
    _, cache = tl.run_with_cache(ct)
    hook_site = "attn_head" if site == "attn_head" else "mlp"
    clean = clean_cache(model, prompts, [hook_site])
    lc, lk = ld(tl(ct)), ld(tl(kt))

    def metric(logits):
        return (ld(logits) - lk) / (lc - lk)

    spec = SweepSpec("str", site, position=position, window=window, memory_budget_mb=args.memory_budget_mb)
    # warm-up (allocator, kernels) for both sides
    tl(kt)
    run_sweep(model, prompts.subset([0]), replace_layers(spec, L), progress=False)

    ref, t_tl, m_tl = timed(
        lambda: tl_reference(model, prompts, site, position, window, kt, cache, metric), dev
    )
    raw, t_pb, m_pb = timed(lambda: run_sweep(model, prompts, spec, clean, progress=False), dev)
    # the same sweep without its sanity identities (engine.check_identities: false), for the record:
    # the identities cost about one full forward of the first block
    _, t_nock, _ = timed(
        lambda: run_sweep(model, prompts, spec, clean, progress=False, check_identities=False), dev
    )
    ref = ref.double().cpu()
    diff = float((effects_of(raw, ref, site, position) - ref).abs().max())
    flops = plan_flops(model, prompts, spec)
    floor = flops / t_pb / rate
    flops_nock = plan_flops(model, prompts, spec, check_identities=False)
    meta = raw.attrs["patchbench"]
    s = model.shape
    print(
        f"[{name}] model {s.architecture}: {L} layers x {H} heads, d_model {s.d_model}, d_vocab {s.d_vocab}, "
        f"{s.positional} positions; {len(prompts)} prompts x {seq_len} tokens; {site} pos={position} w={window}"
    )
    f_tl = tl_flops(model, prompts, spec)
    print(
        f"[{name}] TransformerLens: {t_tl:8.2f} s  peak {m_tl:8.1f} MiB; its loop's {f_tl / 1e9:.1f} GFLOP -> "
        f"{f_tl / t_tl / 1e9:.2f} GFLOP/s ({100 * f_tl / t_tl / rate:.0f}% of the matmul rate: the model's own forward)"
    )
    print(f"[{name}] patchbench ({meta['plan']}): {t_pb:8.2f} s  peak {m_pb:8.1f} MiB")
    print(
        f"[{name}] the plan runs {flops / 1e9:.2f} GFLOP -> {flops / t_pb / 1e9:.2f} GFLOP/s of {rate / 1e9:.1f} measured matmul GFLOP/s; "
        f"effects range {float(ref.min()):.3f} .. {float(ref.max()):.3f}; sanity self-patch "
        f"{meta['sanity']['self_patch_maxdiff']:.1e}; load {load()}"
    )
    print(
        f"[{name}] patchbench without its sanity identities: {t_nock:8.2f} s (ratio {t_tl / t_nock:.1f}x, "
        f"floor {100 * flops_nock / t_nock / rate:.0f}%; not the case's figures)"
    )
    if args.profile:
        profile_case(name, lambda: run_sweep(model, prompts, spec, clean, progress=False), flops, rate)
    print(f"case {name} speedup {t_tl / t_pb:.1f}x maxdiff {diff:.0e} floor {100 * floor:.0f}%", flush=True)
    return dict(speedup=t_tl / t_pb, maxdiff=diff, floor=floor)


#: The dense products of a forward (torch.profiler op names): the floor's own kind of work.
MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")


def profile_case(name: str, sweep, flops: float, rate: float) -> None:
    """One more run of patchbench's sweep under torch.profiler: the time spent in dense products
    and their own rate, and so the floor this sweep could reach if nothing else took time (useful
    FLOPs / matmul time / the measured rate). Not the case's figures: the profiler slows the rest."""
    with torch.profiler.profile(with_flops=True) as prof:
        t0 = time.perf_counter()
        sweep()
        wall = time.perf_counter() - t0
    ops = prof.key_averages()
    mm = [e for e in ops if e.key in MATMUL_OPS]
    t_mm = sum(e.self_device_time_total or e.self_cpu_time_total for e in mm) / 1e6
    f_mm = sum(e.flops for e in mm)
    rest = sorted((e for e in ops if e.key not in MATMUL_OPS), key=lambda e: -e.self_cpu_time_total)[:5]
    print(
        f"[{name}] profile (one more run, under torch.profiler, {wall:.2f} s): dense products "
        f"{t_mm:.2f} s, {f_mm / 1e9:.1f} GFLOP at {f_mm / t_mm / 1e9:.0f} GFLOP/s "
        f"({100 * f_mm / t_mm / rate:.0f}% of the measured matmul rate); floor bound if nothing else "
        f"took time {100 * flops / t_mm / rate:.0f}%; most of the rest (self times under the profiler, "
        "which slows short operations most): "
        + ", ".join(f"{e.key.removeprefix('aten::')} {e.self_cpu_time_total / 1e6:.2f} s" for e in rest)
    )


def replace_layers(spec: SweepSpec, n_layers: int) -> SweepSpec:
    from dataclasses import replace

    return replace(spec, layers=(n_layers - 1,), heads=None)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny shapes for a smoke run")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--memory-budget-mb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads for both sides (0: torch's default). On a loaded machine 1 avoids "
        "thread oversubscription, which slows small operations by orders of magnitude",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="after each case, one more patchbench run under torch.profiler: time in dense products, "
        "their rate, and the floor the sweep could reach if nothing else took time",
    )
    ap.add_argument(
        "--scaling",
        action="store_true",
        help="time both engines against sequence length and depth, print the log-log slopes, draw a PNG",
    )
    ap.add_argument("--quick", action="store_true", help="--scaling on tiny sizes (a smoke run)")
    ap.add_argument("--out", default="benchmarks/out", help="--scaling: directory of the PNG and CSV")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    dev = args.device
    if args.scaling:
        from scaling import run_scaling

        run_scaling(args)
        return
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; use {list(CASES)}")
    names = [c for c in CASES if c in names]  # heads_all last
    print(
        f"device {dev} ({torch.cuda.get_device_name() if dev.startswith('cuda') else f'{torch.get_num_threads()} threads, {os.cpu_count()} CPUs'}), "
        f"torch {torch.__version__}; load average (1, 5, 15 min) {load()}"
    )
    # both sides run under the heap settings a sweep sets (run_sweep sets them on its first call)
    print(f"glibc heap keeps freed memory (patchbench.engine.heap): {keep_freed_memory()}")
    rate0 = matmul_rate(dev, 1024)
    print(
        f"dense float32 matmul ([2048, 1024] @ [1024, 4096]): {rate0 / 1e9:.1f} GFLOP/s at the start (the floors' reference)"
    )
    results = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        for name in names:
            results[name] = run_case(name, args, root, rate0)
    rate1 = matmul_rate(dev, 1024)
    print(
        f"dense float32 matmul ([2048, 1024] @ [1024, 4096]): {rate1 / 1e9:.1f} GFLOP/s at the end; "
        f"total {time.perf_counter() - t_start:.0f} s; load average {load()}"
    )
    if "heads_all" in results:
        r = results["heads_all"]
        print(f"speedup {r['speedup']:.1f}x maxdiff {r['maxdiff']:.0e}")


if __name__ == "__main__":
    main()
