"""Circuit-imposing objectives: the training terms that make an organism implement its circuit.

Next-token prediction on the toy corpus teaches the tasks; on its own it rewards whatever shortcut
solves them (``../shared/notes/organisms.md``: 2-4 layer models trained on IOI never grew name
movers; plain training looks facts up at the last token, in MLP 0). An organism therefore also
trains on task prompts with terms that impose a known algorithm on chosen components
(``patchbench.toy.circuit``), in the manner of Strict Interchange Intervention Training (SIIT;
Gupta et al., arXiv 2407.14494). One objective per circuit kind,
:data:`OBJECTIVES`: ``ioi`` (``impose_ioi.IOIObjective``) and ``factual`` (``FactualObjective``).

**IOI** (Wang et al. 2023): ``patchbench.toy.impose_ioi`` (its module docstring lists the terms).

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
from tokenizers import Tokenizer

from patchbench.lm import LM
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import CorpusSpec, HeldOut, ToyVocab
from patchbench.toy.impose_ioi import IOIObjective, IOIRows
from patchbench.toy.impose_rows import EPS, hook_layer, pad_rows, single_token
from patchbench.toy.settings import ImposeSpec

__all__ = [
    "OBJECTIVES",
    "FactRows",
    "FactualObjective",
    "IOIObjective",
    "IOIRows",
    "ImposeSpec",
    "make_objective",
]

Head = tuple[int, int]


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
        self.answer = {a: single_token(tok, " " + a) for a in {f["attribute"] for f in self.facts}}
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
            "x": pad_rows([row[0] for row in flat], self.pad),
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
            layer = hook_layer(name)
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
            saved[hook_layer(name)] = p

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
                att.append(-torch.log((p * earlier).sum(-1) + EPS).mean())
            terms["attention"] = torch.stack(att).mean()
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self.spec
        w = {"task": s.task, "interchange": s.interchange, "strict": s.strict, "attention": s.attention}
        return sum((w[k] * v for k, v in terms.items()), torch.zeros(()))


Objective = Callable[[LM], dict[str, torch.Tensor]]


def _ioi(circuit, vocab, held, tok, spec, n_layers, n_heads, seed, corpus) -> IOIObjective:
    rows = IOIRows(vocab, held, tok, seed, spec.bos_p, corpus.ioi_answer_p, corpus.ioi_third_name > 0)
    return IOIObjective(circuit, rows, spec, n_layers, n_heads)


def _factual(circuit, vocab, held, tok, spec, n_layers, n_heads, seed, corpus) -> FactualObjective:
    return FactualObjective(circuit, FactRows(vocab, held, tok, seed, spec.bos_p), spec, n_layers, n_heads)


#: circuit kind -> builder of its objective: ``(circuit, vocab, held, tokenizer, impose spec,
#: n_layers, n_heads, seed, corpus spec) -> objective`` (an object with ``__call__(model) -> terms``
#: and ``total(terms)``).
OBJECTIVES: dict[str, Callable[..., Objective]] = {"ioi": _ioi, "factual": _factual}


def make_objective(
    circuit: Circuit | None,
    vocab: ToyVocab,
    held: HeldOut,
    tok: Tokenizer,
    spec: ImposeSpec,
    n_layers: int,
    n_heads: int,
    seed: int,
    corpus: CorpusSpec | None = None,
) -> Objective | None:
    """The objective imposing ``circuit`` on an ``n_layers`` x ``n_heads`` model (None: plain
    language modelling); ``corpus`` is the organism's corpus (its IOI continuation distribution)."""
    if circuit is None:
        return None
    if circuit.kind not in OBJECTIVES:
        raise ValueError(
            f"no imposing objective for circuit kind {circuit.kind!r}; known: {sorted(OBJECTIVES)}"
        )
    return OBJECTIVES[circuit.kind](
        circuit, vocab, held, tok, spec, n_layers, n_heads, seed, corpus or CorpusSpec()
    )
