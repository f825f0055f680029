"""The model interface: the only code that touches TransformerLens's model classes.

The patching engine needs five things of a language model, and nothing else:

1. **embed** token ids into the residual stream entering block 0, with the GN noise point: noise
   is added to the token embeddings (the output of the model's own embedding layer, ``hook_embed``)
   before positional embeddings, as ROME's causal tracing does;
2. **run block i** on a residual stream, so a patched run can start at its first patched layer on
   a cached residual, with hooks at the patch sites firing;
3. **keys and values for suffix reuse**: capture the keys and values a run computes, and run a
   later forward on positions ``>= p`` only, attending to the captured keys and values of the
   positions ``< p``;
4. **final norm + unembedding at one position** per row;
5. the model's **raw token embeddings** (before any weight processing) for GN's sigma (ROME's
   ``collect_embedding_std``), and its shape: layers, heads, key-value heads, vocabulary, dtype,
   device, the hook name of each patch site.

:class:`LM` provides them for TransformerLens 4's ``TransformerBridge`` in compatibility mode
(HookedTransformer hook names and, by default, HookedTransformer's weight processing), loaded
by one of three routes: :func:`load_transformers` (a Hugging Face hub name or a local
``save_pretrained`` directory, through ``TransformerBridge.boot_transformers``),
:func:`load_legacy` (TransformerLens-format repositories such as attn-only-4l, through
``boot_tl_legacy``) and :func:`load_native` (the project's own small models: a
``TransformerBridgeConfig`` and, optionally, HookedTransformer-format weights converted with
``convert_tl_checkpoint``).

TransformerLens 4.3 with transformers 5.24 has traps that silently give wrong numbers when a
model is run block by block; this module closes each one and :meth:`LM.self_check` (run at load)
fails loudly if one comes back:

* rotary models need ``position_embeddings`` passed to every block (without them RoPE is not
  applied): the interface computes them from the model's own rotary module at the right
  absolute positions, suffix offsets included;
* a block called by hand gets no attention mask; some attention implementations (GPT-J's) then
  attend to the future, and none applies a sliding window: the interface always passes an
  explicit causal (and, where the config says so, sliding-window) mask;
* the bridge ignores ``past_key_values`` (transformers 5.24 renamed the block argument to
  ``cache``): the interface owns key/value reuse with its own cache objects (:class:`KVCapture`,
  :class:`PrefixKV`) and counts every use, so a cache that is not read raises; TransformerLens's
  native attention (native and legacy routes) has no cache at all: the interface runs it with its
  own while a cache is in use (``_native_cached_forward``);
* ``blocks.L.hook_resid_pre`` reports its name as ``blocks.L.hook_in``: :meth:`LM.hooks` calls
  each hook function with the name it was registered under;
* final logit soft-capping (Gemma 2) is not part of the bridge's ``unembed``: :meth:`LM.unembed_at`
  applies it.

For the engine's head-output shortcut, :meth:`LM.run_block_with_attention` runs one block with its
attention module's output given (the attention itself not run) and :meth:`LM.head_shortcut` checks,
once per model, that this is exact there (attention output linear in ``hook_z`` through ``W_O``;
the rest of the block position by position); every route and test family passes it (GPT-2, GPT-J's
parallel block, Llama/Qwen2 grouped-query, Gemma 2's post-attention norms, native), and a model that
fails it gets the full recompute of the patched layer.

Beyond the engine's five pieces, :class:`LM` gives the few weights the analyses read (``W_U``,
``W_O(layer)``, the final norm's linear part for direct logit attribution, the attention scale
for AtP*'s QK fix) and, for the project's own (native) models, their weights in
HookedTransformer's format (:meth:`LM.ht_state_dict`, :meth:`LM.load_ht_state_dict`), which is
how toy checkpoints are stored and trained.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

__all__ = [
    "SITE_HOOKS",
    "LMShape",
    "LM",
    "KVCapture",
    "PrefixKV",
    "ModelInterfaceError",
    "hub_tokenizer_name",
    "is_legacy",
    "load_hub",
    "load_legacy",
    "load_native",
    "load_transformers",
    "official_name",
]

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

#: Block keyword arguments the interface's key/value cache travels under: transformers >= 5.24
#: decoder layers hand ``cache`` to Hugging Face attention (GPT-J), TransformerLens's own attention
#: reads ``layer_past`` (it ignores ``cache``, and the layers rename ``past_key_values`` to ``cache``).
_CACHE_KWARGS = ("cache", "layer_past")

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


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


@dataclass(frozen=True)
class _Tol:
    rel: float

    @classmethod
    def of(cls, dtype: torch.dtype) -> _Tol:
        # float64: 1e-7, not rounding level, because some Hugging Face attentions (GPT-J's) compute
        # their scores in float32 whatever the model dtype; every trap this guards is >= 1e-3.
        return cls({torch.float64: 1e-7, torch.float32: 1e-4}.get(dtype, 3e-2))


class LM:
    """One loaded model, exposing exactly what the patching engine needs (see the module docstring).

    Build it with :func:`load_transformers`, :func:`load_legacy` or :func:`load_native`. The
    TransformerLens object is ``self.bridge``; nothing outside this module should need it.
    """

    def __init__(
        self, bridge: Any, route: Route, raw_embed: torch.nn.Module, processed: bool, name: str = ""
    ) -> None:
        self.bridge = bridge
        self.name = name or str(getattr(bridge.cfg, "model_name", "") or route)
        self._raw_embed = raw_embed
        cfg = bridge.cfg
        hf_cfg = (
            getattr(getattr(bridge, "original_model", None), "config", None)
            if route == "transformers"
            else None
        )
        self._rotary = self._find_rotary(bridge) if route == "transformers" else None
        positional = str(getattr(cfg, "positional_embedding_type", "standard") or "standard")
        self._window, self._sliding = _sliding_layers(hf_cfg, int(cfg.n_layers))
        cap = float(getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0)
        n_heads = int(cfg.n_heads)
        self.shape = LMShape(
            architecture=str(getattr(cfg, "architecture", None) or type(bridge.adapter).__name__),
            route=route,
            n_layers=int(cfg.n_layers),
            n_heads=n_heads,
            n_kv_heads=int(getattr(cfg, "n_key_value_heads", None) or n_heads),
            d_head=int(cfg.d_head),
            d_model=int(cfg.d_model),
            d_mlp=0 if getattr(cfg, "attn_only", False) else int(getattr(cfg, "d_mlp", None) or 0),
            d_vocab=int(cfg.d_vocab),
            n_ctx=int(getattr(cfg, "n_ctx", 0) or 0),
            dtype=cfg.dtype,
            device=str(next(bridge.parameters()).device),
            positional=positional,
            processed=processed,
            kv_reuse=route == "transformers" or self._native_kv_ok(bridge),
            sliding_window=self._window,
            logit_softcap=cap if cap > 0 else None,
        )
        if positional == "rotary" and route == "transformers" and self._rotary is None:
            raise ModelInterfaceError(
                f"{self.shape.architecture}: a rotary model without a rotary_emb module on the bridge or its "
                "Hugging Face model; its blocks cannot be run one by one with the right positions"
            )
        self._masks: dict[tuple[int, int, bool], torch.Tensor] = {}

    # ------------------------------------------------------------------------------ structure

    @staticmethod
    def _find_rotary(bridge: Any) -> torch.nn.Module | None:
        if "rotary_emb" in dict(bridge.named_children()):
            return bridge.rotary_emb
        hf = bridge.original_model
        for inner in (getattr(hf, "model", None), getattr(hf, "transformer", None), hf):
            rot = getattr(inner, "rotary_emb", None) if inner is not None else None
            if rot is not None:
                return rot
        return None

    @staticmethod
    def _native_attention(bridge: Any, i: int) -> Any:
        return getattr(bridge.blocks[i].attn, "original_component", None)

    @classmethod
    def _native_kv_ok(cls, bridge: Any) -> bool:
        """Whether every block's attention is TransformerLens's causal ``NativeAttention`` (native and
        legacy routes), whose forward the interface can run with its key/value cache
        (:func:`_native_cached_forward`)."""
        try:
            from transformer_lens.model_bridge.sources.native.model import NativeAttention
        except ImportError:  # pragma: no cover - another TransformerLens layout
            return False
        n = int(bridge.cfg.n_layers)
        attns = [cls._native_attention(bridge, i) for i in range(n)]
        return all(type(a) is NativeAttention and getattr(a, "causal", False) for a in attns)

    @contextlib.contextmanager
    def _native_cache(self, cache: KVCapture | PrefixKV | None, start: int, stop: int) -> Iterator[None]:
        """Run blocks ``start..stop-1``'s native attention with ``cache`` (a no-op without one, or on
        the transformers route, whose attention reads the cache from its keyword arguments)."""
        if cache is None or self.shape.route == "transformers":
            yield
            return
        import types

        attns = [self._native_attention(self.bridge, i) for i in range(start, stop)]
        try:
            for i, a in zip(range(start, stop), attns, strict=True):
                a.forward = types.MethodType(_native_cached_forward(cache, i), a)
            yield
        finally:
            for a in attns:
                a.__dict__.pop("forward", None)

    @property
    def tokenizer(self) -> Any:
        return self.bridge.tokenizer

    def hook_name(self, site: str, layer: int) -> str:
        """The hook point of ``site`` (``attn_head``, ``head_v``, ``mlp``, ``resid_pre``, ``pattern``,
        ``attn_out``) at ``layer``."""
        if site not in SITE_HOOKS:
            raise ValueError(f"unknown site {site!r}; use one of {sorted(SITE_HOOKS)}")
        if not 0 <= layer < self.shape.n_layers:
            raise ValueError(f"layer {layer} is outside the model (n_layers={self.shape.n_layers})")
        return SITE_HOOKS[site].format(layer=layer)

    def site_heads(self, site: str) -> int:
        """Heads a head site patches: key-value heads for ``head_v`` (grouped-query models), else query heads."""
        return self.shape.n_kv_heads if site == "head_v" else self.shape.n_heads

    def has_hook(self, name: str) -> bool:
        return name in self.bridge.hook_dict

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Temporarily attach ``fn(activation, name) -> activation | None`` at each named hook point.

        ``name`` is the name the hook was registered under (TransformerLens reports some by their
        canonical alias: ``blocks.L.hook_resid_pre`` fires as ``blocks.L.hook_in``).
        """
        missing = [n for n, _ in fwd_hooks if n not in self.bridge.hook_dict]
        if missing:
            raise KeyError(f"no hook point {missing} on {self.shape.architecture}")

        def wrap(name: str, fn: HookFn):
            return lambda act, hook: fn(act, name)

        with self.bridge.hooks(fwd_hooks=[(n, wrap(n, f)) for n, f in fwd_hooks]):
            yield

    # ------------------------------------------------------------------------------ forward pieces

    def embed(
        self,
        tokens: Int[torch.Tensor, "batch pos"],
        noise: Float[torch.Tensor, "batch pos d_model"] | None = None,
        *,
        offset: int = 0,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """The residual stream entering block 0; ``noise`` is added to the token embeddings.

        ``offset`` is the absolute position of ``tokens[:, 0]`` (non-zero for a suffix).
        """
        b = self.bridge
        tokens = tokens.to(self.shape.device)
        x = b.embed(tokens)
        if noise is not None:
            x = x + noise.to(device=x.device, dtype=x.dtype)
        if "pos_embed" in dict(b.named_children()):
            pos = _positions(tokens.shape[0], tokens.shape[1], offset, x.device)
            x = x + b.pos_embed(pos)
        return x

    def run_blocks(
        self,
        resid: Float[torch.Tensor, "batch pos d_model"],
        start: int,
        stop: int | None = None,
        *,
        past: PrefixKV | None = None,
        capture: KVCapture | None = None,
        keep: list[torch.Tensor] | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Blocks ``start``..``stop - 1`` on ``resid`` (their hooks fire).

        With ``past``, ``resid`` holds positions ``past.length ..`` only (a suffix): attention
        reads the prefix's keys and values from ``past``. With ``capture``, every block's keys
        and values are recorded. ``keep`` collects each block's input residual.
        """
        n = self.shape.n_layers
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise ValueError(f"blocks {start}..{stop} are outside the model (n_layers={n})")
        if past is not None and capture is not None:
            raise ValueError("pass past= or capture=, not both")
        cache = past if past is not None else capture
        if cache is not None and not self.shape.kv_reuse:
            raise ModelInterfaceError(
                f"{self.shape.architecture} ({self.shape.route} route): this model's attention cannot be run "
                "with the interface's key/value cache, so suffix-only runs are not available; run every position"
            )
        offset = 0 if past is None else past.length
        bsz, q_len = resid.shape[0], resid.shape[1]
        if past is not None:
            if past.batch != bsz:
                raise ModelInterfaceError(
                    f"prefix batch {past.batch} != suffix batch {bsz}; use PrefixKV.repeat"
                )
            past.reset()
        if capture is not None:
            capture.calls.clear()
        kw = self._position_kwargs(resid, offset)
        if cache is not None:
            # The per-layer call count below fails loudly if the cache does not reach the attention.
            kw.update(dict.fromkeys(_CACHE_KWARGS, cache))
        with self._native_cache(cache, start, stop):
            for i in range(start, stop):
                if keep is not None:
                    keep.append(resid)
                mask = self._mask(q_len, offset, self._sliding[i], resid.dtype, resid.device)
                out = self.bridge.blocks[i](resid, attention_mask=mask, **kw)
                resid = out[0] if isinstance(out, tuple) else out
        if cache is not None:
            calls = {i: cache.calls.get(i, 0) for i in range(start, stop)}
            extra = sorted(set(cache.calls) - set(range(start, stop)))
            if any(c != 1 for c in calls.values()) or extra:
                raise ModelInterfaceError(
                    f"key/value cache used {calls} times per layer (extra layers {extra}) instead of once per block: "
                    "the attention did not read the interface's cache, so suffix results would be silently wrong. "
                    "Check the transformer-lens / transformers versions against pyproject.toml."
                )
            if past is not None:
                want = {i: offset + q_len for i in range(start, stop)}
                if past.seen_lengths != want:
                    raise ModelInterfaceError(
                        f"attention saw key lengths {past.seen_lengths}, expected {want}"
                    )
        return resid

    def _position_kwargs(self, resid: torch.Tensor, offset: int) -> dict[str, Any]:
        """The blocks' position arguments for ``resid``'s positions ``offset ..`` (rotary embeddings
        and position ids where the model uses them)."""
        kw: dict[str, Any] = {}
        pos = _positions(resid.shape[0], resid.shape[1], offset, resid.device)
        if self._rotary is not None:
            kw["position_embeddings"] = self._rotary(resid, pos)
        if self.shape.positional == "rotary":
            kw["position_ids"] = pos
        return kw

    # ------------------------------------------------------------------------------ head-output shortcut

    def run_block_with_attention(
        self,
        layer: int,
        resid: Float[torch.Tensor, "batch pos d_model"],
        attn_out: Float[torch.Tensor, "batch pos d_model"],
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """Block ``layer`` on ``resid`` with its attention module not run: its output is ``attn_out``.

        Everything else in the block is the model's own code (norms, residual adds, post-attention
        norms, parallel or sequential MLP), and acts position by position, so rows and positions
        may be any gathering of the model's (``[N, 1, d_model]``: one patched position per row).
        Hooks at layer ``layer`` outside the attention fire on this batch. Exact only where
        :meth:`head_shortcut` holds (checked once per model).
        """
        attn = self.bridge.blocks[layer].attn
        if "forward" in attn.__dict__:
            raise ModelInterfaceError(f"layer {layer}: its attention forward is already replaced")
        q_len = resid.shape[1]

        def injected(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
            return attn_out.to(resid.dtype), None

        kw = self._position_kwargs(resid, 0)
        mask = self._mask(q_len, 0, self._sliding[layer], resid.dtype, resid.device)
        # the bridge forwards attribute writes to its original component: write the instance dict
        attn.__dict__["forward"] = injected
        try:
            out = self.bridge.blocks[layer](resid, attention_mask=mask, **kw)
        finally:
            attn.__dict__.pop("forward", None)
        return out[0] if isinstance(out, tuple) else out

    def head_shortcut(self) -> bool:
        """Whether a head-output (``hook_z``) patch at a layer can skip that layer's attention exactly:
        on every layer, the attention module's output is ``sum_h z_h @ W_O[h]`` plus a constant bias,
        and :meth:`run_block_with_attention` on gathered single positions, given that output,
        reproduces the block's own output. Measured once on random tokens (float64 rounding-level
        tolerances of :class:`_Tol`); False sends the engine to the full recompute of the layer."""
        ok = getattr(self, "_head_shortcut", None)
        if ok is None:
            ok = self._head_shortcut = self._check_head_shortcut()[0]
        return ok

    def _check_head_shortcut(
        self, length: int = 7, batch: int = 2, seed: int = 1
    ) -> tuple[bool, dict[str, float]]:
        s = self.shape
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, min(s.d_vocab, 1000), (batch, length), generator=g).to(s.device)
        tol = _Tol.of(s.dtype).rel
        got: dict[str, torch.Tensor] = {}

        def grab(act: torch.Tensor, name: str) -> None:
            got[name] = act.detach()

        layers = range(s.n_layers)
        names = [n for i in layers for n in (self.hook_name("attn_head", i), self.hook_name("attn_out", i))]
        if not all(self.has_hook(n) for n in names):
            return False, {}
        keep: list[torch.Tensor] = []
        with torch.no_grad(), self.hooks([(n, grab) for n in names]):
            final = self.run_blocks(self.embed(tokens), 0, keep=keep)
        keep.append(final)
        gaps = {"linear": 0.0, "block": 0.0}
        with torch.no_grad():
            for i in layers:
                z, out = got[self.hook_name("attn_head", i)], got[self.hook_name("attn_out", i)]
                if z.shape[-2] != s.n_heads or out.shape != keep[i].shape:
                    return False, gaps
                lin = torch.einsum("bphk,hkd->bpd", z, self.W_O(i).to(z.dtype))
                rest = out - lin  # the output bias: the same vector at every row and position
                scale = float(out.abs().max()) or 1.0
                gaps["linear"] = max(gaps["linear"], float((rest - rest[:1, :1]).abs().max()) / scale)
                r = keep[i].reshape(-1, 1, s.d_model)
                a = out.reshape(-1, 1, s.d_model)
                mine = self.run_block_with_attention(i, r, a).reshape(keep[i + 1].shape)
                scale = float(keep[i + 1].abs().max()) or 1.0
                gaps["block"] = max(gaps["block"], float((mine - keep[i + 1]).abs().max()) / scale)
        return all(v <= tol for v in gaps.values()), gaps

    def unembed_at(
        self, resid: Float[torch.Tensor, "batch pos d_model"], pos: Int[torch.Tensor, " batch"]
    ) -> Float[torch.Tensor, "batch d_vocab"]:
        """Logits at one position per row: final norm + unembedding (+ soft-cap) of ``resid[b, pos[b]]``."""
        pos = pos.to(resid.device)
        if pos.shape != (resid.shape[0],):
            raise ValueError(
                f"pos must have one entry per row ({resid.shape[0]}), got shape {tuple(pos.shape)}"
            )
        if bool(((pos < 0) | (pos >= resid.shape[1])).any()):
            # negative indices would silently read another position (a suffix run starting after a
            # short prompt's answer): the caller must take those rows from the unpatched run
            raise ValueError(
                f"positions {pos.tolist()} are outside this residual's {resid.shape[1]} positions"
            )
        x = resid[torch.arange(resid.shape[0], device=resid.device), pos][:, None]
        return self._unembed(x)[:, 0]

    def _unembed(
        self, x: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos d_vocab"]:
        logits = self.bridge.unembed(self.bridge.ln_final(x))
        cap = self.shape.logit_softcap
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def logits(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        """Logits at every position of a plain forward, through the same pieces as the engine's runs
        (differentiable: the toy training loop uses it)."""
        return self._unembed(self.run_blocks(self.embed(tokens), 0))

    def raw_token_embeddings(self, ids: Int[torch.Tensor, " n"]) -> Float[torch.Tensor, "n d_model"]:
        """The model's own embedding layer on ``ids``, before any weight processing (ROME's sigma source).

        This is the output of the embedding module as loaded (Gemma's includes its sqrt(d_model)
        scale), taken from a copy made before compatibility mode centred the weights.
        """
        with torch.no_grad():
            return self._raw_embed(ids.to("cpu")[None])[0]

    # ------------------------------------------------------------------------------ weights

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The model's parameters (as loaded and processed)."""
        return self.bridge.parameters()

    def train(self, mode: bool = True) -> LM:
        """Training (``True``) or evaluation mode of the underlying module; returns ``self``."""
        self.bridge.train(mode)
        return self

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        """The unembedding matrix :meth:`unembed_at` applies (after the final norm)."""
        return self.bridge.W_U

    def W_O(self, layer: int) -> Float[torch.Tensor, "n_heads d_head d_model"]:
        """Layer ``layer``'s per-head output matrices (``hook_z`` @ W_O is each head's write to the residual)."""
        self.hook_name("attn_head", layer)  # range check
        return self.bridge.blocks[layer].attn.W_O

    def attn_scale(self, layer: int) -> float:
        """The divisor of layer ``layer``'s attention scores (scores = q . k / it, before the softmax)."""
        self.hook_name("attn_head", layer)
        cfg = self.bridge.cfg
        if not getattr(cfg, "use_attn_scale", True):
            return 1.0
        scale = float(getattr(cfg, "attn_scale", -1.0) or -1.0)
        return scale if scale > 0 else float(self.shape.d_head) ** 0.5

    def final_norm_linear(
        self, x: Float[torch.Tensor, "... d_model"], resid: Float[torch.Tensor, "... d_model"]
    ) -> Float[torch.Tensor, "... d_model"]:
        """The final norm's linear part at ``resid``, applied to ``x``: its scale frozen to ``resid``'s
        and its bias removed. A residual component ``x`` of ``resid`` contributes
        ``final_norm_linear(x, resid) @ W_U`` to the logits (direct logit attribution)."""
        got: dict[str, torch.Tensor] = {}

        def grab(act: torch.Tensor, hook: Any) -> None:
            got["scale"] = act

        def frozen(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return torch.broadcast_to(got["scale"], act.shape)

        ln = self.bridge.ln_final
        with self.bridge.hooks(fwd_hooks=[("ln_final.hook_scale", grab)]):
            ln(resid)
        if "scale" not in got:
            raise ModelInterfaceError(f"{self.shape.architecture}: the final norm has no hook_scale")
        with self.bridge.hooks(fwd_hooks=[("ln_final.hook_scale", frozen)]):
            return ln(x) - ln(torch.zeros_like(x))

    def ht_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the weights in HookedTransformer's format (``embed.W_E``, ``blocks.0.attn.W_Q``
        [n_heads, d_model, d_head], ...): the inverse of ``convert_tl_checkpoint``. Native route only
        (the project's own models keep this format on disk)."""
        if self.shape.route != "native":
            raise ModelInterfaceError(
                "ht_state_dict: only native models keep HookedTransformer-format weights"
            )
        return {  # copies: editing them does not touch the model
            _ht_key(k): _to_ht(k, v.detach().clone(), self.bridge.cfg)
            for k, v in self.bridge.state_dict().items()
        }

    def ht_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The trainable parameters under their HookedTransformer names (native route only)."""
        if self.shape.route != "native":
            raise ModelInterfaceError("ht_named_parameters: only native models have HookedTransformer names")
        params = {id(p) for p in self.bridge.parameters()}
        state = self.bridge.state_dict(keep_vars=True)
        return [(_ht_key(k), v) for k, v in state.items() if id(v) in params]

    def load_ht_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load HookedTransformer-format weights into a native model (strict: every weight, nothing else)."""
        if self.shape.route != "native":
            raise ModelInterfaceError(
                "load_ht_state_dict: only native models take HookedTransformer-format weights"
            )
        _load_ht(self.bridge, state_dict, self.shape.dtype)

    # ------------------------------------------------------------------------------ masks

    def _mask(self, q_len: int, offset: int, sliding: bool, dtype: torch.dtype, device) -> torch.Tensor:
        key = (q_len, offset, sliding)
        m = self._masks.get(key)
        if m is None or m.dtype != dtype or m.device != torch.device(device):
            qpos = torch.arange(offset, offset + q_len)[:, None]
            kpos = torch.arange(offset + q_len)[None, :]
            allowed = kpos <= qpos
            if sliding:
                assert self._window is not None
                allowed = allowed & (qpos - kpos < self._window)
            m = torch.zeros(q_len, offset + q_len, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
            m = m[None, None].to(device)
            self._masks[key] = m
        return m

    # ------------------------------------------------------------------------------ self-check

    def self_check(self, length: int = 10, batch: int = 2, seed: int = 0) -> dict[str, float]:
        """Check this interface against the model's own full forward; raise :class:`ModelInterfaceError` if not.

        Block-by-block logits (every position) equal the bridge's forward; a suffix-only run on
        captured keys and values equals it too (where supported); every site's hook fires once,
        under its requested name, with the expected head count. Returns the measured max
        differences, relative to the largest logit.
        """
        b, s = self.bridge, self.shape
        g = torch.Generator().manual_seed(seed)
        length = min(length, int(getattr(b.cfg, "n_ctx", length) or length))
        tokens = torch.randint(0, min(s.d_vocab, 1000), (batch, length), generator=g).to(s.device)
        tol = _Tol.of(s.dtype).rel
        out: dict[str, float] = {}
        with torch.no_grad():
            full = b(tokens, return_type="logits")
            scale = float(full.abs().max()) or 1.0
            r0 = self.embed(tokens)
            cap = KVCapture() if s.kv_reuse else None
            resid = self.run_blocks(r0, 0, capture=cap)
            mine = torch.stack(
                [self.unembed_at(resid, torch.full((batch,), p, dtype=torch.long)) for p in range(length)], 1
            )
            out["blocks"] = float((mine - full).abs().max()) / scale
            if cap is not None:
                p = length // 2
                suf = self.run_blocks(r0[:, p:], 0, past=cap.prefix(p))
                last = torch.full((batch,), length - 1 - p, dtype=torch.long)
                out["suffix"] = float((self.unembed_at(suf, last) - full[:, -1]).abs().max()) / scale
        bad = {k: v for k, v in out.items() if not v <= tol}
        if bad:
            raise ModelInterfaceError(
                f"{s.architecture}: the interface's forward pieces disagree with the model's own forward "
                f"(relative max difference {bad}, tolerance {tol:g}); results through this interface would be "
                "silently wrong. Check the transformer-lens / transformers versions against pyproject.toml."
            )
        self._check_hooks(tokens)
        return out

    def _check_hooks(self, tokens: torch.Tensor) -> None:
        s = self.shape
        seen: dict[str, list[tuple[int, ...]]] = {}

        def rec(act: torch.Tensor, name: str) -> None:
            seen.setdefault(name, []).append(tuple(act.shape))

        layers = sorted({0, s.n_layers - 1})
        names = [
            self.hook_name(site, lay)
            for site in ("attn_head", "head_v", "mlp", "resid_pre")
            for lay in layers
        ]
        names = [n for n in names if self.has_hook(n)]
        with torch.no_grad(), self.hooks([(n, rec) for n in names]):
            self.run_blocks(self.embed(tokens), 0)
        for n in names:
            shapes = seen.get(n, [])
            if len(shapes) != 1:
                raise ModelInterfaceError(
                    f"hook {n} fired {len(shapes)} times in one forward (expected once)"
                )
            if n.endswith(("hook_z", "hook_v")):
                heads = self.site_heads("head_v" if n.endswith("hook_v") else "attn_head")
                if shapes[0][2:] != (heads, s.d_head):
                    raise ModelInterfaceError(
                        f"hook {n} has shape {shapes[0]}, expected [batch, pos, {heads}, {s.d_head}]"
                    )


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


# ---------------------------------------------------------------------------------------------
# helpers


def _positions(batch: int, length: int, offset: int, device) -> torch.Tensor:
    return torch.arange(offset, offset + length, device=device)[None].expand(batch, length)


def _sliding_layers(hf_cfg: Any, n_layers: int) -> tuple[int | None, list[bool]]:
    """The sliding-window size and which layers use it, from a Hugging Face config."""
    window = getattr(hf_cfg, "sliding_window", None) if hf_cfg is not None else None
    if window is None or (getattr(hf_cfg, "use_sliding_window", True) is False):
        return None, [False] * n_layers
    types = getattr(hf_cfg, "layer_types", None)
    if types is None:
        return int(window), [True] * n_layers
    sliding = [t == "sliding_attention" for t in types]
    if len(sliding) != n_layers:
        raise ModelInterfaceError(f"config layer_types has {len(sliding)} entries for {n_layers} layers")
    return (int(window), sliding) if any(sliding) else (None, sliding)


def _finish(bridge: Any, route: Route, processing: bool, check: bool, name: str) -> LM:
    """Copy the raw embedding layer, switch to compatibility mode, wrap and (optionally) self-check."""
    raw_embed = copy.deepcopy(bridge.embed.original_component).to("cpu").eval()
    for p in raw_embed.parameters():
        p.requires_grad_(False)
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=not processing)
    bridge.eval()
    lm = LM(bridge, route, raw_embed, processing, name)
    if check:
        lm.self_check()
    return lm


def load_transformers(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    tokenizer: Any = None,
    processing: bool = True,
    check: bool = True,
) -> LM:
    """A Hugging Face model (hub name, or a local ``save_pretrained`` directory) as an :class:`LM`.

    ``processing=True`` applies HookedTransformer's weight processing (what
    ``HookedTransformer.from_pretrained`` did); ``False`` keeps the raw weights.
    """
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        name_or_path, device=device, dtype=dtype, tokenizer=tokenizer
    )
    return _finish(bridge, "transformers", processing, check, name_or_path)


def load_legacy(
    repo_id: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    tokenizer: Any = None,
    processing: bool = True,
    check: bool = True,
) -> LM:
    """A TransformerLens-format hub repository (``NeelNanda/...``: attn-only-4l) as an :class:`LM`."""
    from transformer_lens.model_bridge.sources import boot_tl_legacy

    try:
        bridge = boot_tl_legacy(repo_id, device=device, dtype=dtype, tokenizer=tokenizer)
    except NotImplementedError as err:
        raise ModelInterfaceError(f"{repo_id}: {_SHORTFORMER}") from err
    return _finish(bridge, "legacy", processing, check, repo_id)


def official_name(name: str) -> str:
    """The official Hugging Face name of a TransformerLens alias (``attn-only-4l``,
    ``gpt2-small``, ...); any other name unchanged."""
    from transformer_lens.supported_models import get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        return name


def is_legacy(repo_id: str) -> bool:
    """Whether a hub repository is in TransformerLens's own format (``NeelNanda/...``; the legacy route)."""
    from transformer_lens.model_bridge.sources.tl_legacy import TL_LEGACY_PREFIXES

    return repo_id.startswith(TL_LEGACY_PREFIXES)


def load_hub(name: str, **options: Any) -> LM:
    """A hub model by name: TransformerLens aliases resolved, then the legacy route for
    TransformerLens-format repositories and ``boot_transformers`` for everything else.
    ``options`` are :func:`load_transformers`'s (``dtype``, ``device``, ``tokenizer``, ``processing``,
    ``check``)."""
    repo = official_name(name)
    lm = (load_legacy if is_legacy(repo) else load_transformers)(repo, **options)
    lm.name = name
    return lm


def hub_tokenizer_name(name: str) -> str:
    """Where a hub model's tokenizer lives: a TransformerLens-format repository names it in its
    ``config.json`` (``tokenizer_name``); a Hugging Face repository holds its own."""
    repo = official_name(name)
    if not is_legacy(repo):
        return repo
    import json

    from huggingface_hub import hf_hub_download

    with open(hf_hub_download(repo, "config.json")) as f:
        return json.load(f).get("tokenizer_name") or repo


def load_native(
    config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    tokenizer: Any = None,
    processing: bool = False,
    check: bool = True,
) -> LM:
    """A TransformerLens-native model (``TransformerBridgeConfig`` fields) as an :class:`LM`.

    ``state_dict`` holds HookedTransformer-format weights (``embed.W_E``, ``blocks.0.attn.W_Q``
    [n_heads, d_model, d_head], ...), converted with ``convert_tl_checkpoint``; without it the
    weights are the config's seeded random initialisation. ``processing`` defaults to False: a
    model trained as a HookedTransformer ran unprocessed.
    """
    from transformer_lens import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    if config.get("positional_embedding_type", "standard") == "shortformer":
        raise ModelInterfaceError(f"{config.get('model_name', 'native model')}: {_SHORTFORMER}")
    cfg = TransformerBridgeConfig(**{**dict(config), "architecture": "TransformerLensNative", "dtype": dtype})
    bridge = TransformerBridge.boot_native(cfg, tokenizer=tokenizer, device=device, dtype=dtype)
    _unembed_bias_parameter(bridge)
    if state_dict is not None:
        _load_ht(bridge, state_dict, dtype)
        bridge.to(device)
    return _finish(bridge, "native", processing, check, str(config.get("model_name", "") or "native"))


_SHORTFORMER = (
    "its config asks for shortformer positional embeddings (shortformer_pos: true), which TransformerLens 4 "
    "does not implement, so it cannot be run exactly. Fix: if it is a patchbench stand-in seeded before "
    "TransformerLens 4, seed it again (python -m patchbench.standins --cache <your HF_HUB_CACHE>): stand-ins now "
    "use standard positions (a third-party probe found the real attn-only-4l's positions standard). A model really trained with shortformer positions "
    "needs TransformerLens 3.9 and a patchbench release before issue #16."
)


def _unembed_bias_parameter(bridge: Any) -> None:
    """Give a native model a trainable unembedding bias (HookedTransformer's ``b_U``).

    The native model's head has no bias; the bridge adds a fixed zero buffer in its place. Made a
    parameter, ``b_U`` loads, trains and saves as it did in a HookedTransformer.
    """
    head = bridge.unembed.original_component
    bias = head._buffers.pop("bias", None)
    if bias is not None:
        head.bias = torch.nn.Parameter(bias)


#: HookedTransformer-format weights that are buffers, not weights (dropped on loading).
_HT_BUFFERS = (".mask", ".IGNORE")


def _load_ht(bridge: Any, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype) -> None:
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    sd = {k: v.to(dtype) for k, v in state_dict.items() if not k.endswith(_HT_BUFFERS)}
    converted = convert_tl_checkpoint(sd, bridge.cfg)
    if "unembed.bias" not in converted:
        converted["unembed.bias"] = torch.zeros(bridge.cfg.d_vocab, dtype=dtype)
    device = next(bridge.parameters()).device
    result = bridge.load_state_dict({k: v.to(device) for k, v in converted.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelInterfaceError(
            f"HookedTransformer-format weights do not fit this model: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )


#: native module name -> HookedTransformer names of its (weight, bias)
_HT_NAMES = {
    "q": ("W_Q", "b_Q"), "k": ("W_K", "b_K"), "v": ("W_V", "b_V"), "o": ("W_O", "b_O"),
    "in": ("W_in", "b_in"), "out": ("W_out", "b_out"), "gate": ("W_gate", "b_gate"),
    "embed": ("W_E", None), "pos_embed": ("W_pos", None), "unembed": ("W_U", "b_U"),
}  # fmt: skip


def _ht_key(key: str) -> str:
    """The HookedTransformer name of a native bridge's state-dict key (``convert_tl_checkpoint`` reversed)."""
    head, _, leaf = key.rpartition(".")
    parent, _, module = head.rpartition(".")
    weight, bias = _HT_NAMES.get(module, ("w", "b"))
    name = weight if leaf == "weight" else bias
    if name is None:
        raise ModelInterfaceError(f"no HookedTransformer name for the native weight {key!r}")
    return f"{head if module in ('embed', 'pos_embed', 'unembed') or name in ('w', 'b') else parent}.{name}"


def _to_ht(key: str, t: torch.Tensor, cfg: Any) -> torch.Tensor:
    """A native bridge tensor in HookedTransformer's layout (per-head axes split out, matrices [in, out])."""
    head, _, leaf = key.rpartition(".")
    module = head.rpartition(".")[2]
    if module in ("q", "k", "v"):
        heads = cfg.n_heads if module == "q" else (getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        t = t.reshape(heads, cfg.d_head, *t.shape[1:])
        return t.permute(0, 2, 1).contiguous() if leaf == "weight" else t
    if module == "o" and leaf == "weight":  # [d_model, (h dh)] -> [h, dh, d_model]
        return t.reshape(t.shape[0], cfg.n_heads, cfg.d_head).permute(1, 2, 0).contiguous()
    if leaf == "weight" and module in ("in", "out", "gate", "unembed"):
        return t.T.contiguous()
    return t
