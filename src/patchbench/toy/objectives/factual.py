"""The factual-recall organism's objective: distributed subject enrichment, attribute extraction.

What real models do, and what this objective imposes (``patchbench.toy.circuit``, kind ``factual``):

- **Subject composition.** The subjects are three-word names whose words are shared among
  subjects (``data/toy/rome/known_1000.json``), so no single token identifies a subject; the
  ``subject_composition`` heads attend from the last subject token onto the subject's earlier
  tokens (the attention term).
- **Subject enrichment spread over several MLP layers at the last subject token** (Meng et al.
  2022, ROME, causal traces of GPT-2 XL: a band of middle-layer MLPs at the last subject token;
  Geva et al. 2023, *Dissecting Recall of Factual Associations*, §5: enrichment builds up over
  the early-middle MLP layers). Each ``subject_enrichment`` layer casts a *vote* for the
  attribute of the subject it was given; the answer over the relation's ``k`` attributes is
  ``softmax(beta * mean vote)``, with ``beta = ln((k - 1) p / (1 - p))`` so that an unpatched
  prompt puts ``p`` (``ImposeSpec.answer_p``) on its attribute and the rest evenly on the
  relation's other attributes. **Interchange** on a random non-empty subset of the enrichment
  layers (each from the source subject's last subject token): one layer from the source moves
  the answer only by its share of the vote, so restoring one layer recovers clearly less than
  restoring the set (an interaction, AND-like in the answer probability).
- **Attribute extraction at the last token** (Geva et al. 2023, §6: heads at the last position
  attend to the last subject token and extract the attribute the relation asks for). The
  ``attribute_extraction`` heads attend from the last token onto the last subject token
  (attention term); **interchange**: their outputs at the last token from a twin prompt (same
  relation and paraphrase, another subject) make the answer the twin's attribute.
- **Strict** (SIIT): the ``outside`` MLPs at the last subject token, taken from the source, and
  every MLP at the last token, taken from the twin, leave the answer unchanged.

Calibration (``p``, the realistic clean probability: GPT-2 XL gives 0.49 on the paper's
PairedFacts) comes from the same training pressure everywhere: the targets above, and the
organism's corpus, which states a fact's attribute in a share ``p`` of its documents and another
attribute of the same relation otherwise (``CorpusSpec.fact_reliability``, set from ``answer_p``).

A unit is three fact prompts (paraphrases other than each fact's held-out one): base, source
(another subject whose attribute for the base relation differs; any relation and paraphrase) and
twin (the base's relation and paraphrase with another subject). Losses (weights in ``ImposeSpec``):
``task`` (the targets on the three unpatched rows), ``interchange`` (mean of the enrichment-subset
and extraction terms), ``strict``, ``attention``.
"""

from __future__ import annotations

import math
import random

import torch
from tokenizers import Tokenizer

from patchbench.lm import LM
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import HeldOut, ToyVocab
from patchbench.toy.impose_rows import EPS, hook_layer, pad_rows, single_token, weighted_total
from patchbench.toy.settings import ImposeSpec

__all__ = ["FactRows", "FactualObjective", "vote_beta"]


def vote_beta(answer_p: float, k: int) -> float:
    """The inverse temperature that gives an undivided vote probability ``answer_p`` among ``k``
    attributes (the rest spread evenly over the other ``k - 1``)."""
    if not 0 < answer_p < 1 or k < 2:
        raise ValueError(f"answer_p must be in (0, 1) and k >= 2, got {answer_p}, {k}")
    return math.log((k - 1) * answer_p / (1 - answer_p))


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
        # each relation's attributes (the alternatives the answer distribution ranges over)
        self.rel_attrs = {
            r: sorted({f["attribute"] for f in self.facts if f["relation_id"] == r}) for r in self.relations
        }
        k = {len(v) for v in self.rel_attrs.values()}
        if len(k) != 1:
            raise ValueError(f"every relation needs the same number of attributes, got {sorted(k)}")
        self.k = k.pop()
        self.rel_ids = torch.tensor([[self.answer[a] for a in self.rel_attrs[r]] for r in self.relations])
        self.rng = random.Random(f"fact-rows-{seed}")

    def index(self, subject: str, rel: str) -> int:
        """Position of ``subject``'s attribute among relation ``rel``'s attributes."""
        return self.rel_attrs[rel].index(self.attr[(subject, rel)])

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
        each row's relation (index into ``relations``) and own attribute's index in it, the source's
        and the twin's attribute index for the base relation, and whether base and twin line up."""
        r = self.rng
        rows: list[list[tuple[list[int], int, int, str]]] = [[], [], []]
        rel: list[list[int]] = [[], [], []]
        own: list[list[int]] = [[], [], []]
        src_idx = []
        for _ in range(units):
            f = r.choice(self.facts)
            q = f["relation_id"]
            others = [s for s in self.subjects if self.attr[(s, q)] != f["attribute"]]
            other, twin = r.choice(others), r.choice([s for s in self.subjects if s != f["subject"]])
            g = self.by_key[(other, r.choice([p for p in self.relations if (other, p) in self.by_key]))]
            bos = r.random() < self.bos_p
            base = self._row(f, bos)
            rows[0].append(base)
            rows[1].append(self._row(g, r.random() < self.bos_p))
            tw = self.by_key[(twin, q)]
            tw_templates = self.train_templates[int(tw["known_id"])]
            rows[2].append(self._row(tw, bos, base[3] if base[3] in tw_templates else None))
            for part, fact in enumerate((f, g, tw)):
                rel[part].append(self.relations.index(fact["relation_id"]))
                own[part].append(self.index(fact["subject"], fact["relation_id"]))
            src_idx.append(self.index(other, q))
        flat = rows[0] + rows[1] + rows[2]
        return {
            "x": pad_rows([row[0] for row in flat], self.pad),
            "end": torch.tensor([len(row[0]) - 1 for row in flat]),
            "first": torch.tensor([row[1] for row in flat]),
            "last": torch.tensor([row[2] for row in flat]),
            "rel": torch.tensor(rel[0] + rel[1] + rel[2]),
            "own": torch.tensor(own[0] + own[1] + own[2]),
            "src": torch.tensor(src_idx),
            "aligned": torch.tensor([len(a[0]) == len(t[0]) for a, t in zip(rows[0], rows[2], strict=True)]),
        }


class FactualObjective:
    """The factual circuit's terms (module docstring); call with the model, returns named losses."""

    def __init__(
        self, circuit: Circuit, rows: FactRows, spec: ImposeSpec, n_layers: int, n_heads: int
    ) -> None:
        circuit.check_shape(n_layers, n_heads)
        self.lookup = circuit.mlp("subject_enrichment")
        self.outside = circuit.mlp("outside")
        self.composition = circuit.head("subject_composition")
        self.extraction = circuit.head("attribute_extraction")
        if not self.lookup:
            raise ValueError("a factual organism needs subject_enrichment MLP layers")
        self.n_layers, self.rows, self.spec = n_layers, rows, spec
        self.beta = vote_beta(spec.answer_p, rows.k)
        self.gen = torch.Generator().manual_seed(rows.rng.randrange(2**31))

    def _subsets(self, n: int) -> torch.Tensor:
        """[n, len(lookup)]: a uniformly drawn non-empty subset of the enrichment layers per row."""
        m = len(self.lookup)
        code = torch.randint(1, 2**m, (n,), generator=self.gen)
        return (code[:, None] >> torch.arange(m)[None, :]) & 1 == 1

    def _soft_ce(self, logp: torch.Tensor, rel: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against softmax(beta * votes) over each row's relation attributes.
        logp [rows, vocab], rel [rows], votes [rows, k] (summing to 1)."""
        target = (self.beta * votes).softmax(-1)
        return -(target * logp.gather(1, self.rows.rel_ids[rel])).sum(-1).mean()

    def __call__(self, model: LM) -> dict[str, torch.Tensor]:
        n, k = self.spec.units, self.rows.k
        b = self.rows.batch(n)
        x, end, first, last = b["x"], b["end"], b["first"], b["last"]
        base, src, twin = torch.arange(n), torch.arange(n, 2 * n), torch.arange(2 * n, 3 * n)
        # patched copies of the base rows: enrichment interchange, strict at the last subject token,
        # strict at the last token, extraction interchange
        iit, strict, strict_end, iit_x = (torch.arange(j * n, (j + 1) * n) for j in (3, 4, 5, 6))
        aligned = b["aligned"]
        subsets = self._subsets(n)
        saved: dict[int, torch.Tensor] = {}

        def mlp_hook(out: torch.Tensor, name: str) -> torch.Tensor:
            layer = hook_layer(name)
            out = out.clone()
            if layer in self.lookup:
                rows = subsets[:, self.lookup.index(layer)]
                out[iit[rows], last[base][rows]] = out[src[rows], last[src][rows]]
            if layer in self.outside:
                out[strict, last[base]] = out[src, last[src]]
            # the last token's MLPs carry nothing about the subject: a twin prompt's values there
            # (same relation and paraphrase, another subject) leave the answer unchanged
            out[strict_end[aligned], end[base][aligned]] = out[twin[aligned], end[twin][aligned]]
            return out

        def z_hook(z: torch.Tensor, name: str) -> torch.Tensor:
            layer = hook_layer(name)
            z = z.clone()
            for la, h in self.extraction:
                if la == layer:
                    z[iit_x, end[base], h] = z[twin, end[twin], h]
            return z

        def pattern_hook(p: torch.Tensor, name: str) -> None:
            saved[hook_layer(name)] = p

        hooks = [(model.hook_name("mlp", la), mlp_hook) for la in range(self.n_layers)]
        hooks += [
            (model.hook_name("attn_head", la), z_hook) for la in sorted({la for la, _ in self.extraction})
        ]
        hooks += [
            (model.hook_name("pattern", la), pattern_hook)
            for la in sorted({la for la, _ in self.composition + self.extraction})
        ]
        X = torch.cat([x] + [x[:n]] * 4)
        with model.hooks(hooks):
            resid = model.run_blocks(model.embed(X), 0)
        logp = model.unembed_at(resid, torch.cat([end] + [end[base]] * 4)).log_softmax(-1)
        three = torch.arange(3 * n)
        eye = torch.eye(k)
        rel_base = b["rel"][base]
        own_base = eye[b["own"][base]]
        share = subsets.float().mean(-1, keepdim=True)
        mixed = (1 - share) * own_base + share * eye[b["src"]]
        interchange = [self._soft_ce(logp[iit], rel_base, mixed)]
        if self.extraction:
            interchange.append(self._soft_ce(logp[iit_x], rel_base, eye[b["own"][twin]]))
        terms = {
            "task": self._soft_ce(logp[three], b["rel"], eye[b["own"]]),
            "interchange": torch.stack(interchange).mean(),
        }
        strict_terms = []
        if bool(aligned.any()):
            strict_terms.append(
                self._soft_ce(logp[strict_end[aligned]], rel_base[aligned], own_base[aligned])
            )
        if self.outside:
            strict_terms.append(self._soft_ce(logp[strict], rel_base, own_base))
        if strict_terms:
            terms["strict"] = torch.stack(strict_terms).mean()
        att = []
        seq = torch.arange(x.shape[1])
        earlier = (seq[None, :] >= first[three, None]) & (seq[None, :] < last[three, None])
        for layer, h in self.composition:
            p = saved[layer][three, h, last[three]]  # rows x key positions
            att.append(-torch.log((p * earlier).sum(-1) + EPS).mean())
        for layer, h in self.extraction:
            p = saved[layer][three, h, end[three], last[three]]
            att.append(-torch.log(p + EPS).mean())
        if att:
            terms["attention"] = torch.stack(att).mean()
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_total(self.spec, terms)
