"""Where the paper suite's data files come from upstream, and the download that rebuilds them.

The task generators read a *data directory* with the layout of the project's offline mirror
(``ioi/ioi_vocab.json``, ``greater-than/*.json``, ``docstring/docstring_words.json``,
``arithmetic/*.json``, ``rome/known_1000.json``, ``gpt2-tokenizer/``). This module knows, for
each of those files, the public upstream file it is made from: a URL pinned to a commit, the
sha256 of the upstream bytes, how the mirror's content is derived from them, and the sha256 of
the result. ``fetch_source`` downloads, checks both checksums and writes exactly the mirror's
file; the Snakemake rules in ``workflow/rules/data.smk`` (one per :data:`SOURCES` entry) call it
through this module's command line::

    python -m patchbench.upstream rome/known_1000.json data/mirror/rome/known_1000.json

Lists that live in Python source files upstream (IOI names and templates, ACDC's nouns and
variable names, Stolfo's templates) are extracted with ``ast``: the literal (or a
``"...".split(" ")`` of a literal) assigned to a module-level name. Upstream code is never
executed. Finding a file in a data directory (and the error when it is missing) is
:mod:`patchbench.data_sources`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SOURCES",
    "ChecksumError",
    "DataSource",
    "DownloadError",
    "Upstream",
    "build_source",
    "extract_assignments",
    "fetch_source",
    "sha256_bytes",
]

log = logging.getLogger(__name__)


class ChecksumError(ValueError):
    """Downloaded or derived bytes do not have the pinned sha256."""


class DownloadError(OSError):
    """An upstream file could not be downloaded (offline, or the URL is gone)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Extraction of literals from upstream Python source (no code is run)


def _literal(node: ast.AST) -> Any:
    """A literal, or ``"<literal str>".split(<literal str>)``; anything else is refused."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "split"
        and isinstance(node.func.value, ast.Constant)
        and isinstance(node.func.value.value, str)
        and not node.keywords
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)
    ):
        return node.func.value.value.split(*[a.value for a in node.args])
    return ast.literal_eval(node)


def extract_assignments(source: str, names: list[str], scope: str | None = None) -> dict[str, Any]:
    """Values of ``NAME = <literal>`` for each of ``names`` in ``source``, parsed with ``ast``.

    ``scope`` names a function whose body is searched instead of the module's top level.
    The last assignment wins, as it would at run time. Raises KeyError naming what is missing.
    """
    tree = ast.parse(source)
    body = tree.body
    if scope is not None:
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == scope]
        if not funcs:
            raise KeyError(f"no function {scope!r} in the source")
        body = funcs[0].body
    found: dict[str, Any] = {}
    for node in body:
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            hits = [t for t in targets if t in names]
            if hits:
                value = _literal(node.value)
                for t in hits:
                    found[t] = value
    missing = [n for n in names if n not in found]
    if missing:
        raise KeyError(f"no literal assignment to {missing} in the source")
    return found


# ---------------------------------------------------------------------------------------------
# Derivations: upstream bytes -> the mirror's bytes


def _abba_from_baba(templates: list[str]) -> list[str]:
    """Easy-Transformer's import-time rule: in the first clause swap the first [B] and [A]."""
    out = []
    for template in templates:
        t = template
        first_clause = True
        for j in range(1, len(t) - 1):
            if t[j - 1 : j + 2] == "[B]" and first_clause:
                t = t[:j] + "A" + t[j + 1 :]
            elif t[j - 1 : j + 2] == "[A]" and first_clause:
                first_clause = False
                t = t[:j] + "B" + t[j + 1 :]
        out.append(t)
    return out


def _json_indent1(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8")


def _derive_ioi_vocab(raw: dict[str, bytes]) -> bytes:
    src = raw["ioi_dataset.py"].decode("utf-8")
    v = extract_assignments(
        src,
        [
            "NAMES",
            "PLACES",
            "OBJECTS",
            "ABC_TEMPLATES",
            "BABA_TEMPLATES",
            "BABA_LONG_TEMPLATES",
            "BABA_LATE_IOS",
            "BABA_EARLY_IOS",
            "VERBS",
            "ANIMALS",
            "PREFIXES",
        ],
    )
    bac = [t.replace("[B]", "[A]", 1).replace("[A]", "[B]", 1) for t in v["ABC_TEMPLATES"]]
    out = {
        "names": v["NAMES"],
        "places": v["PLACES"],
        "objects": v["OBJECTS"],
        "baba_templates": v["BABA_TEMPLATES"],
        "abba_templates": _abba_from_baba(v["BABA_TEMPLATES"]),
        "abc_templates": v["ABC_TEMPLATES"],
        "bac_templates": bac,
        "baba_long_templates": v["BABA_LONG_TEMPLATES"],
        "baba_late_ios": v["BABA_LATE_IOS"],
        "baba_early_ios": v["BABA_EARLY_IOS"],
        "abba_late_ios": _abba_from_baba(v["BABA_LATE_IOS"]),
        "abba_early_ios": _abba_from_baba(v["BABA_EARLY_IOS"]),
        "verbs": v["VERBS"],
        "animals": v["ANIMALS"],
        "prefixes": v["PREFIXES"],
    }
    return _json_indent1(out)


def _derive_greaterthan_nouns(raw: dict[str, bytes]) -> bytes:
    nouns = extract_assignments(raw["utils.py"].decode("utf-8"), ["NOUNS"])["NOUNS"]
    return _json_indent1(
        {
            "nouns": nouns,
            "template": "The {noun} lasted from the year {XX}{YY} to the year {XX}",
            "corrupt_YY": "01",
        }
    )


def valid_years(tokenizer, start: int, end: int) -> list[int]:
    """Hanna et al.'s ``get_valid_years``: " YYYY" -> [" XX", "YY"], first/last of each century dropped."""
    valid = []
    for year in range(start, end):
        toks = tokenizer.convert_ids_to_tokens(tokenizer.encode(" " + str(year), add_special_tokens=False))
        valid.append(len(toks) == 2 and len(toks[1]) == 2)
    last_valid, century = None, None
    for i, year in enumerate(range(start, end)):
        if valid[i]:
            if century != year // 100:
                century = year // 100
                valid[i] = False
                if last_valid is not None:
                    valid[last_valid] = False
            last_valid = i
    if last_valid is not None:
        valid[last_valid] = False
    return [y for y, ok in zip(range(start, end), valid, strict=True) if ok]


def _acdc_years(tokenizer) -> list[int]:
    """ACDC's GreaterThanConstants: centuries 11-17, years c02..c98 that split, first/last dropped."""
    years = []
    for century in range(11, 18):
        ok = []
        for yy in range(2, 99):
            year = century * 100 + yy
            toks = tokenizer.convert_ids_to_tokens(
                tokenizer.encode(" " + str(year), add_special_tokens=False)
            )
            if len(toks) == 2 and len(toks[1]) == 2:
                ok.append(year)
        years.extend(ok[1:-1])
    return years


def _derive_greaterthan_years(raw: dict[str, bytes]) -> bytes:
    import tempfile

    from transformers import GPT2TokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vocab.json", "merges.txt"):
            Path(tmp, name).write_bytes(raw[name])
        tok = GPT2TokenizerFast.from_pretrained(tmp)
        out = {
            "_note": "Derived, not copied: computed with shared/data/gpt2-tokenizer (GPT-2 BPE). See PROVENANCE.md.",
            "hanna_years": valid_years(tok, 1000, 1900),
            "acdc_years": _acdc_years(tok),
        }
    return json.dumps(out).encode("utf-8")


def _derive_docstring_words(raw: dict[str, bytes]) -> bytes:
    v = extract_assignments(
        raw["prompts.py"].decode("utf-8"), ["variable_names", "common_single_token_nouns"]
    )
    return _json_indent1(v)


_STOLFO_NAMES = [
    "addition_templates",
    "subtraction_templates",
    "multiplication_templates",
    "division_templates",
    "operator_word_indices",
]


def _derive_arithmetic_templates(raw: dict[str, bytes]) -> bytes:
    v = extract_assignments(
        raw["intervention.py"].decode("utf-8"), _STOLFO_NAMES, scope="get_arithmetic_data_two_operands"
    )
    out = {
        "templates": {
            "+": v["addition_templates"],
            "-": v["subtraction_templates"],
            "*": v["multiplication_templates"],
            "/": v["division_templates"],
        },
        "operator_word_indices": v["operator_word_indices"],
        "shot_format": "{filled template} {result}\\n  (shots concatenated, then the query template with no answer)",
    }
    return _json_indent1(out)


def _verbatim(name: str) -> Callable[[dict[str, bytes]], bytes]:
    return lambda raw: raw[name]


# ---------------------------------------------------------------------------------------------
# The pinned sources


@dataclass(frozen=True)
class Upstream:
    """One upstream file: a commit-pinned URL and the sha256 of its bytes."""

    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class DataSource:
    """How one file of the data directory is made from upstream files."""

    relpath: str
    rule: str
    upstream: tuple[Upstream, ...]
    derive: Callable[[dict[str, bytes]], bytes]
    sha256: str  # of the produced file (= the mirror's file)
    note: str


_GH = "https://raw.githubusercontent.com"
_ET = f"{_GH}/redwoodresearch/Easy-Transformer/ea15315dd24481e9e2ac5c3ef335d82907a1dc34"
_ACDC = f"{_GH}/ArthurConmy/Automatic-Circuit-Discovery/bc99ace817974b5584b7ee203d596a8e2bbcd399"
_STOLFO = f"{_GH}/alestolfo/lm-arithmetic/85818c400926d4c051e742940d9a7c141f6d65f2"
_WHISPER = f"{_GH}/openai/whisper/6e3be77e1a105e59086e3e21ff5f609fd6fa89a5/whisper/assets/gpt2"

_TOKENIZER_UPSTREAM = (
    Upstream(
        "vocab.json",
        f"{_WHISPER}/vocab.json",
        "3ba3c3109ff33976c4bd966589c11ee14fcaa1f4c9e5e154c2ed7f99d80709e7",
    ),
    Upstream(
        "merges.txt",
        f"{_WHISPER}/merges.txt",
        "fe36cab26d4f4421ed725e10a2e9ddb7f799449c603a96e7f29b5a3c82a95862",
    ),
)

SOURCES: dict[str, DataSource] = {
    s.relpath: s
    for s in (
        DataSource(
            "ioi/ioi_vocab.json",
            "data_ioi_vocab",
            (Upstream("ioi_dataset.py", f"{_ET}/easy_transformer/ioi_dataset.py", None),),
            _derive_ioi_vocab,
            "b16410464cab579bfeea16535d83dd8c4d7b0b6dee05009380221fe0f3992f2d",
            "Wang et al. p_IOI lists from Easy-Transformer (MIT); ABBA/BAC derived by its own string rule.",
        ),
        DataSource(
            "greater-than/greaterthan_nouns.json",
            "data_greaterthan_nouns",
            (Upstream("utils.py", f"{_ACDC}/acdc/greaterthan/utils.py", None),),
            _derive_greaterthan_nouns,
            "d3d41747cf2a517be0fe6bf051d4d7c11a1b37d6dbd8d15d133207687919735a",
            "ACDC's NOUNS (MIT; the same 120 nouns as Hanna et al.'s potential_nouns.txt) + the template.",
        ),
        DataSource(
            "greater-than/greaterthan_years.json",
            "data_greaterthan_years",
            _TOKENIZER_UPSTREAM,
            _derive_greaterthan_years,
            "3449a386d30010c2ca206bfd83572c4b072943fe6947708ac178d76c50019ded",
            "Years computed with the GPT-2 BPE by Hanna et al.'s and ACDC's rules.",
        ),
        DataSource(
            "docstring/docstring_words.json",
            "data_docstring_words",
            (Upstream("prompts.py", f"{_ACDC}/acdc/docstring/prompts.py", None),),
            _derive_docstring_words,
            "7ea26723975c1bb84a2d0b22a65b356aa57e1676b653bf62df934343a76099cc",
            "ACDC's docstring variable_names and common_single_token_nouns (MIT).",
        ),
        DataSource(
            "arithmetic/arithmetic_templates.json",
            "data_arithmetic_templates",
            (Upstream("intervention.py", f"{_STOLFO}/interventions/intervention.py", None),),
            _derive_arithmetic_templates,
            "4b44697609766a3bef2c909bd99c1f18c6f38f996603d74020fe70fb6a0c3343",
            "Stolfo et al.'s two-operand templates (MIT).",
        ),
        DataSource(
            "arithmetic/three_operand_questions.json",
            "data_arithmetic_three_operand",
            (
                Upstream(
                    "three_operand_questions.json",
                    f"{_STOLFO}/interventions/three_operand_questions.json",
                    "38f374b4a6c63b4ad792a6912f50b26b8481809ac93ad331a986dd846f49fac3",
                ),
            ),
            _verbatim("three_operand_questions.json"),
            "38f374b4a6c63b4ad792a6912f50b26b8481809ac93ad331a986dd846f49fac3",
            "Stolfo et al.'s three-operand questions, verbatim (MIT).",
        ),
        DataSource(
            "rome/known_1000.json",
            "data_rome_known_1000",
            (
                Upstream(
                    "known_1000.json",
                    "https://rome.baulab.info/data/dsets/known_1000.json",
                    "0a1c2c9cbeb7a60e4a9ba03c8769ff3d12336213d6561307bc83de23f12782ce",
                ),
            ),
            _verbatim("known_1000.json"),
            "0a1c2c9cbeb7a60e4a9ba03c8769ff3d12336213d6561307bc83de23f12782ce",
            "ROME's known facts, verbatim (MIT).",
        ),
        DataSource(
            "gpt2-tokenizer/vocab.json",
            "data_gpt2_vocab",
            _TOKENIZER_UPSTREAM[:1],
            _verbatim("vocab.json"),
            "3ba3c3109ff33976c4bd966589c11ee14fcaa1f4c9e5e154c2ed7f99d80709e7",
            "GPT-2 BPE vocabulary from openai/whisper (MIT).",
        ),
        DataSource(
            "gpt2-tokenizer/tokenizer_config.json",
            "data_gpt2_tokenizer_config",
            (
                Upstream(
                    "tokenizer_config.json",
                    f"{_WHISPER}/tokenizer_config.json",
                    "1e664fe1a5bc404dcb204a76c76bc4100c91bd12c66098d8a8090b11b6ee6f0d",
                ),
            ),
            _verbatim("tokenizer_config.json"),
            "1e664fe1a5bc404dcb204a76c76bc4100c91bd12c66098d8a8090b11b6ee6f0d",
            "GPT-2 tokenizer config from openai/whisper (MIT).",
        ),
        DataSource(
            "gpt2-tokenizer/special_tokens_map.json",
            "data_gpt2_special_tokens_map",
            (
                Upstream(
                    "special_tokens_map.json",
                    f"{_WHISPER}/special_tokens_map.json",
                    "c0b3c279b6ecdb71996a86ffb4d4ab94dfdb5df95f00bac9515688faef2ff5dd",
                ),
            ),
            _verbatim("special_tokens_map.json"),
            "c0b3c279b6ecdb71996a86ffb4d4ab94dfdb5df95f00bac9515688faef2ff5dd",
            "GPT-2 special tokens map from openai/whisper (MIT).",
        ),
        DataSource(
            "gpt2-tokenizer/merges.txt",
            "data_gpt2_merges",
            _TOKENIZER_UPSTREAM[1:],
            _verbatim("merges.txt"),
            "fe36cab26d4f4421ed725e10a2e9ddb7f799449c603a96e7f29b5a3c82a95862",
            "GPT-2 BPE merges from openai/whisper (MIT).",
        ),
    )
}


def _download(url: str, timeout: float = 60.0) -> bytes:
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (pinned https URLs)
            return resp.read()
    except OSError as exc:
        raise DownloadError(
            f"could not download {url} ({exc}). Offline? Point the config key `data_dir` at a directory "
            "that already has the file, such as the project's mirror ../shared/data."
        ) from exc


def build_source(relpath: str, fetch: Callable[[str], bytes] = _download) -> bytes:
    """Download the upstream files of ``relpath``, check them and derive the mirror's bytes."""
    if relpath not in SOURCES:
        raise KeyError(f"no upstream source is known for {relpath!r}; known: {sorted(SOURCES)}")
    src = SOURCES[relpath]
    raw: dict[str, bytes] = {}
    for up in src.upstream:
        data = fetch(up.url)
        if up.sha256 is not None and sha256_bytes(data) != up.sha256:
            raise ChecksumError(
                f"{up.url}: sha256 {sha256_bytes(data)} differs from the pinned {up.sha256}; "
                "the upstream file changed or the download is corrupt"
            )
        raw[up.name] = data
    out = src.derive(raw)
    if sha256_bytes(out) != src.sha256:
        raise ChecksumError(
            f"{relpath}: derived content has sha256 {sha256_bytes(out)}, the pinned mirror content {src.sha256}; "
            "the upstream source or the derivation changed"
        )
    return out


def fetch_source(relpath: str, out_path: str | Path, fetch: Callable[[str], bytes] = _download) -> Path:
    """Write exactly the mirror's ``relpath`` to ``out_path`` (checked against both checksums)."""
    data = build_source(relpath, fetch)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(out_path)
    return out_path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Fetch one data file of the paper suite from its pinned upstream."
    )
    parser.add_argument("relpath", choices=sorted(SOURCES))
    parser.add_argument("out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    fetch_source(args.relpath, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
