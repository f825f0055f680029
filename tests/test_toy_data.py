"""data/toy: the toy suite's vocabulary (data, not code) is well-formed, mirror-shaped, and the corpus holds out what it says."""

from __future__ import annotations

import json
from collections import defaultdict

from patchbench.toy.corpus import CorpusSpec, HeldOut, ToyVocab, generate_corpus

MIRROR_KEYS = {
    "ioi/ioi_vocab.json": {
        "names",
        "places",
        "objects",
        "baba_templates",
        "abba_templates",
        "abc_templates",
        "bac_templates",
        "baba_long_templates",
        "baba_late_ios",
        "baba_early_ios",
        "abba_late_ios",
        "abba_early_ios",
        "verbs",
        "animals",
        "prefixes",
    },
    "greater-than/greaterthan_nouns.json": {"nouns", "template", "corrupt_YY"},
    "greater-than/greaterthan_years.json": {"_note", "hanna_years", "acdc_years"},
    "docstring/docstring_words.json": {"variable_names", "common_single_token_nouns"},
}
FACT_FIELDS = {"known_id", "subject", "attribute", "template", "prediction", "prompt", "relation_id"}


def _swap_first(t: str, a: str, b: str) -> str:
    """Swap the first ``a`` and the first ``b`` placeholder (the BABA -> ABBA rule of the toy data)."""
    return t.replace(a, "[X]", 1).replace(b, a, 1).replace("[X]", b, 1)


def test_toy_data_is_well_formed(root):
    """The committed data/toy is the source of truth: its derived lists follow their rules, and every
    word the toy tokenizer must keep whole is a single letter-only word (years: four digits)."""
    data = root / "data" / "toy"
    load = lambda rel: json.loads((data / rel).read_text())  # noqa: E731
    ioi = load("ioi/ioi_vocab.json")
    abba = [_swap_first(t, "[B]", "[A]") for t in ioi["baba_templates"]]
    assert ioi["abba_templates"] == abba
    assert ioi["bac_templates"] == [_swap_first(t, "[A]", "[B]") for t in ioi["abc_templates"]]
    assert ioi["baba_late_ios"] == ioi["baba_templates"][:8] and ioi["abba_late_ios"] == abba[:8]
    assert ioi["abba_early_ios"] == [_swap_first(t, "[B]", "[A]") for t in ioi["baba_early_ios"]]
    for long, short in zip(ioi["baba_long_templates"], ioi["baba_templates"], strict=True):
        assert long.startswith("Then in the evening, ") and long.endswith(short.split(", ", 1)[-1]), long
    words = {
        "names": ioi["names"],
        "places": ioi["places"],
        "objects": ioi["objects"],
        "animals": ioi["animals"],
        "nouns": load("greater-than/greaterthan_nouns.json")["nouns"],
        **load("docstring/docstring_words.json"),
    }
    for kind, ws in words.items():
        assert ws and len(set(ws)) == len(ws), f"{kind}: empty or repeated"
        assert all(w.isalpha() for w in ws), f"{kind}: {[w for w in ws if not w.isalpha()]}"
    years = load("greater-than/greaterthan_years.json")
    for key, centuries in (("hanna_years", range(10, 19)), ("acdc_years", range(11, 18))):
        assert years[key] == [c * 100 + yy for c in centuries for yy in range(2, 99)], key
    arith = load("arithmetic/arithmetic_templates.json")
    assert set(arith["operand_ranges"]) == set(arith["templates"]) == set("+-*/")
    assert all(1 <= lo < hi <= arith["max_result"] for lo, hi in arith["operand_ranges"].values())
    facts = load("rome/known_1000.json")
    paraphrases = load("corpus/corpus_material.json")["relation_templates"]
    assert [f["known_id"] for f in facts] == list(range(len(facts)))
    for f in facts:
        assert f["template"] in paraphrases[f["relation_id"]], f
        assert f["attribute"].isalpha() and f["prediction"] == f" {f['attribute']}.", f
        assert all(w.isalpha() for w in f["subject"].split()), f


def test_mirror_layout_and_keys(root):
    data = root / "data" / "toy"
    for rel, keys in MIRROR_KEYS.items():
        assert set(json.loads((data / rel).read_text())) == keys, rel
    arith = json.loads((data / "arithmetic" / "arithmetic_templates.json").read_text())
    assert {"templates", "operator_word_indices", "shot_format"} <= set(arith)
    for op in "+-*/":
        assert len(arith["templates"][op]) == 6 and arith["templates"][op][5] == f"{{x}} {op} {{y}} ="
    ioi = json.loads((data / "ioi" / "ioi_vocab.json").read_text())
    for t in ioi["baba_templates"] + ioi["abba_templates"]:
        assert t.endswith(" [A]") and t.count("[B]") == 2 and t.count("[A]") == 2, t
    facts = json.loads((data / "rome" / "known_1000.json").read_text())
    assert all(set(f) == FACT_FIELDS for f in facts)
    assert len({(f["subject"], f["relation_id"]) for f in facts}) == len(facts)
    assert len({f["known_id"] for f in facts}) == len(facts)
    assert all(f["prompt"] == f["template"].format(f["subject"]) for f in facts)
    # PairedFacts needs equal-length pairs with distinct answers in every relation
    cells = defaultdict(set)
    for f in facts:
        cells[(f["relation_id"], f["template"], len(f["subject"].split()))].add(f["attribute"])
    for rel in {f["relation_id"] for f in facts}:
        assert sum(len(a) >= 2 for (r, _, _), a in cells.items() if r == rel) >= 4, rel


def test_facts_need_the_whole_subject(root):
    """Subjects share first, middle and last words in different combinations: no single word of a
    subject identifies it, so a model must compose the subject before recalling its attributes."""
    facts = json.loads((root / "data" / "toy" / "rome" / "known_1000.json").read_text())
    subjects = sorted({f["subject"] for f in facts})
    words = [s.split() for s in subjects]
    assert all(len(w) == 3 for w in words) and len(subjects) >= 60
    for i in range(3):
        owners = defaultdict(set)
        for s, w in zip(subjects, words, strict=True):
            owners[w[i]].add(s)
        assert min(len(v) for v in owners.values()) >= 4, i  # every word is shared by 4+ subjects
    # every subject has every relation, and attributes are not a function of any single word
    relations = {f["relation_id"] for f in facts}
    attr = {(f["subject"], f["relation_id"]): f["attribute"] for f in facts}
    assert len(attr) == len(subjects) * len(relations)
    for i in range(3):
        for rel in relations:
            by_word = defaultdict(set)
            for s, w in zip(subjects, words, strict=True):
                by_word[w[i]].add(attr[(s, rel)])
            assert max(len(v) for v in by_word.values()) >= 3, (i, rel)


def test_corpus_is_deterministic_and_avoids_held_out_combinations(root):
    vocab = ToyVocab.load(root / "data" / "toy")
    spec = CorpusSpec(n_docs=3000, seed=1)
    docs, held = generate_corpus(vocab, spec)
    docs2, held2 = generate_corpus(vocab, spec)
    assert docs == docs2 and held.to_json() == held2.to_json()
    assert HeldOut.from_json(held.to_json()) == held
    assert generate_corpus(vocab, CorpusSpec(n_docs=3000, seed=2))[0] != docs
    text = "\n".join(docs)
    kinds = defaultdict(int)
    for d in docs:
        if " handed " in d or " gave " in d or " wrote to " in d:
            kinds["ioi"] += 1
    assert kinds["ioi"] > 500
    # no fact is ever stated with its evaluation paraphrase
    for f in vocab.facts:
        assert f["prompt"] + " " not in text, f["prompt"]
    # held-out start years never start a greater-than sentence
    for y in held.gt_years[:40]:
        assert f"from the year {y} " not in text and f"from {y} " not in text
    # held-out arithmetic queries never occur as a line
    lines = set(text.split("\n"))
    for op, x, y in held.arith[:200]:
        assert not any(line.startswith(f"{x} {op} {y} =") for line in lines)
    # held-out name pairs never meet in an IOI document
    held_pairs = set(held.ioi_pairs)
    names = set(vocab.ioi["names"])
    for d in docs:
        if " handed " in d or " gave " in d:
            present = sorted({w.strip(".,") for w in d.split()} & names)
            if len(present) == 2:
                assert tuple(present) not in held_pairs, d
