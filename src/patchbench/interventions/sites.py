"""The site registry: every activation a sweep can patch, its hook template and its axes.

One row per site (:data:`SITES`). A site's activation is one TransformerLens hook point per
layer (compatibility-mode names), in one of three layouts:

==========  ===========================  ====================================================
layout      activation                   sites
==========  ===========================  ====================================================
``bpd``     ``[batch, pos, d]``          residual stream and module outputs
``bphd``    ``[batch, pos, head, d]``    a head's output ``z``, query, key or value
``bhqk``    ``[batch, head, dest, src]`` a head's attention pattern (rows = destinations)
==========  ===========================  ====================================================

==============  ===================================  =====  ==========  ==============================
site            hook point                           heads  windows     one target per
==============  ===================================  =====  ==========  ==============================
attn_head       ``blocks.L.attn.hook_z``             query  no          head (x position)
head_q          ``blocks.L.attn.hook_q``             query  no          head's query input (x position)
head_k          ``blocks.L.attn.hook_k``             kv     no          head's key input (x position)
head_v          ``blocks.L.attn.hook_v``             kv     no          head's value input (x position);
                                                                        ``heads`` given: all together
head_pattern    ``blocks.L.attn.hook_pattern``       query  no          head's attention pattern (x
                                                                        destination position)
mlp             ``blocks.L.hook_mlp_out``            --     yes         layer (x position)
attn_out        ``blocks.L.hook_attn_out``           --     yes         layer (x position)
resid_pre       ``blocks.L.hook_resid_pre``          --     no          layer (x position)
resid_mid       ``blocks.L.hook_resid_mid``          --     no          layer (x position)
resid_post      ``blocks.L.hook_resid_post``         --     no          layer (x position)
==============  ===================================  =====  ==========  ==============================

``kv``: on a grouped-query model the hook holds the **key-value heads** (``n_kv_heads``, each
shared by ``n_heads / n_kv_heads`` query heads), so head ``L.h`` of such a sweep is key-value head
h; elsewhere key-value heads are the query heads. Windows (ROME's sliding window of layers) apply
to the module outputs ROME's causal tracing slides over (MLP and attention). Every site takes
positions (``all``, ``each`` or a named position); a pattern's position is its destination
(query) row, as TransformerLens's ``get_act_patch_attn_head_pattern_*`` patch whole rows of it.
Only head outputs take the engine's head-output shortcut (``z`` enters the residual through
``W_O`` alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["SITES", "Site", "site"]

Layout = Literal["bpd", "bphd", "bhqk"]


@dataclass(frozen=True)
class Site:
    """One patch site: its hook template, the layout of its activation and its axes."""

    name: str
    hook: str  # hook point template, ``{layer}`` filled in
    layout: Layout
    heads: Literal["query", "kv"] | None = None  # which heads index its head axis (None: no heads)
    windows: bool = False  # takes a sliding window of layers
    shortcut: bool = False  # the head-output shortcut applies (``z`` reaches the residual through W_O)
    joint_heads: bool = False  # ``heads`` given: all of them form one target (else one target per head)
    description: str = ""
    label: str = ""  # how figure titles name it (plural, lower case where not an acronym)

    def hook_name(self, layer: int) -> str:
        """The hook point at ``layer``."""
        return self.hook.format(layer=int(layer))

    @property
    def has_heads(self) -> bool:
        return self.heads is not None

    def n_heads(self, shape: Any) -> int:
        """Heads on a model of ``shape`` (:class:`patchbench.lm.LMShape`): key-value heads for ``kv``
        sites, query heads otherwise; 0 for a site without heads."""
        if self.heads is None:
            return 0
        return int(shape.n_kv_heads if self.heads == "kv" else shape.n_heads)

    @property
    def pos_axis(self) -> int:
        """The axis of its activation that indexes (destination) positions."""
        return 2 if self.layout == "bhqk" else 1

    @property
    def head_axis(self) -> int | None:
        """The axis of its activation that indexes heads (None for a site without heads)."""
        return None if self.heads is None else (1 if self.layout == "bhqk" else 2)

    def mask_shape(self, rows: int, length: int, n_heads: int) -> tuple[int, ...]:
        """The shape of a boolean mask over ``rows`` activations that broadcasts against them:
        ``[rows, pos, 1]``, ``[rows, pos, head, 1]`` or ``[rows, head, dest, 1]``."""
        if self.layout == "bpd":
            return (rows, length, 1)
        if self.layout == "bphd":
            return (rows, length, n_heads, 1)
        return (rows, n_heads, length, 1)

    def positions_from(self, x: Any, start: int, batch_dims: int = 1) -> Any:
        """``x`` (an activation, mask or source with ``batch_dims`` leading batch axes) from
        (destination) position ``start`` on: what a suffix-only run holds."""
        if start == 0:
            return x
        index = [slice(None)] * (batch_dims - 1 + self.pos_axis) + [slice(start, None)]
        return x[tuple(index)]

    def per_position(self, x: Any) -> Any:
        """An activation-shaped product summed over its feature axes, as ``[rows, pos, head]``
        (head sites) or ``[rows, pos]``: what attribution reduces a target's estimate from."""
        if self.layout == "bpd":
            return x.sum(-1)
        if self.layout == "bphd":
            return x.sum(-1)
        return x.sum(-1).transpose(1, 2)  # [rows, head, dest] -> [rows, dest, head]


_SITES = (
    Site("attn_head", "blocks.{layer}.attn.hook_z", "bphd", heads="query", shortcut=True,
         label="attention heads", description="a head's output z (before W_O)"),
    Site("head_q", "blocks.{layer}.attn.hook_q", "bphd", heads="query",
         label="head queries", description="a head's query input"),
    Site("head_k", "blocks.{layer}.attn.hook_k", "bphd", heads="kv",
         label="head keys", description="a head's key input"),
    Site("head_v", "blocks.{layer}.attn.hook_v", "bphd", heads="kv", joint_heads=True,
         label="head values", description="a head's value input"),
    Site("head_pattern", "blocks.{layer}.attn.hook_pattern", "bhqk", heads="query",
         label="attention patterns", description="a head's attention pattern (rows: destination positions)"),
    Site("mlp", "blocks.{layer}.hook_mlp_out", "bpd", windows=True,
         label="MLP", description="the MLP layer's output"),
    Site("attn_out", "blocks.{layer}.hook_attn_out", "bpd", windows=True,
         label="attention layer output", description="the attention layer's output"),
    Site("resid_pre", "blocks.{layer}.hook_resid_pre", "bpd",
         label="residual stream", description="the residual stream entering a block"),
    Site("resid_mid", "blocks.{layer}.hook_resid_mid", "bpd",
         label="residual stream (mid-block)", description="the residual stream between attention and MLP"),
    Site("resid_post", "blocks.{layer}.hook_resid_post", "bpd",
         label="residual stream (block output)", description="the residual stream leaving a block"),
)  # fmt: skip

#: Every site by name, in the order tables, figures and choices list them.
SITES: dict[str, Site] = {s.name: s for s in _SITES}


def site(name: str) -> Site:
    """The registry row of ``name``; ValueError naming the known sites otherwise."""
    try:
        return SITES[name]
    except KeyError:
        raise ValueError(f"unknown site {name!r}; use one of {', '.join(SITES)}") from None
