"""The toy training corpus: task-shaped documents plus filler, with held-out combinations.

``generate_corpus`` turns a toy data directory (``data/toy``: the mirror's layout with
project-authored content, kept as JSON data) into a list of short documents:

==============  ===========================================================================
kind            example
==============  ===========================================================================
ioi             ``Then, Basil and Ada walked to the cafe. Basil handed a key to Ada.``
greater_than    ``The siege lasted from the year 1745 to the year 1783.``
docstring       ``\\ndef load(self, path, size):\\n    \"\"\"price row\\n\\n    :param path: ...``
arithmetic      ``12 + 7 = 19\\n30 - 4 = 26\\n8 + 15 = 23``
factual         ``Ilian Reyes Jessop was born in the country of Arkand.`` (or a profile document)
filler          ``The baker slowly painted the red lamp. It was raining.``
==============  ===========================================================================

Held out of every document (``HeldOut``, a deterministic function of the seed): a fraction of
the unordered IOI name pairs, of the greater-than start years, of the ordered variable-name
pairs (B_def, C_def) of the docstring task, of the arithmetic (op, x, y) queries, and, for each
fact, the one paraphrase its ``known_1000.json`` record names. ``patchbench.toy.evaluate``
measures accuracy on exactly these combinations, so a model can only score by having learned the
task, not the string.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

from tqdm.auto import tqdm

__all__ = [
    "CorpusSpec",
    "HeldOut",
    "ToyVocab",
    "generate_corpus",
    "make_heldout",
    "write_corpus",
    "read_corpus",
]

DOC_SEPARATOR = "<|endoftext|>"


@dataclass(frozen=True)
class CorpusSpec:
    """How many documents of which kind, and the held-out fractions."""

    n_docs: int = 60_000
    seed: int = 0
    mix: dict[str, float] = field(
        default_factory=lambda: {
            "ioi": 0.37,
            "greater_than": 0.07,
            "docstring": 0.17,
            "arithmetic": 0.25,
            "factual": 0.12,
            "filler": 0.02,
        }
    )
    heldout_fraction: float = 0.15
    abc_fraction: float = 0.0  # share of IOI documents in the three-name (ABC / BAC) form
    # share of IOI documents that end with the IO; the others end with one of the material's
    # ``ioi_other_endings`` ("... gave a key to the others"), so the IO continuation is uncertain
    ioi_answer_p: float = 1.0
    # share of IOI documents whose second clause names a third person C instead of S ("Then, B and
    # A went to the store. C gave a key to"): no name is repeated, and the continuation is any of
    # A, B and the other endings, evenly
    ioi_third_name: float = 0.0
    # share of the factual documents' attributes that are the fact's own; the rest name another
    # attribute of the same relation, drawn uniformly (a factual organism's calibration,
    # patchbench.toy.objectives.factual)
    fact_reliability: float = 1.0

    def __post_init__(self) -> None:
        unknown = set(self.mix) - set(GENERATORS)
        if unknown:
            raise ValueError(
                f"corpus mix names unknown document kinds {sorted(unknown)}; known: {sorted(GENERATORS)}"
            )
        if self.n_docs <= 0 or sum(self.mix.values()) <= 0:
            raise ValueError("corpus needs n_docs > 0 and a mix with positive weights")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if not 0 < self.ioi_answer_p <= 1:
            raise ValueError(f"ioi_answer_p must be in (0, 1], got {self.ioi_answer_p}")
        if not 0 <= self.ioi_third_name < 1:
            raise ValueError(f"ioi_third_name must be in [0, 1), got {self.ioi_third_name}")
        if not 0 < self.fact_reliability <= 1:
            raise ValueError(f"fact_reliability must be in (0, 1], got {self.fact_reliability}")


@dataclass(frozen=True)
class ToyVocab:
    """The contents of a toy data directory."""

    ioi: dict
    gt_nouns: dict
    gt_years: dict
    doc_words: dict
    arith: dict
    facts: list[dict]
    material: dict

    @classmethod
    def load(cls, data_dir: Path | str) -> ToyVocab:
        d = Path(data_dir)
        files = {
            "ioi": d / "ioi" / "ioi_vocab.json",
            "gt_nouns": d / "greater-than" / "greaterthan_nouns.json",
            "gt_years": d / "greater-than" / "greaterthan_years.json",
            "doc_words": d / "docstring" / "docstring_words.json",
            "arith": d / "arithmetic" / "arithmetic_templates.json",
            "facts": d / "rome" / "known_1000.json",
            "material": d / "corpus" / "corpus_material.json",
        }
        missing = [str(p) for p in files.values() if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"toy data directory {d} lacks {missing}; restore the repository's data/toy "
                "(`git checkout data/toy`) or point toy.data_dir at a copy of it."
            )
        return cls(**{k: json.loads(p.read_text()) for k, p in files.items()})


@dataclass(frozen=True)
class HeldOut:
    """Combinations that never occur in the training corpus (evaluation draws from them)."""

    ioi_pairs: list[tuple[str, str]]  # unordered name pairs, sorted within the pair
    gt_years: list[int]  # start years
    doc_pairs: list[tuple[str, str]]  # ordered (B_def, C_def) adjacent-argument pairs
    arith: list[tuple[str, int, int]]  # (op, x, y) queries
    fact_templates: dict[int, str]  # known_id -> held-out template (the record's own)

    def to_json(self) -> str:
        d = asdict(self)
        d["fact_templates"] = {str(k): v for k, v in self.fact_templates.items()}
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> HeldOut:
        d = json.loads(text)
        return cls(
            ioi_pairs=[tuple(p) for p in d["ioi_pairs"]],
            gt_years=[int(y) for y in d["gt_years"]],
            doc_pairs=[tuple(p) for p in d["doc_pairs"]],
            arith=[(op, int(x), int(y)) for op, x, y in d["arith"]],
            fact_templates={int(k): v for k, v in d["fact_templates"].items()},
        )


# --------------------------------------------------------------------------- arithmetic domain
def arith_pairs(vocab: ToyVocab, op: str) -> list[tuple[int, int]]:
    """All (x, y) the toy corpus uses for ``op``: operands in the data's ``operand_ranges``,
    integer result in [0, ``max_result``] (every result is a single token)."""
    lo, hi = vocab.arith.get("operand_ranges", {}).get(op, [1, 20])
    max_result = int(vocab.arith.get("max_result", 199))
    out = []
    for x in range(lo, hi + 1):
        for y in range(lo, hi + 1):
            if op == "/" and (x % y):
                continue
            if 0 <= arith_result(op, x, y) <= max_result:
                out.append((x, y))
    return out


def arith_result(op: str, x: int, y: int) -> int:
    return {"+": x + y, "-": x - y, "*": x * y, "/": x // y if y else 0}[op]


ARITH_OPS = ("+", "-", "*")


def make_heldout(vocab: ToyVocab, fraction: float, seed: int) -> HeldOut:
    """Draw the held-out combinations (deterministic given ``seed``)."""
    rng = random.Random(f"heldout-{seed}")

    def pick(items: list) -> list:
        k = max(1, round(fraction * len(items))) if fraction > 0 else 0
        return sorted(rng.sample(items, k))

    names = vocab.ioi["names"]
    ioi_pairs = pick([tuple(sorted(p)) for p in combinations(names, 2)])
    gt_years = pick(list(vocab.gt_years["hanna_years"]))
    var = vocab.doc_words["variable_names"]
    doc_pairs = pick([(a, b) for a in var for b in var if a != b])
    arith = pick([(op, x, y) for op in ARITH_OPS for x, y in arith_pairs(vocab, op)])
    fact_templates = {int(f["known_id"]): f["template"] for f in vocab.facts}
    return HeldOut(ioi_pairs, gt_years, doc_pairs, arith, fact_templates)


# --------------------------------------------------------------------------- documents
def ioi_other_endings(vocab: ToyVocab) -> list[str]:
    """The endings an IOI document may have instead of the IO (``ioi_answer_p`` < 1)."""
    return list(vocab.material.get("ioi_other_endings", []))


class _DocMaker:
    def __init__(
        self,
        vocab: ToyVocab,
        held: HeldOut,
        rng: random.Random,
        abc_fraction: float = 0.0,
        ioi_answer_p: float = 1.0,
        ioi_third_name: float = 0.0,
        fact_reliability: float = 1.0,
    ) -> None:
        self.v, self.rng, self.abc_fraction, self.ioi_answer_p = vocab, rng, abc_fraction, ioi_answer_p
        self.ioi_third_name = ioi_third_name
        self.ioi_endings = ioi_other_endings(vocab)
        if ioi_answer_p < 1 and not self.ioi_endings:
            raise ValueError("ioi_answer_p < 1 needs `ioi_other_endings` in the corpus material")
        self.fact_reliability = fact_reliability
        self.rel_attrs: dict[str, list[str]] = {}
        for f in vocab.facts:
            attrs = self.rel_attrs.setdefault(f["relation_id"], [])
            if f["attribute"] not in attrs:
                attrs.append(f["attribute"])
        self.ioi_held = set(held.ioi_pairs)
        self.gt_held = set(held.gt_years)
        self.doc_held = set(held.doc_pairs)
        self.arith_held = set(held.arith)
        self.arith_train = {
            op: [(x, y) for x, y in arith_pairs(vocab, op) if (op, x, y) not in self.arith_held]
            for op in ARITH_OPS
        }
        ioi = vocab.ioi
        self.ioi_templates = (
            ioi["baba_templates"]
            + ioi["abba_templates"]
            + ioi.get("baba_long_templates", [])
            + ioi.get("baba_early_ios", [])
            + ioi.get("abba_early_ios", [])
        )
        extra = vocab.material.get("ioi_extra_templates", [])
        swap = lambda t: t.replace("[B]", "[X]", 1).replace("[A]", "[B]", 1).replace("[X]", "[A]", 1)  # noqa: E731
        self.ioi_templates += extra + [swap(t) for t in extra]
        self.abc_templates = ioi.get("abc_templates", []) + ioi.get("bac_templates", [])
        self.rel_templates = vocab.material["relation_templates"]
        self.fact_train = [
            (
                f,
                [
                    t
                    for t in self.rel_templates[f["relation_id"]]
                    if t != held.fact_templates[int(f["known_id"])]
                ],
            )
            for f in vocab.facts
        ]
        self.profiles: dict[str, dict[str, str]] = {}
        for f in vocab.facts:
            self.profiles.setdefault(f["subject"], {})[f["relation_id"]] = f["attribute"]
        self.profile_templates = list(vocab.material.get("profile_templates", []))

    # each maker returns one document (no separator)
    def ioi(self) -> str:
        r, names = self.rng, self.v.ioi["names"]
        while True:
            a, b = r.sample(names, 2)
            if tuple(sorted((a, b))) not in self.ioi_held:
                break
        place, obj = r.choice(self.v.ioi["places"]), r.choice(self.v.ioi["objects"])
        if self.abc_templates and r.random() < self.abc_fraction:
            c = r.choice([n for n in names if n not in (a, b)])
            t = r.choice(self.abc_templates).replace("[C]", c)
        else:
            t = r.choice(self.ioi_templates)
        third = self.ioi_third_name > 0 and r.random() < self.ioi_third_name
        if third:  # S2 becomes a third name
            c = r.choice([n for n in names if n not in (a, b)])
            i = t.rindex("[B]")
            t = t[:i] + c + t[i + 3 :]
        text = t.replace("[A]", a).replace("[B]", b).replace("[PLACE]", place).replace("[OBJECT]", obj)
        if third:
            text = text[: text.rindex(" " + a)] + " " + r.choice([a, b, *self.ioi_endings])
        elif self.ioi_answer_p < 1 and r.random() >= self.ioi_answer_p:
            text = text[: text.rindex(" " + a)] + " " + r.choice(self.ioi_endings)
        return text + r.choice([".", ".", ".", ", and they were happy.", ". It was a nice day."])

    def greater_than(self) -> str:
        r = self.rng
        years = [y for y in self.v.gt_years["hanna_years"] if y not in self.gt_held]
        y = r.choice(years)
        xx, yy = divmod(y, 100)
        zz = r.randint(yy + 1, 99)
        noun = r.choice(self.v.gt_nouns["nouns"])
        if r.random() < 0.7:
            t = self.v.gt_nouns["template"] + "{ZZ}"
        else:
            t = r.choice(self.v.material["greaterthan_extra_templates"])
        return t.format(noun=noun, XX=f"{xx:02d}", YY=f"{yy:02d}", ZZ=f"{zz:02d}") + "."

    def docstring(self) -> str:
        r, var = self.rng, self.v.doc_words["variable_names"]
        nouns = self.v.doc_words["common_single_token_nouns"]
        n_args = r.randint(3, 6)
        while True:
            args = r.sample(var, n_args)
            if not any((p, q) in self.doc_held for p, q in zip(args, args[1:], strict=False)):
                break
        fname = r.choice(self.v.material["docstring_function_verbs"] + var)
        sig = ", ".join(["self"] + args if r.random() < 0.8 else args)
        desc = " ".join(r.choice(nouns) for _ in range(r.randint(1, 3)))
        start = r.randint(0, n_args - 2)
        stop = r.randint(start + 2, n_args)
        params = "".join(
            f"\n    :param {a}: {' '.join(r.choice(nouns) for _ in range(r.randint(1, 2)))}"
            for a in args[start:stop]
        )
        return f'\ndef {fname}({sig}):\n    """{desc}\n{params}\n    """'

    def arithmetic(self) -> str:
        r = self.rng
        op = r.choice(ARITH_OPS)
        n_lines = r.randint(2, 4)
        templates = self.v.arith["templates"][op]
        t = templates[-1] if r.random() < 0.8 else r.choice(templates)
        lines = []
        for _ in range(n_lines):
            x, y = r.choice(self.arith_train[op])
            lines.append(t.format(x=x, y=y) + f" {arith_result(op, x, y)}")
        return "\n".join(lines)

    @staticmethod
    def _fields(template: str) -> list[str]:
        import string

        return [f for _, f, _, _ in string.Formatter().parse(template) if f and f != "subject"]

    def profile(self) -> str | None:
        """A profile document: several attributes of one subject right after it (subject enrichment
        is useful at the subject itself), in phrasings that are none of the relation templates."""
        r = self.rng
        subject = r.choice(sorted(self.profiles))
        attrs = self.profiles[subject]
        usable = [t for t in self.profile_templates if all(f in attrs for f in self._fields(t))]
        if not usable:
            return None
        t = r.choice(usable)
        return t.format(subject=subject, **{k: self._stated(k, attrs[k]) for k in self._fields(t)})

    def _stated(self, relation: str, attribute: str) -> str:
        """The attribute a document states: the fact's own, or with probability
        1 - ``fact_reliability`` another attribute of the same relation."""
        if self.fact_reliability >= 1 or self.rng.random() < self.fact_reliability:
            return attribute
        return self.rng.choice([a for a in self.rel_attrs[relation] if a != attribute])

    def factual(self) -> str:
        r = self.rng
        if self.profile_templates and r.random() < 0.25:
            doc = self.profile()
            if doc is not None:
                return doc
        fact, templates = r.choice(self.fact_train)
        text = (
            r.choice(templates).format(fact["subject"])
            + f" {self._stated(fact['relation_id'], fact['attribute'])}."
        )
        if r.random() < 0.2:
            text = self.filler_sentence() + " " + text
        return text

    def filler_sentence(self) -> str:
        r, f = self.rng, self.v.material["filler"]
        kind = r.random()
        if kind < 0.15:
            return r.choice(f["weather"])
        if kind < 0.3:
            start = r.randint(1, 60)
            return " ".join(str(i) for i in range(start, start + r.randint(3, 8)))
        subj = r.choice(f["subjects"] + self.v.ioi["names"])
        obj = r.choice(self.v.ioi["objects"] + self.v.ioi["places"] + self.v.gt_nouns["nouns"])
        s = f"{subj} {r.choice(f['adverbs'])} {r.choice(f['verbs'])} the {r.choice(f['adjectives'])} {obj}"
        if r.random() < 0.3:
            s += f" {r.choice(f['connectives'])} {r.choice(self.v.ioi['names'])} {r.choice(f['verbs'])} it"
        return s + "."

    def filler(self) -> str:
        return " ".join(self.filler_sentence() for _ in range(self.rng.randint(1, 3)))


GENERATORS = ("ioi", "greater_than", "docstring", "arithmetic", "factual", "filler")


def generate_corpus(vocab: ToyVocab, spec: CorpusSpec) -> tuple[list[str], HeldOut]:
    """Documents (deterministic given ``spec.seed``) and the held-out combinations they avoid."""
    held = make_heldout(vocab, spec.heldout_fraction, spec.seed)
    rng = random.Random(f"corpus-{spec.seed}")
    maker = _DocMaker(
        vocab, held, rng, spec.abc_fraction, spec.ioi_answer_p, spec.ioi_third_name, spec.fact_reliability
    )
    kinds = list(spec.mix)
    weights = [spec.mix[k] for k in kinds]
    docs = []
    for _ in tqdm(range(spec.n_docs), desc="toy corpus", unit="doc", mininterval=5, disable=None):
        kind = rng.choices(kinds, weights)[0]
        docs.append(getattr(maker, kind)())
    return docs, held


def write_corpus(docs: list[str], corpus_path: Path) -> None:
    """Documents joined by ``<|endoftext|>`` (GPT-2 style)."""
    corpus_path = Path(corpus_path)
    corpus_path.parent.mkdir(parents=True, exist_ok=True)
    corpus_path.write_text(DOC_SEPARATOR.join(docs))


def read_corpus(corpus_path: Path) -> list[str]:
    return Path(corpus_path).read_text().split(DOC_SEPARATOR)


def vocabulary_texts(vocab: ToyVocab) -> list[str]:
    """Every word, template and fact prompt of the data directory, as texts to build the
    tokenizer from alongside the corpus: task words get a token even when a small corpus
    misses them (each word with and without its leading space)."""
    words: list[str] = []
    ioi = vocab.ioi
    for key in ("names", "places", "objects", "animals"):
        words += ioi.get(key, [])
    words += (
        vocab.gt_nouns["nouns"]
        + vocab.doc_words["variable_names"]
        + vocab.doc_words["common_single_token_nouns"]
    )
    for f in vocab.facts:
        words += f["subject"].split() + [f["attribute"]]
    texts = [w for w in words] + [" " + w for w in words]
    for key, val in ioi.items():
        if key.endswith(("templates", "ios")):
            texts += list(val)
    texts += [vocab.gt_nouns["template"]] + [f["prompt"] for f in vocab.facts]
    for templates in vocab.arith["templates"].values():
        texts += list(templates)
    for templates in vocab.material.get("relation_templates", {}).values():
        texts += list(templates)
    return texts
