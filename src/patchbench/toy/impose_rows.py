"""Pieces every imposing objective (``patchbench.toy.impose``) shares: padding rows of token ids
into one batch, a word's single token, the layer of a hook name, the weighted sum of its terms."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int
from tokenizers import Tokenizer

__all__ = ["EPS", "hook_layer", "pad_rows", "single_token", "weighted_total"]

EPS = 1e-6  # added inside the logarithm of an attention probability


def pad_rows(rows: list[list[int]], pad: int) -> Int[torch.Tensor, "rows seq"]:
    """Rows of token ids, right-padded with ``pad`` to the longest."""
    width = max(len(r) for r in rows)
    x = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return x


def single_token(tok: Tokenizer, text: str) -> int:
    """The one token of ``text`` (a ValueError when it is several)."""
    ids = tok.encode(text, add_special_tokens=False).ids
    if len(ids) != 1:
        raise ValueError(f"{text!r} is not one token of the toy tokenizer")
    return ids[0]


def hook_layer(hook_name: str) -> int:
    """The layer of a hook point name (``blocks.3.attn.hook_z`` -> 3)."""
    return int(hook_name.split(".")[1])


def weighted_total(spec: Any, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss: each named term times the ``ImposeSpec`` weight of the same name."""
    return sum((getattr(spec, k) * v for k, v in terms.items()), torch.zeros(()))
