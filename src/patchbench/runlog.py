"""Logging for workflow steps: everything a step prints goes to its Snakemake ``log:`` file.

Scripts run by Snakemake's ``script:`` directive inherit the terminal's stderr; ``rule_log`` sends
stderr (tqdm progress bars, warnings) and the ``logging`` records of the package to the rule's
log file, so every long step leaves its progress and numbers behind. A bad input
(:class:`~patchbench.errors.InputError`) ends the step with its one message, in the log and on
the terminal, and exit status 1, without a traceback; any other exception is a bug and is logged
with its traceback.

Progress bars redraw themselves with carriage returns, which a log file keeps as one endless
line. Inside ``rule_log`` (and for the ``patchbench`` CLI whenever stderr is not a terminal)
stderr is a :class:`ProgressLines` stream: each bar becomes whole lines, its first state, then at
most one line every :data:`PROGRESS_INTERVAL` seconds, and its last state; everything else passes
through unchanged. An interactive terminal keeps tqdm's bars as they are.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from patchbench.errors import InputError, refusing

__all__ = ["FORMAT", "PROGRESS_INTERVAL", "ProgressLines", "progress_lines", "rule_log"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Seconds between two lines of one progress bar in a log (its first and last states are always written).
PROGRESS_INTERVAL = 5.0
#: Terminal control sequences (tqdm moves the cursor for nested bars); meaningless in a file.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SEPARATOR = re.compile(r"(\r|\n)")


class ProgressLines(io.TextIOBase):
    """A text stream over ``out`` that turns carriage-return redraws into lines, rate-limited.

    Text after a carriage return is a bar's current state (tqdm writes ``\\r`` + the bar on every
    refresh). A state is written as a line when it appears and ``interval`` seconds have passed
    since the last such line; the latest state not yet written is written when the bar ends (a
    newline, a cleared line) or the stream closes. Lines without a carriage return pass through.
    """

    def __init__(
        self, out: TextIO, interval: float = PROGRESS_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._out, self._interval, self._clock = out, interval, clock
        self._line = ""  # the text since the last separator
        self._bar = False  # whether it follows a carriage return (a bar's state)
        self._written = False  # whether it has been written as a line already
        self._pending: str | None = None  # a bar's latest state not yet written
        self._last = -math.inf
        self._previous: str | None = None  # the last bar line written

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def _emit(self, text: str) -> None:
        line = text.rstrip()
        if self._bar and line and line == self._previous:  # a bar's final redraw, already written
            return
        self._out.write(line + "\n")
        self._previous = line if self._bar else None

    def _emit_bar(self, text: str) -> None:
        self._emit(text)
        self._last = self._clock()

    def write(self, s: str) -> int:
        if self._bar and self._line and s[:1] not in ("\r", "\n"):  # other text interrupts a bar
            if not self._written:
                self._pending = self._line
            self._line, self._bar, self._written = "", False, False
        for part in _SEPARATOR.split(_CONTROL.sub("", s)):
            if part == "\r":
                if self._line.strip():
                    self._pending = None if (self._written and self._bar) else self._line
                elif self._pending is not None:  # a bar cleared (tqdm's leave=False): its last state
                    self._emit_bar(self._pending)
                    self._pending = None
                self._line, self._bar, self._written = "", True, False
            elif part == "\n":
                if not self._written:
                    if self._line.strip() or self._pending is None:
                        self._emit(self._line)
                        if self._bar:
                            self._last = self._clock()
                    else:  # a blank line after a bar: the bar's last state, then the blank line
                        self._emit_bar(self._pending)
                self._pending = None
                self._line, self._bar, self._written = "", False, False
            else:
                self._line += part
        if self._bar and self._line.strip() and not self._written:
            if self._clock() - self._last >= self._interval:
                self._emit_bar(self._line)
                self._written, self._pending = True, None
        self._out.flush()
        return len(s)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        """Write a bar's last unwritten state (and any unfinished line); ``out`` stays open."""
        if not self.closed:
            if self._line.strip() and not self._written:
                self._emit(self._line)
            elif self._pending is not None:
                self._emit(self._pending)
            self._line, self._pending = "", None
            self._out.flush()
        super().close()


@contextlib.contextmanager
def progress_lines(out: TextIO, interval: float = PROGRESS_INTERVAL) -> Iterator[TextIO]:
    """``sys.stderr`` as a :class:`ProgressLines` over ``out`` for the block (restored after it)."""
    old, stream = sys.stderr, ProgressLines(out, interval)
    sys.stderr = stream
    try:
        yield stream
    finally:
        sys.stderr = old
        stream.close()


@contextlib.contextmanager
def rule_log(path: str | Path | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Route logging and stderr to ``path`` for the duration of the block (no-op routing when None);
    progress bars become lines (:class:`ProgressLines`)."""
    root = logging.getLogger()
    if path is None:
        logging.basicConfig(level=level, format=FORMAT)
        with refusing("patchbench"):
            yield logging.getLogger("patchbench")
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with refusing("patchbench"), open(path, "a", buffering=1) as fh, progress_lines(fh) as err:
        handler = logging.StreamHandler(err)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        old_level, root.level = root.level, level
        try:
            yield logging.getLogger("patchbench")
        except InputError as error:
            logging.getLogger("patchbench").error("step refused its input: %s", error)
            raise
        except BaseException:
            logging.getLogger("patchbench").exception("step failed")
            raise
        finally:
            root.removeHandler(handler)
            root.level = old_level
