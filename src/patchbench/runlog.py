"""Logging for workflow steps: everything a step prints goes to its Snakemake ``log:`` file.

Scripts run by Snakemake's ``script:`` directive inherit the terminal's stderr; ``rule_log`` sends
stderr (tqdm progress bars, warnings) and the ``logging`` records of the package to the rule's
log file, so every long step leaves its progress and numbers behind. A bad input
(:class:`~patchbench.errors.InputError`) ends the step with its one message, in the log and on
the terminal, and exit status 1, without a traceback; any other exception is a bug and is logged
with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from patchbench.errors import InputError, refusing

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def rule_log(path: str | Path | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Route logging and stderr to ``path`` for the duration of the block (no-op routing when None)."""
    root = logging.getLogger()
    if path is None:
        logging.basicConfig(level=level, format=FORMAT)
        with refusing("patchbench"):
            yield logging.getLogger("patchbench")
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with refusing("patchbench"), open(path, "a", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        old_level, root.level = root.level, level
        old_stderr, sys.stderr = sys.stderr, fh
        try:
            yield logging.getLogger("patchbench")
        except InputError as err:
            logging.getLogger("patchbench").error("step refused its input: %s", err)
            raise
        except BaseException:
            logging.getLogger("patchbench").exception("step failed")
            raise
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)
            root.level = old_level
