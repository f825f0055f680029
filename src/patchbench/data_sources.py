"""Finding a task's data file in a data directory, and the error that says how to get it.

The task generators read a *data directory* laid out like the project's offline mirror
(``../shared/data``; the toy suite's ``data/toy`` has the same layout). A missing file raises
:class:`MissingDataError` naming the file and both ways to provide it: the data rule that
fetches it from its pinned upstream (:mod:`patchbench.upstream`), or a directory that has it.
"""

from __future__ import annotations

from pathlib import Path

from patchbench.upstream import SOURCES

__all__ = ["MissingDataError", "require_data_file"]


class MissingDataError(FileNotFoundError):
    """A data file the task needs is not in the data directory."""


def require_data_file(data_dir: str | Path, relpath: str) -> Path:
    """``data_dir/relpath`` if it exists; otherwise a MissingDataError that names both fixes."""
    data_dir = Path(data_dir)
    path = data_dir / relpath
    if path.exists():
        return path
    rule = SOURCES[relpath].rule if relpath in SOURCES else None
    online = (
        f"(a) online: build it with the data rules, e.g. `snakemake --cores 1 {path}` "
        f"(rule {rule} in workflow/rules/data.smk) or `python -m patchbench.upstream {relpath} {path}`"
        if rule
        else "(a) write it yourself with the schema the task generators read (see docs/architecture.md)"
    )
    raise MissingDataError(
        f"data file {relpath!r} not found: looked for {path.resolve()} (data_dir={str(data_dir)!r}). "
        f"Provide it in one of two ways: {online}; or (b) offline: point the config key `data_dir` "
        "at a directory that has it, such as the project's mirror ../shared/data."
    )
