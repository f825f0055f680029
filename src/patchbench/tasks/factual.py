"""Factual recall with PairedFacts, rebuilt by the rule of the paper's App. B.

The paper's 145 PairedFacts pairs are not available; they are rebuilt from ROME's known facts
(``rome/known_1000.json``; CounterFact's ``rome/counterfact.json`` too when present):

- a fact is usable when its answer " attribute" is one token under the tokenizer, its prompt
  decodes back to itself (no unknown tokens) and its subject is found in its prompt (ROME ``find_token_range``: character-level match);
- two facts pair when their prompts have equal token length, their answers are distinct
  tokens, their subjects differ and (inference, option ``same_relation``) they share the
  relation. ``match="template"`` further requires that the prompts differ only inside equally
  placed subject spans (a pure subject swap);
- facts are paired by a maximum matching inside each (relation, length) group, seeded;
- each pair gives two rows: each prompt is once the clean prompt with the other as its STR
  corruption (r' = the other's answer).

GN noises every subject token of the clean prompt. Named positions: subject_first,
subject_last (ROME's "last subject token" = end - 1; the middle subject tokens are
subject_first+1 .. subject_last-1) and END (last token). BOS: ROME feeds GPT-2 without one,
which is the default here (``prepend_bos=False``); TransformerLens would prepend one.
``n_prompts`` caps the rows (pairs are kept whole); ``None`` keeps every pair.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from patchbench.prompts import PromptSet
from patchbench.tasks.common import (
    TaskDataError,
    bos_id,
    decode,
    encode,
    find_token_range,
    load_task_json,
    prompt_set,
    rng_for,
    single_token_id,
)

__all__ = ["KNOWN_FILE", "COUNTERFACT_FILE", "Fact", "build_factual", "load_facts", "pair_facts"]

log = logging.getLogger(__name__)

KNOWN_FILE = "rome/known_1000.json"
COUNTERFACT_FILE = "rome/counterfact.json"
MATCH_MODES = ("length", "template")


@dataclass(frozen=True)
class Fact:
    """One usable fact under a tokenizer: prompt ids, answer id and subject token span."""

    source: str
    fact_id: int
    relation: str
    subject: str
    attribute: str
    prompt: str
    ids: tuple[int, ...]
    answer: int
    span: tuple[int, int]

    def outside_subject(self) -> tuple:
        s, e = self.span
        return (s, e, self.ids[:s], self.ids[e:])


def _records(data_dir: str | Path) -> list[tuple[str, int, str, str, str, str]]:
    """(source, id, relation, subject, attribute, prompt) from known_1000 and CounterFact."""
    out = []
    for r in load_task_json(data_dir, KNOWN_FILE):
        out.append(
            ("known_1000", int(r["known_id"]), r["relation_id"], r["subject"], r["attribute"], r["prompt"])
        )
    if (Path(data_dir) / COUNTERFACT_FILE).exists():
        for r in load_task_json(data_dir, COUNTERFACT_FILE):
            rw = r["requested_rewrite"]
            out.append(
                (
                    "counterfact",
                    int(r["case_id"]),
                    rw["relation_id"],
                    rw["subject"],
                    rw["target_true"]["str"],
                    rw["prompt"].format(rw["subject"]),
                )
            )
    return out


def load_facts(tokenizer, data_dir: str | Path, prepend_bos: bool = False) -> list[Fact]:
    """Facts whose answer is one token and whose subject is located in the prompt."""
    prefix = [bos_id(tokenizer)] if prepend_bos else []
    facts = []
    for source, fid, rel, subject, attribute, prompt in _records(data_dir):
        answer = single_token_id(tokenizer, " " + attribute.strip())
        if answer is None or subject not in prompt:
            continue
        body = encode(tokenizer, prompt)
        if decode(tokenizer, body) != prompt:
            continue  # not faithfully tokenisable (e.g. unknown words of a small vocabulary)
        s, e = find_token_range(tokenizer, body, subject)
        facts.append(
            Fact(
                source,
                fid,
                rel,
                subject,
                attribute,
                prompt,
                tuple(prefix + body),
                answer,
                (s + len(prefix), e + len(prefix)),
            )
        )
    return facts


def pair_facts(
    facts: list[Fact], seed: int = 0, *, same_relation: bool = True, match: str = "length"
) -> list[tuple[Fact, Fact]]:
    """Maximum matching of facts into PairedFacts pairs (see the module docstring)."""
    if match not in MATCH_MODES:
        raise ValueError(f"unknown match mode {match!r}; choose one of {MATCH_MODES}")
    rng = rng_for(seed)
    groups: dict[tuple, list[Fact]] = defaultdict(list)
    for f in facts:
        key: tuple = (len(f.ids),)
        if same_relation:
            key += (f.relation,)
        if match == "template":
            key += f.outside_subject()
        groups[key].append(f)
    pairs = []
    for key in sorted(groups):
        by_answer: dict[int, list[Fact]] = defaultdict(list)
        for f in groups[key]:
            by_answer[f.answer].append(f)
        classes = [by_answer[a] for a in sorted(by_answer)]
        for c in classes:
            order = rng.permutation(len(c))
            c[:] = [c[i] for i in order]
        # repeatedly pair the two largest answer classes: a maximum matching when answers must differ
        while True:
            classes = [c for c in classes if c]
            if len(classes) < 2:
                break
            tie = rng.permutation(len(classes))
            classes = [
                classes[i] for i in sorted(range(len(classes)), key=lambda i: (-len(classes[i]), tie[i]))
            ]
            a, b = classes[0].pop(), classes[1].pop()
            if a.subject == b.subject:
                continue  # same subject, different answers: not a corruption of the subject
            pairs.append((a, b))
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def build_factual(
    tokenizer,
    data_dir: str | Path,
    n_prompts: int | None = None,
    seed: int = 0,
    *,
    prepend_bos: bool = False,
    same_relation: bool = True,
    match: str = "length",
) -> PromptSet:
    """PairedFacts prompt set: two rows per pair, each prompt the other's STR corruption."""
    facts = load_facts(tokenizer, data_dir, prepend_bos)
    pairs = pair_facts(facts, seed, same_relation=same_relation, match=match)
    log.info("PairedFacts: %d usable facts, %d pairs (%d prompts)", len(facts), len(pairs), 2 * len(pairs))
    if n_prompts:
        pairs = pairs[: max(1, n_prompts // 2)]
    if not pairs:
        raise TaskDataError(
            "PairedFacts: no pair of facts has equal token length and distinct single-token answers"
        )
    clean, corrupted, answers, wrong, noise, meta = [], [], [], [], [], []
    pos: dict[str, list[int]] = {"subject_first": [], "subject_last": [], "END": []}
    for pair_id, (a, b) in enumerate(pairs):
        for direction, (x, y) in enumerate(((a, b), (b, a))):
            s, e = x.span
            clean.append(list(x.ids))
            corrupted.append(list(y.ids))
            answers.append([x.answer])
            wrong.append([y.answer])
            noise.append(list(range(s, e)))
            pos["subject_first"].append(s)
            pos["subject_last"].append(e - 1)
            pos["END"].append(len(x.ids) - 1)
            meta.append(
                {
                    "text": x.prompt,
                    "corrupted_text": y.prompt,
                    "subject": x.subject,
                    "attribute": x.attribute,
                    "relation_id": x.relation,
                    "template": x.relation,  # prompts of one relation share its template (resample, mean)
                    "source": x.source,
                    "fact_id": x.fact_id,
                    "pair_id": pair_id,
                    "direction": direction,
                    "partner_subject": y.subject,
                    "partner_attribute": y.attribute,
                    "partner_fact_id": y.fact_id,
                    "partner_subject_first": y.span[0],
                    "partner_subject_last": y.span[1] - 1,
                    # the subject tokenised alone, no BOS: what ROME's collect_embedding_std uses for sigma
                    "subject_ids": encode(tokenizer, x.subject),
                }
            )
    return prompt_set(
        "factual", tokenizer, clean=clean, corrupted=corrupted, answers=answers, wrong=wrong, noise=noise,
        positions=pos, meta=meta, variant=f"match={match},same_relation={same_relation},bos={prepend_bos}",
    )  # fmt: skip
