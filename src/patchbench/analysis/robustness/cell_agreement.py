"""Agreement between the cells of one grid: Jaccard of detections, Spearman of effects, with intervals.

:func:`pairwise_agreement` gives one row per pair of cells; :func:`jaccard_matrix`,
:func:`pearson_matrix` and :func:`average_ranks` compute every pair at once, for the full data and
every resample.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from patchbench.analysis.robustness.grid import AXES, GridDraws, _labels


# ----------------------------------------------------------------------------- agreement
def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their average rank (Spearman's ranks; scipy's
    ``rankdata(method="average")`` without importing scipy.stats, which costs seconds per job)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    flat = x.reshape(-1, n)
    order = np.argsort(flat, axis=-1)  # ties get their average rank whatever their order
    xs = np.take_along_axis(flat, order, axis=-1)
    same = xs[:, 1:] == xs[:, :-1]  # tie with the right neighbour
    idx = np.arange(n)
    starts = np.where(np.concatenate([np.ones((len(flat), 1), bool), ~same], axis=1), idx, 0)
    ends = np.where(np.concatenate([~same, np.ones((len(flat), 1), bool)], axis=1), idx, n - 1)
    first = np.maximum.accumulate(starts, axis=-1)  # first index of each value's tie group
    last = np.minimum.accumulate(ends[:, ::-1], axis=-1)[:, ::-1]  # and its last
    avg = (first + last) / 2.0 + 1.0
    ranks = np.empty_like(avg)
    np.put_along_axis(ranks, order, avg, axis=-1)
    return ranks.reshape(x.shape)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_t a[i, ..., t] b[j, ..., t] for every pair of cells: (C, ..., T) -> (..., C, C), one batched matmul."""
    a2, b2 = np.moveaxis(a, 0, -2), np.moveaxis(b, 0, -2)  # (..., C, T)
    return a2 @ np.swapaxes(b2, -1, -2)


def pearson_matrix(x: np.ndarray) -> np.ndarray:
    """Pearson correlation over the last axis between every pair of cells (first axis):
    (C, ..., T) -> (..., C, C); NaN where either side is constant (Spearman on ranks)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    norm = np.sqrt((xc * xc).sum(-1))  # (C, ...)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = xc / norm[..., None]
        out = _pairwise(z, z)
    const = np.moveaxis(norm == 0, 0, -1)  # (..., C)
    return np.where(const[..., :, None] | const[..., None, :], np.nan, out)


def jaccard_matrix(signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jaccard index of the detections (component and sign) between every pair of cells, 1 where
    neither detects anything: (C, ..., T) signs -> ((..., C, C) Jaccard, (..., C, C) shared count)."""
    pos, neg = (signs > 0).astype(np.float64), (signs < 0).astype(np.float64)
    both = _pairwise(pos, pos) + _pairwise(neg, neg)
    n = np.moveaxis((signs != 0).sum(-1), 0, -1).astype(np.float64)  # (..., C)
    union = n[..., :, None] + n[..., None, :] - both
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, both / np.maximum(union, 1), 1.0), both


def pairwise_agreement(grid: GridDraws) -> pd.DataFrame:
    """One row per pair of cells: Jaccard of detections and Spearman of effects, with bootstrap intervals.

    Columns: ``cell_a``, ``cell_b`` (labels), the two cells' corruption / metric / window, ``same``
    (the axes on which the pair agrees), ``n_a``, ``n_b``, ``n_both`` (detections), ``jaccard``,
    ``jaccard_low``, ``jaccard_high``, ``spearman``, ``spearman_low``, ``spearman_high``.
    """
    s = grid.settings
    point_s, draw_s = grid.signs()
    finite = np.isfinite(grid.point).all(axis=0)
    jac_p, both_p = jaccard_matrix(point_s)  # (C, C)
    jac_d, _ = jaccard_matrix(draw_s)  # (B, C, C)
    rho_p = pearson_matrix(average_ranks(grid.point[:, finite]))
    rho_d = pearson_matrix(average_ranks(grid.draws[:, :, finite]))
    i, j = np.triu_indices(len(grid.cells), k=1)
    a = (1.0 - s.ci) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair whose every resample is NaN
        jac_lo, jac_hi = np.nanquantile(jac_d[:, i, j], [a, 1.0 - a], axis=0)
        rho_lo, rho_hi = np.nanquantile(rho_d[:, i, j], [a, 1.0 - a], axis=0)
    cells = grid.cells.reset_index(drop=True)
    labels = np.array(_labels(cells))
    ca, cb = cells.iloc[i].reset_index(drop=True), cells.iloc[j].reset_index(drop=True)
    same = np.stack([(ca[x] == cb[x]).to_numpy() for x in AXES], axis=1)
    n = (point_s != 0).sum(axis=1)
    return pd.DataFrame({
        "cell_a": labels[i], "cell_b": labels[j],
        **{f"{x}_a": ca[x] for x in AXES}, **{f"{x}_b": cb[x] for x in AXES},
        "same": ["+".join(x for x, ok in zip(AXES, row, strict=True) if ok) for row in same],
        "n_a": n[i], "n_b": n[j], "n_both": both_p[i, j].astype(np.int64),
        "jaccard": jac_p[i, j], "jaccard_low": jac_lo, "jaccard_high": jac_hi,
        "spearman": rho_p[i, j], "spearman_low": rho_lo, "spearman_high": rho_hi,
    })  # fmt: skip
