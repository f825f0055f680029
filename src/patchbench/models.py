"""Model loading: every model the pipeline patches becomes a :class:`patchbench.lm.LM`.

Three sources, chosen per model in config (``models.<name>.source``):

* ``hub``: a Hugging Face hub name (``gpt2``, ``gpt2-large``, ``gpt2-xl``, ``EleutherAI/gpt-j-6B``,
  ``meta-llama/...``; TransformerLens's old aliases such as ``attn-only-4l`` are resolved to their
  official names) through TransformerLens 4's ``TransformerBridge``: ``boot_transformers``, or the
  legacy route for TransformerLens-format repositories (``NeelNanda/...``: attn-only-4l). Weights
  get HookedTransformer's processing (what ``HookedTransformer.from_pretrained`` did). Needs
  network or a warm Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``).
* ``local``: a Hugging Face directory in ``save_pretrained`` layout (``config.json`` + weights +
  tokenizer files), loaded through ``boot_transformers`` exactly as the hub's are.
* ``toy``: the small models this repository trains itself (``patchbench.toy``), read from their
  directory under ``results/models/`` through the native route, unprocessed; ``init: random``
  gives an untrained model of the same architecture (for tests and dry runs).

:mod:`patchbench.lm` is the one module that touches TransformerLens; this one decides which of its
routes a config entry takes. A model that cannot be found raises :class:`ModelNotFoundError`,
naming the model, where it looked and how to fix it.
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
from patchbench.errors import InputError
from patchbench.lm import LM

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
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# Forward passes are kept at highest fp32 precision on CPU; results are bitwise reproducible there.
PAPER_MODELS = ("gpt2", "gpt2-large", "gpt2-xl", "EleutherAI/gpt-j-6B", "attn-only-4l")


class ModelNotFoundError(InputError, FileNotFoundError):
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
    processing: bool | None = default("model.processing")
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
            processing=entry["processing"],
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
    def processed(self) -> bool:
        """Whether the weights are processed: ``processing``, else the route's default (hub and local
        models processed, toy models unprocessed, as trained)."""
        return self.source != "toy" if self.processing is None else bool(self.processing)

    @property
    def torch_dtype(self) -> torch.dtype:
        try:
            return DTYPES[self.dtype]
        except KeyError:
            raise ValueError(
                f"model {self.name}: unknown dtype {self.dtype!r}; use one of {sorted(DTYPES)}"
            ) from None


def device_missing(device: str) -> str | None:
    """Why ``device`` (``cpu``, ``cuda[:i]``, ``mps``; not ``auto``) cannot be used on this machine, or None."""
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            return f"this machine has {n} visible CUDA device(s) (torch {torch.__version__})"
    if device == "mps" and not torch.backends.mps.is_available():
        return "this machine has no MPS (Apple GPU) device"
    return None


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else is returned unchanged
    when this machine has it (an InputError naming the device otherwise)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    missing = device_missing(device)
    if missing:
        raise InputError.of(
            f"device {device!r}",
            missing,
            "use device: auto (the GPU when there is one, else the CPU) or cpu, or run where the GPU is",
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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def known_hub_names() -> list[str]:
    """The model names TransformerLens knows: official Hugging Face names and their aliases."""
    from transformer_lens.supported_models import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    return sorted({*OFFICIAL_MODEL_NAMES, *(a for aliases in MODEL_ALIASES.values() for a in aliases)})


def _not_found(spec: ModelSpec, detail: str = "") -> ModelNotFoundError:
    """Why a hub model could not be had offline: an unknown name (with the closest known ones), or a
    known one that is not in the local cache."""
    import difflib

    name = spec.hub_name or spec.name
    cache = f"HF_HUB_CACHE={_hub_cache_dir()}"
    fix_cache = (
        "go online once (or copy a warm cache there and set HF_HUB_OFFLINE=1), or point the model at a local "
        "save_pretrained directory with `source: local` and `path:`, or run the offline demo config "
        "(snakemake --configfile config/demo.yaml)"
    )
    if name in known_hub_names():
        problem = f"{name!r} is a known model but is not in the local Hugging Face cache ({cache})"
        return ModelNotFoundError.of(f"model {spec.name!r}", problem + detail, fix_cache)
    close = difflib.get_close_matches(name, known_hub_names(), n=3, cutoff=0.6)
    problem = (
        f"unknown model name {name!r}: TransformerLens knows no model of that name and the local cache "
        f"({cache}) has no repository of it"
    )
    fix = (
        f"did you mean {' or '.join(map(repr, close))}? Correct hub_name, or "
        if close
        else "Correct hub_name, or "
    )
    return ModelNotFoundError.of(f"model {spec.name!r}", problem + detail, fix + fix_cache)


def check_hub_model(spec: ModelSpec) -> None:
    """Offline (``HF_HUB_OFFLINE``), refuse a hub model whose name TransformerLens does not know and
    the local cache does not hold (a misspelt name, with the closest known ones). A known model that
    is not cached passes: a dry run plans it, and its job says that it is not in the cache. Online
    the job downloads it."""
    from patchbench.lm import official_name
    from patchbench.staleness import cached_commit

    name = spec.hub_name or spec.name
    if spec.source != "hub" or not _offline() or name in known_hub_names():
        return
    if cached_commit(official_name(name)) is None:
        raise _not_found(spec)


def _load_hub(spec: ModelSpec, device: str) -> LM:
    from patchbench.lm import load_hub

    name = spec.hub_name or spec.name
    try:
        with offline_repo_listing() if _offline() else contextlib.nullcontext():
            return load_hub(
                name,
                dtype=spec.torch_dtype,
                device=device,
                tokenizer=load_tokenizer(spec),
                processing=spec.processed,
            )
    except (
        OSError,
        ValueError,
    ) as err:  # hub errors surface as OSError subclasses; unknown names as ValueError
        if _offline():
            raise _not_found(spec, f" ({type(err).__name__}: {err})") from err
        raise ModelNotFoundError(
            f"model {spec.name!r}: could not load {name!r} from the Hugging Face hub or its cache "
            f"(looked in HF_HUB_CACHE={_hub_cache_dir()}): {type(err).__name__}: {err}. "
            "Fix: check the name (hub_name), go online, or point the model at a local save_pretrained directory "
            "with `source: local` and `path:`."
        ) from err


def _load_local(spec: ModelSpec, device: str) -> LM:
    from patchbench.lm import load_transformers

    path = Path(spec.path or "")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"model {spec.name!r}: no Hugging Face model directory at {path.resolve()} (config.json missing). "
            "Fix: save one there with `model.save_pretrained(path)` and `tokenizer.save_pretrained(path)`, "
            "or correct `path:` in the config."
        )
    from patchbench.weights_fit import check_weights_fit

    check_weights_fit(spec)
    try:
        return load_transformers(
            str(path),
            dtype=spec.torch_dtype,
            device=device,
            tokenizer=load_tokenizer(spec),
            processing=spec.processed,
        )
    except OSError as err:
        raise ModelNotFoundError(
            f"model {spec.name!r}: the directory {path.resolve()} has a config.json but its weights could not be "
            f"read ({type(err).__name__}: {err}). Fix: save the model again with `model.save_pretrained(path)`."
        ) from err


def _load_toy(spec: ModelSpec, device: str) -> LM:
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

    return load_toy(path, device=device, dtype=spec.torch_dtype, processing=spec.processed)


def _is_toy_dir(path: Path) -> bool:
    """Toy model directories hold a TransformerLens config (``d_model``), HF ones an HF config."""
    import json

    cfg = path / "config.json"
    return cfg.is_file() and "d_model" in json.loads(cfg.read_text())


def _random_toy(spec: ModelSpec, device: str) -> LM:
    """An untrained model of the configured toy architecture, seeded (``arch.seed``, default 0)."""
    from patchbench.lm import load_native

    tokenizer = load_tokenizer(spec)
    fields = {**spec.arch, "d_vocab": len(tokenizer), "seed": int(spec.arch.get("seed", 0))}
    fields.setdefault("model_name", spec.name)
    return load_native(
        fields, dtype=spec.torch_dtype, device=device, tokenizer=tokenizer, processing=spec.processed
    )


def load_model(spec: ModelSpec) -> LM:
    """Load ``spec`` as an :class:`~patchbench.lm.LM` in eval mode on its configured device and dtype
    (self-checked against the model's own forward at load)."""
    device = resolve_device(spec.device)
    loader = {"hub": _load_hub, "local": _load_local, "toy": _load_toy}.get(spec.source)
    if loader is None:
        raise ValueError(f"model {spec.name!r}: unknown source {spec.source!r}; use hub, local or toy")
    log.info("loading model %s (%s) on %s as %s", spec.name, spec.source, device, spec.dtype)
    _ = spec.torch_dtype  # an unknown dtype is refused before anything loads
    model = loader(spec, device)
    log.info(
        "%s: %s via the %s route, %d layers x %d heads (%d key-value heads), %s positions, weights %s",
        spec.name, model.shape.architecture, model.shape.route, model.shape.n_layers, model.shape.n_heads,
        model.shape.n_kv_heads, model.shape.positional, "processed" if model.shape.processed else "unprocessed",
    )  # fmt: skip
    return model


def load_tokenizer(spec: ModelSpec):
    """The tokenizer alone (no weights): enough to build prompt sets."""
    from transformers import AutoTokenizer

    if spec.source == "toy":
        from patchbench.toy.tokenizer import load_tokenizer as load_toy_tokenizer

        return load_toy_tokenizer(Path(spec.path or ""))
    where = spec.path if spec.source == "local" else (spec.hub_name or spec.name)
    if spec.source == "hub":
        from patchbench.lm import hub_tokenizer_name

        try:
            where = hub_tokenizer_name(where)
        except (OSError, ValueError) as err:
            if _offline():
                raise _not_found(spec, f" ({type(err).__name__}: {err})") from err
            raise ModelNotFoundError(
                f"model {spec.name!r}: no config for {where!r} in the hub or its cache "
                f"(HF_HUB_CACHE={_hub_cache_dir()}): {err}"
            ) from err
    try:
        tok = AutoTokenizer.from_pretrained(str(where))
    except OSError as err:
        if spec.source == "hub" and _offline():
            raise _not_found(spec, f" ({type(err).__name__}: {err})") from err
        raise ModelNotFoundError(
            f"model {spec.name!r}: no tokenizer found at {where!r} (hub cache {_hub_cache_dir()}): {err}. "
            "Fix: save the tokenizer into the model directory with tokenizer.save_pretrained(path), "
            "or warm the Hugging Face cache."
        ) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
