"""Plain forward passes with hooks, for the organisms' independent checks.

The checks (``patchbench.toy.checks_<kind>``) test an organism's circuit without the patching
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

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int

from patchbench.lm import LM
from patchbench.toy.checks import Measured

__all__ = [
    "Component",
    "Prompts",
    "answer_probs",
    "capture",
    "Bounds",
    "dla",
    "failed",
    "gn_noise",
    "logits_at",
    "mean_ablation_hooks",
    "measured",
    "patch_hooks",
    "read_component",
    "sigma",
    "standard_check",
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


def read_component(
    acts: dict[str, torch.Tensor], model: LM, c: Component, where: torch.Tensor
) -> torch.Tensor:
    """A component's output at ``where[row]`` from captured activations."""
    act = acts[_hook_name(model, c[0], c[1])]
    rows = torch.arange(len(where))
    return act[rows, where, c[2]] if c[0] == "z" else act[rows, where]


def mean_ablation_hooks(
    model: LM,
    prompts: Prompts,
    components: Sequence[Component],
    where: dict[Component, torch.Tensor],
    acts: dict[str, torch.Tensor] | None = None,
) -> list[Hook]:
    """Hooks that replace each component's output at its position (``where[component][row]``) with
    its mean over the prompts at that position (``acts``: a clean capture holding the components'
    hook points, else one is run)."""
    names = sorted({_hook_name(model, c[0], c[1]) for c in components})
    if acts is None or any(n not in acts for n in names):
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


def _scores(logits: torch.Tensor, answers: Sequence[Sequence[int]], wrong: Sequence[Sequence[int]]):
    """Per row: summed answer probability, and the logit difference mean(answers) - mean(wrong)."""
    p = answer_probs(logits, answers)
    ld = np.array(
        [
            float(logits[i, list(a)].mean() - logits[i, list(w)].mean())
            for i, (a, w) in enumerate(zip(answers, wrong, strict=True))
        ]
    )
    return p, ld


@torch.no_grad()
def standard_check(
    model: LM,
    ps,
    parts: dict[str, list[tuple[Component, str]]],
    attention: dict[Component, tuple[torch.Tensor, torch.Tensor]],
    *,
    extra_positions: dict[str, torch.Tensor] | None = None,
    n_noise: int = 10,
    n_draws: int = 10,
    seed: int = 0,
) -> dict:
    """The numbers every organism check reports, on the task prompts ``ps`` (a PromptSet):

    ``clean_p`` (mean summed answer probability), ``gn_ratio`` (mean probability under GN at
    nu = 3 sigma on the noise positions, sigma from the clean tokens there or the meta column
    ``subject_ids`` / ``sigma_ids``, ``n_noise`` draws, over ``clean_p``), ``circuit_ablation``
    (mean logit difference with every circuit component mean-ablated at its position, over the
    clean one) and, in ``details``: random sets of as many components outside the circuit at the
    same positions (``n_draws``), the fraction of P(clean) - P(STR-corrupted) restored by putting
    each class's clean outputs into the STR-corrupted run, each head's attention (``attention``:
    component -> (query, key) positions per row, a key mask [rows, seq] for several keys) and
    each component's direct logit attribution at the last token (heads and MLPs acting there),
    as a fraction of the clean logit difference.

    ``parts``: class -> [(component, position name)], the position one of ``ps.positions`` or
    ``extra_positions``.
    """
    tok = model.tokenizer
    shape = model.shape
    clean = Prompts.of(ps.clean, tok.pad_token_id)
    corrupt = Prompts.of(ps.corrupted, tok.pad_token_id)
    answers = [list(map(int, a)) for a in ps.answers]
    wrong = [list(map(int, w)) for w in ps.wrong]
    named = {k: torch.tensor(np.asarray(v, dtype=np.int64)) for k, v in ps.positions.items()}
    named |= extra_positions or {}
    named.setdefault("END", clean.end)
    where = {c: named[pos] for cls in parts.values() for c, pos in cls}

    names = [model.hook_name("attn_head", la) for la in range(shape.n_layers)]
    names += [model.hook_name("mlp", la) for la in range(shape.n_layers)] if shape.d_mlp else []
    names += sorted({model.hook_name("pattern", c[1]) for c in attention})
    names.append(f"blocks.{shape.n_layers - 1}.hook_resid_post")
    acts = capture(model, clean, names)
    p_clean, ld_clean = _scores(acts["logits"], answers, wrong)

    cols = [c for c in ("sigma_ids", "subject_ids") if c in ps.meta.columns]
    key_ids = list(ps.meta[cols[0]]) if cols else [ps.clean[i][ps.noise_positions[i]] for i in range(len(ps))]
    sd = sigma(model, key_ids)
    noises = gn_noise(clean, ps.noise_positions, shape.d_model, sd, n_noise, seed)
    p_gn = np.mean([_scores(logits_at(model, clean, noise=z), answers, wrong)[0] for z in noises], 0)

    def ablated(components: dict[Component, torch.Tensor]) -> float:
        hooks = mean_ablation_hooks(model, clean, list(components), components, acts)
        return float(_scores(logits_at(model, clean, hooks), answers, wrong)[1].mean() / ld_clean.mean())

    circuit_left = ablated(where)
    rng = random.Random(f"organism-check-{seed}")
    heads = [("z", la, h) for la in range(shape.n_layers) for h in range(shape.n_heads)]
    mlps = [("mlp", la, None) for la in range(shape.n_layers)] if shape.d_mlp else []
    pool = {"z": [c for c in heads if c not in where], "mlp": [c for c in mlps if c not in where]}
    draws = []
    for _ in range(n_draws):
        drawn: dict[Component, torch.Tensor] = {}
        for site in ("z", "mlp"):
            mine = [c for c in where if c[0] == site]
            for c, d in zip(mine, rng.sample(pool[site], min(len(mine), len(pool[site]))), strict=False):
                drawn[d] = where[c]
        draws.append(ablated(drawn))

    p_str = _scores(logits_at(model, corrupt), answers, wrong)[0]
    restored = {}
    for cls, comps in parts.items():
        vals = {c: read_component(acts, model, c, named[pos]) for c, pos in comps}
        hooks: list[Hook] = []
        for c, pos in comps:
            hooks += patch_hooks(model, [c], named[pos], vals)
        p = _scores(logits_at(model, corrupt, hooks), answers, wrong)[0]
        restored[cls] = float((p.mean() - p_str.mean()) / (p_clean.mean() - p_str.mean()))

    rows = torch.arange(len(ps))
    att = {}
    for c, (q, k) in attention.items():
        pat = acts[model.hook_name("pattern", c[1])][rows, c[2], q]  # rows x keys
        got = (pat * k).sum(-1) if k.ndim == 2 else pat[rows, k]
        att[f"{c[1]}.{c[2]}"] = float(got.mean())
    resid = acts[f"blocks.{shape.n_layers - 1}.hook_resid_post"][rows, clean.end]
    direction = torch.stack(
        [model.W_U[:, a].mean(-1) - model.W_U[:, w].mean(-1) for a, w in zip(answers, wrong, strict=True)]
    )
    dlas = {}
    for c, pos in where.items():
        if not torch.equal(pos, clean.end):
            continue
        out = read_component(acts, model, c, clean.end)
        if c[0] == "z":
            val = dla(model, out, c[1], c[2], resid, direction)
        else:
            val = (model.final_norm_linear(out, resid) * direction).sum(-1)
        label = f"{c[1]}.{c[2]}" if c[0] == "z" else f"mlp{c[1]}"
        dlas[label] = float(val.mean() / ld_clean.mean())
    return {
        "n_prompts": len(ps),
        "clean_p": float(p_clean.mean()),
        "gn_ratio": float(p_gn.mean() / p_clean.mean()),
        "circuit_ablation": circuit_left,
        "backup_compensation": None,
        "details": {
            "sigma": sd,
            "p_gn": float(p_gn.mean()),
            "p_str": float(p_str.mean()),
            "ld_clean": float(ld_clean.mean()),
            "random_ablation": {
                "mean": float(np.mean(draws)),
                "min": float(np.min(draws)),
                "max": float(np.max(draws)),
            },
            "restored_under_str": restored,
            "attention": att,
            "dla_fraction": dlas,
        },
    }


Bounds = dict[str, tuple[float | None, float | None]]


def failed(bounds: Bounds, measured: dict[str, float], why: dict[str, str]) -> list[str]:
    """Each stated property (``bounds``: name -> (min, max), None for no bound) the measurement
    misses: ``name = value, stated [min, max]: why``."""
    out = []
    for name, (lo, hi) in bounds.items():
        v = float(measured[name])
        if np.isnan(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            stated = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            out.append(f"{name} = {v:.4g}, stated {stated}: {why[name]}")
    return out


def measured(task: str, result: dict) -> Measured:
    """A check's result as ``patchbench organisms`` reads one organism: the task, the four numbers
    of its line, the flat ``properties`` a circuit.json may bound, and the rest as details."""
    return Measured(
        task=task,
        **{k: result[k] for k in ("clean_p", "gn_ratio", "circuit_ablation", "backup_compensation")},
        properties=result["properties"],
        details=result,
    )
