"""Mean-ablation check of an IOI organism: is the classified circuit necessary, and the rest not?

Issue #13's test of a circuit: mean-ablating the heads that the project's classifier
(``patchbench.analysis.ioi_classes``, thresholds unchanged) puts into any IOI class must drop
held-out IOI accuracy to near chance, while mean-ablating as many heads outside that set keeps
it at 0.8 or more.

Held-out prompts: the IOI task's own prompts (``patchbench.tasks.ioi.build_ioi``, mixed
templates) whose unordered name pair the toy corpus held out of training. A head is
mean-ablated by replacing its output (``hook_z``) at every position with its mean over the
prompts of the same template at that position (Wang et al. ablate with means over a reference
distribution; here the held-out prompts themselves). Scores: top-1 accuracy (the answer is IO)
and the IO-vs-S accuracy (logit of IO above logit of S; chance is 0.5).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from patchbench.lm import LM
from patchbench.prompts import PromptSet
from patchbench.toy.corpus import HeldOut

__all__ = ["ablation_report", "heldout_ioi_prompts", "ioi_scores", "organism_check"]

log = logging.getLogger(__name__)

Head = tuple[int, int]


def heldout_ioi_prompts(
    tokenizer, data_dir: str | Path, held_pairs: Iterable[Sequence[str]], n_prompts: int = 200, seed: int = 0
) -> PromptSet:
    """``n_prompts`` IOI prompts of the task generator whose name pair is held out of training."""
    from patchbench.tasks.ioi import build_ioi

    held = {tuple(sorted(p)) for p in held_pairs}
    n = max(4 * n_prompts, 400)
    while True:
        ps = build_ioi(tokenizer, data_dir, n, seed=seed)
        keep = [
            i
            for i, (a, b) in enumerate(zip(ps.meta["IO"], ps.meta["S"], strict=True))
            if tuple(sorted((a, b))) in held
        ]
        if len(keep) >= n_prompts or n > 200 * n_prompts:
            if not keep:
                raise ValueError("no IOI prompt of the task generator uses a held-out name pair")
            return ps.subset(np.asarray(keep[:n_prompts]))
        n *= 2


@torch.no_grad()
def ioi_scores(model: LM, prompts: PromptSet, ablate: Sequence[Head] = ()) -> dict[str, float]:
    """Top-1 and IO-vs-S accuracy with ``ablate`` mean-ablated (see the module docstring)."""
    device = model.shape.device
    tokens = prompts.tokens("clean").to(device)
    rows = torch.arange(len(prompts), device=device)
    end = torch.as_tensor(prompts.answer_pos, device=device)
    io = torch.tensor([int(a[0]) for a in prompts.answers], device=device)
    s = torch.tensor([int(w[0]) for w in prompts.wrong], device=device)
    by_layer: dict[int, list[int]] = {}
    for layer, head in ablate:
        by_layer.setdefault(int(layer), []).append(int(head))
    names = {model.hook_name("attn_head", la): la for la in by_layer}
    means: dict[int, torch.Tensor] = {}
    if by_layer:
        zs: dict[int, torch.Tensor] = {}

        def grab(z: torch.Tensor, name: str) -> None:
            zs[names[name]] = z.detach()

        with model.hooks([(n, grab) for n in names]):
            model.run_blocks(model.embed(tokens), 0)
        templates = (
            prompts.meta["template_idx"].to_numpy()
            if "template_idx" in prompts.meta
            else np.zeros(len(prompts))
        )
        for layer, z in zs.items():
            m = torch.empty_like(z)
            for t in np.unique(templates):
                idx = torch.as_tensor(np.nonzero(templates == t)[0], device=device)
                m[idx] = z[idx].mean(0, keepdim=True)
            means[layer] = m

    def ablate_hook(z: torch.Tensor, name: str) -> torch.Tensor:
        layer = names[name]
        z = z.clone()
        for h in by_layer[layer]:
            z[:, :, h] = means[layer][:, :, h]
        return z

    with model.hooks([(n, ablate_hook) for n in names]):
        last = model.unembed_at(model.run_blocks(model.embed(tokens), 0), end)
    return {
        "top1": float((last.argmax(-1) == io).float().mean()),
        "io_vs_s": float((last[rows, io] > last[rows, s]).float().mean()),
    }


def ablation_report(
    model: LM, prompts: PromptSet, circuit: Sequence[Head], n_draws: int = 5, seed: int = 0
) -> dict:
    """Scores clean, with ``circuit`` ablated, with as many heads outside it ablated (``n_draws``
    random draws, seeded) and with every head outside it ablated: the numbers of issue #13's check."""
    n_layers, n_heads = model.shape.n_layers, model.shape.n_heads
    circuit = sorted({(int(la), int(h)) for la, h in circuit})
    outside = [(la, h) for la in range(n_layers) for h in range(n_heads) if (la, h) not in set(circuit)]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws if outside else 0):
        k = min(len(circuit), len(outside))
        pick = sorted(outside[i] for i in rng.choice(len(outside), size=k, replace=False))
        draws.append({"heads": [f"{la}.{h}" for la, h in pick], **ioi_scores(model, prompts, pick)})
    report = {
        "n_prompts": len(prompts),
        "clean": ioi_scores(model, prompts),
        "circuit": {"heads": [f"{la}.{h}" for la, h in circuit], **ioi_scores(model, prompts, circuit)},
        "outside_draws": draws,
        "outside_min_top1": min(d["top1"] for d in draws) if draws else float("nan"),
        "all_outside": {"n_heads": len(outside), **ioi_scores(model, prompts, outside)},
    }
    log.info(
        "ablation: clean %s, circuit %s, outside min top-1 %.3f, all outside %s",
        report["clean"],
        report["circuit"],
        report["outside_min_top1"],
        report["all_outside"],
    )
    return report


def organism_check(
    model: LM, model_dir: str | Path, data_dir: str | Path, held: HeldOut, n_prompts: int = 200, seed: int = 0
) -> dict:
    """The whole check of one organism: the classifier's classes on held-out prompts, the ablation
    report of the classified heads and, when the directory has a ``circuit.json``, of the imposed
    heads (what ``ablation.json`` holds)."""
    from patchbench.analysis.ioi_classes import classifier_inputs, classify_heads
    from patchbench.toy.circuit import read_circuit

    prompts = heldout_ioi_prompts(model.tokenizer, data_dir, held.ioi_pairs, n_prompts, seed)
    classes = classify_heads(classifier_inputs(model, prompts))
    classified = sorted({(int(la), int(h)) for la, h in classes[["layer", "head"]].to_numpy()})
    report = {
        "classes": {
            str(c): [f"{la}.{h}" for la, h in g[["layer", "head"]].to_numpy()]
            for c, g in classes.groupby("class")
        },
        "classified": ablation_report(model, prompts, classified, seed=seed),
    }
    circuit = read_circuit(model_dir)
    if circuit is not None:
        report["imposed"] = ablation_report(model, prompts, circuit.circuit_heads(), seed=seed)
    return report
