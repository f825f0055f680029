"""The user-input error: a bad config, prompt set, model directory, file or command-line flag.

Every error a user can fix by changing an input derives from :class:`InputError`
(:class:`patchbench.config.ConfigError`, :class:`patchbench.prompts.PromptSetError`,
:class:`patchbench.models.ModelNotFoundError`, the checks of :mod:`patchbench.preflight`). Its
message names the input, says what is wrong and how to fix it; the entry points (the CLI, the
Snakefile, the workflow's scripts through :func:`patchbench.runlog.rule_log`) print that message
alone, without a traceback, and exit non-zero. Any other exception is a bug and keeps its traceback.

    raise InputError.of("--heads", "'abc' is not L.H,L.H,...", "write heads as layer.head, e.g. 7.3,7.9")
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["InputError", "MissingInputError", "refusing", "require_file"]


class InputError(Exception):
    """An input the user must fix: the message names the input, the problem and the fix."""

    @classmethod
    def of(cls, what: str, problem: str, fix: str) -> InputError:
        """``{what}: {problem}. Fix: {fix}`` (the one shape of a pre-flight message)."""
        return cls(f"{what}: {problem}. Fix: {fix}")


class MissingInputError(InputError, FileNotFoundError):
    """An input file or directory that does not exist (also a ``FileNotFoundError``)."""


def require_file(path: Path, what: str, fix: str) -> None:
    """A MissingInputError ``{what}: does not exist`` (or ``is not a file``) ``. Fix: {fix}`` unless
    ``path`` is a file."""
    if not path.is_file():
        raise MissingInputError.of(what, "does not exist" if not path.exists() else "is not a file", fix)


@contextlib.contextmanager
def refusing(prog: str, code: int = 1) -> Iterator[None]:
    """Print an InputError raised inside the block as ``prog: error: message`` (no traceback), exit ``code``."""
    try:
        yield
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None
