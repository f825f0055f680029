"""Writes that cannot leave a corrupt file: a unique temporary file, fsync, atomic rename.

Every file patchbench writes (Parquet frames and prompt sets, sweep chunks and manifests, the
clean cache, JSON, CSV / Markdown / LaTeX tables, PNG / PDF figures) goes through
:func:`atomic_path`. The data is written to a temporary file with a unique name in the target's
directory (two writers of one path never share a temporary file), flushed to disk with ``fsync``,
and renamed over the target in one step (``os.replace``), after which the directory entry is
fsynced too. A reader therefore sees either the old file or the complete new one, never a partial
one, even after a SIGKILL or a power cut; a temporary file left by a killed writer is named
``.<name>.<random>.tmp`` and is never read. A write that fails because the disk (or the quota) is
full removes its temporary file and raises :class:`DiskFullError`, an InputError naming the file,
the free space and the fix: the run stops with one message, and the same command resumes it once
there is space (every finished file, sweep chunks included, is complete and kept).

    with atomic_path("results/x.parquet") as tmp:
        pq.write_table(table, tmp)
    write_text("results/x.md", text)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from patchbench.errors import InputError

__all__ = ["DiskFullError", "atomic_path", "write_bytes", "write_json", "write_text"]


class DiskFullError(InputError, OSError):
    """A write failed because the file system (or the user's quota) is full."""


#: errno values of a full file system or quota.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says that the disk is full (OSError's errno, or the text libraries such as
    pyarrow and safetensors put their OS error in)."""
    if isinstance(err, OSError) and err.errno in _FULL:
        return True
    text = str(err).lower()
    return "no space left on device" in text or "disk quota exceeded" in text


def _disk_full(path: Path, err: BaseException) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there now"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        f"{path}: the disk is full; writing it failed ({type(err).__name__}: {err}; {free}). Nothing partial was "
        "kept. Fix: free space on that file system (or point results_dir / the output at a larger one), then run "
        "the same command again: it resumes from the files already finished"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of a new file (``mkstemp`` would make it owner-only).
_MODE = 0o666 & ~_umask()


def _fsync(path: str | Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A unique temporary path beside ``path``; on leaving the block it is fsynced and renamed to ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was. Writers
    that need a format hint pass it themselves (the temporary name ends in ``.tmp``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if _is_disk_full(err):
            raise _disk_full(path, err) from None
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, _MODE)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _is_disk_full(err) and not isinstance(err, DiskFullError):
            raise _disk_full(path, err) from None
        raise
    with contextlib.suppress(OSError):  # not every file system can fsync a directory
        _fsync(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (keys in their order, trailing newline) to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")
