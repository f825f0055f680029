"""Resumable sweeps: every finished chunk of a sweep on disk, skipped when the sweep reruns.

A checkpoint directory belongs to one sweep, named by a fingerprint of the model, the prompts,
the SweepSpec, GN's sigma and the batching plan (``manifest.json``). Each prompt block's corrupted
rows (``base-BBBBB.parquet``) and each (block, target chunk)'s patched rows
(``chunk-BBBBB-CCCCC.parquet``) are written atomically as they finish; a rerun reads them instead
of computing them, and its frame is bitwise identical to an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchbench.engine.forward import parameter_digest
from patchbench.prompts import PromptSet
from patchbench.sites import SweepSpec

__all__ = ["Checkpoint", "sweep_fingerprint"]


def sweep_fingerprint(model, prompts: PromptSet, spec: SweepSpec, sigma: float | None, plan: dict) -> str:
    """16 hex digits naming one sweep: spec, sigma, plan, model shape and weights, clean and corrupted ids."""
    h = hashlib.sha256()
    cfg = model.cfg
    h.update(
        json.dumps(
            {
                "spec": spec.to_dict(),
                "sigma": sigma,
                "plan": plan,
                "cfg": str(cfg.model_name),
                "shape": [cfg.n_layers, cfg.d_model, cfg.d_vocab],
            },
            sort_keys=True,
        ).encode()
    )
    h.update(prompts.tokens("clean").numpy().tobytes())
    h.update(prompts.tokens("corrupted").numpy().tobytes())
    for s in parameter_digest(model):
        h.update(np.float64(s).tobytes())
    return h.hexdigest()[:16]


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


class Checkpoint:
    """The checkpoint directory of one sweep (created, or checked to belong to the same sweep)."""

    def __init__(
        self, directory: str | Path, fingerprint: str, spec: SweepSpec, plan: dict[str, Any]
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if old.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"checkpoint directory {self.dir} belongs to another sweep (fingerprint {old.get('fingerprint')} "
                    f"!= {fingerprint}); delete it or choose another checkpoint_dir"
                )
        else:
            tmp = manifest.with_name("manifest.json.tmp")
            tmp.write_text(json.dumps({"fingerprint": fingerprint, "spec": spec.to_dict(), "plan": plan}))
            os.replace(tmp, manifest)

    def base_path(self, block: int) -> Path:
        return self.dir / f"base-{block:05d}.parquet"

    def chunk_path(self, block: int, chunk: int) -> Path:
        return self.dir / f"chunk-{block:05d}-{chunk:05d}.parquet"

    def load(self, path: Path) -> pd.DataFrame | None:
        """The rows finished at ``path``, or None when they are still to compute."""
        return pd.read_parquet(path) if path.exists() else None

    def save(self, df: pd.DataFrame, path: Path) -> None:
        _write_atomic(df, path)
