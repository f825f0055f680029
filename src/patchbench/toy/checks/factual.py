"""Independent check of a factual-recall organism (circuit kind ``factual``), by plain forward hooks.

On the factual task's prompts (``patchbench.tasks.factual``: the held-out paraphrase of each fact,
paired with a partner fact of the same relation and length; STR = the partner's prompt), it
measures:

- ``clean_p``: mean clean probability of the answer;
- ``gn_ratio``: mean probability under the paper's GN (nu = 3 sigma on every subject token, 10
  draws) over ``clean_p``;
- ``circuit_ablation``: the logit difference (answer - partner's answer) left after mean-ablating
  the circuit (composition heads and enrichment MLPs at the last subject token, extraction heads
  at the last token; means over the prompts at those positions), as a fraction of clean; beside
  it, random sets of as many components outside the circuit at the same positions;
- ``interaction``: the fraction of P(clean) - P(corrupted) restored by the clean output of each
  single enrichment MLP at the last subject token, and by the whole set, under STR and GN;
- the circuit heads' attention (composition: last subject token onto the earlier subject
  tokens; extraction: last token onto the last subject token) and the extraction heads' direct
  logit attribution to the logit difference (as a fraction of the clean logit difference).

``failures`` lists every stated property (``PROPERTIES``) the organism misses.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from patchbench.lm import LM
from patchbench.toy.checks.common import (
    Component,
    Prompts,
    answer_probs,
    capture,
    dla,
    gn_noise,
    logits_at,
    mean_ablation_hooks,
    patch_hooks,
    read_component,
    sigma,
)
from patchbench.toy.circuit import Circuit

__all__ = ["PROPERTIES", "check"]

#: The stated properties (what the organism was trained to have; never tuned to what it got).
PROPERTIES = {
    "clean_p": "mean clean answer probability in [0.3, 0.7] (GPT-2 XL on PairedFacts: 0.49)",
    "gn_ratio": "GN at nu = 3 sigma on the subject leaves at most half of the clean probability",
    "circuit_ablation": "mean-ablating the circuit leaves at most 0.25 of the clean logit difference, "
    "random sets of as many components outside it at least 0.75 (mean of the draws)",
    "interaction": "under STR and GN, each single enrichment MLP restores at most 0.6 of what the set restores",
    "attention": "composition and extraction heads put at least 0.5 of their attention where the circuit says",
    "dla": "the extraction heads' direct logit attribution is at least 0.3 of the clean logit difference",
}


def _lds(logits: torch.Tensor, ans: torch.Tensor, wrong: torch.Tensor) -> np.ndarray:
    rows = torch.arange(len(ans))
    return (logits[rows, ans] - logits[rows, wrong]).float().numpy()


@torch.no_grad()
def check(
    model: LM,
    circuit: Circuit,
    data_dir: str | Path,
    *,
    n_prompts: int = 120,
    seed: int = 0,
    n_noise: int = 10,
) -> dict:
    """The numbers of the module docstring and the properties the organism misses."""
    from patchbench.tasks import build_task

    if circuit.kind != "factual":
        raise ValueError(f"not a factual circuit: {circuit.kind!r}")
    shape = model.shape
    circuit.check_shape(shape.n_layers, shape.n_heads)
    tok = model.tokenizer
    ps = build_task("factual", tok, data_dir, n_prompts=n_prompts, seed=seed)
    clean = Prompts.of(ps.clean, tok.pad_token_id)
    corrupt = Prompts.of(ps.corrupted, tok.pad_token_id)
    n = len(ps)
    ans = torch.tensor([int(a[0]) for a in ps.answers])
    wrong = torch.tensor([int(w[0]) for w in ps.wrong])
    last = torch.as_tensor(ps.positions["subject_last"])
    last_c = torch.tensor(ps.meta["partner_subject_last"].to_numpy(dtype=np.int64))
    end = clean.end
    enrich = circuit.mlp("subject_enrichment")
    comp, extract = circuit.head("subject_composition"), circuit.head("attribute_extraction")
    mlps: list[Component] = [("mlp", la, None) for la in enrich]

    # clean run: probabilities, logit differences, what the circuit's components write and attend to
    names = [model.hook_name("mlp", la) for la in range(shape.n_layers)]
    names += [model.hook_name("attn_head", la) for la in range(shape.n_layers)]
    names += [model.hook_name("pattern", la) for la in sorted({la for la, _ in comp + extract})]
    names.append(f"blocks.{shape.n_layers - 1}.hook_resid_post")
    acts = capture(model, clean, names)
    p_clean = answer_probs(acts["logits"], ans[:, None].tolist())
    ld_clean = _lds(acts["logits"], ans, wrong)

    # GN on every subject token
    sd = sigma(model, list(ps.meta["subject_ids"]))
    noises = gn_noise(clean, ps.noise_positions, shape.d_model, sd, n_noise, seed)
    p_gn = np.mean([answer_probs(logits_at(model, clean, noise=z), ans[:, None].tolist()) for z in noises], 0)

    # mean ablation of the circuit vs random sets of as many components at the same positions
    def ablated(parts: dict[Component, torch.Tensor]) -> float:
        hooks = mean_ablation_hooks(model, clean, list(parts), parts, acts)
        return float(_lds(logits_at(model, clean, hooks), ans, wrong).mean() / ld_clean.mean())

    parts = {c: last for c in mlps} | {("z", la, h): last for la, h in comp}
    circuit_left = ablated(parts | {("z", la, h): end for la, h in extract})
    rng = random.Random(f"factual-check-{seed}")
    inside = set(comp) | set(extract)
    heads = [(la, h) for la in range(shape.n_layers) for h in range(shape.n_heads) if (la, h) not in inside]
    layers = [la for la in range(shape.n_layers) if la not in enrich]
    draws = []
    for _ in range(10):
        drawn = rng.sample(heads, len(comp) + len(extract))
        parts = {("mlp", la, None): last for la in rng.sample(layers, min(len(enrich), len(layers)))}
        parts |= {("z", la, h): last for la, h in drawn[: len(comp)]}
        parts |= {("z", la, h): end for la, h in drawn[len(comp) :]}
        draws.append(ablated(parts))

    # interaction: restore single enrichment MLPs / the set at the last subject token
    clean_vals = {c: read_component(acts, model, c, last) for c in mlps}
    p_str = answer_probs(logits_at(model, corrupt), ans[:, None].tolist())

    def restored(subset: list[Component]) -> dict[str, float]:
        vals = {c: clean_vals[c] for c in subset}
        out = {}
        p = answer_probs(
            logits_at(model, corrupt, patch_hooks(model, subset, last_c, vals)), ans[:, None].tolist()
        )
        out["str"] = float((p.mean() - p_str.mean()) / (p_clean.mean() - p_str.mean()))
        hooks = patch_hooks(model, subset, last, vals)
        pg = np.mean(
            [answer_probs(logits_at(model, clean, hooks, z), ans[:, None].tolist()) for z in noises], 0
        )
        out["gn"] = float((pg.mean() - p_gn.mean()) / (p_clean.mean() - p_gn.mean()))
        return out

    singles = {c[1]: restored([c]) for c in mlps}
    whole = restored(mlps)

    # attention and direct logit attribution
    rows = torch.arange(n)
    seq = torch.arange(clean.tokens.shape[1])
    first = torch.as_tensor(ps.positions["subject_first"])
    earlier = (seq[None, :] >= first[:, None]) & (seq[None, :] < last[:, None])
    attention = {}
    for la, h in comp:
        p = acts[model.hook_name("pattern", la)][rows, h, last]
        attention[f"{la}.{h}"] = float((p * earlier).sum(-1).mean())
    for la, h in extract:
        attention[f"{la}.{h}"] = float(acts[model.hook_name("pattern", la)][rows, h, end, last].mean())
    resid = acts[f"blocks.{shape.n_layers - 1}.hook_resid_post"][rows, end]
    direction = (model.W_U[:, ans] - model.W_U[:, wrong]).T
    dlas = {
        f"{la}.{h}": float(
            dla(model, acts[model.hook_name("attn_head", la)][rows, end, h], la, h, resid, direction).mean()
        )
        for la, h in extract
    }

    result = {
        "kind": "factual",
        "n_prompts": n,
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
            "interaction": {"single": singles, "set": whole},
            "attention": attention,
            "dla": dlas,
            "dla_fraction": float(sum(dlas.values()) / ld_clean.mean()),
        },
    }
    result["failures"] = _failures(result)
    return result


def _failures(r: dict) -> list[str]:
    d = r["details"]
    bad = []
    if not 0.3 <= r["clean_p"] <= 0.7:
        bad.append(f"clean_p {r['clean_p']:.3f}: {PROPERTIES['clean_p']}")
    if not r["gn_ratio"] <= 0.5:
        bad.append(f"gn_ratio {r['gn_ratio']:.3f}: {PROPERTIES['gn_ratio']}")
    if not (r["circuit_ablation"] <= 0.25 and d["random_ablation"]["mean"] >= 0.75):
        bad.append(
            f"circuit_ablation {r['circuit_ablation']:.3f}, random {d['random_ablation']['mean']:.3f}: "
            f"{PROPERTIES['circuit_ablation']}"
        )
    for corr in ("str", "gn"):
        top = max(s[corr] for s in d["interaction"]["single"].values())
        if not top <= 0.6 * d["interaction"]["set"][corr]:
            bad.append(
                f"interaction {corr}: best single {top:.3f} vs set {d['interaction']['set'][corr]:.3f}: "
                f"{PROPERTIES['interaction']}"
            )
    low = {k: v for k, v in d["attention"].items() if v < 0.5}
    if low:
        bad.append(f"attention {low}: {PROPERTIES['attention']}")
    if d["dla"] and not d["dla_fraction"] >= 0.3:
        bad.append(f"dla fraction {d['dla_fraction']:.3f}: {PROPERTIES['dla']}")
    return bad
