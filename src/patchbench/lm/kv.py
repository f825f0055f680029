"""Key/value caches for suffix reuse: capture a run's keys and values, replay a prefix of them.

:class:`KVCapture` records the keys and values every attention layer computes in one run;
:class:`PrefixKV` holds those of the first positions and feeds them to a suffix-only run, counting
every use so that a cache the attention does not read raises. TransformerLens's own attention
(native and legacy routes) has no cache: ``_native_cached_forward`` is its forward with one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from patchbench.lm.shape import ModelInterfaceError


class KVCapture:
    """Records the keys and values every attention layer computes during one run.

    Pass it to :meth:`LM.run_blocks` (``capture=``); afterwards :meth:`prefix` gives the keys
    and values of the first ``p`` positions as a :class:`PrefixKV`. Keys are those attention
    actually uses (after rotary embeddings), ``[batch, n_kv_heads, pos, d_head]``.
    """

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.calls: dict[int, int] = {}

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        layer = int(layer_idx)
        self.calls[layer] = self.calls.get(layer, 0) + 1
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def prefix(self, p: int) -> PrefixKV:
        """Keys and values of positions ``< p`` of every captured layer."""
        if not self.keys:
            raise ModelInterfaceError("KVCapture holds nothing: run LM.run_blocks(..., capture=it) first")
        n = next(iter(self.keys.values())).shape[-2]
        if not 0 < p <= n:
            raise ValueError(f"prefix length {p} is outside 1..{n} (the captured run's length)")
        return PrefixKV(
            {i: k[..., :p, :] for i, k in self.keys.items()},
            {i: v[..., :p, :] for i, v in self.values.items()},
        )


class PrefixKV:
    """Fixed keys and values of positions ``0..length-1`` that a suffix-only run attends to.

    The attention layers call :meth:`update` with the suffix's own keys and values; it returns
    prefix + suffix along the position axis and never mutates the prefix, so one ``PrefixKV``
    serves any number of suffix runs. Every call is counted per layer; :meth:`LM.run_blocks`
    raises unless each block it ran read the prefix exactly once.
    """

    def __init__(
        self, keys: Mapping[int, torch.Tensor], values: Mapping[int, torch.Tensor], reps: int = 1
    ) -> None:
        if reps < 1:
            raise ValueError(f"PrefixKV: reps must be >= 1, got {reps}")
        if set(keys) != set(values):
            raise ValueError("PrefixKV: keys and values must cover the same layers")
        lengths = {int(k.shape[-2]) for k in keys.values()} | {int(v.shape[-2]) for v in values.values()}
        if len(lengths) != 1:
            raise ValueError(f"PrefixKV: layers disagree on the prefix length ({sorted(lengths)})")
        self.keys = dict(keys)
        self.values = dict(values)
        self.length = lengths.pop()
        self.reps = int(reps)
        self.calls: dict[int, int] = {}
        self.seen_lengths: dict[int, int] = {}

    @property
    def batch(self) -> int:
        return int(next(iter(self.keys.values())).shape[0]) * self.reps

    def repeat(self, m: int) -> PrefixKV:
        """The prefix for ``m`` copies of the rows (target-major: row ``j * batch + r``).

        The copies are made one layer at a time, when that layer's attention reads them, so a
        chunk of many targets never holds every layer's repeated keys and values at once.
        """
        if m < 1:
            raise ValueError(f"PrefixKV.repeat: m must be >= 1, got {m}")
        return PrefixKV(self.keys, self.values, reps=self.reps * m)

    def reset(self) -> None:
        self.calls.clear()
        self.seen_lengths.clear()

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        layer = int(layer_idx)
        if layer not in self.keys:
            raise ModelInterfaceError(
                f"PrefixKV has no keys for layer {layer} (it holds {sorted(self.keys)})"
            )
        pk, pv = self.keys[layer], self.values[layer]
        if self.reps > 1:
            pk = pk.repeat(self.reps, *([1] * (pk.dim() - 1)))
            pv = pv.repeat(self.reps, *([1] * (pv.dim() - 1)))
        if pk.shape[0] != k.shape[0] or pk.shape[1] != k.shape[1] or pk.shape[-1] != k.shape[-1]:
            raise ModelInterfaceError(
                f"layer {layer}: prefix keys {tuple(pk.shape)} do not fit the suffix keys {tuple(k.shape)} "
                "(batch, key-value heads and d_head must agree; use PrefixKV.repeat for several targets)"
            )
        self.calls[layer] = self.calls.get(layer, 0) + 1
        k = torch.cat([pk.to(k.dtype), k], dim=-2)
        v = torch.cat([pv.to(v.dtype), v], dim=-2)
        self.seen_lengths[layer] = int(k.shape[-2])
        return k, v


# ---------------------------------------------------------------------------------------------
# TransformerLens's NativeAttention with the interface's key/value cache


def _native_cached_forward(cache: KVCapture | PrefixKV, layer: int) -> Callable[..., Any]:
    """``NativeAttention.forward`` (TransformerLens 4.3) with the keys and values passed through
    ``cache.update`` after rotary embeddings, as Hugging Face attentions do: the suffix's own
    projections (and their hooks) are computed as in the original; attention reads prefix + suffix
    keys and values under the interface's explicit rectangular causal mask. The interface checks
    every block called ``update`` exactly once with the expected key length, and
    :meth:`LM.self_check` compares a suffix run with the full forward at load."""
    from transformer_lens.model_bridge.sources.native.model import apply_softcap

    def forward(
        self: Any,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        pattern_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq, _ = hidden_states.shape
        q = self.q(hidden_states).view(batch, seq, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
        v = self.v(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
        if self.rotary is not None:
            q, k = self.rotary.apply_rope(q, k, position_ids=position_ids)
        k, v = cache.update(k, v, layer)
        if self.kv_repeats > 1:
            k = k.repeat_interleave(self.kv_repeats, dim=1)
            v = v.repeat_interleave(self.kv_repeats, dim=1)
        if attention_mask is None or attention_mask.dim() != 4 or attention_mask.shape[-1] != k.shape[-2]:
            raise ModelInterfaceError(
                f"layer {layer}: a cached native attention needs the interface's 4-D mask over "
                f"{k.shape[-2]} keys, got {None if attention_mask is None else tuple(attention_mask.shape)}"
            )
        scores = torch.matmul(q, k.transpose(-2, -1)) / self.scale
        scores = apply_softcap(scores, self.attn_scores_soft_cap)
        block_mask = attention_mask < -1.0  # the interface's additive causal mask (finfo.min where masked)
        scores = scores.masked_fill(block_mask, float("-inf"))
        pattern = torch.nn.functional.softmax(scores, dim=-1)
        pattern = pattern.masked_fill(block_mask, 0.0)
        if pattern_fn is not None:
            pattern = pattern_fn(pattern)
        attn = torch.matmul(pattern, v).transpose(1, 2).contiguous().view(batch, seq, -1)
        return self.o(attn), pattern

    return forward
