"""The weights the analyses read, and HookedTransformer's weight format for native models.

:class:`WeightsMixin` gives :class:`patchbench.lm.LM` ``W_U``, ``W_O(layer)``, the attention scale
and the final norm's linear part, and, for the project's own (native) models, their weights in
HookedTransformer's format (``embed.W_E``, ``blocks.0.attn.W_Q`` [n_heads, d_model, d_head], ...),
which is how toy checkpoints are stored and trained: ``_load_ht`` converts that format into a
native bridge (``convert_tl_checkpoint``), ``_ht_key`` / ``_to_ht`` convert back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from jaxtyping import Float

from patchbench.lm.shape import LMShape, ModelInterfaceError


class WeightsMixin:
    """The weights of :class:`patchbench.lm.LM` (as loaded and processed)."""

    bridge: Any
    shape: LMShape

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
