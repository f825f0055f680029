"""The loaded model (:class:`LM`): its structure, hooks and the forward pieces the engine runs.

Embedding with the noise point, blocks on a residual stream (explicit causal / sliding-window
masks, rotary positions, the key/value cache of :mod:`patchbench.lm.kv`), one block with its
attention output given (the head-output shortcut), final norm + unembedding at one position, raw
token embeddings. The checks at load live in :mod:`patchbench.lm.checks`, the weights the analyses
read and HookedTransformer's format in :mod:`patchbench.lm.weights`; both are mixed into
:class:`LM`. Build an :class:`LM` with :mod:`patchbench.lm.loaders`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from patchbench.lm.checks import ChecksMixin
from patchbench.lm.kv import KVCapture, PrefixKV, _native_cached_forward
from patchbench.lm.shape import SITE_HOOKS, LMShape, ModelInterfaceError, Route
from patchbench.lm.weights import WeightsMixin

#: Block keyword arguments the interface's key/value cache travels under: transformers >= 5.24
#: decoder layers hand ``cache`` to Hugging Face attention (GPT-J), TransformerLens's own attention
#: reads ``layer_past`` (it ignores ``cache``, and the layers rename ``past_key_values`` to ``cache``).
_CACHE_KWARGS = ("cache", "layer_past")

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


class LM(ChecksMixin, WeightsMixin):
    """One loaded model, exposing exactly what the patching engine needs (see the package docstring).

    Build it with :func:`load_transformers`, :func:`load_legacy` or :func:`load_native`. The
    TransformerLens object is ``self.bridge``; nothing outside this package should need it.
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
