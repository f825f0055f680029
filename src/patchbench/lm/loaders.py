"""The three routes that build an :class:`~patchbench.lm.LM`, and hub name resolution.

:func:`load_transformers` (a Hugging Face hub name or a local ``save_pretrained`` directory,
through ``TransformerBridge.boot_transformers``), :func:`load_legacy` (TransformerLens-format
repositories such as attn-only-4l, through ``boot_tl_legacy``), :func:`load_native` (the project's
own small models); :func:`load_hub` picks the hub route of a name, :func:`official_name`,
:func:`is_legacy` and :func:`hub_tokenizer_name` resolve names. Every route loads the weights in
the requested dtype and, with ``processing``, processes them in that dtype too (a float64 model
is folded and centred in float64: :func:`_processing_precision`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from patchbench.lm.model import LM
from patchbench.lm.shape import ModelInterfaceError, Route
from patchbench.lm.weights import _load_ht, _unembed_bias_parameter


@contextlib.contextmanager
def _processing_precision(dtype: torch.dtype) -> Iterator[None]:
    """Weight processing in the model's own precision when that is float64.

    TransformerLens 4.3's ``ProcessWeights.process_weights`` casts every floating tensor that is not
    float32 with ``Tensor.float()`` (meant to lift float16 / bfloat16 to float32), so a float64 model
    would be folded and centred in float32 and keep its rounding (clean log-probabilities up to
    ~4e-6 from the raw model's). While this block runs, ``Tensor.float()`` returns a float64 tensor
    unchanged; every other tensor is cast as usual.
    """
    if dtype != torch.float64:
        yield
        return
    cast = torch.Tensor.float

    def keep_float64(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self if self.dtype == torch.float64 else cast(self, *args, **kwargs)

    torch.Tensor.float = keep_float64  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.float = cast  # type: ignore[method-assign]


def _float64_attention() -> None:
    """Attention softmax in float64 for float64 models (installed once, when one is loaded).

    TransformerLens 4.3's attention bridges (the rotary ones: Llama, Qwen2, Gemma 2, GPT-J)
    compute the softmax with ``dtype=torch.float32`` and cast back, an upcast meant for float16 /
    bfloat16 models that rounds a float64 model's patterns to float32 (~1e-7 in its
    log-probabilities). With this, float64 scores stay float64; every other dtype is computed as
    TransformerLens computes it.
    """
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    softmax = AttentionBridge._masked_softmax
    if getattr(softmax, "keeps_float64", False):
        return

    def masked_softmax(
        self: Any, attn_scores: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        if attn_scores.dtype == torch.float64 and dtype is not None:
            dtype = torch.float64
        return softmax(self, attn_scores, dtype)

    masked_softmax.keeps_float64 = True  # type: ignore[attr-defined]
    AttentionBridge._masked_softmax = masked_softmax  # type: ignore[method-assign]


def _finish(bridge: Any, route: Route, processing: bool, check: bool, name: str) -> LM:
    """Copy the raw embedding layer, switch to compatibility mode (processing the weights in their
    own dtype), wrap and (optionally) self-check."""
    raw_embed = copy.deepcopy(bridge.embed.original_component).to("cpu").eval()
    for p in raw_embed.parameters():
        p.requires_grad_(False)
    dtype = next(bridge.parameters()).dtype
    if dtype == torch.float64:
        _float64_attention()
    with _processing_precision(dtype if processing else torch.float32):
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
