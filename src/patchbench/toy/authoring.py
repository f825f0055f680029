"""The toy suite's project-authored vocabulary, and the code that writes it to ``data/toy/``.

Every word list, template and fact in this module was written for this project; nothing is
copied from the paper suite's data mirror. ``write_data_dir`` renders the lists into the same
layout and JSON key structure as the mirror (``ioi/ioi_vocab.json``,
``greater-than/greaterthan_{nouns,years}.json``, ``docstring/docstring_words.json``,
``arithmetic/arithmetic_templates.json``, ``rome/known_1000.json``), so one task generator serves
both suites, plus a ``corpus/`` folder with the extra material only the toy corpus uses (filler
grammar, paraphrases of the fact relations, extra IOI-shaped templates).

Regenerate the committed files with ``python -m patchbench.toy.authoring data/toy``; the output
is a deterministic function of this module.

Design constraints (checked by ``tests/test_toy_data.py`` under the toy tokenizer):
names, places, objects, nouns, variable names and fact attributes are single letter-only words
(one token each, with and without a leading space); years are four digits (``" 1745"`` splits
into ``[" 17", "45"]``); fact subjects are 1 to 4 words, unique, and each relation has many
subjects of every length, so equal-length pairs with distinct answers exist.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

__all__ = ["write_data_dir", "build_facts", "RELATIONS"]

# --------------------------------------------------------------------------- IOI
NAMES = [
    "Ada",
    "Basil",
    "Cora",
    "Dorian",
    "Elsa",
    "Felix",
    "Greta",
    "Hugo",
    "Iris",
    "Jonas",
    "Kira",
    "Leon",
    "Mila",
    "Nico",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Silas",
    "Tilda",
    "Ugo",
    "Vera",
    "Wren",
    "Xena",
    "Yara",
    "Zeno",
    "Anya",
    "Bruno",
    "Clara",
    "Dante",
    "Edith",
    "Fabio",
    "Gemma",
    "Hector",
    "Ines",
    "Jasper",
    "Katja",
    "Lorenz",
    "Maren",
    "Nils",
    "Odile",
    "Piet",
    "Rhea",
    "Soren",
    "Thea",
    "Umberto",
    "Vito",
    "Wilma",
    "Yves",
    "Zora",
    "Arlo",
    "Bianca",
    "Cyril",
    "Delia",
    "Emil",
    "Flora",
    "Gustav",
    "Hilde",
    "Ivo",
    "Juno",
]

PLACES = [
    "market",
    "harbor",
    "library",
    "bakery",
    "station",
    "museum",
    "orchard",
    "stadium",
    "theater",
    "cafe",
    "beach",
    "office",
    "bridge",
    "castle",
    "farm",
    "temple",
]

OBJECTS = [
    "book",
    "lamp",
    "apple",
    "ticket",
    "key",
    "letter",
    "hat",
    "basket",
    "coin",
    "map",
    "candle",
    "flower",
    "scarf",
    "kite",
    "bottle",
    "drum",
]

# Each template ends with " to [A]" / " [A]": the prompt is the text without its last word.
BABA_TEMPLATES = [
    "Then, [B] and [A] walked to the [PLACE]. [B] handed a [OBJECT] to [A]",
    "Later, [B] and [A] spent the day at the [PLACE]. [B] handed a [OBJECT] to [A]",
    "Then, [B] and [A] were waiting at the [PLACE]. [B] chose to hand a [OBJECT] to [A]",
    "Then, [B] and [A] were planning a trip to the [PLACE]. [B] wanted to send a [OBJECT] to [A]",
    "Then, [B] and [A] had a short quarrel, and later [B] wrote to [A]",
    "After [B] and [A] walked to the [PLACE], [B] handed a [OBJECT] to [A]",
    "When [B] and [A] found a [OBJECT] at the [PLACE], [B] chose to hand it to [A]",
    "When [B] and [A] found a [OBJECT] at the [PLACE], [B] chose to hand the [OBJECT] to [A]",
    "While [B] and [A] were waiting at the [PLACE], [B] handed a [OBJECT] to [A]",
    "While [B] and [A] were driving to the [PLACE], [B] handed a [OBJECT] to [A]",
    "After the dinner, [B] and [A] walked to the [PLACE]. [B] handed a [OBJECT] to [A]",
    "Later, [B] and [A] walked to the [PLACE]. [B] handed a [OBJECT] to [A]",
    "Then, [B] and [A] had a short quarrel. Later [B] wrote to [A]",
    "The [PLACE] [B] and [A] walked to had a [OBJECT]. [B] handed it to [A]",
    "Neighbours [B] and [A] found a [OBJECT] at the [PLACE]. [B] handed it to [A]",
]

ABC_TEMPLATES = [
    "Then, [A], [B] and [C] walked to the [PLACE]. [B] and [C] handed a [OBJECT] to [A]",
    "Later [A], [B] and [C] walked to the [PLACE]. [B] and [C] handed a [OBJECT] to [A]",
    "When [A], [B] and [C] came to the [PLACE], [B] and [C] handed a [OBJECT] to [A]",
    "Neighbours [A], [B] and [C] walked to the [PLACE]. [B] and [C] handed a [OBJECT] to [A]",
]

LONG_PREFIX = "Then in the evening,"
EARLY_IO_TEMPLATES = [
    "Then [B] and [A] walked to the [PLACE], and [B] handed a [OBJECT] to [A]",
    "Then [B] and [A] spent the day at the [PLACE], and [B] handed a [OBJECT] to [A]",
    "Then [B] and [A] were waiting at the [PLACE], and [B] chose to hand a [OBJECT] to [A]",
    "Then [B] and [A] were planning a trip to the [PLACE], and [B] wanted to send a [OBJECT] to [A]",
    "Then [B] and [A] had a short quarrel, and later [B] wrote to [A]",
    "After [B] and [A] walked to the [PLACE], and [B] handed a [OBJECT] to [A]",
    "When [B] and [A] found a [OBJECT] at the [PLACE], and [B] chose to hand it to [A]",
    "When [B] and [A] found a [OBJECT] at the [PLACE], and [B] chose to hand the [OBJECT] to [A]",
]

VERBS = [" chose", " wanted", " said", " handed", " wrote"]
ANIMALS = ["otter", "heron", "badger", "lynx", "moose", "gecko", "toad", "owl", "crab", "wolf"]
PREFIXES = ["Later,", "After a quiet week, then,", "On a rainy morning,", "Then,", "Afterwards,"]

# Training-only IOI-shaped templates: more surface variety than the evaluation templates, so
# the model learns the name-moving rule instead of memorising fifteen sentences.
IOI_EXTRA_TEMPLATES = [
    "[B] and [A] met at the [PLACE]. [B] gave the [OBJECT] to [A]",
    "Yesterday [B] and [A] went to the [PLACE], and [B] lent a [OBJECT] to [A]",
    "At the [PLACE], [B] and [A] talked for hours. Then [B] showed a [OBJECT] to [A]",
    "[B] and [A] cleaned the [PLACE]. Afterwards [B] threw a [OBJECT] to [A]",
    "Once [B] and [A] visited the [PLACE], [B] sold a [OBJECT] to [A]",
    "In the morning [B] and [A] left the [PLACE]. [B] passed a [OBJECT] to [A]",
    "Since [B] and [A] worked at the [PLACE], [B] brought a [OBJECT] to [A]",
    "[B] and [A] sat near the [PLACE]. Soon [B] offered a [OBJECT] to [A]",
    "Today [B] and [A] painted the [PLACE], so [B] gave a [OBJECT] to [A]",
    "After lunch [B] and [A] ran to the [PLACE], where [B] mailed a [OBJECT] to [A]",
]

# --------------------------------------------------------------------------- greater-than
GT_NOUNS = [
    "war",
    "drought",
    "festival",
    "voyage",
    "siege",
    "reign",
    "expedition",
    "famine",
    "truce",
    "campaign",
    "dynasty",
    "rebellion",
    "exhibition",
    "tournament",
    "council",
    "trial",
    "plague",
    "winter",
    "boom",
    "crisis",
    "strike",
    "revival",
    "feud",
    "mission",
    "treaty",
    "empire",
    "monarchy",
    "alliance",
    "blockade",
    "occupation",
    "pilgrimage",
    "fair",
]
GT_TEMPLATE = "The {noun} lasted from the year {XX}{YY} to the year {XX}"
GT_EXTRA_TEMPLATES = [
    "The {noun} began in the year {XX}{YY} and ended in the year {XX}{ZZ}",
    "The {noun} ran from {XX}{YY} to {XX}{ZZ}",
    "From the year {XX}{YY} to the year {XX}{ZZ}, the {noun} went on",
]

# --------------------------------------------------------------------------- docstring
VARIABLE_NAMES = [
    "alpha",
    "count",
    "items",
    "path",
    "size",
    "mode",
    "width",
    "depth",
    "label",
    "color",
    "speed",
    "index",
    "token",
    "buffer",
    "weight",
    "limit",
    "source",
    "target",
    "prefix",
    "suffix",
    "offset",
    "scale",
    "radius",
    "height",
    "length",
    "rate",
    "level",
    "query",
    "config",
    "result",
    "output",
    "record",
    "entry",
    "option",
    "format",
    "handle",
    "stream",
    "cursor",
    "vector",
    "matrix",
    "node",
    "edge",
    "graph",
    "tree",
    "key",
    "state",
    "step",
    "shape",
    "field",
    "group",
    "parent",
    "child",
    "score",
    "bias",
    "delta",
    "gamma",
    "theta",
    "sigma",
    "tag",
    "unit",
]
DOC_NOUNS = [
    "price",
    "number",
    "table",
    "order",
    "user",
    "client",
    "server",
    "message",
    "request",
    "file",
    "image",
    "window",
    "button",
    "column",
    "row",
    "cell",
    "sheet",
    "page",
    "line",
    "word",
    "letter",
    "name",
    "title",
    "note",
    "list",
    "array",
    "map",
    "set",
    "pair",
    "range",
    "point",
    "circle",
    "square",
    "angle",
    "distance",
    "time",
    "date",
    "hour",
    "minute",
    "second",
    "day",
    "week",
    "month",
    "season",
    "model",
    "layer",
    "input",
    "loss",
    "batch",
    "epoch",
    "sample",
    "signal",
    "noise",
    "channel",
    "frame",
    "pixel",
    "sound",
    "voice",
    "text",
    "code",
    "error",
    "warning",
    "event",
    "task",
    "job",
    "worker",
    "thread",
    "process",
    "memory",
    "disk",
    "network",
    "packet",
    "port",
    "socket",
    "session",
    "account",
    "balance",
    "payment",
    "invoice",
    "tax",
    "product",
    "store",
    "cart",
    "item",
    "stock",
    "supply",
    "demand",
    "market",
    "trade",
    "deal",
    "plan",
    "goal",
    "rule",
    "policy",
    "law",
    "right",
    "claim",
    "case",
    "test",
    "check",
]
DOC_FUNC_VERBS = [
    "get",
    "set",
    "load",
    "save",
    "build",
    "parse",
    "check",
    "update",
    "merge",
    "split",
    "compute",
    "render",
    "fetch",
    "clean",
    "apply",
    "reset",
]

# --------------------------------------------------------------------------- arithmetic
ARITH_TEMPLATES = {
    "+": [
        "Q: How much is {x} added to {y}? A:",
        "Q: What do {x} and {y} add up to? A:",
        "Q: What do you get adding {x} and {y}? A:",
        "Q: What is the total of {x} and {y}? A:",
        "The total of {x} and {y} is",
        "{x} + {y} =",
    ],
    "-": [
        "Q: How much is {x} take away {y}? A:",
        "Q: What is left of {x} after taking {y}? A:",
        "Q: What do you get taking {y} from {x}? A:",
        "Q: What is the gap between {x} and {y}? A:",
        "The gap between {x} and {y} is",
        "{x} - {y} =",
    ],
    "*": [
        "Q: How much is {x} multiplied by {y}? A:",
        "Q: What is {x} lots of {y}? A:",
        "Q: What do you get multiplying {x} and {y}? A:",
        "Q: What is the product of {x} with {y}? A:",
        "The product of {x} with {y} is",
        "{x} * {y} =",
    ],
    "/": [
        "Q: How much is {x} split by {y}? A:",
        "Q: What is {x} shared among {y}? A:",
        "Q: What do you get dividing {x} by {y}? A:",
        "Q: What is the quotient of {x} by {y}? A:",
        "The quotient of {x} by {y} is",
        "{x} / {y} =",
    ],
}
# Index of the operator word in each template (word = whitespace-separated chunk).
ARITH_OPERATOR_WORD_INDICES = [5, 5, 6, 6, 1, 1]
# Operand ranges (inclusive) and the largest result the toy corpus trains on: every (x, y) with
# a result in [0, max_result]. The toy arithmetic tasks should use max_n <= 40 for + and -
# (Stolfo's rule: operands 1..max_n, result in [1, max_n)) and max_n = 23 for *.
ARITH_OPERAND_RANGES = {"+": [1, 40], "-": [1, 40], "*": [1, 22], "/": [1, 22]}
ARITH_MAX_RESULT = 199

# --------------------------------------------------------------------------- facts
# relation id -> paraphrase templates, attributes (single-token answers) and the shared words
# subjects are built from. Fact i of a relation is evaluated on paraphrase (i // 4) % 4, the
# one the corpus never pairs with that subject; the corpus states it with the other three.
RELATIONS: dict[str, dict[str, list[str]]] = {
    "T01": {
        "templates": [
            "{} is a town in the country of",
            "{} lies in the country of",
            "{}, a town found in the country of",
            "The town of {} is part of the country of",
        ],
        "attributes": ["Veloria", "Arkand", "Merrow", "Tassin", "Odrava", "Quillon", "Sarnet", "Bexley"],
        "heads": ["Port", "Lake", "North", "Saint", "New", "Old", "Upper", "East"],
        "tails": ["Harbour", "Springs", "Crossing", "Falls"],
    },
    "T02": {
        "templates": [
            "{} is owned by the company",
            "{} belongs to the company",
            "{}, a brand of the company",
            "The brand {} is run by the company",
        ],
        "attributes": ["Kestrel", "Orbis", "Lumen", "Vantor", "Ferrix", "Halcyon", "Norvell", "Brightway"],
        "heads": ["Blue", "Silver", "Green", "Royal", "Little", "Grand", "Swift", "Golden"],
        "tails": ["Foods", "Motors", "Labs", "Media"],
    },
    "T03": {
        "templates": [
            "{} plays the instrument called the",
            "{} is famous for playing the",
            "{}, a musician who plays the",
            "The musician {} performs on the",
        ],
        "attributes": ["violin", "cello", "flute", "harp", "trumpet", "oboe", "banjo", "piano"],
        "heads": ["Doctor", "Lady", "Young", "Sir", "Uncle", "Madame", "Captain", "Little"],
        "tails": ["Junior", "Senior", "Quartet", "Band"],
    },
    "T04": {
        "templates": [
            "{} speaks the language",
            "{} writes in the language",
            "{}, a poet who writes in",
            "The poet {} composes verse in",
        ],
        "attributes": ["Elvish", "Marran", "Sundic", "Korvic", "Taleth", "Ostran", "Brynn", "Caspic"],
        "heads": ["Master", "Father", "Brother", "Sister", "Mother", "Elder", "Poet", "Scholar"],
        "tails": ["Minor", "Major", "Wise", "Bold"],
    },
    "T05": {
        "templates": [
            "{} is a river that flows into the",
            "{} empties into the",
            "{}, a river that drains into the",
            "The river {} runs into the",
        ],
        "attributes": ["Amber", "Coral", "Frost", "Misty", "Sable", "Azure", "Ember", "Ivory"],
        "heads": ["Great", "Lesser", "West", "South", "Black", "White", "Red", "Long"],
        "tails": ["River", "Stream", "Brook", "Creek"],
    },
    "T06": {
        "templates": [
            "{} is a sports team that plays",
            "{} is a club that plays",
            "{}, a team known for playing",
            "The club {} competes in",
        ],
        "attributes": ["hockey", "rugby", "cricket", "baseball", "tennis", "volleyball", "polo", "handball"],
        "heads": ["United", "Athletic", "Real", "Sporting", "Dynamo", "Racing", "Olympic", "Rangers"],
        "tails": ["City", "Town", "Rovers", "Wanderers"],
    },
}

# Invented root words, one per fact subject (letter-only, capitalised).
_ROOT_SYLLABLES_A = [
    "Bal",
    "Cor",
    "Dun",
    "Fen",
    "Gar",
    "Hol",
    "Jar",
    "Kel",
    "Lor",
    "Mar",
    "Nor",
    "Pel",
    "Rav",
    "Sol",
    "Tar",
    "Vel",
    "Wyn",
    "Zan",
    "Ash",
    "Bry",
]
_ROOT_SYLLABLES_B = [
    "den",
    "mont",
    "wick",
    "ford",
    "holm",
    "stead",
    "more",
    "vale",
    "by",
    "ton",
    "rin",
    "dor",
    "lan",
    "mer",
    "gate",
]
FACTS_PER_RELATION = 40

# --------------------------------------------------------------------------- filler
FILLER = {
    "subjects": [
        "The farmer",
        "A child",
        "The teacher",
        "My neighbour",
        "The old man",
        "A tourist",
        "The doctor",
        "Our cat",
        "The baker",
        "A sailor",
        "The captain",
        "Her brother",
        "The student",
        "A painter",
        "The mayor",
        "His aunt",
    ],
    "verbs": [
        "cleaned",
        "found",
        "painted",
        "carried",
        "watched",
        "visited",
        "fixed",
        "opened",
        "sold",
        "bought",
        "lost",
        "noticed",
        "moved",
        "liked",
        "counted",
        "drew",
    ],
    "adjectives": [
        "small",
        "red",
        "quiet",
        "heavy",
        "bright",
        "old",
        "wooden",
        "strange",
        "broken",
        "warm",
        "tall",
        "narrow",
        "famous",
        "empty",
        "green",
        "soft",
    ],
    "adverbs": ["slowly", "quickly", "again", "today", "yesterday", "carefully", "twice", "later"],
    "connectives": ["and then", "but", "because", "while", "so", "after that"],
    "weather": [
        "It was raining.",
        "The sun was warm.",
        "The wind was cold.",
        "It snowed all night.",
        "The sky was grey.",
        "Fog covered the hills.",
    ],
}


def _roots(rng: random.Random, n: int) -> list[str]:
    pool = [a + b for a in _ROOT_SYLLABLES_A for b in _ROOT_SYLLABLES_B]
    rng.shuffle(pool)
    if n > len(pool):
        raise ValueError(f"need {n} subject roots but only {len(pool)} syllable combinations exist")
    return pool[:n]


def build_facts(seed: int = 0) -> list[dict[str, object]]:
    """The toy knowledge base, in known_1000.json's record format.

    Each subject has a unique invented root word plus 0 to 3 shared words (heads before, a tail
    after), so subjects are 1 to 4 tokens long and the model has to read the whole subject.
    Within a relation, subject lengths cycle 1, 2, 3, 4 and attributes cycle through the
    relation's eight answers, so every (length, relation) cell holds facts with distinct answers.
    """
    rng = random.Random(seed)
    roots = _roots(rng, FACTS_PER_RELATION * len(RELATIONS))
    records: list[dict[str, object]] = []
    k = 0
    for rel_id, rel in RELATIONS.items():
        attrs = list(rel["attributes"])
        for i in range(FACTS_PER_RELATION):
            root = roots[k]
            n_tokens = 1 + i % 4
            heads, tails = rel["heads"], rel["tails"]
            if n_tokens == 1:
                words = [root]
            elif n_tokens == 2:
                words = [rng.choice(heads), root]
            elif n_tokens == 3:
                words = [rng.choice(heads), root, rng.choice(tails)]
            else:
                h1, h2 = rng.sample(heads, 2)
                words = [h1, h2, root, rng.choice(tails)]
            subject = " ".join(words)
            attribute = attrs[(i * 3 + i // 8) % len(attrs)]
            # One paraphrase per fact is held out of the corpus and becomes its prompt; the
            # held-out index rotates so every paraphrase is trained on most subjects.
            template = rel["templates"][(i // 4) % len(rel["templates"])]
            records.append(
                {
                    "known_id": k,
                    "subject": subject,
                    "attribute": attribute,
                    "template": template,
                    "prediction": f" {attribute}.",
                    "prompt": template.format(subject),
                    "relation_id": rel_id,
                }
            )
            k += 1
    return records


def _gt_years(centuries: range) -> list[int]:
    # Every year splits into [" XX", "YY"] under the toy tokenizer; like the paper's lists,
    # drop each century's first and last two-digit value (YY in 02..98).
    return [c * 100 + yy for c in centuries for yy in range(2, 99)]


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def write_data_dir(out: Path) -> None:
    """Write the toy data directory (mirror layout + ``corpus/``) under ``out``."""
    out = Path(out)
    swap = lambda t: t.replace("[B]", "[X]", 1).replace("[A]", "[B]", 1).replace("[X]", "[A]", 1)  # noqa: E731
    abba = [swap(t) for t in BABA_TEMPLATES]
    bac = [
        t.replace("[A]", "[X]", 1).replace("[B]", "[A]", 1).replace("[X]", "[B]", 1) for t in ABC_TEMPLATES
    ]
    long_baba = [t.replace("Then, ", "", 1).replace("Later, ", "", 1) for t in BABA_TEMPLATES]
    long_baba = [f"{LONG_PREFIX} {t}" for t in long_baba]
    _dump(
        out / "ioi" / "ioi_vocab.json",
        {
            "names": NAMES,
            "places": PLACES,
            "objects": OBJECTS,
            "baba_templates": BABA_TEMPLATES,
            "abba_templates": abba,
            "abc_templates": ABC_TEMPLATES,
            "bac_templates": bac,
            "baba_long_templates": long_baba,
            "baba_late_ios": BABA_TEMPLATES[:8],
            "baba_early_ios": EARLY_IO_TEMPLATES,
            "abba_late_ios": abba[:8],
            "abba_early_ios": [swap(t) for t in EARLY_IO_TEMPLATES],
            "verbs": VERBS,
            "animals": ANIMALS,
            "prefixes": PREFIXES,
        },
    )
    _dump(
        out / "greater-than" / "greaterthan_nouns.json",
        {"nouns": GT_NOUNS, "template": GT_TEMPLATE, "corrupt_YY": "01"},
    )
    _dump(
        out / "greater-than" / "greaterthan_years.json",
        {
            "_note": "Project-authored for the toy tokenizer, where every year ' XXYY' splits into "
            "[' XX', 'YY']; YY in 02..98 as in the paper's lists. hanna_years: 1002-1898, acdc_years: 1102-1798.",
            "hanna_years": _gt_years(range(10, 19)),
            "acdc_years": _gt_years(range(11, 18)),
        },
    )
    _dump(
        out / "docstring" / "docstring_words.json",
        {"variable_names": VARIABLE_NAMES, "common_single_token_nouns": DOC_NOUNS},
    )
    _dump(
        out / "arithmetic" / "arithmetic_templates.json",
        {
            "templates": ARITH_TEMPLATES,
            "operator_word_indices": ARITH_OPERATOR_WORD_INDICES,
            "shot_format": "{filled template} {result}\\n  (shots concatenated, then the query template with no answer)",
            "operand_ranges": ARITH_OPERAND_RANGES,
            "max_result": ARITH_MAX_RESULT,
        },
    )
    _dump(out / "rome" / "known_1000.json", build_facts())
    _dump(
        out / "corpus" / "corpus_material.json",
        {
            "ioi_extra_templates": IOI_EXTRA_TEMPLATES,
            "greaterthan_extra_templates": GT_EXTRA_TEMPLATES,
            "docstring_function_verbs": DOC_FUNC_VERBS,
            "relation_templates": {k: v["templates"] for k, v in RELATIONS.items()},
            "filler": FILLER,
        },
    )
    (out / "README.md").write_text(
        "# Toy suite vocabulary (project-authored)\n\n"
        "Written for patchbench's toy suite; nothing here is copied from the paper suite's data.\n"
        "Same layout and JSON keys as the paper-suite data directory, so the task generators read\n"
        "both. `corpus/corpus_material.json` holds what only the toy training corpus uses.\n"
        "Regenerate with `python -m patchbench.toy.authoring data/toy` (deterministic).\n"
        "`rome/known_1000.json` is the toy knowledge base (240 invented facts; the name keeps the\n"
        "layout); each fact's `template` is the one paraphrase of its relation that the corpus\n"
        "never pairs with that subject, so factual prompts test recall, not string memory.\n"
    )


if __name__ == "__main__":
    write_data_dir(Path(sys.argv[1] if len(sys.argv) > 1 else "data/toy"))
