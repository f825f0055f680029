"""A model's shape as the engine reads it, and the model interface's shared vocabulary.

:class:`LMShape` (layers, heads, key-value heads, sizes, dtype, route, ...) is read once at load;
:data:`SITE_HOOKS` names the hook point of each patch site; :class:`ModelInterfaceError` is what
every part of :mod:`patchbench.lm` raises when a model cannot be run exactly; ``_Tol`` is the
relative tolerance its checks allow per dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Route = Literal["transformers", "legacy", "native"]

#: HookedTransformer hook point of each patch site (compatibility-mode names), plus the attention
#: pattern (read by the pattern capture of paper section 3.2) and the attention module's output
#: (``o(z)`` plus ``b_O``, before any post-attention norm: what the head-output shortcut replaces).
SITE_HOOKS: dict[str, str] = {
    "attn_head": "blocks.{layer}.attn.hook_z",
    "head_v": "blocks.{layer}.attn.hook_v",
    "mlp": "blocks.{layer}.hook_mlp_out",
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "pattern": "blocks.{layer}.attn.hook_pattern",
    "attn_out": "blocks.{layer}.attn.hook_out",
}


class ModelInterfaceError(RuntimeError):
    """The model cannot be run exactly through this interface (the message says why and what to do)."""


@dataclass(frozen=True)
class LMShape:
    """What the engine needs to know about a model's shape (read once at load)."""

    architecture: str
    route: Route
    n_layers: int
    n_heads: int
    n_kv_heads: int  # key-value heads: n_heads unless the model uses grouped-query attention
    d_head: int
    d_model: int
    d_mlp: int  # 0 for attention-only models
    d_vocab: int
    n_ctx: int
    dtype: torch.dtype
    device: str
    positional: str  # standard | rotary | ...
    processed: bool  # HookedTransformer weight processing applied (fold LN, centre writing weights, ...)
    kv_reuse: bool  # suffix-only runs on cached keys / values are supported
    sliding_window: int | None
    logit_softcap: float | None

    @property
    def grouped_query(self) -> bool:
        return self.n_kv_heads != self.n_heads


@dataclass(frozen=True)
class _Tol:
    rel: float

    @classmethod
    def of(cls, dtype: torch.dtype) -> _Tol:
        # float64: 1e-7, not rounding level, because some Hugging Face attentions (GPT-J's) compute
        # their scores in float32 whatever the model dtype; every trap this guards is >= 1e-3.
        return cls({torch.float64: 1e-7, torch.float32: 1e-4}.get(dtype, 3e-2))
