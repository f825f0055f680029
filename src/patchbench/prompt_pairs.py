"""Prompt pairs of your own (a CSV or JSON Lines file, or records): the rules, checked row by row.

One row per prompt pair (``examples/countries.csv`` is a worked example):

===================  ========  ==================================================================
column               required  meaning
===================  ========  ==================================================================
``clean``            yes       the clean prompt; named positions marked ``[[NAME:text]]``
``corrupted``        yes       its STR corruption: the same number of tokens (markers, if any,
                               are removed; positions come from ``clean``)
``answer``           yes       the answer r after the clean prompt (the next word)
``wrong``            yes       the wrong answer r': the answer after the corrupted prompt
``noise_positions``  no        marked span names (``subject``) whose tokens GN noises; empty:
                               the tokens where ``clean`` and ``corrupted`` differ
``meta_<NAME>``      no        kept as the prompt's metadata ``NAME``
===================  ========  ==================================================================

In a CSV file several answers, wrong answers or noise spans are separated by ``|``; in JSON Lines
they may be lists. Several answers (or wrong answers) are alternatives whose probabilities and
logits the metrics sum, as greater-than's years are (:mod:`patchbench.metrics`).

The rules, each checked on every row before anything runs (:func:`read_pairs` and
:func:`parse_records` without a tokenizer, :func:`prompt_set_fields` with one); every problem is
reported with its row, its column and the fix, all of them in one message:

* **Named positions.** ``[[NAME:text]]`` marks ``text`` in the clean prompt (the brackets and
  ``NAME:`` are removed before tokenising). Position ``NAME`` is the last token overlapping the
  span (ROME's "last subject token"), ``NAME_first`` the first; ``END``, the last token of the
  prompt, where the answer is read, is always there. A name starts with a letter and holds
  letters, digits and ``_``; every row marks the same names.
* **Equal lengths.** ``clean`` and ``corrupted`` tokenise to the same number of tokens (there is
  no alignment of unequal prompts: STR patches position by position).
* **Answers are one token each.** An answer is tokenised where the model meets it: after its
  prompt, ``prompt + separator + answer`` (option ``answer_separator``, a space by default; none
  when the prompt ends in, or the answer starts with, whitespace) must be the prompt's tokens plus
  exactly one. A wrong answer follows the corrupted prompt the same way. Answers and wrong
  answers are distinct tokens, and none is the tokenizer's unknown token (nor are prompt tokens).
* ``prepend_bos`` (option, default false) puts the tokenizer's BOS token in front of both
  prompts (positions count it).

This module sits below :mod:`patchbench.prompts` and knows no PromptSet: it returns the keyword
arguments of the PromptSet constructor, which :meth:`patchbench.prompts.PromptSet.from_records`
and ``from_file`` build on. The same code builds a file task of the workflow
(``tasks.<name>: {file: ...}``, :mod:`patchbench.tasks.pairs`) and the CLI's
``--prompts pairs.csv``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchbench.errors import MissingInputError
from patchbench.tokenizing import TaskDataError, bos_id, char_spans, decode, pad_id, tokenizer_name

__all__ = [
    "COLUMNS",
    "FILE_VARIANT",
    "PairRow",
    "PromptFileError",
    "SUFFIXES",
    "check_n_prompts",
    "parse_records",
    "prompt_set_fields",
    "read_pairs",
]

#: The PromptSet variant of a task read from a file (its answers may be sets of alternatives).
FILE_VARIANT = "file"
#: File suffixes read as prompt pairs, and their format.
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: Required columns, then optional ones (and any ``meta_<NAME>``).
COLUMNS = ("clean", "corrupted", "answer", "wrong")
OPTIONAL = ("noise_positions",)
#: ``[[NAME:text]]``; a name starts with a letter.
MARKER = re.compile(r"\[\[([^\[\]:]*):([^\[\]]*)\]\]")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: Names a marked span may not take: the answer position and the sweep's position modes.
RESERVED = ("END", "all", "each")
#: Most problems listed in one message (the rest are counted).
MAX_LISTED = 20


class PromptFileError(TaskDataError):
    """A prompt-pair file (or records) breaks the rules: the message lists every problem with its row."""


@dataclass(frozen=True)
class PairRow:
    """One row, parsed (markers removed) but not yet tokenised."""

    where: str  # "row 3" (CSV: data row) / "line 3" (JSON Lines)
    clean: str
    corrupted: str
    spans: Mapping[str, tuple[int, int]]  # NAME -> character span [a, b) in ``clean``
    answers: tuple[str, ...]
    wrong: tuple[str, ...]
    noise: tuple[str, ...]  # span names; () = the differing tokens
    meta: Mapping[str, Any]


def _fail(source: str, problems: Sequence[str]) -> PromptFileError:
    shown = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    noun = "problem" if len(problems) == 1 else "problems"
    return PromptFileError(
        f"{source}: {len(problems)} {noun} (the rules: patchbench.prompt_pairs, config/README.md):\n  {shown}{more}"
    )


# ----------------------------------------------------------------------------- reading
def read_pairs(path: str | Path) -> list[PairRow]:
    """The rows of a CSV (``.csv``) or JSON Lines (``.jsonl``) file, parsed and checked without a tokenizer."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError.of(
            f"prompt-pair file {path}",
            "does not exist" if not path.exists() else "is not a file",
            "write the pairs there (columns clean, corrupted, answer, wrong) or correct the path",
        )
    suffix = path.suffix.lower()
    if SUFFIXES.get(suffix) == "csv":
        records = _csv_records(path)
    elif SUFFIXES.get(suffix) == "jsonl":
        records = _jsonl_records(path)
    else:
        raise PromptFileError(
            f"prompt-pair file {path}: unknown format {suffix or '(no suffix)'!r}. Fix: write it as .csv or .jsonl"
        )
    return parse_records(records, f"prompt-pair file {path}")


def _csv_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise PromptFileError(
            f"prompt-pair file {path}: not a readable CSV file ({type(err).__name__}: {err}). Fix: write it as "
            "UTF-8 CSV with a header row clean,corrupted,answer,wrong (quote fields that hold commas)"
        ) from None
    return [(f"row {i + 1}", rec) for i, rec in enumerate(frame.to_dict("records"))]


def _jsonl_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise PromptFileError(f"prompt-pair file {path}: not UTF-8 ({err}). Fix: save it as UTF-8") from None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptFileError(
                f"prompt-pair file {path}, line {i}: not valid JSON ({err.msg}, column {err.colno}). Fix: write "
                'one object per line, e.g. {"clean": "...", "corrupted": "...", "answer": " x", "wrong": " y"}'
            ) from None
        if not isinstance(rec, dict):
            raise PromptFileError(
                f"prompt-pair file {path}, line {i}: not a JSON object. Fix: one object per line"
            )
        out.append((f"line {i}", rec))
    return out


def _values(value: Any, sep: bool) -> list[Any]:
    """A cell as a list: a JSON list as it is, a string split at ``|`` (``sep``), empty -> []."""
    if isinstance(value, list):
        return value
    if value is None or value == "":
        return []
    return str(value).split("|") if sep and isinstance(value, str) else [value]


def parse_records(
    records: Iterable[Mapping[str, Any] | tuple[str, Mapping[str, Any]]], source: str
) -> list[PairRow]:
    """Rows from records (dicts with the columns above; or ``(where, dict)`` pairs naming their rows),
    checked without a tokenizer: columns, markers, names. Raises PromptFileError listing every problem."""
    rows: list[PairRow] = []
    problems: list[str] = []
    items = [r if isinstance(r, tuple) else (f"record {i}", r) for i, r in enumerate(records)]
    if not items:
        raise _fail(
            source, ["no rows. Fix: one row per prompt pair, under a header clean,corrupted,answer,wrong"]
        )
    for where, rec in items:
        bad = [str(k) for k in rec if k not in (*COLUMNS, *OPTIONAL) and not str(k).startswith("meta_")]
        missing = [c for c in COLUMNS if c not in rec]
        if missing or bad:
            found = ", ".join(map(str, rec)) or "none"
            if missing:
                problems.append(
                    f"{where}: column(s) {missing} missing (columns found: {found}). Fix: name them so"
                )
            if bad:
                problems.append(
                    f"{where}: unknown column(s) {bad}. Fix: use {', '.join(COLUMNS + OPTIONAL)} or meta_<NAME>"
                )
            if len({tuple(r) for _, r in items}) == 1:  # every row has the same columns: say it once
                break
            continue
        row = _parse_row(where, rec, problems)
        if row is not None:
            rows.append(row)
    if not problems:
        names = [frozenset(r.spans) for r in rows]
        first = names[0]
        for r, n in zip(rows, names, strict=True):
            if n != first:
                problems.append(
                    f"{r.where}, column 'clean': marks {sorted(n)}, {rows[0].where} marks {sorted(first)}. Fix: every "
                    "row marks the same named positions"
                )
    if problems:
        raise _fail(source, problems)
    return rows


def _text(where: str, rec: Mapping[str, Any], col: str, problems: list[str]) -> str | None:
    value = rec[col]
    if not isinstance(value, str) or not value.strip():
        problems.append(
            f"{where}, column {col!r}: empty or not text ({value!r}). Fix: write the prompt there"
        )
        return None
    return value


def _parse_row(where: str, rec: Mapping[str, Any], problems: list[str]) -> PairRow | None:
    n_before = len(problems)
    clean = _text(where, rec, "clean", problems)
    corrupted = _text(where, rec, "corrupted", problems)
    spans: dict[str, tuple[int, int]] = {}
    if clean is not None:
        clean, spans = _markers(where, "clean", clean, problems)
    if corrupted is not None:
        corrupted, _ = _markers(where, "corrupted", corrupted, [])
    answers = {}
    for col in ("answer", "wrong"):
        vals = _values(rec[col], sep=True)
        if not vals or any(not isinstance(v, str) or not v.strip() for v in vals):
            problems.append(
                f"{where}, column {col!r}: empty or not text ({rec[col]!r}). Fix: write the answer word"
            )
        elif len(set(vals)) != len(vals):
            problems.append(
                f"{where}, column {col!r}: {vals} names an alternative twice. Fix: list each once"
            )
        answers[col] = tuple(vals)
    noise = tuple(str(v).strip() for v in _values(rec.get("noise_positions", ""), sep=True))
    unknown = [n for n in noise if n not in spans]
    if unknown and clean is not None:
        problems.append(
            f"{where}, column 'noise_positions': {unknown} are not marked in the clean prompt (marked: "
            f"{sorted(spans) or 'none'}). Fix: mark them [[NAME:text]] or leave the column empty (GN then noises "
            "the tokens where clean and corrupted differ)"
        )
    if len(problems) > n_before:
        return None
    meta = {str(k)[len("meta_") :]: v for k, v in rec.items() if str(k).startswith("meta_")}
    return PairRow(where, clean, corrupted, spans, answers["answer"], answers["wrong"], noise, meta)


def _markers(where: str, col: str, text: str, problems: list[str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """``text`` without its markers, and each marked name's character span in it."""
    out, spans, pos = [], {}, 0
    length = 0
    for m in MARKER.finditer(text):
        out.append(text[pos : m.start()])
        length += m.start() - pos
        name, span = m.group(1).strip(), m.group(2)
        if not _NAME.fullmatch(name) or name in RESERVED or name.endswith("_first"):
            problems.append(
                f"{where}, column {col!r}: marker name {name!r} is not allowed. Fix: a name starts with a letter and "
                f"holds letters, digits and '_', is none of {list(RESERVED)} and does not end in '_first'"
            )
        elif name in spans:
            problems.append(f"{where}, column {col!r}: {name!r} is marked twice. Fix: mark each name once")
        elif not span.strip():
            problems.append(
                f"{where}, column {col!r}: marker {name!r} marks no text. Fix: [[{name}:some text]]"
            )
        else:
            spans[name] = (length, length + len(span))
        out.append(span)
        length += len(span)
        pos = m.end()
    out.append(text[pos:])
    plain = "".join(out)
    if "[[" in plain or "]]" in plain:
        problems.append(
            f"{where}, column {col!r}: a marker is not closed or not of the form [[NAME:text]] ({text!r}). Fix: "
            "write named positions as [[NAME:text]]"
        )
    return plain, spans


# ----------------------------------------------------------------------------- tokenising
def _tokens(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no special tokens) and each token's character span in ``text``."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    if decode(tokenizer, ids) != text:
        raise PromptFileError(
            f"{tokenizer_name(tokenizer)} does not decode {text!r} back to itself and gives no character offsets, "
            "so marked positions cannot be located. Fix: use the model's fast tokenizer (tokenizer.json)"
        )
    return ids, char_spans(tokenizer, ids)


def _answer(tokenizer, prompt: str, ids: list[int], answer: str, separator: str) -> tuple[int | None, str]:
    """The one token ``answer`` adds after ``prompt`` (None and the reason when it adds another number)."""
    sep = "" if prompt[-1:].isspace() or answer[:1].isspace() else separator
    full = list(tokenizer.encode(prompt + sep + answer, add_special_tokens=False))
    if full[: len(ids)] != ids:
        return None, (
            f"{answer!r} merges with the prompt's last token when tokenised after it ({prompt[-20:] + sep + answer!r}). "
            "Fix: start the answer with a space or choose another answer"
        )
    extra = full[len(ids) :]
    if len(extra) != 1:
        pieces = [decode(tokenizer, [t]) for t in extra]
        return None, (
            f"{(sep + answer)!r} after the prompt is {len(extra)} tokens {pieces}, patching reads one token. Fix: "
            "choose a one-token answer (or drop the row)"
        )
    return int(extra[0]), ""


def _unknown(tokenizer) -> int | None:
    unk = getattr(tokenizer, "unk_token_id", None)
    return None if unk is None else int(unk)


def prompt_set_fields(
    rows: Sequence[PairRow],
    tokenizer,
    *,
    task: str,
    source: str,
    prepend_bos: bool = False,
    answer_separator: str = " ",
) -> dict[str, Any]:
    """The PromptSet constructor's keyword arguments for ``rows`` under ``tokenizer`` (``PromptSet(**fields)``);
    every tokenizer rule checked on every row (PromptFileError listing each problem with its row, column and fix)."""
    problems: list[str] = []
    unk = _unknown(tokenizer)
    bos = [bos_id(tokenizer)] if prepend_bos else []
    out: dict[str, list] = {k: [] for k in ("clean", "corrupted", "answers", "wrong", "noise", "meta")}
    positions: dict[str, list[int]] = {"END": []}
    for r in rows:
        n_before = len(problems)
        clean, offsets = _tokens(tokenizer, r.clean)
        corrupted, _ = _tokens(tokenizer, r.corrupted)
        for col, ids, text in (("clean", clean, r.clean), ("corrupted", corrupted, r.corrupted)):
            if unk is not None and unk in ids:
                words = [decode(tokenizer, [t]) for t in ids]
                problems.append(
                    f"{r.where}, column {col!r}: {text!r} holds words the tokenizer does not know (its unknown token "
                    f"at positions {[i for i, t in enumerate(ids) if t == unk]} of {words}). Fix: use the model's words"
                )
        if len(clean) != len(corrupted):
            problems.append(
                f"{r.where}, column 'corrupted': {len(corrupted)} tokens, the clean prompt {len(clean)}; STR patches "
                "position by position, so both must have the same number of tokens. Fix: choose a replacement of "
                f"as many tokens ({tokenizer_name(tokenizer)}), or drop the row"
            )
        spans = {}
        for name, (a, b) in r.spans.items():
            inside = [i for i, (s, e) in enumerate(offsets) if s < b and e > a]
            if not inside:
                problems.append(
                    f"{r.where}, column 'clean': marker {name!r} covers no token. Fix: mark a word"
                )
            spans[name] = inside
        answers, wrong = [], []
        for col, prompt, ids, texts, dest in (
            ("answer", r.clean, clean, r.answers, answers),
            ("wrong", r.corrupted, corrupted, r.wrong, wrong),
        ):
            for text in texts:
                tid, why = _answer(tokenizer, prompt, ids, text, answer_separator)
                if tid is None:
                    problems.append(f"{r.where}, column {col!r}: {why}")
                elif unk is not None and tid == unk:
                    problems.append(
                        f"{r.where}, column {col!r}: {text!r} is the tokenizer's unknown token. Fix: use a word it knows"
                    )
                else:
                    dest.append(tid)
        both = sorted(set(answers) & set(wrong))
        if both:
            problems.append(
                f"{r.where}, column 'wrong': {[decode(tokenizer, [t]) for t in both]} is also an answer, so the "
                "logit difference is 0. Fix: give a wrong answer that differs from the answer"
            )
        for col, ids in (("answer", answers), ("wrong", wrong)):
            if len(set(ids)) != len(ids):
                problems.append(
                    f"{r.where}, column {col!r}: two alternatives are the same token. Fix: list it once"
                )
        if len(problems) > n_before:
            continue
        shift = len(bos)
        if r.noise:
            noise = sorted({shift + i for n in r.noise for i in spans[n]})
        else:
            noise = [shift + i for i, (x, y) in enumerate(zip(clean, corrupted, strict=True)) if x != y]
            if not noise:
                problems.append(
                    f"{r.where}, column 'corrupted': the same tokens as the clean prompt, so STR changes nothing and "
                    "GN has no key tokens. Fix: corrupt the prompt (or drop the row)"
                )
                continue
        out["clean"].append(bos + clean)
        out["corrupted"].append(bos + corrupted)
        out["answers"].append(answers)
        out["wrong"].append(wrong)
        out["noise"].append(noise)
        positions["END"].append(shift + len(clean) - 1)
        for name, inside in spans.items():
            positions.setdefault(name, []).append(shift + inside[-1])
            positions.setdefault(f"{name}_first", []).append(shift + inside[0])
        out["meta"].append(
            {
                "text": r.clean,
                "corrupted_text": r.corrupted,
                "answer_text": "|".join(r.answers),
                "wrong_text": "|".join(r.wrong),
                "row": r.where,
                **r.meta,
            }  # fmt: skip
        )
    if problems:
        raise _fail(f"{source} (task {task}, tokenizer {tokenizer_name(tokenizer)})", problems)
    return dict(
        task=task,
        clean=out["clean"],
        corrupted=out["corrupted"],
        answer_pos=np.array(positions["END"]),
        answers=out["answers"],
        wrong=out["wrong"],
        noise_positions=out["noise"],
        positions={k: np.array(v) for k, v in positions.items()},
        meta=pd.DataFrame(out["meta"]),
        variant=FILE_VARIANT,
        tokenizer=tokenizer_name(tokenizer),
        pad_id=pad_id(tokenizer),
    )


def check_n_prompts(path: str | Path, rows: Sequence[PairRow], n_prompts: int | None) -> None:
    """Refuse ``n_prompts`` (the first rows of the file at ``path``; None: all) beyond the file's rows."""
    if n_prompts is not None and n_prompts > len(rows):
        raise PromptFileError(
            f"{path}: n_prompts is {n_prompts} but the file has {len(rows)} rows. Fix: set tasks.<name>.n_prompts "
            f"to at most {len(rows)}, or leave it out to use every row"
        )
