"""How many rows of a forward pass fit a memory budget: the engine's batching estimates.

Every engine run (clean cache, corrupted and patched runs, pattern capture) batches rows to a
``memory_budget_mb``. The estimate is a rough upper bound of one row's transient memory in one
block (activations, attention scores) plus its answer-position logits, from the model's shape alone.
"""

from __future__ import annotations

import torch

from patchbench.lm import LMShape

__all__ = ["bytes_per_row", "rows_per_forward"]


def bytes_per_row(shape: LMShape, max_len: int, n_hook_elems: int = 0) -> int:
    """Rough transient memory of one row of one forward (activations of a block + answer logits)."""
    e = torch.tensor([], dtype=shape.dtype).element_size()
    s = shape
    acts = max_len * (6 * s.d_model + 3 * s.d_mlp + 3 * s.n_heads * max_len + 4 * s.n_heads * s.d_head) * e
    return acts + 4 * s.d_vocab * 8 + n_hook_elems * e


def rows_per_forward(shape: LMShape, max_len: int, budget_mb: int) -> int:
    """Rows of one plain forward that fit ``budget_mb``."""
    return max(1, int(budget_mb * 2**20 // max(1, bytes_per_row(shape, max_len))))
