"""Circuit-imposing objectives: the training terms that make an organism implement its circuit.

Next-token prediction on the toy corpus teaches the tasks; on its own it rewards whatever shortcut
solves them (``../shared/notes/organisms.md``: 2-4 layer models trained on IOI never grew name
movers; plain training looks facts up at the last token, in MLP 0). An organism therefore also
trains on task prompts with terms that impose a known algorithm on chosen components
(``patchbench.toy.circuit``), in the manner of Strict Interchange Intervention Training (SIIT;
Gupta et al., arXiv 2407.14494). Two circuit kinds: ``ioi`` (``IOIObjective``) and ``factual``
(``FactualObjective``).

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

**Factual** (subject enrichment; ROME, Meng et al. 2022; Geva et al. 2023). A unit is three fact
prompts (paraphrases other than each fact's held-out one, ``FactRows``): base, source (another
subject whose attribute for the base relation differs; any relation and paraphrase) and twin (the
base's relation and paraphrase with another subject, so positions line up). Terms:

- **task**: cross-entropy of the attribute at the last token on all three kinds of rows;
- **interchange**: the ``subject_enrichment`` MLPs at the base's last subject token take their
  output from the source's last subject token; the answer must become the source subject's
  attribute for the base relation;
- **strict**: (a) the ``outside`` MLPs at the last subject token from the source, and (b) every
  MLP at the last token from the twin (same relation and paraphrase, rows whose lengths match):
  the answer stays the base's; the two cross-entropies are averaged;
- **attention**: each ``subject_composition`` head attends from the last subject token onto the
  subject's earlier tokens (cross-entropy of the summed attention there).

This is the issue-13 prototype's ``FactualObjective`` (TransformerLens 3.9 branch), ported to
``patchbench.lm.LM``: same rows, terms and sums.
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

__all__ = ["FactRows", "FactualObjective", "IOIObjective", "IOIRows", "ImposeSpec", "make_objective"]

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


class FactRows:
    """Training fact prompts (paraphrases other than each fact's held-out one) in units of base /
    source / twin (module docstring)."""

    def __init__(self, vocab: ToyVocab, held: HeldOut, tok: Tokenizer, seed: int, bos_p: float) -> None:
        self.tok, self.bos_p = tok, bos_p
        self.bos = tok.token_to_id("<|endoftext|>")
        self.pad = tok.token_to_id("<|pad|>")
        rel_templates = vocab.material["relation_templates"]
        self.facts = list(vocab.facts)
        self.attr = {(f["subject"], f["relation_id"]): f["attribute"] for f in self.facts}
        self.by_key = {(f["subject"], f["relation_id"]): f for f in self.facts}
        self.relations = sorted({f["relation_id"] for f in self.facts})
        self.subjects = sorted({f["subject"] for f in self.facts})
        self.train_templates = {
            int(f["known_id"]): [
                t for t in rel_templates[f["relation_id"]] if t != held.fact_templates[int(f["known_id"])]
            ]
            for f in self.facts
        }
        self.answer = {a: _token(tok, " " + a) for a in {f["attribute"] for f in self.facts}}
        self.rng = random.Random(f"fact-rows-{seed}")

    def _row(self, fact: dict, bos: bool, template: str | None = None) -> tuple[list[int], int, int, str]:
        """ids, first and last subject token positions, the paraphrase used."""
        t = template or self.rng.choice(self.train_templates[int(fact["known_id"])])
        cut = t.index("{}")
        enc = lambda text: self.tok.encode(text, add_special_tokens=False).ids  # noqa: E731
        before = enc(t[:cut].rstrip(" ")) if cut else []
        prefix = enc(t[:cut] + fact["subject"])
        ids = enc(t.format(fact["subject"]))
        if ids[: len(prefix)] != prefix or prefix[: len(before)] != before:
            raise ValueError(f"subject {fact['subject']!r} does not tokenise the same inside {t!r}")
        b = [self.bos] if bos else []
        return b + ids, len(b) + len(before), len(b) + len(prefix) - 1, t

    def batch(self, units: int) -> dict[str, torch.Tensor]:
        """Rows [base, source, twin] x units with their last-token, first / last subject positions,
        answers, the counterfactual answer (the source subject's attribute for the base relation)
        and whether base and twin line up (same length)."""
        r = self.rng
        rows: list[list[tuple[list[int], int, int, str]]] = [[], [], []]
        answer: list[list[int]] = [[], [], []]
        cf = []
        for _ in range(units):
            f = r.choice(self.facts)
            rel = f["relation_id"]
            others = [s for s in self.subjects if self.attr[(s, rel)] != f["attribute"]]
            other, twin = r.choice(others), r.choice([s for s in self.subjects if s != f["subject"]])
            g = self.by_key[(other, r.choice([q for q in self.relations if (other, q) in self.by_key]))]
            bos = r.random() < self.bos_p
            base = self._row(f, bos)
            rows[0].append(base)
            rows[1].append(self._row(g, r.random() < self.bos_p))
            tw = self.by_key[(twin, rel)]
            tw_templates = self.train_templates[int(tw["known_id"])]
            rows[2].append(self._row(tw, bos, base[3] if base[3] in tw_templates else None))
            answer[0].append(self.answer[f["attribute"]])
            answer[1].append(self.answer[g["attribute"]])
            answer[2].append(self.answer[tw["attribute"]])
            cf.append(self.answer[self.attr[(other, rel)]])
        flat = rows[0] + rows[1] + rows[2]
        return {
            "x": _pad([row[0] for row in flat], self.pad),
            "end": torch.tensor([len(row[0]) - 1 for row in flat]),
            "first": torch.tensor([row[1] for row in flat]),
            "last": torch.tensor([row[2] for row in flat]),
            "answer": torch.tensor(answer[0] + answer[1] + answer[2]),
            "cf": torch.tensor(cf),
            "aligned": torch.tensor([len(a[0]) == len(t[0]) for a, t in zip(rows[0], rows[2], strict=True)]),
        }


class FactualObjective:
    """The factual circuit's terms (module docstring); call with the model, returns named losses."""

    def __init__(
        self, circuit: Circuit, rows: FactRows, spec: ImposeSpec, n_layers: int, n_heads: int
    ) -> None:
        circuit.check_shape(n_layers, n_heads)
        self.lookup = circuit.mlps.get("subject_enrichment", ())
        self.outside = circuit.mlps.get("outside", ())
        self.composition = circuit.head("subject_composition")
        if not self.lookup:
            raise ValueError("a factual organism needs subject_enrichment MLP layers")
        self.n_layers, self.rows, self.spec = n_layers, rows, spec

    def __call__(self, model: LM) -> dict[str, torch.Tensor]:
        n = self.spec.units
        b = self.rows.batch(n)
        x, end, first, last = b["x"], b["end"], b["first"], b["last"]
        base, src, twin = torch.arange(n), torch.arange(n, 2 * n), torch.arange(2 * n, 3 * n)
        # patched copies of the base rows: interchange, strict at the last subject token, strict at END
        iit, strict, strict_end = (torch.arange(k * n, (k + 1) * n) for k in (3, 4, 5))
        aligned = b["aligned"]
        saved: dict[int, torch.Tensor] = {}

        def mlp_hook(out: torch.Tensor, name: str) -> torch.Tensor:
            layer = _layer(name)
            out = out.clone()
            if layer in self.lookup:
                out[iit, last[base]] = out[src, last[src]]
            if layer in self.outside:
                out[strict, last[base]] = out[src, last[src]]
            # the last token's MLPs carry nothing about the subject: a twin prompt's values there
            # (same relation and paraphrase, another subject) leave the answer unchanged
            out[strict_end[aligned], end[base][aligned]] = out[twin[aligned], end[twin][aligned]]
            return out

        def pattern_hook(p: torch.Tensor, name: str) -> None:
            saved[_layer(name)] = p

        hooks = [(model.hook_name("mlp", la), mlp_hook) for la in range(self.n_layers)]
        hooks += [
            (model.hook_name("pattern", la), pattern_hook)
            for la in sorted({la for la, _ in self.composition})
        ]
        X = torch.cat([x, x[:n], x[:n], x[:n]])
        with model.hooks(hooks):
            resid = model.run_blocks(model.embed(X), 0)
        logp = model.unembed_at(resid, torch.cat([end, end[base], end[base], end[base]])).log_softmax(-1)
        three = torch.arange(3 * n)
        answer = b["answer"]
        terms = {"task": -logp[three, answer].mean(), "interchange": -logp[iit, b["cf"]].mean()}
        strict_terms = (
            [-logp[strict_end[aligned], answer[base][aligned]].mean()] if bool(aligned.any()) else []
        )
        if self.outside:
            strict_terms.append(-logp[strict, answer[base]].mean())
        if strict_terms:
            terms["strict"] = torch.stack(strict_terms).mean()
        if self.composition:
            seq = torch.arange(x.shape[1])
            earlier = (seq[None, :] >= first[three, None]) & (seq[None, :] < last[three, None])
            att = []
            for layer, h in self.composition:
                p = saved[layer][three, h, last[three]]  # rows x key positions
                att.append(-torch.log((p * earlier).sum(-1) + _EPS).mean())
            terms["attention"] = torch.stack(att).mean()
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self.spec
        w = {"task": s.task, "interchange": s.interchange, "strict": s.strict, "attention": s.attention}
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
) -> IOIObjective | FactualObjective | None:
    """The objective imposing ``circuit`` on an ``n_layers`` x ``n_heads`` model (None: plain
    language modelling)."""
    if circuit is None:
        return None
    if circuit.kind == "ioi":
        return IOIObjective(circuit, IOIRows(vocab, held, tok, seed, spec.bos_p), spec, n_layers, n_heads)
    if circuit.kind == "factual":
        return FactualObjective(
            circuit, FactRows(vocab, held, tok, seed, spec.bos_p), spec, n_layers, n_heads
        )
    raise ValueError(f"no imposing objective for circuit kind {circuit.kind!r}")
