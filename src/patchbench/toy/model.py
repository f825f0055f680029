"""Toy model architecture, checkpoint format and loader.

A toy model directory (``results/models/{model}/``) holds:

====================  ==================================================================
config.json           HookedTransformerConfig keyword arguments (JSON-able subset); the same
                      names are TransformerBridgeConfig fields
model.safetensors     the weights in HookedTransformer's format (``embed.W_E``, ``blocks.0.attn.W_Q``
                      [n_heads, d_model, d_head], ...; models trained under TransformerLens 3.9 load
                      unchanged)
tokenizer.json        the toy tokenizer (plus tokenizer_config.json, special_tokens_map.json)
training_curve.csv    step, loss and any imposing terms (written by ``patchbench.toy.train``)
accuracy.json         held-out accuracy per task (``patchbench.toy.evaluate``)
circuit.json          organisms: the circuit imposed in training (``patchbench.toy.circuit``)
ablation.json         IOI organisms: classifier + mean-ablation check (``patchbench.toy.ablation``)
====================  ==================================================================

A shipped organism (``models/organisms/{model}/``) also has ``heldout.json`` (the combinations
its training avoided) and ``provenance.json`` (``patchbench.toy.provenance``).

``load_toy`` is the one entry point the rest of the package uses (``patchbench.models`` calls it
for ``source: toy``): it builds the model through the native route of :mod:`patchbench.lm`
(unprocessed, as trained), loads the weights and attaches the tokenizer, so the engine treats a
toy model exactly like GPT-2.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from patchbench.errors import InputError
from patchbench.lm import LM, load_native
from patchbench.toy.settings import ModelSpec
from patchbench.toy.tokenizer import load_tokenizer

__all__ = ["ModelSpec", "build_model", "hooked_config", "save_toy", "load_toy"]

log = logging.getLogger(__name__)


def hooked_config(spec: ModelSpec, d_vocab: int, seed: int, model_name: str) -> dict:
    """The model's config (HookedTransformerConfig keyword arguments, TransformerBridgeConfig fields;
    written to config.json)."""
    kw = {
        "model_name": model_name,
        "n_layers": spec.n_layers,
        "d_model": spec.d_model,
        "n_heads": spec.n_heads,
        "d_head": spec.d_head or spec.d_model // spec.n_heads,
        "n_ctx": spec.n_ctx,
        "d_vocab": d_vocab,
        "act_fn": spec.act_fn,
        "normalization_type": spec.normalization_type,
        "positional_embedding_type": spec.positional_embedding_type,
        "attn_only": spec.attn_only,
        "seed": seed,
        "tokenizer_prepends_bos": False,
        "default_prepend_bos": True,
        "original_architecture": "patchbench-toy",
    }
    if not spec.attn_only:
        kw["d_mlp"] = spec.d_mlp
    return kw


def build_model(cfg_kwargs: dict) -> LM:
    """A freshly initialised toy model (initialisation seeded by ``cfg_kwargs['seed']``), for training."""
    return load_native(cfg_kwargs, check=False)


def save_toy(model: LM, cfg_kwargs: dict, model_dir: Path) -> None:
    """Write config.json and model.safetensors (the tokenizer files are written separately)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(cfg_kwargs, indent=1) + "\n")
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.ht_state_dict().items()}
    # one metadata key only: safetensors writes a metadata map in random key order, and the file
    # must be byte-identical across reruns
    save_file(state, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def load_toy(
    model_dir: Path | str, device: str = "cpu", dtype: torch.dtype = torch.float32, processing: bool = False
) -> LM:
    """The trained toy model in ``model_dir``, in eval mode, with its tokenizer (unprocessed, as
    trained, unless ``processing``)."""
    model_dir = Path(model_dir)
    missing = [
        f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (model_dir / f).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"toy model directory {model_dir} lacks {missing}; train it with the workflow's toy_train rule "
            f"(snakemake --cores 2 {model_dir}/model.safetensors)."
        )
    cfg_kwargs = json.loads((model_dir / "config.json").read_text())
    state = load_file(str(model_dir / "model.safetensors"))
    try:
        return load_native(
            cfg_kwargs,
            state,
            dtype=dtype,
            device=str(device),
            tokenizer=load_tokenizer(model_dir),
            processing=processing,
        )
    except (ValueError, RuntimeError) as err:  # weights missing, unknown or of the wrong shape
        raise _misfit(model_dir, cfg_kwargs, state, err) from None


def _misfit(model_dir: Path, cfg_kwargs: dict, state: dict[str, torch.Tensor], err: Exception) -> InputError:
    """Why ``model.safetensors`` does not fit ``config.json``, naming the first mismatching tensor
    (the shapes of a freshly built model of that config against the file's)."""
    from patchbench.weights_fit import weights_mismatch

    expected = {k: list(v.shape) for k, v in build_model(cfg_kwargs).ht_state_dict().items()}
    found = {k: ("model.safetensors", list(v.shape)) for k, v in state.items()}
    problem = weights_mismatch(found, expected, config=str(model_dir / "config.json"))
    return InputError.of(
        f"toy model {model_dir}",
        problem or f"model.safetensors does not fit its config.json ({type(err).__name__}: {err})",
        "restore the config.json saved with these weights, or retrain the model",
    )


def spec_from_dict(d: dict) -> ModelSpec:
    """A ModelSpec from a config mapping; unknown keys are an error that names them."""
    known = set(asdict(ModelSpec()))
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown toy model keys {sorted(unknown)}; known: {sorted(known)}")
    return ModelSpec(**d)
