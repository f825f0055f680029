"""The forward pass in pieces: the only engine module that calls into the model.

The exact engine, attribution patching and pattern capture run the model through these functions
(the same ones serve the clean, corrupted and patched runs): the token embeddings with GN noise
added, the residual stream entering block 0, blocks ``start..L-1`` on a residual stream, the final
norm and unembedding at one position per row, hook registration, and the shapes the engine plans
with. Today they wrap TransformerLens 3's ``HookedTransformer``; a model interface for
TransformerLens 4 replaces this one module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int

__all__ = [
    "attention_scale",
    "bytes_per_row",
    "embed_input",
    "has_hook",
    "hooked",
    "model_name",
    "parameter_digest",
    "pattern_hook",
    "rows_per_forward",
    "run_blocks",
    "site_heads",
    "token_embeddings",
    "unembed_at",
]


def model_name(model) -> str:
    """The name the model was built or loaded under."""
    return str(model.cfg.model_name)


def token_embeddings(model, ids: Int[np.ndarray, " n"]) -> Float[torch.Tensor, "1 n d_model"]:
    """Rows of W_E for ``ids`` (no positional embedding), on the model's device."""
    return model.embed(torch.from_numpy(np.array(ids, dtype=np.int64)).to(model.cfg.device)[None])


def embed_input(
    model, tokens: Int[torch.Tensor, "rows pos"], noise: Float[torch.Tensor, "rows pos d_model"] | None
) -> tuple[Float[torch.Tensor, "rows pos d_model"], torch.Tensor | None]:
    """Residual stream entering block 0 (and the shortformer positional embedding, if any).

    ``noise`` (GN) is added to the token embeddings (``hook_embed``), before positional embeddings.
    """
    x = model.hook_embed(model.embed(tokens))
    if noise is not None:
        x = x + noise.to(device=x.device, dtype=x.dtype)
    resid, sf = model.get_residual(
        x, 0, attention_mask=None, tokens=tokens, return_shortformer_pos_embed=True
    )
    return resid, sf


def run_blocks(
    model,
    resid: Float[torch.Tensor, "rows pos d_model"],
    start: int,
    sf: torch.Tensor | None,
    keep: list | None = None,
) -> Float[torch.Tensor, "rows pos d_model"]:
    """Blocks ``start``..L-1 on ``resid`` (their hooks fire); ``keep`` collects each block's input."""
    for i in range(start, model.cfg.n_layers):
        if keep is not None:
            keep.append(resid)
        resid = model.blocks[i](resid, shortformer_pos_embed=sf, attention_mask=None)
    return resid


def unembed_at(
    model, resid: Float[torch.Tensor, "rows pos d_model"], pos: Int[torch.Tensor, " rows"]
) -> Float[torch.Tensor, "rows d_vocab"]:
    """Logits at one position per row: ``ln_final`` + unembed on ``resid[b, pos[b]]`` only."""
    from transformer_lens.utilities import apply_softcap

    x = resid[torch.arange(resid.shape[0], device=resid.device), pos][:, None]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = model.unembed(x)[:, 0]
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


@contextlib.contextmanager
def hooked(model, hooks: Sequence[tuple[str, object]]) -> Iterator[None]:
    """Forward hooks ``(hook point name, fn(activation, hook))`` active inside the block."""
    with model.hooks(fwd_hooks=list(hooks)):
        yield


def pattern_hook(layer: int) -> str:
    """The hook point of layer ``layer``'s attention probabilities ``[rows, heads, dest, src]``."""
    return f"blocks.{layer}.attn.hook_pattern"


def has_hook(model, name: str) -> bool:
    """Whether ``name`` is a hook point of the model."""
    return name in model.hook_dict


def site_heads(model, site: str) -> int:
    """Heads of a head site: key / value heads for ``head_v`` under grouped-query attention."""
    kv = getattr(model.cfg, "n_key_value_heads", None)
    return kv if (site == "head_v" and kv) else model.cfg.n_heads


def attention_scale(model, layer: int) -> float:
    """The divisor of layer ``layer``'s attention scores (sqrt(d_head) unless configured)."""
    return float(model.blocks[layer].attn.attn_scale)


def bytes_per_row(model, max_len: int, n_hook_elems: int = 0) -> int:
    """Rough transient memory of one row of one forward (activations of a block + answer logits)."""
    cfg = model.cfg
    e = torch.tensor([], dtype=cfg.dtype).element_size()
    d_mlp = cfg.d_mlp or 0
    acts = (
        max_len * (6 * cfg.d_model + 3 * d_mlp + 3 * cfg.n_heads * max_len + 4 * cfg.n_heads * cfg.d_head) * e
    )
    return acts + 4 * cfg.d_vocab_out * 8 + n_hook_elems * e


def rows_per_forward(model, max_len: int, budget_mb: int) -> int:
    """Rows of one plain forward that fit ``budget_mb``."""
    return max(1, int(budget_mb * 2**20 // max(1, bytes_per_row(model, max_len))))


def parameter_digest(model, n: int = 4) -> list[float]:
    """Sums of the first ``n`` parameter tensors: a cheap check that two runs use the same weights."""
    with torch.no_grad():
        return [float(p.double().sum().item()) for p in list(model.parameters())[:n]]
