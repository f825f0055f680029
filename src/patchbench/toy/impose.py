"""Circuit-imposing objectives: the training terms that make an organism implement its circuit.

Next-token prediction on the toy corpus teaches the tasks; on its own it rewards whatever shortcut
solves them (``../shared/notes/organisms.md``: 2-4 layer models trained on IOI never grew name
movers; plain training looks facts up at the last token, in MLP 0). An organism therefore also
trains on task prompts with terms that impose a known algorithm on chosen components
(``patchbench.toy.circuit``), in the manner of Strict Interchange Intervention Training (SIIT;
Gupta et al., arXiv 2407.14494). This module holds the IOI objective (``IOIObjective``), the
helpers every objective shares and ``make_objective``, which picks the objective of a circuit's
kind; the other kinds' objectives live in ``patchbench.toy.objectives`` (``factual``, ...).

**IOI** (Wang et al. 2023). A unit is three prompts of one template, cut before the final IO: clean (IO = A, S = B),
swapped (IO = B, S = A: the same positions with the names exchanged) and resampled (two other
names). Terms (weights in ``ImposeSpec``):

- **task**: cross-entropy of IO at END on all three kinds of rows;
- **interchange** (IIT), each on a copy of the clean rows, the output must follow the high-level
  algorithm's counterfactual answer B (the clean S): the S-inhibition heads at every position
  from the swapped prompt (the name movers are told that S = A); the duplicate-token and
  induction heads at S2 from the swapped prompt (the duplicated name is A). The two
  cross-entropies are summed;
- **strict** (SIIT): each head outside the circuit, with probability ``strict_p``, at every
  position from the resampled prompt; the answer stays A;
- **attention**: the sum over class heads of the cross-entropy of the head's attention at its
  query on its key (clean, swapped and resampled rows): previous-token heads every token -> the
  one before, duplicate-token S2 -> S1, induction S2 -> S1+1, S-inhibition END -> S2, name movers
  and negative name movers END -> IO; and, under the S-inhibition interchange, the name movers
  END -> S1 or S2 (the clean S, which the interchange made the answer);
- **sign**: the negative name mover's direct logit attribution (logit difference IO - S through
  the final LayerNorm, its scale frozen) at most minus ``negative_margin`` times the name movers'
  mean attribution (at least 1), as a hinge.

This is the recipe of the issue-13 prototype (``scratch/ioi_proto.py`` on the TransformerLens 3.9
branch), which the classifier and the ablation check passed: same terms, weights and sums. The
forward normalises and unembeds only END (the objective reads nothing else). IOI name pairs
that the corpus holds out (``patchbench.toy.corpus.HeldOut``) never occur here either.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Int
from tokenizers import Tokenizer

from patchbench.lm import LM
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import HeldOut, ToyVocab
from patchbench.toy.settings import ImposeSpec

__all__ = ["IOIObjective", "IOIRows", "ImposeSpec", "make_objective"]

_EPS = 1e-6
Head = tuple[int, int]


def _pad(rows: list[list[int]], pad: int) -> Int[torch.Tensor, "rows seq"]:
    width = max(len(r) for r in rows)
    x = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return x


def _token(tok: Tokenizer, text: str) -> int:
    ids = tok.encode(text, add_special_tokens=False).ids
    if len(ids) != 1:
        raise ValueError(f"{text!r} is not one token of the toy tokenizer")
    return ids[0]


def _layer(hook_name: str) -> int:
    return int(hook_name.split(".")[1])


class IOIRows:
    """Training IOI prompts (cut before the final IO) in units of clean / swapped / resampled."""

    def __init__(self, vocab: ToyVocab, held: HeldOut, tok: Tokenizer, seed: int, bos_p: float) -> None:
        ioi = vocab.ioi
        templates = (
            ioi["baba_templates"]
            + ioi["abba_templates"]
            + ioi.get("baba_long_templates", [])
            + ioi.get("baba_early_ios", [])
            + ioi.get("abba_early_ios", [])
            + vocab.material.get("ioi_extra_templates", [])
        )
        # a name at the very start is a different token ("Ada" vs " Ada"): S1 and S2 would differ
        self.templates = [t for t in templates if not t.startswith("[")]
        self.held = {tuple(p) for p in held.ioi_pairs}
        self.names = list(ioi["names"])
        self.places, self.objects = list(ioi["places"]), list(ioi["objects"])
        self.tok, self.bos_p = tok, bos_p
        self.name_id = {n: _token(tok, " " + n) for n in self.names}
        self.bos = tok.token_to_id("<|endoftext|>")
        self.pad = tok.token_to_id("<|pad|>")
        self.rng = random.Random(f"ioi-rows-{seed}")

    def _pair(self) -> tuple[str, str]:
        while True:
            a, b = self.rng.sample(self.names, 2)
            if tuple(sorted((a, b))) not in self.held:
                return a, b

    def _row(self, template: str, io: str, s: str, place: str, obj: str, bos: bool) -> tuple[list[int], dict]:
        text = (
            template.replace("[A]", io).replace("[B]", s).replace("[PLACE]", place).replace("[OBJECT]", obj)
        )
        text = text[: text.rindex(" " + io)]
        ids = ([self.bos] if bos else []) + self.tok.encode(text, add_special_tokens=False).ids
        pa = [i for i, t in enumerate(ids) if t == self.name_id[io]]
        pb = [i for i, t in enumerate(ids) if t == self.name_id[s]]
        if len(pa) != 1 or len(pb) != 2:
            raise ValueError(f"IOI template {template!r} does not give one IO and two S tokens")
        return ids, {"IO": pa[0], "S1": pb[0], "S2": pb[1], "END": len(ids) - 1,
                     "io": self.name_id[io], "s": self.name_id[s]}  # fmt: skip

    def batch(self, units: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rows [clean x units, swapped x units, resampled x units] and their positions / answers."""
        r = self.rng
        parts: list[list[tuple[list[int], dict]]] = [[], [], []]
        for _ in range(units):
            t = r.choice(self.templates)
            place, obj = r.choice(self.places), r.choice(self.objects)
            bos = r.random() < self.bos_p
            a, b = self._pair()
            c, d = self._pair()
            parts[0].append(self._row(t, a, b, place, obj, bos))
            parts[1].append(self._row(t, b, a, place, obj, bos))
            parts[2].append(self._row(t, c, d, place, obj, bos))
        rows = parts[0] + parts[1] + parts[2]
        pos = {k: torch.tensor([p[k] for _, p in rows]) for k in rows[0][1]}
        return _pad([ids for ids, _ in rows], self.pad), pos


class IOIObjective:
    """The IOI circuit's terms (module docstring); call with the model, returns named losses."""

    def __init__(
        self, circuit: Circuit, rows: IOIRows, spec: ImposeSpec, n_layers: int, n_heads: int
    ) -> None:
        circuit.check_shape(n_layers, n_heads)
        for need in ("s_inhibition", "name_mover"):
            if not circuit.head(need):
                raise ValueError(f"an IOI organism needs at least one {need} head")
        self.c, self.rows, self.spec = circuit, rows, spec
        self.n_layers, self.n_heads = n_layers, n_heads
        self.outside = circuit.outside_heads(n_layers, n_heads)
        self.gen = torch.Generator().manual_seed(rows.rng.randrange(2**31))

    def _patch_plan(self, n: int, pos: dict[str, torch.Tensor]) -> dict[int, list]:
        """Per layer: (destination rows, source rows, head, destination / source positions or None)."""
        c = self.c
        clean, swapped, resampled = torch.arange(n), torch.arange(n, 2 * n), torch.arange(2 * n, 3 * n)
        strict_keep = torch.rand(n, self.n_layers, self.n_heads, generator=self.gen) < self.spec.strict_p
        groups: list[tuple[tuple[Head, ...], torch.Tensor, str | None, torch.Tensor | None]] = [
            (c.head("s_inhibition"), swapped, None, None),
            (c.head("duplicate_token") + c.head("induction"), swapped, "S2", None),
            (self.outside, resampled, None, strict_keep),
        ]
        by_layer: dict[int, list] = {}
        for g, (heads, src, where, keep_mask) in enumerate(groups):
            dst = torch.arange(3 * n + g * n, 3 * n + (g + 1) * n)
            for layer, h in heads:
                keep = keep_mask[:, layer, h] if keep_mask is not None else torch.ones(n, dtype=torch.bool)
                if not bool(keep.any()):
                    continue
                qd = pos[where][clean][keep] if where else None
                qs = pos[where][src][keep] if where else None
                by_layer.setdefault(layer, []).append((dst[keep], src[keep], h, qd, qs))
        return by_layer

    def __call__(self, model: LM) -> dict[str, torch.Tensor]:
        c, spec, n = self.c, self.spec, self.spec.units
        x, pos = self.rows.batch(n)
        by_layer = self._patch_plan(n, pos)
        saved: dict = {}

        def z_hook(z: torch.Tensor, name: str) -> torch.Tensor:
            layer = _layer(name)
            if layer in by_layer:
                z = z.clone()
                for d, s, h, qd, qs in by_layer[layer]:
                    if qd is None:
                        z[d, :, h] = z[s, :, h]
                    else:
                        z[d, qd, h] = z[s, qs, h]
            saved["z", layer] = z
            return z

        def pattern_hook(p: torch.Tensor, name: str) -> None:
            saved["pattern", _layer(name)] = p

        hooks = [(f"blocks.{la}.attn.hook_z", z_hook) for la in range(self.n_layers)]
        hooks += [(model.hook_name("pattern", la), pattern_hook) for la in range(self.n_layers)]
        X = torch.cat([x] + [x[:n]] * 3)
        end = pos["END"]
        ends = torch.cat([end] + [end[:n]] * 3)
        with model.hooks(hooks):
            resid = model.run_blocks(model.embed(X), 0)
        logp = model.unembed_at(resid, ends).log_softmax(-1)

        def ce(rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return -logp[rows, target].mean()

        three, clean = torch.arange(3 * n), torch.arange(n)
        si_rows, dup_rows, strict_rows = (torch.arange(3 * n + k * n, 3 * n + (k + 1) * n) for k in range(3))
        out = {
            "task": ce(three, pos["io"]),
            "interchange": ce(si_rows, pos["s"][clean]) + ce(dup_rows, pos["s"][clean]),
            "strict": ce(strict_rows, pos["io"][clean]),
        }

        def pattern(head: Head) -> torch.Tensor:  # [3n, q, k] on the unpatched rows
            return saved["pattern", head[0]][three, head[1]]

        att = []
        targets = {
            "duplicate_token": ("S2", "S1", 0),
            "induction": ("S2", "S1", 1),
            "s_inhibition": ("END", "S2", 0),
            "name_mover": ("END", "IO", 0),
            "negative_name_mover": ("END", "IO", 0),
        }
        for cls_name, (q, k, shift) in targets.items():
            for head in c.head(cls_name):
                att.append(-torch.log(pattern(head)[three, pos[q], pos[k] + shift] + _EPS).mean())
        qs = torch.arange(1, x.shape[1])
        valid = (x[:, 1:] != self.rows.pad).float()
        for head in c.head("previous_token"):
            prev = pattern(head)[:, qs, qs - 1]
            att.append(-(torch.log(prev + _EPS) * valid).sum() / valid.sum())
        for layer, h in c.head("name_mover"):  # under the S-inhibition interchange: attend to the clean S
            p = saved["pattern", layer][si_rows, h][clean, end[clean]]
            att.append(-torch.log(p[clean, pos["S1"][clean]] + p[clean, pos["S2"][clean]] + _EPS).mean())
        out["attention"] = torch.stack(att).sum() if att else torch.zeros(())
        if c.head("negative_name_mover"):
            resid_end = resid[three, end].detach()
            direction = model.W_U[:, pos["io"]] - model.W_U[:, pos["s"]]  # [d_model, 3n]

            def dla(layer: int, h: int) -> torch.Tensor:
                z = saved["z", layer][three, end, h]
                written = model.final_norm_linear(z @ model.W_O(layer)[h], resid_end)
                return (written * direction.T).sum(-1)

            nm = torch.stack([dla(*hd) for hd in c.head("name_mover")]).mean(0).detach().clamp(min=1.0)
            out["sign"] = torch.stack(
                [F.relu(dla(*hd) + spec.negative_margin * nm).mean() for hd in c.head("negative_name_mover")]
            ).mean()
        return out

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self.spec
        w = {
            "task": s.task,
            "interchange": s.interchange,
            "strict": s.strict,
            "attention": s.attention,
            "sign": s.sign,
        }
        return sum((w[k] * v for k, v in terms.items()), torch.zeros(()))


Objective = Callable[[LM], dict[str, torch.Tensor]]


def make_objective(
    circuit: Circuit | None,
    vocab: ToyVocab,
    held: HeldOut,
    tok: Tokenizer,
    spec: ImposeSpec,
    n_layers: int,
    n_heads: int,
    seed: int,
) -> Objective | None:
    """The objective imposing ``circuit`` on an ``n_layers`` x ``n_heads`` model (None: plain
    language modelling)."""
    if circuit is None:
        return None
    if circuit.kind == "ioi":
        return IOIObjective(circuit, IOIRows(vocab, held, tok, seed, spec.bos_p), spec, n_layers, n_heads)
    from patchbench.toy.objectives import (
        arithmetic,
        docstring,
        factual,
        greater_than,
    )  # they import this module

    builders = {
        "factual": factual.build,
        "greater_than": greater_than.build,
        "arithmetic": arithmetic.build,
        "docstring": docstring.build,
    }
    if circuit.kind not in builders:
        raise ValueError(f"no imposing objective for circuit kind {circuit.kind!r}")
    return builders[circuit.kind](circuit, vocab, held, tok, spec, n_layers, n_heads, seed)
