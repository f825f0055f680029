"""Parquet I/O for the project's frames (raw sweeps, effects) with JSON metadata attached.

The metadata (model, task, corruption, sweep spec, sanity checks) travels inside the file under
the key ``patchbench`` and comes back as ``frame.attrs["patchbench"]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KEY = b"patchbench"


def write_frame(df: pd.DataFrame, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Write ``df`` atomically (temp file + rename), with ``meta`` (default ``df.attrs['patchbench']``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = meta if meta is not None else df.attrs.get("patchbench", {})
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[KEY] = json.dumps(meta, default=str, sort_keys=True).encode()
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table.replace_schema_metadata(schema_meta), tmp)
    os.replace(tmp, path)


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a frame written by :func:`write_frame`; its metadata is in ``attrs['patchbench']``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; build it with the workflow (snakemake {path})")
    table = pq.read_table(path)
    df = table.to_pandas()
    df.attrs["patchbench"] = json.loads((table.schema.metadata or {}).get(KEY, b"{}"))
    return df
