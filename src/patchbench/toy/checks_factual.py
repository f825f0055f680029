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

``properties`` holds the measured quantities that ``BOUNDS`` states bounds for, ``failures`` every
stated property the organism misses (``PROPERTIES`` says why each is stated).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from patchbench.lm import LM
from patchbench.toy.checks import Measured
from patchbench.toy.checks_common import (
    Component,
    Prompts,
    answer_probs,
    capture,
    dla,
    failed,
    gn_noise,
    logits_at,
    mean_ablation_hooks,
    measured,
    patch_hooks,
    read_component,
    sigma,
)
from patchbench.toy.circuit import Circuit

__all__ = ["BOUNDS", "PROPERTIES", "check", "measure"]

#: The stated properties (what the organism was trained to have; never tuned to what it got):
#: measured quantity -> (min, max), None for no bound, and why.
BOUNDS = {
    "clean_p": (0.3, 0.7),
    "gn_ratio": (None, 0.5),
    "circuit_ablation": (None, 0.25),
    "random_ablation": (0.75, None),
    "str_single_over_set": (None, 0.6),
    "gn_single_over_set": (None, 0.6),
    "attention_min": (0.5, None),
    "dla_fraction": (0.3, None),
}
PROPERTIES = {
    "clean_p": "mean clean answer probability in the paper's models' range (GPT-2 XL on PairedFacts: 0.49)",
    "gn_ratio": "GN at nu = 3 sigma on the subject leaves at most half of the clean probability",
    "circuit_ablation": "mean-ablating the circuit leaves at most a quarter of the clean logit difference",
    "random_ablation": "random sets of as many components outside the circuit leave at least 0.75 (mean of the draws)",
    "str_single_over_set": "under STR, the best single enrichment MLP restores at most 0.6 of what the set restores",
    "gn_single_over_set": "under GN, the best single enrichment MLP restores at most 0.6 of what the set restores",
    "attention_min": "every circuit head puts at least 0.5 of its attention where its class says",
    "dla_fraction": "the extraction heads' direct logit attribution is at least 0.3 of the clean logit difference",
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
    result["properties"] = _properties(result)
    result["failures"] = failed(BOUNDS, result["properties"], PROPERTIES)
    return result


def _properties(r: dict) -> dict[str, float]:
    d, it = r["details"], r["details"]["interaction"]
    return {
        "clean_p": r["clean_p"],
        "gn_ratio": r["gn_ratio"],
        "circuit_ablation": r["circuit_ablation"],
        "random_ablation": d["random_ablation"]["mean"],
        **{
            f"{c}_single_over_set": max(s[c] for s in it["single"].values()) / it["set"][c]
            for c in ("str", "gn")
        },
        "attention_min": min(d["attention"].values(), default=float("nan")),
        "dla_fraction": d["dla_fraction"],
    }


def measure(model: LM, circuit: Circuit, held, data_dir: str | Path, n_prompts: int, seed: int) -> Measured:
    """``patchbench organisms``' entry: the check as one organism's measurement (``measured``)."""
    return measured("factual", check(model, circuit, data_dir, n_prompts=n_prompts, seed=seed))
