"""A task from a file of prompt pairs (CSV or JSON Lines): your own task, as the workflow builds it.

``tasks.<name>: {file: pairs.csv, n_prompts: ..., options: {prepend_bos: ..., answer_separator: ...}}``
builds its PromptSet here, on top of :meth:`patchbench.prompts.PromptSet.from_file`. The file's
columns and the rules each row is checked by live in :mod:`patchbench.prompt_pairs` (one
implementation, shared with ``PromptSet.from_records`` and the CLI's ``--prompts pairs.csv``).
"""

from __future__ import annotations

from pathlib import Path

from patchbench.prompt_pairs import FILE_VARIANT, PromptFileError
from patchbench.prompts import PromptSet

__all__ = ["FILE_VARIANT", "PromptFileError", "build_file_task"]


def build_file_task(
    tokenizer,
    path: str | Path,
    n_prompts: int | None = None,
    seed: int = 0,
    *,
    task: str | None = None,
    prepend_bos: bool = False,
    answer_separator: str = " ",
) -> PromptSet:
    """The PromptSet of the pairs in ``path`` (the first ``n_prompts`` rows; None: all), with a task
    generator's signature. ``seed`` is unused (nothing is drawn); ``task`` names the set (default:
    the file's stem)."""
    del seed
    return PromptSet.from_file(
        path,
        tokenizer,
        task=task,
        n_prompts=n_prompts,
        prepend_bos=prepend_bos,
        answer_separator=answer_separator,
    )
