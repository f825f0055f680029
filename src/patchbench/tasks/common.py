"""Tokenizer-aware helpers shared by the task generators.

Every generator builds prompts as text, tokenises them with the tokenizer it is given and checks
each property it relies on (single-token names / answers, the [XX][YY] year split, equal clean /
corrupted lengths, corruptions that touch only the key tokens) against that tokenizer, dropping
or redrawing what fails. Nothing here knows a token id: everything is looked up. The tokenizer
primitives (``encode``, ``decode``, ``bos_id``, ``pad_id``, ``char_spans``, ``TaskDataError``, ...)
live in :mod:`patchbench.tokenizing` and are re-exported here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchbench.data_sources import require_data_file
from patchbench.prompts import PromptSet
from patchbench.tokenizing import (
    TaskDataError,
    bos_id,
    char_spans,
    decode,
    encode,
    pad_id,
    single_token_id,
    tokenizer_name,
)

__all__ = [
    "TaskInfo",
    "TaskDataError",
    "bos_id",
    "char_spans",
    "decode",
    "diff_positions",
    "encode",
    "find_token_range",
    "load_task_json",
    "pad_id",
    "prompt_set",
    "single_token_id",
    "tokenizer_name",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskInfo:
    """One registered task: how to build it and what its defaults are."""

    name: str
    family: str
    builder: Callable[..., Any]
    default_n_prompts: int | None
    description: str
    files: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def load_task_json(data_dir: str | Path, relpath: str) -> Any:
    """Read ``data_dir/relpath`` as JSON; a missing file raises an error naming both fixes."""
    path = require_data_file(data_dir, relpath)
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def require_key(obj: dict, key: str, relpath: str) -> Any:
    if key not in obj:
        raise TaskDataError(f"{relpath} has no key {key!r} (keys: {sorted(obj)}); is it the mirror's file?")
    return obj[key]


def prompt_set(
    task: str,
    tokenizer,
    *,
    clean: Sequence[Sequence[int]],
    corrupted: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    wrong: Sequence[Sequence[int]],
    noise: Sequence[Sequence[int]],
    positions: dict[str, Sequence[int]],
    meta: Sequence[dict[str, Any]],
    variant: str,
) -> PromptSet:
    """A generator's rows as a PromptSet: one list entry per prompt; ``positions`` must name ``END``
    (the answer position of every task); tokenizer name and pad id come from ``tokenizer``."""
    return PromptSet(
        task=task,
        clean=clean,
        corrupted=corrupted,
        answer_pos=np.array(positions["END"]),
        answers=answers,
        wrong=wrong,
        noise_positions=noise,
        positions={k: np.array(v) for k, v in positions.items()},
        meta=pd.DataFrame(list(meta)),
        variant=variant,
        tokenizer=tokenizer_name(tokenizer),
        pad_id=pad_id(tokenizer),
    )


def find_token_range(
    tokenizer, ids: Sequence[int], substring: str, char_start: int | None = None
) -> tuple[int, int]:
    """Token range ``[start, end)`` covering ``substring`` (ROME's ``find_token_range``).

    ROME joins the decoded tokens, finds the first character match of the substring and takes
    the first token that ends after the match start up to the first token that reaches the match
    end. ``char_start`` pins the match (e.g. the last occurrence) instead of the first one.
    """
    spans = char_spans(tokenizer, ids)
    whole = decode(tokenizer, ids)
    loc = whole.index(substring) if char_start is None else char_start
    if whole[loc : loc + len(substring)] != substring:
        raise TaskDataError(f"{substring!r} is not at character {loc} of {whole!r}")
    end_char = loc + len(substring)
    start = next(i for i, (_, e) in enumerate(spans) if e > loc)
    end = next(i for i, (_, e) in enumerate(spans) if e >= end_char) + 1
    return start, end


def diff_positions(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Positions where two equal-length token sequences differ."""
    if len(a) != len(b):
        raise ValueError(f"sequences of different lengths {len(a)} and {len(b)}")
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def substitute(
    tokenizer, ids: Sequence[int], subs: dict[int, int], n_special: int = 0
) -> tuple[list[int], str] | None:
    """Replace tokens at positions, decode, and check the text tokenises back to the same ids.

    ``n_special`` leading tokens (a prepended BOS) are kept out of the round trip. Returns
    (ids, text of the non-special part) or None when the substituted sequence is not what its
    own text tokenises to (i.e. it would not be an in-distribution prompt for this tokenizer).
    """
    out = [int(i) for i in ids]
    for p, t in subs.items():
        if p < n_special:
            raise ValueError(f"position {p} is a special prefix token")
        out[p] = int(t)
    text = decode(tokenizer, out[n_special:])
    return (out, text) if encode(tokenizer, text) == out[n_special:] else None


def checked_corruption(clean: Sequence[int], corrupted: Sequence[int], allowed: Sequence[int]) -> bool:
    """Equal length, and every differing position is one of ``allowed``."""
    return len(clean) == len(corrupted) and set(diff_positions(clean, corrupted)) <= set(allowed)


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A numpy Generator for ``seed``; extra integers select an independent stream."""
    return np.random.default_rng([seed, *stream]) if stream else np.random.default_rng(seed)
