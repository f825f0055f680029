"""AtP*'s QK fix (Kramár et al. 2024, §3.1.1) for attribution patching of whole head outputs.

A head's effect is estimated over its query, key and value nodes: values linearly; each query
position and each key position of the head patched on its own through the *exact* softmax, and
the resulting change of the attention pattern linearised. :mod:`patchbench.attribution` calls
:func:`qk_fixed_heads` per layer in place of the plain ``hook_z`` estimate when ``qk_fix`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from patchbench.errors import InputError
from patchbench.interventions import corruptions
from patchbench.interventions.sites import SITES
from patchbench.lm import LM
from patchbench.sites import SweepSpec

__all__ = ["NOT_DEFINED", "check_qk_fix", "qk_fix_applies", "qk_fix_hooks", "qk_fixed_heads"]


def qk_fix_hooks(layers: Sequence[int]) -> list[str]:
    return [f"blocks.{lay}.attn.hook_{n}" for lay in layers for n in ("q", "k", "v", "pattern")]


def qk_fix_applies(spec: Any) -> bool:
    """Whether AtP*'s QK fix can estimate ``spec`` (a SweepSpec or a Cell): whole head outputs
    (the head-output site, :attr:`patchbench.interventions.sites.Site.shortcut`) at every position,
    under a token-level corruption (an ablation of head outputs has no corrupted queries and keys)."""
    kind = corruptions.parse(spec.corruption)[0].kind
    return SITES[spec.site].shortcut and spec.position == "all" and kind == "tokens"


#: Why the QK fix is not defined for a sweep that :func:`qk_fix_applies` rejects.
NOT_DEFINED = (
    "AtP*'s nodes are a head's queries, keys and values at every position, under a corruption that "
    "changes the tokens the run reads; this sweep is not whole head outputs at every position under a "
    "token-level corruption (one whose corrupted run reads other tokens or noise)"
)


def check_qk_fix(model: LM, spec: SweepSpec) -> None:
    """Refuse the QK fix where it is not defined (InputError naming the sweep and why)."""
    shape = model.shape
    if not qk_fix_applies(spec):
        raise InputError.of(
            f"qk_fix on sweep {spec.label}",
            NOT_DEFINED,
            "use qk_fix=False (config attribution.qk_fix: false) for it",
        )
    bad = []
    if shape.positional != "standard":
        bad.append(f"{shape.positional} positional embeddings")
    if shape.grouped_query:
        bad.append("grouped-query attention")
    if shape.sliding_window is not None:
        bad.append("sliding-window attention")
    if bad:
        raise ValueError(f"qk_fix supports plain dot-product attention only; this model has {', '.join(bad)}")


def _scores(
    layer: int, q: torch.Tensor, k: torch.Tensor, pattern: torch.Tensor, scale: float
) -> torch.Tensor:
    """Layer ``layer``'s attention scores ``q . k / scale`` under the causal mask (-inf above the
    diagonal), [R, H, T, S], rebuilt from ``hook_q`` / ``hook_k``: the bridge's ``hook_attn_scores``
    fires after the softmax on some attentions (the native one's, GPT-J's). Refused unless their
    softmax is the model's own ``hook_pattern`` (another scaling, soft-capping, rotary keys or a
    mask of its own would make AtP*'s query and key terms silently wrong)."""
    n = q.shape[1]
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    scores = (torch.einsum("rthd,rshd->rhts", q, k) / scale).masked_fill(future, -math.inf)
    gap = float((torch.softmax(scores, dim=-1) - pattern).abs().max())
    if not gap <= 1e-4:
        raise ValueError(
            f"qk_fix: layer {layer}'s attention pattern is not softmax(q . k / {scale:g}) under a causal mask "
            f"(max gap {gap:.3g}); this model's attention is not plain dot-product attention. Use qk_fix=False"
        )
    return scores


def qk_fixed_heads(
    model: LM,
    layer: int,
    acts: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    source: dict[str, torch.Tensor],
) -> torch.Tensor:
    """AtP* estimate per head for one layer: value + query + key nodes, [R, H] (float64); ``acts`` are
    the base run's (in the graph), ``grads`` their gradients, ``source`` the source run's q, k, v."""
    pre = f"blocks.{layer}.attn."
    q, k, v = (acts[pre + f"hook_{n}"].detach().double() for n in ("q", "k", "v"))  # [R, P, H, dh]
    qc, kc, vc = (source[pre + f"hook_{n}"].double() for n in ("q", "k", "v"))
    pattern = acts[pre + "hook_pattern"].detach().double()  # [R, H, T, S]
    g_a = grads[pre + "hook_pattern"].double()  # [R, H, T, S]
    g_v = grads[pre + "hook_v"].double()  # [R, P, H, dh]
    scale = model.attn_scale(layer)
    scores = _scores(layer, q, k, pattern, scale)  # masked with -inf
    value = ((vc - v) * g_v).sum((1, 3))  # [R, H]
    # queries: each query position t patched alone -> exact softmax of the patched score row
    d_sq = torch.einsum("rthd,rshd->rhts", qc - q, k) / scale
    new_rows = torch.softmax(scores + d_sq, dim=-1)
    new_rows = torch.where(torch.isnan(new_rows), torch.zeros_like(new_rows), new_rows)
    query = ((new_rows - pattern) * g_a).sum((2, 3))
    # keys: each key position s patched alone -> column s of every row changes; closed form
    d_sk = torch.einsum("rthd,rshd->rhts", q, kc - k) / scale
    a = pattern
    finite = torch.isfinite(scores)
    logit_a = torch.where(
        finite & (a > 0), torch.log(a) - torch.log1p(-a.clamp(max=1 - 1e-15)), torch.full_like(a, -math.inf)
    )
    a_new = torch.where(finite & (a > 0), torch.sigmoid(logit_a + d_sk), torch.zeros_like(a))
    ratio = torch.where(1 - a > 1e-12, (1 - a_new) / (1 - a).clamp(min=1e-12), torch.ones_like(a))
    big_g = (a * g_a).sum(-1, keepdim=True)  # [R, H, T, 1]
    key = ((a_new - a) * g_a + (ratio - 1) * (big_g - a * g_a)).sum((2, 3))
    return value + query + key
