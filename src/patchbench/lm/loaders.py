"""The three routes that build an :class:`~patchbench.lm.LM`, and hub name resolution.

:func:`load_transformers` (a Hugging Face hub name or a local ``save_pretrained`` directory,
through ``TransformerBridge.boot_transformers``), :func:`load_legacy` (TransformerLens-format
repositories such as attn-only-4l, through ``boot_tl_legacy``), :func:`load_native` (the project's
own small models); :func:`load_hub` picks the hub route of a name, :func:`official_name`,
:func:`is_legacy` and :func:`hub_tokenizer_name` resolve names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from patchbench.lm.model import LM
from patchbench.lm.shape import ModelInterfaceError, Route
from patchbench.lm.weights import _load_ht, _unembed_bias_parameter


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
