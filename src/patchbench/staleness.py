"""Staleness: whether a workflow job's existing outputs still match everything that determines them.

Snakemake reruns a job when an input file is newer than its outputs and, with its own records
under ``.snakemake/``, when a param, the set of inputs or the code changed. Those records are not
there in a fresh clone, modification times say little after a copy or a checkout, and a model's
directory, a hub model's revision, a task's data files and circuit files are read by jobs
without being produced by the workflow. So every job that reads such files, or whose outputs can
carry metadata, is checked by content:

* its **fingerprint** per output: the config facts of the rule (``common.smk``'s
  ``fingerprint``) and the digests of the files it reads (:func:`model_sources`: a model's
  ``config.json``, weights and tokenizer files by sha256; a hub model by the commit of its
  repository; a task's data files, :func:`patchbench.tasks.task_files`; circuit files);
* the job **records** that fingerprint in each output it writes (:func:`record`: the
  ``job_fingerprint`` key of the ``patchbench`` JSON in a frame's or prompt set's Parquet metadata,
  or in a clean cache's safetensors metadata);
* a **stamp** file, an input of the job, is refreshed while the Snakefile is parsed
  (:func:`refresh_stamp`), before Snakemake decides what to run: when every existing output
  that can record a fingerprint records the current one, the stamp's modification time is set to
  the epoch (never newer than an output); when one records another fingerprint, none, or cannot
  be read, it is set to now. Snakemake then reruns exactly the jobs whose outputs do not match,
  with or without ``.snakemake/``, whatever the files' modification times. A job none of whose
  outputs can record (CSV tables) has its stamp rewritten, with a new modification time, when
  its fingerprint changes.

File digests are memoised by (device, inode, size, modification and status-change time) in
``<results_dir>/.fingerprints/digests.json`` (:class:`Digests`), so a large model directory is
read once, not at every planning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from patchbench.atomic import write_json, write_text

__all__ = [
    "RECORD_KEY",
    "Digests",
    "cached_commit",
    "file_sources",
    "hub_commit",
    "model_sources",
    "recorded",
    "record",
    "refresh_stamp",
]

#: The metadata key under which an output records the fingerprint of the job that wrote it.
RECORD_KEY = "job_fingerprint"

#: Files of a model directory that determine its weights (a Hugging Face ``save_pretrained``
#: directory or a toy model's: its config and every weight file or shard index).
WEIGHT_PATTERNS = (
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    "*.pth",
)
#: Files of a model directory that determine its tokenizer.
TOKENIZER_PATTERNS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)
#: Output files that can record a fingerprint (in their metadata).
RECORDING_SUFFIXES = (".parquet", ".safetensors")
#: The stamp's modification time when the outputs match: the epoch, older than any output.
_OLD = 0


# ---------------------------------------------------------------------------------------------
# file digests


class Digests:
    """sha256 digests of files, memoised by (device, inode, size, mtime, ctime) in memory and in ``memo``.

    Any write to a file changes its ctime, which no tool can set back (``touch`` and ``os.utime``
    restore only the access and modification times), so a memoised digest is never that of an
    older content."""

    def __init__(self, memo: str | Path | None = None) -> None:
        self.memo = Path(memo) if memo is not None else None
        self._seen: dict[str, dict[str, Any]] = {}
        self._dirty = False
        if self.memo is not None and self.memo.is_file():
            try:
                loaded = json.loads(self.memo.read_text())
                self._seen = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._seen = {}

    def of(self, path: str | Path) -> str:
        """The file's sha256 (16 hex digits); ``missing`` when it does not exist."""
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            return "missing"
        key = str(p.resolve())
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        hit = self._seen.get(key)
        if hit is not None and hit.get("stat") == stamp:
            return str(hit["sha256"])
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        out = h.hexdigest()[:16]
        self._seen[key] = {"stat": stamp, "sha256": out}
        self._dirty = True
        return out

    def save(self) -> None:
        """Write the memo (atomically) if a digest was computed since it was read."""
        if self.memo is not None and self._dirty:
            write_json(self.memo, self._seen, indent=None)
            self._dirty = False


def _matching(directory: Path, patterns: Sequence[str]) -> list[Path]:
    found = {p for pattern in patterns for p in directory.glob(pattern) if p.is_file()}
    return sorted(found)


@functools.cache
def hub_commit(name: str, offline: bool) -> str:
    """``repo@commit`` of a hub model: the commit its ``main`` resolves to, asked of the hub when
    online and read from the local Hugging Face cache otherwise (or when the hub does not answer);
    ``repo@not-in-cache`` when neither knows it (the job that downloads it then fails or records it).
    Asked once per process."""
    from patchbench.lm import official_name

    repo = official_name(name)
    commit = None
    if not offline:
        try:
            from huggingface_hub import HfApi

            commit = HfApi().model_info(repo, timeout=10).sha
        except Exception:  # noqa: BLE001  (no network, unknown repository: fall back to the cache)
            commit = None
    if commit is None:
        commit = cached_commit(repo)
    return f"{repo}@{commit or 'not-in-cache'}"


def cached_commit(repo: str) -> str | None:
    """The commit of ``repo``'s ``main`` in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json")
    except Exception:  # noqa: BLE001  (not a repository name, no cache)
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def model_sources(
    spec: Any, part: Literal["weights", "tokenizer"], digests: Digests, made_here: bool = False
) -> dict[str, Any]:
    """What identifies a model's ``part`` beyond its config entry.

    A hub model: ``{"hub": "repo@commit"}``. A model directory (``source: local``, or ``toy`` with
    a ``path``): ``{"files": {name: sha256}}`` of its weight files and ``config.json``
    (:data:`WEIGHT_PATTERNS`) or its tokenizer files (:data:`TOKENIZER_PATTERNS`). A toy model
    with ``init: random`` has no weight files (its config entry's ``arch`` and seed are them).
    ``made_here``: the workflow writes the directory itself (a toy model trained in the run), so
    Snakemake's own dependencies cover it: nothing.
    """
    if spec.source == "hub":
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        return {"hub": hub_commit(spec.hub_name or spec.name, offline)}
    if made_here or not spec.path:
        return {}
    if part == "weights" and spec.source == "toy" and spec.init == "random":
        return {}
    directory = Path(spec.path)
    patterns = WEIGHT_PATTERNS if part == "weights" else TOKENIZER_PATTERNS
    return {"files": {p.name: digests.of(p) for p in _matching(directory, patterns)}}


def file_sources(paths: Iterable[str | Path], digests: Digests) -> dict[str, str]:
    """``{path: sha256}`` of ``paths`` (``missing`` for a file that is not there)."""
    return {str(p): digests.of(p) for p in paths}


# ---------------------------------------------------------------------------------------------
# recording and reading


def record(meta: dict[str, Any], fingerprint: str | None) -> dict[str, Any]:
    """``meta`` (a frame's ``attrs['patchbench']``, a prompt set's or safetensors file's metadata)
    with the job's fingerprint recorded under :data:`RECORD_KEY` (unchanged when it is None)."""
    if fingerprint is not None:
        meta[RECORD_KEY] = str(fingerprint)
    return meta


def recorded(path: str | Path) -> str | None:
    """The fingerprint an output records; None when it records none; ``unreadable: ...`` when its
    metadata cannot be read (a truncated file)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                raw = (f.metadata() or {}).get("patchbench", "{}")
        else:
            import pyarrow.parquet as pq

            raw = (pq.read_schema(path).metadata or {}).get(b"patchbench", b"{}")
        value = json.loads(raw).get(RECORD_KEY)
        return None if value is None else str(value)
    except Exception as err:  # noqa: BLE001  (every reader's error means: the file cannot be trusted)
        return f"unreadable: {type(err).__name__}"


# ---------------------------------------------------------------------------------------------
# stamps


def refresh_stamp(stamp: str | Path, expected: Mapping[str, str], fingerprint: str) -> str | None:
    """Bring a job's stamp in line with its outputs (see the module docstring).

    ``expected`` maps each output to the fingerprint it must record; ``fingerprint`` is the job's
    (their digest). Returns why the job is stale (for the log), or None.
    """
    stamp = Path(stamp)
    checked = {o: recorded(o) for o in expected if o.endswith(RECORDING_SUFFIXES) and os.path.exists(o)}
    wrong = {o: r for o, r in checked.items() if r != expected[o]}
    body = {"fingerprint": fingerprint}
    if checked and not wrong:
        _write_if_changed(stamp, body)
        os.utime(stamp, ns=(_OLD, _OLD))
        return None
    if wrong:
        body["stale"] = {o: r or "none recorded" for o, r in sorted(wrong.items())}
        body["checked_ns"] = time.time_ns()  # a new content each time: never Snakemake's recorded checksum
        write_text(stamp, json.dumps(body, indent=1) + "\n")
        first, why = next(iter(sorted(wrong.items())))
        return (
            f"{first} records fingerprint {why or 'none'}, the config and inputs give {expected[first]}"
            + (f" (and {len(wrong) - 1} more output(s))" if len(wrong) > 1 else "")
        )
    _write_if_changed(stamp, body)
    return None


def _write_if_changed(stamp: Path, body: dict[str, Any]) -> None:
    text = json.dumps(body, indent=1) + "\n"
    try:
        if stamp.read_text() == text:
            return
    except OSError:
        pass
    write_text(stamp, text)
