"""How the cost of every-position sweeps grows: ``python benchmarks/bench_patching.py --scaling``.

Times patchbench's engine and TransformerLens side by side (the same process, inputs and model, as
``bench_patching.py``'s cases) for two every-position sweeps, MLP outputs (window 1; TransformerLens:
the ``run_with_hooks`` loop) and head outputs (``get_act_patch_attn_head_out_by_pos``), on random
GPT-2-shaped models (transformers route, d_model 128, 4 heads, d_mlp 512, vocabulary 1000, 2 prompts):

* against sequence length 16, 32, 64, 128 at 4 layers;
* against depth 4, 12, 24 layers at 32 tokens.

Prints one line per point (both times, their ratio, the largest difference of the normalised logit
difference, the FLOPs of patchbench's plan and of TransformerLens's loop), the log-log slope of each
engine's time and FLOPs against length and against depth (a least-squares line through log time
against log size), and writes ``scaling.csv`` and
``scaling.png`` under ``--out``. ``--quick`` runs tiny sizes (a smoke run; its numbers mean nothing).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
from bench_patching import INIT, effects_of, make_prompts, timed, tl_flops, tl_reference

from patchbench.cost.work import sweep_work
from patchbench.engine.cache import clean_cache
from patchbench.engine.sweep import run_sweep
from patchbench.lm import LM, load_transformers
from patchbench.sites import SweepSpec

#: (site, TransformerLens's side) of the two sweeps, both at every position.
SWEEPS = {"mlp_each": "mlp", "heads_each": "attn_head"}


@dataclass(frozen=True)
class Sizes:
    lengths: tuple[int, ...]
    depth_for_lengths: int
    depths: tuple[int, ...]
    length_for_depths: int
    d_model: int
    n_heads: int
    vocab: int
    prompts: int


FULL = Sizes((16, 32, 64, 128), 4, (4, 12, 24), 32, d_model=128, n_heads=4, vocab=1000, prompts=2)
QUICK = Sizes((4, 6), 1, (1, 2), 4, d_model=32, n_heads=2, vocab=200, prompts=1)


def gpt2(n_layers: int, sizes: Sizes, n_ctx: int, device: str, root: str, seed: int) -> LM:
    import transformers as tf

    path = os.path.join(root, f"gpt2-{n_layers}-{n_ctx}")
    if not os.path.exists(path):
        torch.manual_seed(seed)
        cfg = tf.GPT2Config(
            n_layer=n_layers, n_embd=sizes.d_model, n_head=sizes.n_heads, vocab_size=sizes.vocab,
            n_positions=n_ctx, initializer_range=INIT, bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        tf.GPT2LMHeadModel(cfg).eval().save_pretrained(path)
    return load_transformers(path, device=device)


def point(model: LM, length: int, sweep: str, args, sizes: Sizes) -> dict:
    """One (model, length, sweep): both engines timed, their largest difference."""
    dev = args.device
    site = SWEEPS[sweep]
    prompts = make_prompts(model, sizes.prompts, length, args.seed)
    tl = model.bridge
    ct, kt = prompts.tokens("clean").to(dev), prompts.tokens("corrupted").to(dev)
    ans = torch.tensor([a[0] for a in prompts.answers], device=dev)
    wr = torch.tensor([w[0] for w in prompts.wrong], device=dev)

    def ld(logits):
        last = logits[:, -1].double()
        return (last.gather(1, ans[:, None]) - last.gather(1, wr[:, None])).mean()

    _, cache = tl.run_with_cache(ct)
    lc, lk = ld(tl(ct)), ld(tl(kt))

    def metric(logits):
        return (ld(logits) - lk) / (lc - lk)

    spec = SweepSpec("str", site, position="each", memory_budget_mb=args.memory_budget_mb)
    clean = clean_cache(model, prompts, [site])
    tl(kt)  # warm-up, both sides
    run_sweep(model, prompts.subset([0]), spec, clean=None, progress=False)
    ref, t_tl, _ = timed(lambda: tl_reference(model, prompts, site, "each", 1, kt, cache, metric), dev)
    raw, t_pb, _ = timed(lambda: run_sweep(model, prompts, spec, clean, progress=False), dev)
    diff = float((effects_of(raw, ref, site, "each") - ref.double().cpu()).abs().max())
    flops = sweep_work(model, prompts, spec).work.flops
    s = model.shape
    return dict(sweep=sweep, layers=s.n_layers, length=length, tl_s=t_tl, pb_s=t_pb, ratio=t_tl / t_pb,
                maxdiff=diff, gflop=flops / 1e9, tl_gflop=tl_flops(model, prompts, spec) / 1e9)  # fmt: skip


def slope(xs, ys) -> float:
    """The least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run_scaling(args) -> list[dict]:
    sizes = QUICK if args.quick else FULL
    os.makedirs(args.out, exist_ok=True)
    print(
        f"scaling on {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; d_model {sizes.d_model}, "
        f"{sizes.n_heads} heads, vocabulary {sizes.vocab}, {sizes.prompts} prompt(s)"
    )
    grid = [(sizes.depth_for_lengths, n) for n in sizes.lengths]
    grid += [(L, sizes.length_for_depths) for L in sizes.depths if (L, sizes.length_for_depths) not in grid]
    rows: list[dict] = []
    t0 = time.perf_counter()
    header = f"{'sweep':<11} {'layers':>6} {'length':>6} {'TL s':>9} {'patchbench s':>12} {'ratio':>7} {'maxdiff':>8} {'GFLOP':>9}"
    print(header)
    with tempfile.TemporaryDirectory() as root:
        for n_layers, length in grid:
            # at least 16 positions: the interface's load-time checks run 10-token prompts
            n_ctx = max(16, *sizes.lengths, sizes.length_for_depths)
            model = gpt2(n_layers, sizes, n_ctx, args.device, root, args.seed)
            for sweep in SWEEPS:
                r = point(model, length, sweep, args, sizes)
                rows.append(r)
                print(
                    f"{r['sweep']:<11} {r['layers']:>6} {r['length']:>6} {r['tl_s']:>9.2f} {r['pb_s']:>12.2f} "
                    f"{r['ratio']:>6.1f}x {r['maxdiff']:>8.0e} {r['gflop']:>9.2f}",
                    flush=True,
                )
    print(
        f"total {time.perf_counter() - t0:.0f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("log-log slopes (time ~ size^slope):")
    for sweep in SWEEPS:
        by_len = [r for r in rows if r["sweep"] == sweep and r["layers"] == sizes.depth_for_lengths]
        by_depth = [r for r in rows if r["sweep"] == sweep and r["length"] == sizes.length_for_depths]
        for engine, key, fl in (("TransformerLens", "tl_s", "tl_gflop"), ("patchbench", "pb_s", "gflop")):
            a = slope([r["length"] for r in by_len], [r[key] for r in by_len])
            b = slope([r["layers"] for r in by_depth], [r[key] for r in by_depth])
            fa = slope([r["length"] for r in by_len], [r[fl] for r in by_len])
            fb = slope([r["layers"] for r in by_depth], [r[fl] for r in by_depth])
            print(
                f"  {sweep:<11} {engine:<16} time: length {a:.2f}  depth {b:.2f}; FLOPs: length {fa:.2f}  depth {fb:.2f}"
            )
    write(rows, sizes, args.out)
    return rows


def write(rows: list[dict], sizes: Sizes, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.to_csv(os.path.join(out, "scaling.csv"), index=False)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        ("length", "layers", sizes.depth_for_lengths, f"sequence length ({sizes.depth_for_lengths} layers)"),
        ("layers", "length", sizes.length_for_depths, f"layers ({sizes.length_for_depths} tokens)"),
    )
    for ax, (x, fixed, value, label) in zip(axes, panels, strict=True):
        part = frame[frame[fixed] == value]
        for sweep, style in zip(SWEEPS, ("-", "--"), strict=True):
            pts = part[part["sweep"] == sweep].sort_values(x)
            for engine, key, mark, color in (
                ("TransformerLens", "tl_s", "o", "tab:red"),
                ("patchbench", "pb_s", "s", "tab:blue"),
            ):
                label = f"{engine}, {sweep} (slope {slope(pts[x], pts[key]):.2f})"
                ax.plot(pts[x], pts[key], mark + style, color=color, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("sweep time (s)")
        ax.set_xticks(sorted(part[x].unique()), [str(v) for v in sorted(part[x].unique())])
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(
        f"every-position sweeps, GPT-2-shaped (d_model {sizes.d_model}), {sizes.prompts} prompt(s); log-log slopes in the legends"
    )
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling.png"), dpi=120)
    print(f"wrote {os.path.join(out, 'scaling.csv')} and {os.path.join(out, 'scaling.png')}")
