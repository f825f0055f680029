"""The IOI organism's independent check (``patchbench.toy.checks``): plain forward hooks on the
held-out IOI prompts (the task generator's prompts whose name pair training never saw).

Measured, per head and per class of ``circuit.json``:

- **attention** (mean over prompts): END -> IO, END -> S1, END -> S2, S2 -> S1, S2 -> S1+1, and
  every token -> the one before (previous-token);
- **direct logit attribution** (DLA): the head's output at END through the final LayerNorm's
  linear part (its scale frozen at the run's own residual), projected on ``W_U[IO] - W_U[S]``;
- **mean ablation** (a head's ``hook_z`` replaced at every position by its mean over the prompts
  of the same template) and **resample ablation** (by its value on another prompt of the same
  template): the logit difference IO - S left, as a fraction of the clean one, for the whole
  circuit, for as many heads drawn outside it (``N_DRAWS`` seeded draws), for each class, for the
  duplicate-detection paths alone and together, and for every single head (the tail);
- **backup compensation**: with the name movers mean-ablated, the backups' DLA gain over the
  name movers' DLA loss;
- **Gaussian noise** as the paper applies it to IOI: nu (the config default, 3) times ROME's sigma
  on the S2 token embedding, one seeded draw per prompt (``patchbench.corruption``'s draw).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from patchbench.config import default
from patchbench.corruption import embedding_sigma, noise_tensor
from patchbench.lm import LM
from patchbench.prompts import PromptSet
from patchbench.toy.ablation import heldout_ioi_prompts
from patchbench.toy.checks import Measured
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import HeldOut

__all__ = ["N_DRAWS", "IOIProbe", "measure_ioi"]

N_DRAWS = 10  # random head sets of the circuit's size
Head = tuple[int, int]
#: class -> (query, key, key offset) of the attention it is defined by
ATTENTION_OF = {
    "duplicate_token": ("S2", "S1", 0),
    "induction": ("S2", "S1", 1),
    "s_inhibition": ("END", "S2", 0),
    "name_mover": ("END", "IO", 0),
    "negative_name_mover": ("END", "IO", 0),
    "backup_name_mover": ("END", "IO", 0),
}


class IOIProbe:
    """Forward passes of one model on one IOI prompt set, clean or with heads ablated / noised."""

    def __init__(self, model: LM, prompts: PromptSet, seed: int = 0) -> None:
        self.model, self.prompts = model, prompts
        self.n_layers, self.n_heads = model.shape.n_layers, model.shape.n_heads
        self.tokens = prompts.tokens("clean")
        self.n = len(prompts)
        self.rows = torch.arange(self.n)
        self.pos = {k: torch.as_tensor(np.asarray(prompts.positions[k])) for k in ("IO", "S1", "S2")}
        self.pos["END"] = torch.as_tensor(np.asarray(prompts.answer_pos))
        self.io = torch.tensor([int(a[0]) for a in prompts.answers])
        self.s = torch.tensor([int(w[0]) for w in prompts.wrong])
        templates = prompts.meta["template_idx"].to_numpy()
        self.groups = [np.nonzero(templates == t)[0] for t in np.unique(templates)]
        rng = np.random.default_rng(seed)
        perm = np.arange(self.n)  # resample source: another prompt of the same template
        for g in self.groups:
            if len(g) > 1:
                perm[g] = np.roll(g, int(rng.integers(1, len(g))))
        self.resample_src = torch.as_tensor(perm)
        self.clean = self.run(keep=True)
        self.means = {la: self._template_mean(z) for la, z in self.clean["z"].items()}

    def _template_mean(self, z: torch.Tensor) -> torch.Tensor:
        m = torch.empty_like(z)
        for g in self.groups:
            idx = torch.as_tensor(g)
            m[idx] = z[idx].mean(0, keepdim=True)
        return m

    @torch.no_grad()
    def run(
        self,
        mean: Sequence[Head] = (),
        resample: Sequence[Head] = (),
        noise: torch.Tensor | None = None,
        keep: bool = False,
    ) -> dict:
        """Logits at END (and with ``keep`` every layer's z and attention pattern, the residual at END)."""
        edits: dict[int, list[tuple[int, str]]] = {}
        for how, heads in (("mean", mean), ("resample", resample)):
            for la, h in heads:
                edits.setdefault(int(la), []).append((int(h), how))
        saved: dict = {"z": {}, "pattern": {}}
        m = self.model

        def z_hook(z: torch.Tensor, name: str) -> torch.Tensor:
            layer = int(name.split(".")[1])
            if layer in edits:
                z = z.clone()
                for h, how in edits[layer]:
                    z[:, :, h] = (
                        self.means[layer][:, :, h]
                        if how == "mean"
                        else self.clean["z"][layer][self.resample_src, :, h]
                    )
            if keep:
                saved["z"][layer] = z
            return z

        def pattern_hook(p: torch.Tensor, name: str) -> None:
            saved["pattern"][int(name.split(".")[1])] = p

        hooks: list[tuple[str, Callable]] = [
            (m.hook_name("attn_head", la), z_hook) for la in range(self.n_layers)
        ]
        if keep:
            hooks += [(m.hook_name("pattern", la), pattern_hook) for la in range(self.n_layers)]
        with m.hooks(hooks):
            resid = m.run_blocks(m.embed(self.tokens, noise), 0)
        out = {"logits": m.unembed_at(resid, self.pos["END"]).float(), **saved}
        if keep:
            out["resid_end"] = resid[self.rows, self.pos["END"]]
        return out

    def logit_diff(self, run: dict) -> torch.Tensor:
        lg = run["logits"]
        return lg[self.rows, self.io] - lg[self.rows, self.s]

    def ld_fraction(self, **ablate) -> float:
        """Mean logit difference with ``ablate`` applied, over the clean mean."""
        return float(self.logit_diff(self.run(**ablate)).mean() / self.logit_diff(self.clean).mean())

    def p_io(self, run: dict) -> torch.Tensor:
        return run["logits"].softmax(-1)[self.rows, self.io]

    @torch.no_grad()
    def dla(self, run: dict) -> np.ndarray:
        """[n_layers, n_heads] mean DLA (IO - S) of every head at END in a run made with ``keep``."""
        m, end = self.model, self.pos["END"]
        direction = (m.W_U[:, self.io] - m.W_U[:, self.s]).T  # [n, d_model]
        out = np.zeros((self.n_layers, self.n_heads))
        for la in range(self.n_layers):
            z = run["z"][la][self.rows, end]  # [n, heads, d_head]
            written = torch.einsum("nhd,hdm->nhm", z, m.W_O(la))
            mapped = m.final_norm_linear(written, run["resid_end"][:, None, :])
            out[la] = torch.einsum("nhm,nm->nh", mapped, direction).mean(0).float().numpy()
        return out

    def attention(self, run: dict, q: str, k: str, shift: int = 0) -> np.ndarray:
        """[n_layers, n_heads] mean attention from position ``q`` to position ``k`` + ``shift``."""
        qs, ks = self.pos[q], self.pos[k] + shift
        return np.stack(
            [run["pattern"][la][self.rows, :, qs, ks].mean(0).float().numpy() for la in range(self.n_layers)]
        )

    def previous_token(self, run: dict) -> np.ndarray:
        """[n_layers, n_heads] mean attention of every token (but the first) to the one before."""
        out = np.zeros((self.n_layers, self.n_heads))
        for la in range(self.n_layers):
            p = run["pattern"][la]
            for i in range(self.n):
                length = int(self.pos["END"][i]) + 1
                idx = torch.arange(1, length)
                out[la] += p[i, :, idx, idx - 1].mean(-1).float().numpy() / self.n
        return out


def _heads_str(heads: Sequence[Head]) -> list[str]:
    return [f"{la}.{h}" for la, h in heads]


def measure_ioi(
    model: LM, circuit: Circuit, held: HeldOut, data_dir: str | Path, n_prompts: int = 200, seed: int = 0
) -> Measured:
    """The IOI check (module docstring) on ``n_prompts`` prompts whose name pairs ``held`` kept
    out of training."""
    prompts = heldout_ioi_prompts(model.tokenizer, data_dir, held.ioi_pairs, n_prompts, seed)
    probe = IOIProbe(model, prompts, seed)
    clean = probe.clean
    n_layers, n_heads = probe.n_layers, probe.n_heads
    p_clean = probe.p_io(clean)
    top1 = float((clean["logits"].argmax(-1) == probe.io).float().mean())

    sigma = embedding_sigma(model, prompts)
    std = float(default("noise.nu")) * sigma
    noise = noise_tensor(prompts, np.arange(probe.n), np.zeros(probe.n, dtype=int), model.shape.d_model, std,
                         int(default("noise.seed")), max_len=probe.tokens.shape[1])  # fmt: skip
    p_gn = probe.p_io(probe.run(noise=noise))

    dla = probe.dla(clean)
    att = {c: probe.attention(clean, *qk) for c, qk in ATTENTION_OF.items()}
    att["previous_token"] = probe.previous_token(clean)
    heads = circuit.circuit_heads()
    outside = circuit.outside_heads(n_layers, n_heads)
    rng = np.random.default_rng(seed)
    draws = [
        sorted(outside[i] for i in rng.choice(len(outside), len(heads), replace=False))
        for _ in range(N_DRAWS)
    ]
    random_mean = [probe.ld_fraction(mean=d) for d in draws]
    random_resample = [probe.ld_fraction(resample=d) for d in draws]
    single = np.array(
        [[probe.ld_fraction(mean=[(la, h)]) - 1.0 for h in range(n_heads)] for la in range(n_layers)]
    )

    props: dict[str, float] = {
        "clean_p": float(p_clean.mean()),
        "gn_ratio": float(p_gn.mean() / p_clean.mean()),
        "top1": top1,
        "circuit_ablation": probe.ld_fraction(mean=heads),
        "circuit_resample_ablation": probe.ld_fraction(resample=heads),
        "random_ablation_min": float(min(random_mean)),
        "random_resample_ablation_min": float(min(random_resample)),
    }
    per_class = {}
    for cls, hs in circuit.heads.items():
        a = [float(att[cls][la, h]) for la, h in hs]
        d = [float(dla[la, h]) for la, h in hs]
        per_class[cls] = {
            "heads": _heads_str(hs),
            "attention": a,
            "dla": d,
            "ablation": probe.ld_fraction(mean=hs),
        }
        props[f"attention_{cls}_min"] = min(a)
        props[f"dla_{cls}_min"], props[f"dla_{cls}_max"] = min(d), max(d)
        props[f"n_{cls}"] = float(len(hs))
        props[f"ablation_{cls}"] = per_class[cls]["ablation"]

    backup = None
    nms, backups = circuit.head("name_mover"), circuit.head("backup_name_mover")
    if nms and backups:
        ablated = probe.run(mean=nms, keep=True)
        dla_abl = probe.dla(ablated)
        lost = sum(dla[la, h] - dla_abl[la, h] for la, h in nms)
        gained = sum(dla_abl[la, h] - dla[la, h] for la, h in backups)
        backup = float(gained / lost) if lost > 0 else float("nan")
        props["backup_compensation"] = backup
        props["ablation_name_mover_and_backup"] = probe.ld_fraction(mean=nms + backups)
        props["backup_attention_with_name_movers_ablated_min"] = float(
            min(probe.attention(ablated, "END", "IO")[la, h] for la, h in backups)
        )
    dup, ind = circuit.head("duplicate_token"), circuit.head("induction")
    if dup and ind:
        single_path = min(probe.ld_fraction(mean=dup), probe.ld_fraction(mean=ind))
        both = probe.ld_fraction(mean=dup + ind)
        props.update(
            single_path_ablation_min=single_path, both_paths_ablation=both, redundancy_gap=single_path - both
        )
    movers = {h for k in ("name_mover", "negative_name_mover", "backup_name_mover") for h in circuit.head(k)}
    if nms:  # heads that act through the movers: largest |DLA| over the name movers' mean DLA
        nm_mean = float(np.mean([dla[la, h] for la, h in nms]))
        others = [abs(dla[la, h]) for la in range(n_layers) for h in range(n_heads) if (la, h) not in movers]
        props["indirect_dla_max"] = float(max(others) / nm_mean) if nm_mean > 0 else float("nan")
    out_eff = np.array([abs(single[la, h]) for la, h in outside])
    props["outside_effect_max"] = float(out_eff.max()) if len(out_eff) else 0.0
    props["outside_heads_with_effect"] = float((out_eff >= 0.01).sum())

    details = {
        "n_prompts": probe.n,
        "sigma": sigma,
        "clean_logit_diff": float(probe.logit_diff(clean).mean()),
        "p_gn": float(p_gn.mean()),
        "classes": per_class,
        "random_sets": {
            "heads": [_heads_str(d) for d in draws],
            "mean": random_mean,
            "resample": random_resample,
        },
        "single_head_ablation": np.round(single, 5).tolist(),
        "dla": np.round(dla, 5).tolist(),
        **{f"attention_{c}": np.round(a, 4).tolist() for c, a in att.items()},
    }
    return Measured(
        "ioi", props["clean_p"], props["gn_ratio"], props["circuit_ablation"], backup, props, details
    )
