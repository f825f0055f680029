"""Tokenizer helpers: text to ids and back, special-token ids, character spans of tokens.

The lowest layer under the prompt sets: the task generators (:mod:`patchbench.tasks.common`
re-exports these) and the prompt-pair rules (:mod:`patchbench.prompt_pairs`) look every id up
through the tokenizer they are given, never by a hard-coded number. ``TaskDataError`` is the
error of a task's text that this tokenizer cannot turn into the prompt set asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

from patchbench.errors import InputError

__all__ = [
    "TaskDataError",
    "bos_id",
    "char_spans",
    "decode",
    "encode",
    "pad_id",
    "single_token_id",
    "tokenizer_name",
]


class TaskDataError(InputError, ValueError):
    """The task's vocabulary cannot produce the requested prompt set under this tokenizer."""


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without any special tokens added."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def decode(tokenizer, ids: Sequence[int]) -> str:
    """Text of ``ids`` exactly as tokenised (no clean-up of spaces before punctuation)."""
    return tokenizer.decode([int(i) for i in ids], clean_up_tokenization_spaces=False)


def single_token_id(tokenizer, text: str) -> int | None:
    """The id of ``text`` if it is exactly one token under ``tokenizer``, else None."""
    ids = encode(tokenizer, text)
    return ids[0] if len(ids) == 1 else None


def bos_id(tokenizer) -> int:
    """The id prepended as BOS: ``bos_token_id``, falling back to ``eos_token_id`` (GPT-2 style)."""
    for attr in ("bos_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    raise TaskDataError(
        "the tokenizer has neither a BOS nor an EOS token; run this task with prepend_bos=False"
    )


def pad_id(tokenizer) -> int:
    """Padding id for ``PromptSet.tokens()``: pad, else EOS, else BOS, else 0 (right padding is unread)."""
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    return 0


def tokenizer_name(tokenizer) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def char_spans(tokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character span ``[start, end)`` of every token in ``decode(ids)``.

    Computed from decoded prefixes, so that multi-byte characters split across tokens are
    attributed to the token that completes them.
    """
    spans = []
    prev = 0
    for i in range(len(ids)):
        cur = len(decode(tokenizer, ids[: i + 1]))
        spans.append((prev, cur))
        prev = cur
    return spans
