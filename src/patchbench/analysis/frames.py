"""Reading, validating and slicing the effects and raw sweep frames for the paper outputs.

The frames are defined in :mod:`patchbench.rawframe` (and ``docs/architecture.md``). The effects frame is long: one row per
(component, metric) of one (model, task, corruption, site, window, method). The analysis reads
several effects files at once (all corruptions of a task, all windows of a sweep) and needs the
same few selections everywhere: one model, the exact method, a task / site / corruption, the
detected heads of one plot. Those live here so that tables, figures and claims agree.

Corruption names are compared case-insensitively (``str`` and ``STR`` are the same corruption).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from patchbench.analysis.labels import corruption_label
from patchbench.errors import InputError
from patchbench.rawframe import EFFECTS_COLUMNS, OPTIONAL_EFFECTS_COLUMNS, RAW_COLUMNS

__all__ = [
    "FrameError",
    "detected_heads",
    "head_label",
    "one_model",
    "read_baselines",
    "read_effects",
    "read_frames",
    "read_sweeps",
    "select",
    "sort_head_labels",
    "validate_effects",
    "validate_sweep",
]

log = logging.getLogger(__name__)

#: The effects columns every reader needs (the schema itself is :mod:`patchbench.rawframe`'s).
REQUIRED_EFFECTS_COLUMNS = tuple(c for c in EFFECTS_COLUMNS if c not in OPTIONAL_EFFECTS_COLUMNS)


class FrameError(InputError, ValueError):
    """An input frame breaks the contract of docs/architecture.md (the message says how)."""


def _check_columns(df: pd.DataFrame, required: Iterable[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise FrameError(
            f"{what} lacks columns {missing}; expected the schema of docs/architecture.md "
            f"(columns {list(required)})."
        )


def validate_effects(df: pd.DataFrame, what: str = "effects frame") -> pd.DataFrame:
    """Check the columns, normalise corruption names to STR / GN and ``detected`` NaN -> ''."""
    _check_columns(df, REQUIRED_EFFECTS_COLUMNS, what)
    out = df.copy()
    out["corruption"] = out["corruption"].map(corruption_label)
    out["detected"] = out["detected"].fillna("").astype(str)
    bad = set(out["detected"]) - {"", "positive", "negative"}
    if bad:
        raise FrameError(
            f"{what}: column 'detected' has values {sorted(bad)}; allowed: '', positive, negative"
        )
    for col in ("layer", "head", "position", "window"):
        out[col] = out[col].astype(np.int64)
    return out


def validate_sweep(df: pd.DataFrame, what: str = "raw sweep frame") -> pd.DataFrame:
    """Check the raw sweep columns and the run labels."""
    _check_columns(df, RAW_COLUMNS, what)
    bad = set(df["run"]) - {"clean", "corrupted", "patched"}
    if bad:
        raise FrameError(f"{what}: column 'run' has values {sorted(bad)}; allowed: clean, corrupted, patched")
    return df


def read_frames(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate parquet files (an empty frame when ``paths`` is empty)."""
    frames = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist; run the workflow rule that produces it first.")
        frames.append(pd.read_parquet(p))
        log.debug("read %s (%d rows)", p, len(frames[-1]))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def read_effects(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Read and validate effects files; no paths give an empty frame with the effects columns."""
    df = read_frames(paths)
    if df.empty and not len(df.columns):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in REQUIRED_EFFECTS_COLUMNS})
    return validate_effects(df, what=f"effects files {[str(p) for p in paths]}")


#: The clean / corrupted baselines an effects file records in its metadata (``metrics.baselines``).
BASELINE_KEYS = ("clean_logit_diff", "corrupted_logit_diff", "clean_prob_ans", "corrupted_prob_ans")


def read_baselines(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (model, task, corruption) of the effects files' recorded baselines.

    The clean and corrupted runs do not depend on what a sweep patches, so every effects file of a
    (model, task, corruption) records the same numbers; the first one read is kept.
    """
    from patchbench.rawframe import metadata, read_frame

    rows = []
    for p in paths:
        frame = read_frame(p)
        meta = metadata(frame)
        if not len(frame) or not all(k in meta for k in BASELINE_KEYS):
            continue
        first = frame.iloc[0]
        rows.append({"model": str(first["model"]), "task": str(first["task"]),
                     "corruption": corruption_label(first["corruption"]),
                     **{k: float(meta[k]) for k in BASELINE_KEYS}})  # fmt: skip
    cols = ["model", "task", "corruption", *BASELINE_KEYS]
    out = pd.DataFrame(rows, columns=cols)
    return out.drop_duplicates(["model", "task", "corruption"]).reset_index(drop=True)


def read_sweeps(paths: Sequence[str | Path], labels: Sequence[dict] | None = None) -> pd.DataFrame:
    """Read raw sweep files; ``labels[i]`` (e.g. ``{"model": m, "corruption": c}``) tags file i.

    The raw sweep frame does not carry model / task / corruption columns (they are in the file
    metadata and the path), so callers that mix files name them here.
    """
    frames = []
    for i, p in enumerate(paths):
        df = validate_sweep(read_frames([p]), what=str(p))
        for k, v in (labels[i] if labels else {}).items():
            df[k] = corruption_label(v) if k == "corruption" else v
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RAW_COLUMNS))


def select(df: pd.DataFrame, **equals: object) -> pd.DataFrame:
    """Rows whose columns equal the given values; a list / tuple / set value means 'one of'.

    ``corruption`` is compared after normalisation (``str`` == ``STR``).
    """
    mask = np.ones(len(df), dtype=bool)
    for col, val in equals.items():
        if val is None:
            continue
        if col not in df.columns:
            raise FrameError(f"cannot select on {col!r}: the frame has columns {list(df.columns)}")
        series = df[col]
        if col == "corruption":
            series = series.map(corruption_label)
            val = (
                [corruption_label(v) for v in val]
                if isinstance(val, list | tuple | set)
                else corruption_label(val)
            )
        mask &= (
            series.isin(list(val)).to_numpy()
            if isinstance(val, list | tuple | set)
            else (series == val).to_numpy()
        )
    return df.loc[mask]


def one_model(df: pd.DataFrame, model: str | None = None) -> tuple[pd.DataFrame, str]:
    """Restrict to ``model``, or check that the frame holds exactly one model and name it."""
    if model is not None:
        out = select(df, model=model)
        if out.empty and not df.empty:
            raise FrameError(f"no rows for model {model!r}; the frame has models {sorted(set(df['model']))}")
        return out, model
    models = sorted(set(df["model"])) if "model" in df.columns else []
    if len(models) != 1:
        raise FrameError(f"expected one model in the frame, found {models}; pass model=... to choose one")
    return df, models[0]


def head_label(layer: int, head: int) -> str:
    """``L.H`` as the paper writes heads (0-indexed)."""
    return f"{int(layer)}.{int(head)}"


def sort_head_labels(labels: Iterable[str]) -> list[str]:
    """Sort ``L.H`` labels numerically (9.9 before 10.0)."""
    return sorted(set(labels), key=lambda s: tuple(int(x) for x in s.split(".")))


def detected_heads(df: pd.DataFrame, sign: str | None = None) -> list[str]:
    """Sorted ``L.H`` labels of detected rows (``sign`` = 'positive' / 'negative' / None = either)."""
    det = df["detected"].fillna("").astype(str)
    mask = det != "" if sign is None else det == sign
    rows = df.loc[mask]
    return sort_head_labels(head_label(la, h) for la, h in zip(rows["layer"], rows["head"], strict=True))
