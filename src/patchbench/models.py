"""Model loading: the only module that knows how a model becomes a ``HookedTransformer``.

Three sources, chosen per model in config (``models.<name>.source``):

* ``hub``: a TransformerLens / Hugging Face hub name (``gpt2``, ``gpt2-large``, ``gpt2-xl``,
  ``EleutherAI/gpt-j-6B``, ``attn-only-4l``) through ``HookedTransformer.from_pretrained``.
  Needs network or a warm Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``).
* ``local``: a Hugging Face directory in ``save_pretrained`` layout (``config.json`` + weights +
  tokenizer files), converted with TransformerLens's own config and weight conversion
  (``get_pretrained_model_config`` / ``get_pretrained_state_dict``), so the weights are processed
  exactly as ``from_pretrained`` processes the hub's.
* ``toy``: the small models this repository trains itself (``patchbench.toy``), read from their
  directory under ``results/models/``; ``init: random`` gives an untrained model of the same
  architecture (for tests and dry runs).

Everything TransformerLens-specific stays here, so a later move of TransformerLens versions is
one file. A model that cannot be found raises :class:`ModelNotFoundError`, naming the model,
where it looked and how to fix it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from patchbench.config import default, validate_entry

__all__ = [
    "ModelSpec",
    "ModelNotFoundError",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "offline_repo_listing",
    "DTYPES",
]

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# Forward passes are kept at highest fp32 precision on CPU; results are bitwise reproducible there.
PAPER_MODELS = ("gpt2", "gpt2-large", "gpt2-xl", "EleutherAI/gpt-j-6B", "attn-only-4l")


class ModelNotFoundError(FileNotFoundError):
    """A model could not be found where it was looked for (the message says where and the fix)."""


@dataclass(frozen=True)
class ModelSpec:
    """How to obtain one model. Built from a ``models.<name>`` config entry with :meth:`from_config`."""

    name: str
    source: Literal["hub", "local", "toy"] = default("model.source")
    hub_name: str | None = None
    path: str | None = None
    dtype: str = default("model.dtype")
    device: str = default("model.device")
    memory_budget_mb: int = default("model.memory_budget_mb")
    init: Literal["trained", "random"] = default("model.init")
    arch: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any], results_dir: str | Path) -> ModelSpec:
        """The spec of ``models.<name>`` (checked against the schema, defaults filled in).

        The two derived defaults are decided here: ``hub_name`` null means the model's key, and a toy
        model's ``path`` null means its directory under ``results_dir`` (:meth:`Layout.model_dir`).
        """
        from patchbench.layout import Layout

        entry = validate_entry("model", entry)
        source, path = entry["source"], entry["path"]
        if source == "toy" and path is None:
            path = Layout(str(results_dir)).model_dir(name)
        return cls(
            name=name,
            source=source,
            hub_name=entry["hub_name"] or (name if source == "hub" else None),
            path=path,
            dtype=entry["dtype"],
            device=entry["device"],
            memory_budget_mb=int(entry["memory_budget_mb"]),
            init=entry["init"],
            arch=dict(entry["arch"]),
        )

    @classmethod
    def from_name(cls, name_or_path: str, **kwargs: Any) -> ModelSpec:
        """A spec for a hub name, or for a local directory when ``name_or_path`` is one."""
        p = Path(name_or_path)
        if p.is_dir():
            source = "toy" if _is_toy_dir(p) else "local"
            return cls(name=p.name, source=source, path=str(p), **kwargs)
        return cls(name=name_or_path, source="hub", hub_name=name_or_path, **kwargs)

    @property
    def torch_dtype(self) -> torch.dtype:
        try:
            return DTYPES[self.dtype]
        except KeyError:
            raise ValueError(
                f"model {self.name}: unknown dtype {self.dtype!r}; use one of {sorted(DTYPES)}"
            ) from None


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else is returned unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"config asks for device {device!r} but no CUDA device is visible; use 'auto' or 'cpu'"
        )
    return device


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


@contextlib.contextmanager
def offline_repo_listing() -> Iterator[None]:
    """Make ``HfApi.list_repo_files`` answer from the local cache while it is active.

    TransformerLens lists a repo's files to find attn-only-4l's ``model_final.pth``; the hub
    client has no offline path for that call. Inside this block the listing is the files of the
    cached snapshot (``snapshot_download(..., local_files_only=True)``).
    """
    from huggingface_hub import HfApi, snapshot_download

    original = HfApi.list_repo_files

    def listing(self, repo_id, *, revision=None, repo_type=None, token=None):
        root = Path(snapshot_download(repo_id, revision=revision, repo_type=repo_type, local_files_only=True))
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    HfApi.list_repo_files = listing
    try:
        yield
    finally:
        HfApi.list_repo_files = original


def _load_hub(spec: ModelSpec, device: str):
    from transformer_lens import HookedTransformer

    name = spec.hub_name or spec.name
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        with offline_repo_listing() if offline else contextlib.nullcontext():
            return HookedTransformer.from_pretrained(name, device=device, dtype=spec.torch_dtype)
    except (
        OSError,
        ValueError,
    ) as err:  # hub errors surface as OSError subclasses; unknown names as ValueError
        raise ModelNotFoundError(
            f"model {spec.name!r}: could not load {name!r} from the Hugging Face hub or its cache "
            f"(looked in HF_HUB_CACHE={_hub_cache_dir()}): {type(err).__name__}: {err}. "
            "Fix: go online once (or copy a warm cache there and set HF_HUB_OFFLINE=1), or point the model "
            "at a local save_pretrained directory with `source: local` and `path:`, or run the offline demo "
            "config (snakemake --configfile config/demo.yaml)."
        ) from err


def _load_local(spec: ModelSpec, device: str):
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import (
        get_pretrained_model_config,
        get_pretrained_state_dict,
    )
    from transformers import AutoModelForCausalLM

    path = Path(spec.path or "")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"model {spec.name!r}: no Hugging Face model directory at {path.resolve()} (config.json missing). "
            "Fix: save one there with `model.save_pretrained(path)` and `tokenizer.save_pretrained(path)`, "
            "or correct `path:` in the config."
        )
    hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=spec.torch_dtype)
    cfg = get_pretrained_model_config(str(path), device=device, dtype=spec.torch_dtype, fold_ln=True)
    state_dict = get_pretrained_state_dict(str(path), cfg, hf_model=hf_model, dtype=spec.torch_dtype)
    del hf_model
    model = HookedTransformer(cfg, tokenizer=load_tokenizer(spec), move_to_device=False)
    model.load_and_process_state_dict(
        state_dict, fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True
    )
    return model.to(device)


def _load_toy(spec: ModelSpec, device: str):
    path = Path(spec.path or "")
    if spec.init == "random":
        return _random_toy(spec, device)
    if not (path / "model.safetensors").is_file():
        raise ModelNotFoundError(
            f"toy model {spec.name!r}: no trained weights at {(path / 'model.safetensors').resolve()}. "
            f"Fix: train it with `snakemake --cores 2 --configfile config/demo.yaml {path}/model.safetensors` "
            "(the demo's `all` target does this first)."
        )
    from patchbench.toy.model import load_toy

    return load_toy(path, device=device, dtype=spec.torch_dtype)


def _is_toy_dir(path: Path) -> bool:
    """Toy model directories hold a TransformerLens config (``d_model``), HF ones an HF config."""
    import json

    cfg = path / "config.json"
    return cfg.is_file() and "d_model" in json.loads(cfg.read_text())


def _random_toy(spec: ModelSpec, device: str):
    """An untrained model of the configured toy architecture, seeded (``arch.seed``, default 0)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = load_tokenizer(spec)
    arch = {k: v for k, v in spec.arch.items() if k != "seed"}
    cfg = HookedTransformerConfig(
        **arch,
        d_vocab=len(tokenizer),
        seed=int(spec.arch.get("seed", 0)),
        device=device,
        dtype=spec.torch_dtype,
    )
    return HookedTransformer(cfg, tokenizer=tokenizer)


def load_model(spec: ModelSpec):
    """Load ``spec`` as a ``HookedTransformer`` in eval mode on its configured device and dtype."""
    device = resolve_device(spec.device)
    loader = {"hub": _load_hub, "local": _load_local, "toy": _load_toy}.get(spec.source)
    if loader is None:
        raise ValueError(f"model {spec.name!r}: unknown source {spec.source!r}; use hub, local or toy")
    log.info("loading model %s (%s) on %s as %s", spec.name, spec.source, device, spec.dtype)
    model = loader(spec, device)
    model.eval()
    return model


def load_tokenizer(spec: ModelSpec):
    """The tokenizer alone (no weights): enough to build prompt sets."""
    from transformers import AutoTokenizer

    if spec.source == "toy":
        from patchbench.toy.tokenizer import load_tokenizer as load_toy_tokenizer

        return load_toy_tokenizer(Path(spec.path or ""))
    where = spec.path if spec.source == "local" else (spec.hub_name or spec.name)
    if spec.source == "hub":
        from transformer_lens.loading_from_pretrained import get_pretrained_model_config

        try:
            where = get_pretrained_model_config(where).tokenizer_name or where
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(
                f"model {spec.name!r}: no config for {where!r} in the hub or its cache "
                f"(HF_HUB_CACHE={_hub_cache_dir()}): {err}"
            ) from err
    try:
        tok = AutoTokenizer.from_pretrained(str(where))
    except OSError as err:
        raise ModelNotFoundError(
            f"model {spec.name!r}: no tokenizer found at {where!r} (hub cache {_hub_cache_dir()}): {err}. "
            "Fix: save the tokenizer into the model directory with tokenizer.save_pretrained(path), "
            "or warm the Hugging Face cache."
        ) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
