"""How many rows of a forward pass fit a memory budget: the engine's batching estimates.

Every engine run (clean cache, corrupted and patched runs, pattern capture) batches rows to a
``memory_budget_mb``. The estimate is a rough upper bound of one row's transient memory in one
block (activations, attention scores) plus its answer-position logits, from the model's shape alone.
"""

from __future__ import annotations

from patchbench.lm import LMShape

__all__ = [
    "LARGE_ALLOCATION",
    "block_bytes_per_row",
    "bytes_per_row",
    "patched_bytes_per_row",
    "rows_per_forward",
    "tokens_per_forward",
]

#: glibc's largest mmap threshold (32 MiB on 64-bit): a bigger tensor is mapped and unmapped on
#: every allocation and faulted in page by page, whatever :func:`patchbench.engine.heap.keep_freed_memory` sets.
LARGE_ALLOCATION = 32 * 2**20


def bytes_per_row(shape: LMShape, max_len: int, n_hook_elems: int = 0) -> int:
    """Rough transient memory of one row of one forward (activations of a block + answer logits)."""
    e = shape.dtype.itemsize
    s = shape
    acts = max_len * (6 * s.d_model + 3 * s.d_mlp + 3 * s.n_heads * max_len + 4 * s.n_heads * s.d_head) * e
    return acts + 4 * s.d_vocab * 8 + n_hook_elems * e


def patched_bytes_per_row(shape: LMShape, max_len: int) -> int:
    """Transient memory of one row of a patched forward: :func:`bytes_per_row` plus a patch's mask and
    clean source at a hook point."""
    return bytes_per_row(
        shape, max_len, n_hook_elems=2 * max_len * max(shape.d_model, shape.n_heads * shape.d_head)
    )


def block_bytes_per_row(shape: LMShape, max_len: int, keys_values: bool = False, heads: bool = False) -> int:
    """What a sweep's prompt block keeps per row for its patched runs: the corrupted residual stream
    entering every layer; with ``keys_values`` (suffix reuse) every layer's keys and values; with
    ``heads`` (head-output shortcut) every layer's head outputs and attention output, and the final
    residual."""
    e = shape.dtype.itemsize
    row = shape.n_layers * max_len * shape.d_model * e
    if keys_values:
        row += 2 * shape.n_layers * max_len * shape.n_kv_heads * shape.d_head * e
    if heads:
        row += (shape.n_layers * (shape.n_heads * shape.d_head + shape.d_model) + shape.d_model) * max_len * e
    return row


def rows_per_forward(shape: LMShape, max_len: int, budget_mb: int) -> int:
    """Rows of one plain forward that fit ``budget_mb``."""
    return max(1, int(budget_mb * 2**20 // max(1, bytes_per_row(shape, max_len))))


def tokens_per_forward(shape: LMShape) -> int:
    """Token rows (rows x positions) of one forward whose widest activation (the MLP's hidden layer or
    the attention's joint q, k, v projection) stays under :data:`LARGE_ALLOCATION`."""
    e = shape.dtype.itemsize
    widest = max(shape.d_mlp, 3 * shape.n_heads * shape.d_head, shape.d_model)
    return max(1, LARGE_ALLOCATION // (widest * e))
