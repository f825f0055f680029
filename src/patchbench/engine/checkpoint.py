"""Resumable sweeps: every finished chunk of a sweep on disk, skipped when the sweep reruns.

A checkpoint directory belongs to one sweep, named by :func:`sweep_fingerprint` (everything that
determines the sweep's numbers: the model's weights, dtype and architecture, the prompts' ids,
answers and positions, the SweepSpec with its corruption's settings, direction and seed, GN's
sigma, the corrupted run's other facts (a resample pairing, a reference set), the batching plan and
the engine's format version), recorded in its ``manifest.json``. Each prompt block's
corrupted rows (``base-BBBBB.parquet``) and each (block, target chunk)'s patched rows
(``chunk-BBBBB-CCCCC.parquet``) are written atomically (:mod:`patchbench.atomic`) as they finish;
a rerun reads them instead of computing them, and its frame is bitwise identical to an
uninterrupted run's.

Nothing in a checkpoint is trusted blindly: a directory whose manifest names another fingerprint
(or that has no manifest) is emptied and the sweep recomputed, and a chunk that cannot be read
or has the wrong rows (a truncated file, a stray one) is deleted and recomputed; each with a
warning in the log, never an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from patchbench.atomic import atomic_path, write_json
from patchbench.errors import InputError
from patchbench.fingerprint import digest, model_digest, prompts_digest
from patchbench.lm import LM
from patchbench.prompts import PromptSet
from patchbench.rawframe import read_frame, write_frame
from patchbench.sites import SweepSpec

__all__ = ["Checkpoint", "sweep_fingerprint"]

log = logging.getLogger(__name__)

#: The files of a checkpoint directory (the manifest last).
_PIECES = ("base-*.parquet", "chunk-*.parquet", "raw.parquet", ".*.tmp", "manifest.json")


def sweep_fingerprint(
    model: LM,
    prompts: PromptSet,
    spec: SweepSpec,
    sigma: float | None,
    plan: dict,
    corrupted: Mapping[str, Any] | None = None,
) -> str:
    """16 hex digits naming one sweep's numbers (see the module docstring); ``corrupted`` holds the
    corrupted run's facts beyond the spec (a resample pairing, a reference set's digest), which join
    the hash only when there are any."""
    facts = {
        "model": model_digest(model),
        "prompts": prompts_digest(prompts),
        "spec": spec.to_dict(),
        "sigma": sigma,
        "plan": plan,
    }
    if corrupted:
        facts["corrupted"] = dict(corrupted)
    return digest(facts)


class Checkpoint:
    """The checkpoint directory of one sweep: created, kept when it belongs to the same sweep, else emptied."""

    def __init__(
        self,
        directory: str | Path,
        fingerprint: str,
        spec: SweepSpec,
        plan: dict[str, Any],
        logger: logging.Logger | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.log = logger or log
        if self.dir.exists() and not self.dir.is_dir():
            self.log.warning("checkpoint path %s is not a directory: removing it", self.dir)
            self.dir.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        old = self._manifest(manifest)
        if old is None or old.get("fingerprint") != fingerprint:
            stale = [p for pattern in _PIECES for p in self.dir.glob(pattern)]
            if stale:
                found = "no readable manifest" if old is None else f"fingerprint {old.get('fingerprint')}"
                self.log.warning(
                    "checkpoint %s holds another sweep (%s, this sweep is %s): discarding its %d file(s) "
                    "and computing every chunk",
                    self.dir,
                    found,
                    fingerprint,
                    len(stale),
                )
            for p in stale:
                p.unlink(missing_ok=True)
            write_json(manifest, {"fingerprint": fingerprint, "spec": spec.to_dict(), "plan": plan})

    @staticmethod
    def _manifest(path: Path) -> dict[str, Any] | None:
        try:
            out = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return out if isinstance(out, dict) else None

    def base_path(self, block: int) -> Path:
        return self.dir / f"base-{block:05d}.parquet"

    def chunk_path(self, block: int, chunk: int) -> Path:
        return self.dir / f"chunk-{block:05d}-{chunk:05d}.parquet"

    def load(self, path: Path, n_rows: int, columns: Sequence[str]) -> pd.DataFrame | None:
        """The rows finished at ``path``, or None when they are still to compute.

        A file that cannot be read, or lacks ``columns`` or has other than ``n_rows`` rows, is
        deleted (with a warning) and reported as still to compute.
        """
        if not path.exists():
            return None
        try:
            df = pd.read_parquet(path)
            problem = None
            if list(df.columns) != list(columns):
                problem = f"columns {list(df.columns)}, expected {list(columns)}"
            elif len(df) != n_rows:
                problem = f"{len(df)} rows, expected {n_rows}"
        except Exception as err:  # noqa: BLE001  (any unreadable file is recomputed, whatever the reader raised)
            df, problem = None, f"unreadable: {type(err).__name__}: {err}"
        if problem is None:
            return df
        self.log.warning("discarding checkpoint chunk %s (%s); recomputing it", path, problem)
        path.unlink(missing_ok=True)
        return None

    def load_frame(self, name: str) -> pd.DataFrame | None:
        """A whole frame with its metadata saved by :meth:`save_frame`, or None (a damaged one is deleted, logged)."""
        path = self.dir / f"{name}.parquet"
        if not path.exists():
            return None
        try:
            return read_frame(path)
        except InputError as err:
            self.log.warning("discarding checkpoint frame %s (%s); recomputing it", path, err)
            path.unlink(missing_ok=True)
            return None

    def save_frame(self, df: pd.DataFrame, name: str) -> None:
        """Write a whole frame with its metadata (:func:`patchbench.rawframe.write_frame`)."""
        write_frame(df, self.dir / f"{name}.parquet")

    def save(self, df: pd.DataFrame, path: Path) -> None:
        """Write finished rows atomically (unique temporary file, fsync, rename)."""
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
