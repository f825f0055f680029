"""Attention patterns of chosen heads in the clean, corrupted and patched runs (paper §3.2).

Zhang & Nanda explain GN's off-distribution behaviour by where the name movers attend, with and
without the S-inhibition heads' values restored. :func:`capture_patterns` runs the three runs of a
corruption on every prompt (GN: every noise sample, the same draw in the corrupted and patched
run) and keeps the chosen heads' attention probabilities and each run's logit difference; the
patched run applies one patch target (e.g. ``SweepSpec('str', 'head_v', heads=S_INHIBITION)``)
through the engine's generic patch (:mod:`patchbench.engine.patch`).
:mod:`patchbench.analysis.nm_attention` turns the capture into the §3.2 frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from patchbench.engine.budget import rows_per_forward
from patchbench.engine.masks import build_mask
from patchbench.engine.patch import Block, sources
from patchbench.engine.readout import AnswerIds, index_tensor, summed_logits
from patchbench.engine.setup import setup
from patchbench.interventions.corruptions.gn import NoiseSpec
from patchbench.interventions.sites import SITES
from patchbench.lm import LM
from patchbench.prompts import PromptSet
from patchbench.sites import SweepSpec

__all__ = ["PatternCapture", "capture_patterns"]

RUNS = ("clean", "corrupted", "patched")


@dataclass
class PatternCapture:
    """Attention patterns of chosen heads, ``[rows, n_heads, dest, src]`` per run (CPU float32),
    and each row's logit difference LD = Σ logit(answers) − Σ logit(wrong) (float64).

    ``clean`` has one row per prompt; ``corrupted`` and ``patched`` one row per (prompt, sample),
    in the order of ``prompt`` / ``sample``. ``patched`` is None without a patch.
    """

    heads: tuple[tuple[int, int], ...]
    clean: Float[torch.Tensor, "prompts heads dest src"]
    corrupted: Float[torch.Tensor, "rows heads dest src"]
    patched: Float[torch.Tensor, "rows heads dest src"] | None
    prompt: np.ndarray
    sample: np.ndarray
    logit_diff: dict[str, np.ndarray]

    def rows(self, run: str) -> tuple[np.ndarray, np.ndarray]:
        """(prompt, sample) of each row of ``run``."""
        if run == "clean":
            n = self.clean.shape[0]
            return np.arange(n), np.zeros(n, np.int64)
        return self.prompt, self.sample

    def attention(self, prompts: PromptSet, dest: str, src: str) -> pd.DataFrame:
        """Per (run, row, head) attention probability from named position ``dest`` to named ``src``."""
        frames = []
        for run, pat in (("clean", self.clean), ("corrupted", self.corrupted), ("patched", self.patched)):
            if pat is None:
                continue
            pr, sa = self.rows(run)
            d = index_tensor(prompts.named_position(dest)[pr])
            s = index_tensor(prompts.named_position(src)[pr])
            vals = pat[torch.arange(len(pr)), :, d, s].numpy()  # [rows, n_heads]
            for j, (lay, h) in enumerate(self.heads):
                frames.append(
                    pd.DataFrame(
                        {
                            "run": run,
                            "prompt": pr,
                            "sample": sa,
                            "head": f"{lay}.{h}",
                            "dest": dest,
                            "src": src,
                            "attention": vals[:, j],
                        }
                    )
                )
        return pd.concat(frames, ignore_index=True)


def capture_patterns(
    model: LM,
    prompts: PromptSet,
    heads: Sequence[tuple[int, int]],
    corruption: str,
    patch_spec: SweepSpec | None = None,
    *,
    noise: NoiseSpec | None = None,
    clean: dict[str, torch.Tensor] | None = None,
    memory_budget_mb: int = 1024,
    batch_size: int | None = None,
) -> PatternCapture:
    """Attention patterns of ``heads`` in the clean, corrupted and (optionally) patched runs.

    ``patch_spec`` must describe exactly one target; its corruption must equal ``corruption``. The
    runs are the engines' (:func:`patchbench.engine.setup.setup`): GN uses ``noise`` (default the
    patch spec's) and the same draw in the corrupted and patched runs; the patch goes into the spec's
    base run (its direction's). ``batch_size`` rows go through one forward (default: what fits
    ``memory_budget_mb``).
    """
    heads = tuple((int(a), int(b)) for a, b in heads)
    if patch_spec is not None and patch_spec.corruption != corruption:
        raise ValueError(f"patch_spec corruption {patch_spec.corruption!r} != {corruption!r}")
    noise = noise or (patch_spec.noise if patch_spec is not None else NoiseSpec())
    spec = patch_spec or SweepSpec(corruption, "resid_pre", layers=(0,), noise=noise)
    if patch_spec is None and spec.intervention.kind == "activations":
        raise ValueError(
            f"capture_patterns: corruption {corruption!r} ablates a sweep's targets; pass a patch_spec"
        )
    spec = replace(spec, noise=noise, memory_budget_mb=memory_budget_mb)
    st = setup(model, prompts, spec, clean)
    target = None
    if patch_spec is not None:
        if len(st.targets) != 1:
            raise ValueError(
                f"capture_patterns needs a patch_spec with exactly one target, got {len(st.targets)}"
            )
        target = st.targets[0]
    names = [model.hook_name("pattern", lay) for lay in sorted({lay for lay, _ in heads})]
    store: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, name: str) -> None:
        store[name] = act.detach().float().cpu()

    grabs = [(nm, grab) for nm in names]
    dev = model.shape.device
    out: dict[str, list[torch.Tensor]] = {r: [] for r in RUNS}
    lds: dict[str, list[np.ndarray]] = {r: [] for r in RUNS}

    def forward(run: str, which, pr: np.ndarray, sa: np.ndarray, patch_hooks=()) -> None:
        resid = which.forward(model, prompts, pr, sa, hooks=[*patch_hooks, *grabs])
        out[run].append(
            torch.stack([store[model.hook_name("pattern", lay)][:, h] for lay, h in heads], dim=1)
        )
        logits = model.unembed_at(resid, index_tensor(prompts.answer_pos[pr], resid.device))
        ans, wrong = AnswerIds.of(prompts.answers, pr, dev), AnswerIds.of(prompts.wrong, pr, dev)
        lds[run].append((summed_logits(logits, ans) - summed_logits(logits, wrong)).cpu().numpy())

    prompt_rows, sample_rows = st.rows()
    k = spec.n_samples
    step = batch_size or max(k, rows_per_forward(model.shape, st.max_len, memory_budget_mb))
    with torch.no_grad():
        for a in range(0, len(prompts), step):
            rows = np.arange(a, min(a + step, len(prompts)))
            forward("clean", st.runs["clean"], rows, np.zeros_like(rows))
        for a in range(0, len(prompt_rows), step):
            pr, sa = prompt_rows[a : a + step], sample_rows[a : a + step]
            forward("corrupted", st.runs["corrupted"], pr, sa)
            if target is not None:
                block = Block(index=-1, prompt=pr, sample=sa)
                block.resid = [st.runs["clean"].tokens[:1].to(dev)]  # device holder for sources()
                if st.direction.source != "clean":
                    block.sources = st.source.activations(model, prompts, pr, sa, target.hooks)
                src = sources(st.clean, target.hooks, block, model.shape.dtype)
                hooks = []
                for name in target.hooks:
                    n_heads = SITES[target.site].n_heads(model.shape)
                    mask = build_mask(n_heads, [target], name, prompts, pr, st.max_len).to(dev)[0]
                    hooks.append((name, lambda act, nm, mask=mask, s=src[name]: torch.where(mask, s, act)))
                forward("patched", st.base, pr, sa, hooks)
    return PatternCapture(
        heads=heads,
        clean=torch.cat(out["clean"]),
        corrupted=torch.cat(out["corrupted"]),
        patched=torch.cat(out["patched"]) if target is not None else None,
        prompt=prompt_rows,
        sample=sample_rows,
        logit_diff={r: np.concatenate(v) for r, v in lds.items() if v},
    )
