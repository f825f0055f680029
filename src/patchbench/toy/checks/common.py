"""Plain forward passes with hooks, for the organisms' independent checks.

The checks (``patchbench.toy.checks.<kind>``) test an organism's circuit without the patching
engine: every number comes from a full forward of the model (``LM.logits``) with hooks that read
or overwrite one activation (``hook_z`` of a head, ``hook_mlp_out`` of an MLP, ``hook_pattern``,
``hook_embed`` for Gaussian noise), written here once.

A *component* is ``(site, layer, head)`` with site ``"z"`` (one head's output, ``head`` its index)
or ``"mlp"`` (``head`` None), acting at one position per prompt. GN is the paper's: noise
``N(0, (nu sigma)^2)`` added to the token embeddings of the noised positions, sigma the standard
deviation of the model's raw token embeddings of the task's key tokens (ROME's
``collect_embedding_std``), the same draws for the corrupted and every patched run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int

from patchbench.lm import LM

__all__ = [
    "Component",
    "Prompts",
    "answer_probs",
    "capture",
    "dla",
    "gn_noise",
    "logits_at",
    "mean_ablation_hooks",
    "patch_hooks",
    "read_component",
    "sigma",
]

Component = tuple[str, int, int | None]  # ("z", layer, head) or ("mlp", layer, None)
Hook = tuple[str, Callable[[torch.Tensor, str], torch.Tensor | None]]

NU = 3.0  # the paper's GN: nu = 3 x sigma (shared/notes/task-specs.md, section 2)


@dataclass(frozen=True)
class Prompts:
    """Right-padded prompts: ``tokens`` [rows, seq] and each row's last position ``end`` [rows]."""

    tokens: Int[torch.Tensor, "rows seq"]
    end: Int[torch.Tensor, " rows"]

    @classmethod
    def of(cls, rows: Sequence[Sequence[int]], pad: int) -> Prompts:
        width = max(len(r) for r in rows)
        x = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            x[i, : len(r)] = torch.as_tensor(np.asarray(r), dtype=torch.long)
        return cls(x, torch.tensor([len(r) - 1 for r in rows]))


def _hook_name(model: LM, site: str, layer: int) -> str:
    return model.hook_name("attn_head" if site == "z" else "mlp", layer)


@torch.no_grad()
def logits_at(
    model: LM, prompts: Prompts, hooks: Sequence[Hook] = (), noise: torch.Tensor | None = None
) -> Float[torch.Tensor, "rows vocab"]:
    """Logits at each row's last position of a plain forward with ``hooks`` (and ``noise`` added to
    the token embeddings, [rows, seq, d_model])."""
    all_hooks = list(hooks)
    if noise is not None:
        all_hooks.append(("hook_embed", lambda e, name: e + noise.to(e.dtype)))
    with model.hooks(all_hooks):
        logits = model.logits(prompts.tokens)
    return logits[torch.arange(len(prompts.end)), prompts.end]


def answer_probs(logits: torch.Tensor, answers: Sequence[Sequence[int]]) -> np.ndarray:
    """Per row, the summed probability of its answer ids."""
    p = logits.float().softmax(-1)
    return np.array([float(p[i, list(a)].sum()) for i, a in enumerate(answers)])


@torch.no_grad()
def capture(
    model: LM, prompts: Prompts, names: Sequence[str], noise: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The activations at hook points ``names`` of a plain forward (and the logits at the last
    positions, under ``"logits"``)."""
    got: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, name: str) -> None:
        got[name] = act.detach().clone()

    got["logits"] = logits_at(model, prompts, [(n, grab) for n in names], noise)
    return got


def patch_hooks(
    model: LM,
    components: Sequence[Component],
    where: Int[torch.Tensor, " rows"],
    values: dict[Component, torch.Tensor],
) -> list[Hook]:
    """Hooks that overwrite each component's output at position ``where[row]`` with
    ``values[component][row]`` ([rows, d_head] for a head, [rows, d_model] for an MLP)."""
    by_name: dict[str, list[Component]] = {}
    for c in components:
        by_name.setdefault(_hook_name(model, c[0], c[1]), []).append(c)
    rows = torch.arange(len(where))

    def make(cs: list[Component]):
        def hook(act: torch.Tensor, name: str) -> torch.Tensor:
            act = act.clone()
            for c in cs:
                if c[0] == "z":
                    act[rows, where, c[2]] = values[c].to(act.dtype)
                else:
                    act[rows, where] = values[c].to(act.dtype)
            return act

        return hook

    return [(name, make(cs)) for name, cs in by_name.items()]


def read_component(acts: dict[str, torch.Tensor], model: LM, c: Component, where: torch.Tensor) -> torch.Tensor:
    """A component's output at ``where[row]`` from captured activations."""
    act = acts[_hook_name(model, c[0], c[1])]
    rows = torch.arange(len(where))
    return act[rows, where, c[2]] if c[0] == "z" else act[rows, where]


def mean_ablation_hooks(
    model: LM, prompts: Prompts, components: Sequence[Component], where: dict[Component, torch.Tensor]
) -> list[Hook]:
    """Hooks that replace each component's output at its position (``where[component][row]``) with
    its mean over the prompts at that position."""
    names = sorted({_hook_name(model, c[0], c[1]) for c in components})
    acts = capture(model, prompts, names)
    hooks: list[Hook] = []
    for c in components:
        mean = read_component(acts, model, c, where[c]).mean(0, keepdim=True)
        rows = len(where[c])
        hooks += patch_hooks(model, [c], where[c], {c: mean.expand(rows, -1)})
    return hooks


@torch.no_grad()
def sigma(model: LM, id_lists: Sequence[Sequence[int]]) -> float:
    """Standard deviation of the model's raw token embeddings over every token of ``id_lists``
    (ROME: each subject tokenised alone, no BOS)."""
    ids = torch.tensor([int(t) for ids in id_lists for t in ids], dtype=torch.long)
    if not len(ids):
        raise ValueError("GN needs at least one key token to measure sigma on")
    return float(model.raw_token_embeddings(ids).double().std())


def gn_noise(
    prompts: Prompts,
    positions: Sequence[Sequence[int]],
    d_model: int,
    sd: float,
    n_samples: int,
    seed: int,
) -> list[torch.Tensor]:
    """``n_samples`` noise tensors [rows, seq, d_model]: N(0, (NU sd)^2) at each row's ``positions``,
    zero elsewhere (seeded: the same draws for every run that uses them)."""
    gen = torch.Generator().manual_seed(seed)
    rows, seq = prompts.tokens.shape
    mask = torch.zeros(rows, seq, 1)
    for i, ps in enumerate(positions):
        mask[i, list(ps)] = 1.0
    return [NU * sd * torch.randn(rows, seq, d_model, generator=gen) * mask for _ in range(n_samples)]


@torch.no_grad()
def dla(
    model: LM,
    z: Float[torch.Tensor, "rows d_head"],
    layer: int,
    head: int,
    resid: Float[torch.Tensor, "rows d_model"],
    direction: Float[torch.Tensor, "rows d_model"],
) -> Float[torch.Tensor, " rows"]:
    """Direct logit attribution of head ``layer.head``'s output ``z`` along ``direction`` (rows of
    unembedding differences), through the final norm with its scale frozen at ``resid``."""
    written = model.final_norm_linear(z @ model.W_O(layer)[head], resid)
    return (written * direction).sum(-1)
