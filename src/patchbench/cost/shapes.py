"""A config's model as a shape, without loading its weights: what the cost model plans with.

Where each shape comes from (:func:`planned_model` says which, in its ``source``):

* a toy model with a directory (the shipped organisms): its TransformerLens ``config.json``;
* a toy model trained by the workflow: its ``toy.models`` settings, and the vocabulary of its tokenizer
  once built; a toy ``init: random`` model: its ``arch`` and its tokenizer's vocabulary;
* a ``source: local`` model: its Hugging Face ``config.json`` (read by ``transformers.AutoConfig``);
* a hub model of the paper (:data:`patchbench.standins.STANDINS`: GPT-2 small / large / XL, GPT-J 6B,
  attn-only-4l): that table's architecture at the real model's depth (the paper models' shapes);
  any other hub model: the ``config.json`` of its repository in the local Hugging Face cache.

The model interface's decisions that depend on loading are assumed as the interface takes them for
every route and family it supports: key/value reuse (suffix reuse) and the head-output shortcut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patchbench.cost.work import PlannedModel
from patchbench.errors import InputError
from patchbench.lm import LMShape

__all__ = ["ModelShape", "model_shape", "shape_from_hf", "shape_from_tl"]

#: Hugging Face model types whose MLP is gated (gate, up and down projections).
GATED = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "olmo", "phi3")


class ShapeUnknownError(InputError, ValueError):
    """A model's shape cannot be known without loading it (the message names the fix)."""


@dataclass(frozen=True)
class ModelShape:
    """A model as the cost model sees it: its planned model, route, weights' size and where it came from."""

    model: PlannedModel
    route: str  # native | legacy | transformers
    weight_bytes: int
    source: str


def _shape(route: str, dtype: torch.dtype, device: str, **dims: Any) -> LMShape:
    n_heads = int(dims["n_heads"])
    return LMShape(
        architecture=str(dims.get("architecture", route)),
        route=route,  # type: ignore[arg-type]
        n_layers=int(dims["n_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(dims.get("n_kv_heads") or n_heads),
        d_head=int(dims["d_head"]),
        d_model=int(dims["d_model"]),
        d_mlp=int(dims.get("d_mlp") or 0),
        d_vocab=int(dims["d_vocab"]),
        n_ctx=int(dims.get("n_ctx") or 0),
        dtype=dtype,
        device=device,
        positional=str(dims.get("positional") or "standard"),
        processed=route != "native",
        kv_reuse=True,
        sliding_window=None,
        logit_softcap=None,
    )


def shape_from_tl(cfg: dict[str, Any], route: str, dtype: torch.dtype, device: str) -> PlannedModel:
    """A TransformerLens-format config (toy ``config.json``, ``arch``, attn-only-4l's)."""
    n_heads = int(cfg.get("n_heads") or cfg["d_model"] // cfg["d_head"])
    shape = _shape(
        route, dtype, device,
        architecture=cfg.get("original_architecture") or "TransformerLensNative",
        n_layers=cfg["n_layers"], n_heads=n_heads, d_head=cfg.get("d_head") or cfg["d_model"] // n_heads,
        d_model=cfg["d_model"], d_mlp=0 if cfg.get("attn_only") else cfg.get("d_mlp") or 4 * cfg["d_model"],
        d_vocab=cfg["d_vocab"], n_ctx=cfg.get("n_ctx"), n_kv_heads=cfg.get("n_key_value_heads"),
        positional=cfg.get("positional_embedding_type"),
    )  # fmt: skip
    return PlannedModel(
        shape, gated_mlp=bool(cfg.get("gated_mlp", False)), name=str(cfg.get("model_name", ""))
    )


def shape_from_hf(cfg: Any, dtype: torch.dtype, device: str) -> PlannedModel:
    """A Hugging Face config (``transformers.PretrainedConfig``)."""
    d_model = int(cfg.hidden_size)
    n_heads = int(cfg.num_attention_heads)
    d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d_model
    rotary = any(
        getattr(cfg, k, None) for k in ("rotary_dim", "rope_theta", "rope_parameters", "rope_scaling")
    )
    shape = _shape(
        "transformers", dtype, device,
        architecture=(getattr(cfg, "architectures", None) or [cfg.model_type])[0],
        n_layers=cfg.num_hidden_layers, n_heads=n_heads, n_kv_heads=getattr(cfg, "num_key_value_heads", None),
        d_head=getattr(cfg, "head_dim", None) or d_model // n_heads, d_model=d_model, d_mlp=d_mlp,
        d_vocab=cfg.vocab_size, n_ctx=getattr(cfg, "max_position_embeddings", None),
        positional="rotary" if rotary else "standard",
    )  # fmt: skip
    return PlannedModel(shape, gated_mlp=cfg.model_type in GATED, name=str(getattr(cfg, "name_or_path", "")))


def weight_bytes(model: PlannedModel) -> int:
    """Bytes of the weights: embeddings, blocks, unembedding (norms and biases left out)."""
    s = model.shape
    attn = s.d_model * (s.n_heads + 2 * s.n_kv_heads) * s.d_head + s.n_heads * s.d_head * s.d_model
    mlp = (3 if model.gated_mlp else 2) * s.d_model * s.d_mlp
    pos = s.n_ctx * s.d_model if s.positional == "standard" else 0
    n = 2 * s.d_vocab * s.d_model + pos + s.n_layers * (attn + mlp)
    return int(n * s.dtype.itemsize)


def _hf_config(where: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(where)


def model_shape(config: dict[str, Any], name: str, device: str = "cpu") -> ModelShape:
    """The shape of ``models.<name>`` of a validated config (see the module docstring)."""
    from patchbench.layout import Layout
    from patchbench.models import ModelSpec, load_tokenizer

    spec = ModelSpec.from_config(name, config["models"][name], config["results_dir"])
    dtype = spec.torch_dtype
    if spec.source == "toy":
        path = Path(spec.path or "")
        if spec.init == "random" or not (path / "config.json").is_file():
            if spec.init == "random":
                cfg, where = dict(spec.arch), f"models.{name}.arch"
            else:
                from patchbench.toy.settings import ToySettings

                toy = ToySettings.from_config(config["toy"]).models.get(name)
                if toy is None:
                    raise ShapeUnknownError(
                        f"model {name!r}: no config.json at {path} and no toy.models.{name} settings. "
                        "Fix: train it first, or correct its path"
                    )
                from dataclasses import asdict

                cfg, where = asdict(toy.model), f"toy.models.{name}"
            try:
                cfg["d_vocab"] = len(load_tokenizer(spec))
            except (OSError, FileNotFoundError) as err:
                raise ShapeUnknownError(
                    f"model {name!r}: its vocabulary is its tokenizer's, which is not built yet ({err}). "
                    f"Fix: build it first (snakemake --configfile ... {Layout.of(config).model_dir(name)}/tokenizer.json)"
                ) from None
            model = shape_from_tl(cfg, "native", dtype, device)
            return ModelShape(model, "native", weight_bytes(model), f"{where} + tokenizer vocabulary")
        cfg = json.loads((path / "config.json").read_text())
        model = shape_from_tl(cfg, "native", dtype, device)
        return ModelShape(model, "native", weight_bytes(model), str(path / "config.json"))
    if spec.source == "local":
        model = shape_from_hf(_hf_config(str(spec.path)), dtype, device)
        return ModelShape(model, "transformers", weight_bytes(model), f"{spec.path}/config.json")
    return _hub_shape(spec.hub_name or name, dtype, device)


def _hub_shape(hub: str, dtype: torch.dtype, device: str) -> ModelShape:
    from patchbench.lm import is_legacy, official_name
    from patchbench.standins import STANDINS

    table = {s.name: s for s in STANDINS.values()} | {s.repo_id: s for s in STANDINS.values()}
    repo = official_name(hub)
    paper = table.get(hub) or table.get(repo)
    if paper is not None:
        full = paper.with_layers(paper.real_layers)
        where = f"the paper models' table (patchbench.standins, {paper.real_layers} layers)"
        if paper.kind == "tl":
            model = shape_from_tl(full.arch, "legacy", dtype, device)
            return ModelShape(model, "legacy", weight_bytes(model), where)
        from transformers import AutoConfig

        cfg = AutoConfig.for_model(paper.kind, **full.arch)
        model = shape_from_hf(cfg, dtype, device)
        return ModelShape(model, "transformers", weight_bytes(model), where)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json")
    except Exception:  # noqa: BLE001  (not a repository name)
        found = None
    if not isinstance(found, str):
        raise ShapeUnknownError(
            f"hub model {hub!r}: its shape is not known offline (not a paper model, and no config.json of "
            f"{repo!r} in the Hugging Face cache). Fix: warm the cache (load it once online), or point the "
            "model at a local save_pretrained directory"
        )
    if is_legacy(repo):
        model = shape_from_tl(json.loads(Path(found).read_text()), "legacy", dtype, device)
        return ModelShape(model, "legacy", weight_bytes(model), found)
    model = shape_from_hf(_hf_config(str(Path(found).parent)), dtype, device)
    return ModelShape(model, "transformers", weight_bytes(model), found)
