"""Benchmark: patchbench's engine against TransformerLens's patching, same process, same inputs.

A GPT-2-small-shaped model with random weights (12 layers, 12 heads, d_model 768, d_vocab 50257,
n_ctx 1024), 20 prompts of 15 tokens (STR: one token replaced). Two comparisons:

1. every attention head's output over all positions: TransformerLens
   ``get_act_patch_attn_head_out_all_pos`` vs a patchbench ``attn_head`` sweep;
2. MLP output, window 5, every layer, last position: a per-layer TransformerLens
   ``run_with_hooks`` loop vs a patchbench ``mlp`` sweep.

Both compute the normalised logit difference; the script prints both times, their ratio, the max
absolute difference and the peak memory of each phase (resident set size above the phase's
start, sampled every 5 ms; on CUDA ``torch.cuda.max_memory_allocated``). The last line reads
``speedup X.Xx maxdiff Y`` for the head sweep. Not a test: run it by hand.

    python benchmarks/bench_patching.py            # full size (a few minutes on 2 CPU cores)
    python benchmarks/bench_patching.py --small    # smoke run, seconds
    python benchmarks/bench_patching.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import threading
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-patch progress bars

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens import patching as tlp  # noqa: E402

from patchbench.engine.cache import clean_cache  # noqa: E402
from patchbench.engine.sweep import run_sweep  # noqa: E402
from patchbench.metrics import effects  # noqa: E402
from patchbench.prompts import PromptSet  # noqa: E402
from patchbench.sites import SweepSpec, window_layers  # noqa: E402


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
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return out, dt, mem.mib


def build(small: bool, device: str, n_prompts: int, seq_len: int, seed: int):
    if small:
        shape = dict(n_layers=4, n_heads=4, d_model=128, d_head=32, d_mlp=512, d_vocab=5000, n_ctx=64)
    else:
        shape = dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024)
    cfg = HookedTransformerConfig(
        **shape, act_fn="gelu_new", normalization_type="LN", seed=seed, device=device
    )
    model = HookedTransformer(cfg)
    model.eval()
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, cfg.d_vocab, (n_prompts, seq_len))
    corrupted = clean.copy()
    swap = seq_len // 3
    corrupted[:, swap] = (clean[:, swap] + 1 + rng.integers(0, cfg.d_vocab - 1, n_prompts)) % cfg.d_vocab
    # answers: the model's own top clean / corrupted tokens, so LD_clean - LD_corrupted is well away from 0
    with torch.no_grad():
        lc = model(torch.as_tensor(clean, device=device))[:, -1]
        lk = model(torch.as_tensor(corrupted, device=device))[:, -1]
    ans = lc.argmax(-1).cpu()
    top2 = lk.topk(2, dim=-1).indices.cpu()
    wrong = torch.where(top2[:, 0] == ans, top2[:, 1], top2[:, 0])
    prompts = PromptSet(
        task="bench",
        clean=list(clean),
        corrupted=list(corrupted),
        answer_pos=np.full(n_prompts, seq_len - 1),
        answers=[[int(a)] for a in ans],
        wrong=[[int(w)] for w in wrong],
        noise_positions=[[swap]] * n_prompts,
        positions={"last": np.full(n_prompts, seq_len - 1)},
    )
    return model, prompts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny model for a smoke run")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=15)
    ap.add_argument("--memory-budget-mb", type=int, default=1024)
    ap.add_argument("--skip-mlp", action="store_true", help="only the head sweep")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    dev = args.device
    model, prompts = build(args.small, dev, args.prompts, args.seq_len, args.seed)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    print(
        f"device {dev} ({torch.cuda.get_device_name() if dev.startswith('cuda') else f'{torch.get_num_threads()} threads'}), "
        f"torch {torch.__version__}"
    )
    print(
        f"model: {L} layers x {H} heads, d_model {model.cfg.d_model}, d_vocab {model.cfg.d_vocab}; "
        f"{len(prompts)} prompts x {args.seq_len} tokens"
    )

    ct = prompts.tokens("clean").to(dev)
    kt = prompts.tokens("corrupted").to(dev)
    ans = torch.tensor([a[0] for a in prompts.answers], device=dev)
    wr = torch.tensor([w[0] for w in prompts.wrong], device=dev)

    def ld(logits):
        last = logits[:, -1].double()
        return (last.gather(1, ans[:, None]) - last.gather(1, wr[:, None])).mean()

    # Clean activations are computed once, outside the timings, for both (TransformerLens's ActivationCache,
    # patchbench's clean_cache): the clean run is shared by every sweep of a (model, task).
    _, cache = model.run_with_cache(ct)
    (clean, t_clean, _) = timed(lambda: clean_cache(model, prompts, ["attn_head", "mlp"]), dev)
    lc, lk = ld(model(ct)), ld(model(kt))

    def metric(logits):
        return (ld(logits) - lk) / (lc - lk)

    # warm-up (allocator, kernels) for both sides
    model(kt)
    run_sweep(model, prompts.subset([0, 1]), SweepSpec("str", "attn_head", layers=(L - 1,)), progress=False)

    # ---------------------------------------------------------------- head sweep
    ref, t_tl, m_tl = timed(lambda: tlp.get_act_patch_attn_head_out_all_pos(model, kt, cache, metric), dev)
    spec = SweepSpec("str", "attn_head", memory_budget_mb=args.memory_budget_mb)
    raw, t_pb, m_pb = timed(lambda: run_sweep(model, prompts, spec, clean, progress=False), dev)
    eff = effects(raw, ["logit_diff"])
    mine = np.zeros((L, H))
    mine[eff["layer"].to_numpy(), eff["head"].to_numpy()] = eff["effect"].to_numpy()
    diff_heads = float(np.abs(mine - ref.double().cpu().numpy()).max())
    plan = raw.attrs["patchbench"]["plan"]
    sanity = raw.attrs["patchbench"]["sanity"]
    print(
        f"[clean] patchbench clean_cache (untimed below, like TransformerLens's run_with_cache): {t_clean:.2f} s"
    )
    print(f"[heads] TransformerLens get_act_patch_attn_head_out_all_pos: {t_tl:8.2f} s  peak {m_tl:8.1f} MiB")
    print(f"[heads] patchbench attn_head sweep ({plan}): {t_pb:8.2f} s  peak {m_pb:8.1f} MiB")
    print(
        f"[heads] ratio {t_tl / t_pb:.2f}x  max |diff| normalised LD {diff_heads:.2e}  "
        f"(effects range {ref.min():.3f} .. {ref.max():.3f})"
    )

    # ---------------------------------------------------------------- MLP window 5, last position
    if not args.skip_mlp:
        w = 5
        last = args.seq_len - 1

        def tl_mlp():
            out = torch.zeros(L)
            for lay in range(L):
                a, b = window_layers(lay, w, L)

                def put(act, hook):
                    act[:, last] = cache[hook.name][:, last]
                    return act

                logits = model.run_with_hooks(
                    kt, fwd_hooks=[(f"blocks.{i}.hook_mlp_out", put) for i in range(a, b)]
                )
                out[lay] = metric(logits).item()
            return out

        ref_m, t_tlm, m_tlm = timed(tl_mlp, dev)
        spec_m = SweepSpec("str", "mlp", position="last", window=w, memory_budget_mb=args.memory_budget_mb)
        raw_m, t_pbm, m_pbm = timed(lambda: run_sweep(model, prompts, spec_m, clean, progress=False), dev)
        eff_m = effects(raw_m, ["logit_diff"]).sort_values("layer")
        diff_mlp = float(np.abs(eff_m["effect"].to_numpy() - ref_m.double().numpy()).max())
        print(
            f"[mlp w={w}] TransformerLens per-layer run_with_hooks loop: {t_tlm:8.2f} s  peak {m_tlm:8.1f} MiB"
        )
        print(f"[mlp w={w}] patchbench mlp sweep: {t_pbm:8.2f} s  peak {m_pbm:8.1f} MiB")
        print(f"[mlp w={w}] ratio {t_tlm / t_pbm:.2f}x  max |diff| normalised LD {diff_mlp:.2e}")
    print(
        f"sanity (checked inside the timed sweep): self-patch maxdiff {sanity['self_patch_maxdiff']:.1e}, "
        f"clean resid_pre[0] maxdiff {sanity['clean_resid0_maxdiff']:.1e}"
    )
    print(f"speedup {t_tl / t_pb:.1f}x maxdiff {diff_heads:.0e}")


if __name__ == "__main__":
    main()
