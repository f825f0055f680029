"""The raw sweep frame and the effects frame: their columns, rows, metadata and Parquet files.

Both engines (exact patching, :mod:`patchbench.engine.sweep`; attribution patching,
:mod:`patchbench.attribution`) compute arrays of values; this module turns them into frames. One
place defines:

* the raw frame (``docs/architecture.md``): :data:`RAW_COLUMNS` (name -> dtype), one row per
  (run, target, prompt, noise sample); :data:`VALUE_COLUMNS`, the per-row outputs every metric is
  computed from; :func:`baseline_rows` (clean / corrupted rows) and :func:`patched_rows` build its
  rows and :func:`assemble_raw` its final order and dtypes;
* the effects frame: :data:`EFFECTS_COLUMNS`, one row per (component, metric);
* the metadata of both (:func:`raw_metadata`): the cell's identity (model, task, corruption, site,
  position, window, method, and a direction other than denoising), the SweepSpec, the corrupted
  run's facts and the engine's facts, stored in the Parquet file under
  the key ``patchbench`` and read back into ``frame.attrs["patchbench"]`` (:func:`write_frame`,
  :func:`read_frame`, :func:`metadata`).

It imports no torch, so analysis jobs that only read frames start fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from patchbench.atomic import atomic_path
from patchbench.config import default
from patchbench.errors import InputError, MissingInputError
from patchbench.interventions.directions import DEFAULT as DEFAULT_DIRECTION
from patchbench.interventions.directions import key

__all__ = [
    "EFFECTS_COLUMNS",
    "OPTIONAL_EFFECTS_COLUMNS",
    "RAW_COLUMNS",
    "RUNS",
    "VALUE_COLUMNS",
    "assemble_raw",
    "baseline_rows",
    "direction_of",
    "intervention",
    "frame_identity",
    "metadata",
    "patched_rows",
    "position_mode",
    "raw_metadata",
    "read_frame",
    "write_frame",
]

KEY = b"patchbench"

#: The raw frame's columns and dtypes, in order.
RAW_COLUMNS: dict[str, str] = {
    "run": "str",
    "target": "int64",
    "site": "str",
    "layer": "int64",
    "layers": "str",
    "head": "int64",
    "position": "int64",
    "window": "int64",
    "prompt": "int64",
    "sample": "int64",
    "logit_ans": "float64",
    "logit_wrong": "float64",
    "prob_ans": "float64",
    "prob_wrong": "float64",
    "kl": "float64",
}
#: The per-row outputs of a run, from which every metric is computed (the last five raw columns).
VALUE_COLUMNS: tuple[str, ...] = ("logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl")
#: The runs of a raw frame, in the frame's order.
RUNS: tuple[str, ...] = ("clean", "corrupted", "patched")

#: The effects frame's columns, in order (``prompt`` is appended for per-prompt effects).
EFFECTS_COLUMNS: tuple[str, ...] = (
    "model",
    "task",
    "corruption",
    "site",
    "window",
    "method",
    "component",
    "layer",
    "head",
    "position",
    "metric",
    "effect",
    "effect_sd",
    "n_prompts",
    "detected",
    "positions",
)
#: Effects columns a reader may do without (frames built before the column existed, synthetic frames).
OPTIONAL_EFFECTS_COLUMNS: tuple[str, ...] = ("positions",)


# ---------------------------------------------------------------------------------------------
# rows


def _column(value: Any, n: int, dtype: str) -> np.ndarray:
    np_dt = object if dtype == "str" else dtype
    return np.full(n, value, dtype=np_dt) if np.isscalar(value) else np.asarray(value, dtype=np_dt)


def baseline_rows(
    run: str,
    site: str,
    window: int,
    prompt: np.ndarray,
    sample: np.ndarray,
    values: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """Clean or corrupted rows (target -1, no layer / head / position) with their value columns."""
    n = len(prompt)
    fields = dict(
        run=run,
        target=-1,
        site=site,
        layer=-1,
        layers="",
        head=-1,
        position=-1,
        window=window,
        prompt=prompt,
        sample=sample,
        **{c: values[c] for c in VALUE_COLUMNS},
    )
    return pd.DataFrame({c: _column(fields[c], n, dt) for c, dt in RAW_COLUMNS.items()})


def patched_rows(
    targets: Sequence[Any],
    prompt: np.ndarray,
    sample: np.ndarray,
    values: Mapping[str, np.ndarray],
    positions: np.ndarray,
) -> pd.DataFrame:
    """Patched rows of ``targets`` (:class:`patchbench.sites.PatchTarget`) on the same rows, target-major.

    ``values[c]`` and ``positions`` (each row's patched position: -1 for all positions) are
    ``[n_targets, n_rows]``.
    """
    n, m = len(prompt), len(targets)
    rep = lambda xs: np.repeat(np.asarray(xs), n)  # noqa: E731
    fields: dict[str, Any] = {
        "run": "patched",
        "target": rep([t.id for t in targets]),
        "site": rep([t.site for t in targets]),
        "layer": rep([t.layer for t in targets]),
        "layers": rep([f"{t.layers[0]}:{t.layers[1]}" for t in targets]),
        "head": rep([t.head for t in targets]),
        "position": np.asarray(positions).reshape(-1),
        "window": rep([t.window for t in targets]),
        "prompt": np.tile(np.asarray(prompt), m),
        "sample": np.tile(np.asarray(sample), m),
        **{c: np.asarray(values[c], dtype=np.float64).reshape(-1) for c in VALUE_COLUMNS},
    }
    return pd.DataFrame({c: _column(fields[c], n * m, dt) for c, dt in RAW_COLUMNS.items()})


def assemble_raw(parts: Sequence[pd.DataFrame], meta: Mapping[str, Any]) -> pd.DataFrame:
    """The raw frame from its row blocks: ordered by run (clean, corrupted, patched), target,
    prompt and sample, typed by :data:`RAW_COLUMNS`, ``meta`` in ``attrs['patchbench']``."""
    raw = pd.concat(parts, ignore_index=True)
    order = {r: i for i, r in enumerate(RUNS)}
    raw = (
        raw.assign(_o=raw["run"].map(order))
        .sort_values(["_o", "target", "prompt", "sample"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
        .astype(RAW_COLUMNS)
    )
    raw.attrs["patchbench"] = dict(meta)
    return raw


# ---------------------------------------------------------------------------------------------
# metadata


def raw_metadata(
    model: str,
    prompts: Any,
    spec: Any,
    method: str,
    targets: Sequence[Any],
    corrupted: Mapping[str, Any],
    **engine: Any,
) -> dict[str, Any]:
    """A raw frame's metadata: the cell's identity, the SweepSpec, the corrupted run's facts and the
    engine's own facts.

    ``model`` is the model's name as configured; ``prompts`` the PromptSet (task, variant);
    ``spec`` the SweepSpec (its corruption, site, position, window and direction are the
    identity's; the direction is written only when it is not the default); ``corrupted`` the facts
    of the corrupted run (:meth:`patchbench.interventions.corruptions.base.Corruption.corrupted_run`:
    GN's ``sigma`` and ``noise_std``, None for the others; resample's ``source_prompt``, ...);
    ``engine`` the engine's facts (plan, sanity checks, the metrics it differentiated, ...).
    """
    out = {
        "model": model,
        "task": prompts.task,
        "variant": prompts.variant,
        "corruption": spec.corruption,
        "site": spec.site,
        "position": spec.position,
        "window": int(spec.window),
        "method": method,
        "spec": spec.to_dict(),
        **corrupted,
        "n_targets": len(targets),
        "n_prompts": len(prompts),
        "components": {int(t.id): t.component for t in targets},
        **engine,
    }
    if spec.direction != DEFAULT_DIRECTION:
        out["direction"] = spec.direction
    return out


def intervention(meta: Mapping[str, Any]) -> str:
    """The intervention key of a frame (its corruption, suffixed for a non-default direction): what its
    effects frame's ``corruption`` column holds (:func:`patchbench.interventions.directions.key`)."""
    return key(str(meta.get("corruption", "")), meta.get("direction"))


def direction_of(meta: Mapping[str, Any]) -> str:
    """A frame's direction (the default for a frame that records none)."""
    return str(meta.get("direction") or DEFAULT_DIRECTION)


def metadata(frame: pd.DataFrame) -> dict[str, Any]:
    """A copy of a frame's metadata (``attrs['patchbench']``; empty when it has none)."""
    return dict(frame.attrs.get("patchbench", {}) or {})


def frame_identity(frame: pd.DataFrame) -> tuple[str, str, str, str]:
    """(task, site, position mode, model) of a raw frame (its metadata and site column) or an
    effects frame (its columns); empty strings where a hand-made frame does not say."""
    if "effect" in frame.columns and len(frame):
        row = frame.iloc[0]
        positions = str(row["positions"]) if "positions" in frame.columns else position_mode({})
        return str(row["task"]), str(row["site"]), positions, str(row["model"])
    meta = metadata(frame)
    task, model = (str(meta.get(k) or "") for k in ("task", "model"))
    site = str(frame["site"].iloc[0]) if "site" in frame.columns and len(frame) else ""
    return task, site, position_mode(meta), model


def position_mode(meta: Mapping[str, Any]) -> str:
    """The sweep's position mode (``all``, ``each`` or a name) recorded in a raw frame's metadata;
    the SweepSpec default for a frame that records no spec (hand-made frames)."""
    return str(meta.get("spec", {}).get("position", default("experiment.position")))


# ---------------------------------------------------------------------------------------------
# files


def write_frame(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` atomically (:mod:`patchbench.atomic`) with its metadata ``df.attrs['patchbench']``.

    The metadata is stored once, under the file's ``patchbench`` key (pandas would keep a second
    copy of ``df.attrs`` in its own key); other ``attrs`` (a run's own facts, such as how many
    chunks it computed) stay out of the file, so equal frames make equal files.
    """
    frame = df.reset_index(drop=True)
    frame.attrs = {}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[KEY] = json.dumps(metadata(df), default=str, sort_keys=True).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(schema_meta), tmp)


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a frame written by :func:`write_frame`; its metadata is in ``attrs['patchbench']``.

    A missing or unreadable file is an :class:`~patchbench.errors.InputError` naming it.
    """
    path = Path(path)
    rebuild = (
        f"rebuild it: delete it and run snakemake --cores 1 {path} (the workflow rebuilds a missing file), "
        "or rerun the command that wrote it"
    )
    if not path.is_file():
        problem = "a directory, not a frame file" if path.is_dir() else "does not exist"
        build = f"build it with the workflow (snakemake --cores 1 {path}) or the command that writes it"
        raise MissingInputError.of(str(path), problem, rebuild if path.is_dir() else build)
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(KEY, b"{}"))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise InputError.of(
            str(path), f"not a readable Parquet frame ({type(err).__name__}: {err})", rebuild
        ) from None
    df = table.to_pandas()
    df.attrs["patchbench"] = meta
    return df
