"""Benchmark: attribution sweep vs exact sweep, same model, same prompts, same run.

A GPT-2-small-shaped model with random weights (12 layers, 12 heads, d_model 768, d_mlp 3072,
GPT-2 vocabulary of 50257) and random prompts with one STR-corrupted token. Both methods read one
shared clean cache (timed separately) and sweep every head's output at all positions
(``attn_head``, ``position='all'``: 144 targets). Prints both times and the speed-up, for the
attribution sweep that estimates every metric the exact sweep gives (prob, logit_diff, kl: three
backward passes) and for logit difference alone (one backward pass), and the Spearman correlation
of the two methods' logit-difference effects as a sanity check (random weights: no circuit, so read
the correlation as "same numbers up to first order", not as a quality figure).

    python benchmarks/bench_attribution.py            # GPT-2-small shape, 20 prompts x 15 tokens
    python benchmarks/bench_attribution.py --small    # 4 layers x 4 heads, d_model 128: seconds
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from bench_patching import build  # noqa: E402  (sibling script: benchmarks/ is sys.path[0])
from scipy.stats import spearmanr

from patchbench.attribution import attribution_effects, run_attribution
from patchbench.engine.cache import clean_cache
from patchbench.engine.sweep import run_sweep
from patchbench.metrics import effects
from patchbench.sites import SweepSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a 4-layer, 4-head, d_model 128 model (seconds)")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=15)
    ap.add_argument("--memory-budget-mb", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--position", default="all", help="'all' (one target per head) or 'each' (head x position)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    # the same random model and prompts as the exact engine's benchmark
    model, prompts = build(args.small, args.device, args.prompts, args.seq_len, args.seed)
    cfg = model.cfg
    spec = SweepSpec("str", "attn_head", position=args.position, memory_budget_mb=args.memory_budget_mb)
    shape = f"{cfg.n_layers}L x {cfg.n_heads}H, d_model {cfg.d_model}, vocab {cfg.d_vocab}"
    print(
        f"model: random {shape}; {args.prompts} prompts x {args.seq_len} tokens; "
        f"{cfg.n_layers * cfg.n_heads} heads, position={args.position}; device {args.device}, torch threads {torch.get_num_threads()}"
    )

    t0 = time.perf_counter()
    hooks = [f"blocks.{lay}.attn.{h}" for lay in range(cfg.n_layers) for h in ("hook_z",)]
    cache = clean_cache(model, prompts, hooks, memory_budget_mb=args.memory_budget_mb)
    t_cache = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw_ex = run_sweep(model, prompts, spec, cache, progress=False)
    t_exact = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw_at = run_attribution(
        model, prompts, spec, cache, metrics=("prob", "logit_diff", "kl"), progress=False
    )
    t_attr = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw_ld = run_attribution(model, prompts, spec, cache, metrics=("logit_diff",), progress=False)
    t_ld = time.perf_counter() - t0

    ex = effects(raw_ex, ("logit_diff",)).set_index("component")["effect"]
    at = attribution_effects(raw_ld).set_index("component")["effect"].reindex(ex.index)
    rho = spearmanr(ex.to_numpy(), at.to_numpy()).statistic
    at3 = attribution_effects(raw_at).query("metric == 'logit_diff'").set_index("component")["effect"]
    same = float(np.abs(at3.reindex(ex.index).to_numpy() - at.to_numpy()).max())

    print(f"clean cache (shared): {t_cache:.2f} s")
    print(f"exact sweep: {t_exact:.2f} s")
    print(
        f"attribution sweep, prob+logit_diff+kl (3 backward): {t_attr:.2f} s  -> {t_exact / t_attr:.1f}x faster"
    )
    print(f"attribution sweep, logit_diff only (1 backward):   {t_ld:.2f} s  -> {t_exact / t_ld:.1f}x faster")
    print(
        f"logit_diff effects, exact vs attribution: Spearman {rho:.3f} (random weights); "
        f"1- vs 3-output attribution max diff {same:.2g}"
    )
    print(
        f"BENCH attribution_vs_exact heads={cfg.n_layers * cfg.n_heads} exact_s={t_exact:.2f} "
        f"attribution_s={t_attr:.2f} ratio={t_exact / t_attr:.1f}x attribution_ld_s={t_ld:.2f} "
        f"ratio_ld={t_exact / t_ld:.1f}x"
    )


if __name__ == "__main__":
    main()
