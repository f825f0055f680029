"""Pre-flight checks: every bad input is refused before any work starts, with one clear message.

The entry points call these checks first and print an :class:`~patchbench.errors.InputError`
as one message (naming the input, the problem and the fix) without a traceback
(:func:`patchbench.errors.refusing`): the Snakefile while it is parsed (:func:`check_workflow_config`, so a bad
config fails before any job runs), each job script before it loads or computes anything
(:func:`check_job`, :func:`check_model_dir`), and the ``patchbench`` CLI before it loads the model
(:func:`check_output_path`, :func:`check_metrics`, :func:`check_model_dir`) and before it sweeps
(:func:`check_job`'s pieces). What each check refuses:

* config files: YAML syntax errors (file, line), keys given twice (an experiment named twice),
  schema violations (unknown keys, task options and toy architecture keys, bad values), unknown
  references (:mod:`patchbench.config`);
* experiments against their models: windows larger than the model, heads outside it (from the
  model's config when it can be read without loading the model: toy settings, a toy ``arch``, a
  local directory's ``config.json``; else from the loaded model, in the job);
* model directories: missing, not a directory, ``config.json`` missing or not JSON, no weights,
  unreadable weights, no tokenizer;
* tasks read from files: every row against the rules of :mod:`patchbench.prompt_pairs` (columns,
  markers; under each model's tokenizer when it is at hand: equal lengths, one-token answers);
* prompt sets: empty, ids outside the vocabulary, prompts longer than the context, an answer
  that is also a wrong answer, missing values (:class:`patchbench.prompts.PromptSet`), named
  positions the set does not have;
* command-line values: output paths that are directories, unknown metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchbench.config import ConfigError, read_yaml, validate_config
from patchbench.errors import InputError, MissingInputError

__all__ = [
    "ModelDims",
    "check_cells",
    "check_file_tasks",
    "check_fits",
    "check_job",
    "check_metrics",
    "check_model_dir",
    "check_output_path",
    "check_spec",
    "check_task_options",
    "check_workflow_config",
    "config_dims",
]


# ---------------------------------------------------------------------------------------------
# configs


def check_workflow_config(config: dict[str, Any], files: Sequence[str | Path] = ()) -> dict[str, list]:
    """Everything about a workflow config that can be checked before a job runs; its sweep cells.

    ``files`` are the YAML files it was read from (re-read strictly: syntax errors and duplicate
    keys, which Snakemake's loader lets through, name their file and line). Validates ``config``
    (defaults filled in, in place), the task options, the toy settings, the local model
    directories and every experiment against the models whose shape is known without loading them.
    """
    from patchbench.cell import cells_of

    for f in files:
        read_yaml(f)
    validate_config(config)
    check_task_options(config)
    _check_toy_settings(config)
    cells = cells_of(config)
    for name in sorted({c.model for cs in cells.values() for c in cs}):
        spec = _model_spec(config, name)
        if not _built_by_workflow(config, name):
            check_model_dir(spec)
    for experiment, cs in cells.items():
        for model in dict.fromkeys(c.model for c in cs):
            dims = config_dims(config, model)
            if dims is not None:
                check_cells([c for c in cs if c.model == model], dims, f"experiment {experiment!r}")
    check_file_tasks(config, cells)
    return cells


def check_file_tasks(config: Mapping[str, Any], cells: Mapping[str, Sequence[Any]]) -> None:
    """Every task read from a file (``tasks.<name>.file``), checked row by row before any job runs:
    its columns and markers, and, under the tokenizer of each model that patches it when that
    tokenizer is at hand (a toy model's or local directory's; not a hub model's, nor one trained in
    this run: their prompts job checks it before it writes anything), every rule of
    :mod:`patchbench.prompt_pairs` (equal lengths, one-token answers, named positions)."""
    from patchbench.models import load_tokenizer
    from patchbench.prompt_pairs import read_pairs
    from patchbench.tasks import build_configured

    for task, entry in config["tasks"].items():
        if entry.get("file") is None:
            continue
        read_pairs(entry["file"])
        for model in sorted({c.model for cs in cells.values() for c in cs if c.task == task}):
            spec = _model_spec(config, model)
            if spec.source != "hub" and not _built_by_workflow(config, model):
                build_configured(task, entry, load_tokenizer(spec), config["data_dir"])


def _model_spec(config: Mapping[str, Any], name: str):
    from patchbench.models import ModelSpec

    return ModelSpec.from_config(name, config["models"][name], config["results_dir"])


def _built_by_workflow(config: Mapping[str, Any], name: str) -> bool:
    """Whether the workflow itself makes the model's directory (a toy model trained here)."""
    from patchbench.layout import Layout

    entry = config["models"][name]
    return entry["source"] == "toy" and entry["path"] in (None, Layout.of(config).model_dir(name))


def _check_toy_settings(config: Mapping[str, Any]) -> None:
    from patchbench.toy.settings import ToySettings

    try:
        ToySettings.from_config(config["toy"])
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"config key 'toy': {err}. Fix: see the `toy` section of config/README.md"
        ) from None


def check_task_options(config: Mapping[str, Any]) -> None:
    """Refuse task options a task's generator does not take, or of the wrong type (every configured task)."""
    from patchbench.tasks import check_options, task_info

    for task, entry in config["tasks"].items():
        check_options(task, entry["options"], task_info(task, entry))


# ---------------------------------------------------------------------------------------------
# models


@dataclass(frozen=True)
class ModelDims:
    """What the checks need of a model's shape (None where it is not known)."""

    n_layers: int
    n_heads: int
    n_ctx: int | None = None
    d_vocab: int | None = None
    source: str = ""

    @classmethod
    def of(cls, model: Any, site: str | None = None) -> ModelDims:
        """The shape of a loaded :class:`patchbench.lm.LM` (heads of ``site``: key-value heads for ``head_v``)."""
        shape = model.shape
        heads = model.site_heads(site) if site else shape.n_heads
        return cls(shape.n_layers, heads, shape.n_ctx, shape.d_vocab, "the loaded model")


#: Keys of a Hugging Face / TransformerLens ``config.json`` that give each dimension.
_HF_KEYS = {
    "n_layers": ("n_layers", "n_layer", "num_hidden_layers"),
    "n_heads": ("n_heads", "n_head", "num_attention_heads"),
    "n_ctx": ("n_ctx", "n_positions", "max_position_embeddings"),
    "d_vocab": ("d_vocab", "vocab_size"),
}


def config_dims(config: Mapping[str, Any], name: str) -> ModelDims | None:
    """A model's shape from what can be read without loading it, or None (a hub model).

    A toy model trained here: its ``toy.models`` settings; a toy ``init: random`` model: its
    ``arch``; a model with a directory: the directory's ``config.json``; a hub model: the
    ``config.json`` of its repository in the local Hugging Face cache, when it is there.
    """
    entry = config["models"][name]
    if entry["source"] == "toy" and entry["init"] == "random":
        arch = entry["arch"]
        heads = arch.get("n_heads") or arch["d_model"] // arch["d_head"]
        return ModelDims(int(arch["n_layers"]), int(heads), int(arch["n_ctx"]), None, f"models.{name}.arch")
    if _built_by_workflow(config, name):
        from patchbench.toy.settings import ToySettings

        toy = ToySettings.from_config(config["toy"]).models.get(name)
        if toy is None:
            return None
        m = toy.model
        return ModelDims(m.n_layers, m.n_heads, m.n_ctx, None, f"toy.models.{name}")
    spec = _model_spec(config, name)
    if spec.source == "hub":
        return _cached_hub_dims(spec.hub_name or spec.name)
    return _dir_dims(Path(spec.path)) if spec.path else None


def _cached_hub_dims(repo: str) -> ModelDims | None:
    """A hub model's shape from the ``config.json`` in the local Hugging Face cache (no network), if there."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json")
    except Exception:  # noqa: BLE001  (not a repository name, no cache: the job checks the loaded model)
        return None
    return _dir_dims(Path(found).parent) if isinstance(found, str) else None


def _dir_dims(path: Path) -> ModelDims | None:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    found = {
        k: next((cfg[x] for x in keys if isinstance(cfg.get(x), int)), None) for k, keys in _HF_KEYS.items()
    }
    if found["n_layers"] is None or found["n_heads"] is None:
        return None
    return ModelDims(**found, source=str(path / "config.json"))


#: Weight files a model directory may hold (any one is enough).
_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: Tokenizer files (any one is enough; the toy tokenizer is ``tokenizer.json``).
_TOKENIZERS = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model")


def check_model_dir(spec: Any, weights: bool = True) -> None:
    """Refuse a model whose directory is missing or incomplete (``source: local`` or ``toy``), naming it.

    Checks the directory and its tokenizer files, then (``weights=True``, unless a toy
    ``init: random`` model, which has none) its ``config.json`` (present, JSON) and its weights
    (present; a ``.safetensors`` file's header readable). Hub models have no directory to check
    here (their loader names the cache it looked in).
    """
    if spec.source == "hub":
        return
    key = f"model {spec.name!r} (source: {spec.source})"
    if not spec.path:
        raise ConfigError.of(
            key, "no `path:` given", "set models.<name>.path to its save_pretrained directory"
        )
    path = Path(spec.path)
    fix_dir = (
        "train it with the workflow (snakemake <path>/model.safetensors) or point `path:` at a trained toy model"
        if spec.source == "toy"
        else "point models.<name>.path (or --model) at a directory written by save_pretrained (model and tokenizer)"
    )
    if not path.exists():
        raise MissingInputError.of(f"{key}: model directory {path}", "does not exist", fix_dir)
    if not path.is_dir():
        raise InputError.of(f"{key}: model directory {path}", "is a file, not a directory", fix_dir)
    tokenizer = [f for f in _TOKENIZERS if (path / f).is_file()]
    if not tokenizer:
        raise InputError.of(
            f"{key}: model directory {path}",
            f"has no tokenizer (none of {list(_TOKENIZERS)})",
            "save it there with tokenizer.save_pretrained(path)",
        )
    if not weights or (spec.source == "toy" and spec.init == "random"):
        return
    cfg = path / "config.json"
    if not cfg.is_file():
        raise InputError.of(f"{key}: model directory {path}", "has no config.json", fix_dir)
    try:
        json.loads(cfg.read_text())
    except ValueError as err:
        raise InputError.of(
            f"{key}: {cfg}", f"is not valid JSON ({err})", "rewrite it with model.save_pretrained(path)"
        ) from None
    weights = [f for f in _WEIGHTS if (path / f).is_file()] or sorted(
        p.name for p in path.glob("*.safetensors")
    )
    if not weights:
        raise InputError.of(
            f"{key}: model directory {path}", f"has no weights (none of {list(_WEIGHTS)})", fix_dir
        )
    for name in (w for w in weights if w.endswith(".safetensors")):
        _check_safetensors(path / name, key, fix_dir)


def _check_safetensors(path: Path, key: str, fix: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except Exception as err:  # noqa: BLE001  (safetensors raises its own and OSError; every one means unreadable)
        raise InputError.of(
            f"{key}: weights {path}",
            f"cannot be read ({type(err).__name__}: {err}); truncated or not safetensors",
            fix,
        ) from None


# ---------------------------------------------------------------------------------------------
# cells, prompts, jobs


def check_fits(spec: Any, dims: ModelDims, where: str) -> None:
    """Refuse a sweep (a Cell or a SweepSpec) whose window, heads or layers do not fit the model."""
    from patchbench.sites import check_windows

    try:
        check_windows(spec.site, [spec.window], dims.n_layers)
    except ValueError as err:
        raise InputError(f"{where} (shape from {dims.source}): {err}") from None
    shape = f"{dims.n_layers} layers x {dims.n_heads} heads, from {dims.source}"
    bad = [list(h) for h in spec.heads or () if not (0 <= h[0] < dims.n_layers and 0 <= h[1] < dims.n_heads)]
    if bad:
        raise InputError(
            f"{where}: heads {bad} are outside the model ({shape}). Fix: use 0 <= layer < {dims.n_layers} "
            f"and 0 <= head < {dims.n_heads}"
        )
    layers = [x for x in getattr(spec, "layers", None) or () if not 0 <= x < dims.n_layers]
    if layers:
        raise InputError(
            f"{where}: layers {layers} are outside the model ({shape}). Fix: use 0 <= layer < {dims.n_layers}"
        )


def check_cells(cells: Sequence[Any], dims: ModelDims, where: str) -> None:
    """Refuse cells whose windows or heads do not fit the model (``where`` names the experiment)."""
    for c in cells:
        check_fits(c, dims, f"{where}, model {c.model!r}")


def check_prompts(prompts: Any, model: Any, positions: Sequence[str] = ()) -> None:
    """Refuse a prompt set the model cannot run: empty, ids outside its vocabulary, longer than its
    context, or without the named ``positions`` the sweeps patch."""
    dims = ModelDims.of(model)
    prompts.validate(dims.d_vocab, dims.n_ctx)
    for p in positions:
        if p not in ("all", "each"):
            prompts.named_position(p)


def check_job(cells: Sequence[Any], model: Any, prompts: Any) -> None:
    """Everything a sweep job checks once its model and prompts are loaded, before any cell runs."""
    check_prompts(prompts, model, [c.position for c in cells])
    for c in cells:
        check_fits(c, ModelDims.of(model, c.site), f"cell {c.label}")


def check_spec(spec: Any, model: Any, prompts: Any, where: str) -> None:
    """What the CLI checks before it sweeps: the prompts against the model, the SweepSpec against both."""
    check_prompts(prompts, model, [spec.position])
    check_fits(spec, ModelDims.of(model, spec.site), where)


def check_metrics(names: Sequence[str], what: str = "--metrics") -> tuple[str, ...]:
    """The metric names, refused (naming the unknown ones) unless every one is known."""
    from patchbench.metrics import METRICS

    names = tuple(n.strip() for n in names)
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise InputError.of(what, f"unknown metric(s) {bad or names}", f"choose from {', '.join(METRICS)}")
    return names


def check_output_path(path: str | Path, what: str) -> Path:
    """An output file path that can be written: not a directory, its parent not a file."""
    path = Path(path)
    if path.is_dir():
        raise InputError.of(
            f"{what} {path}", "is a directory, not a file", f"name a file, e.g. {path / 'raw.parquet'}"
        )
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError.of(
            f"{what} {path}", f"{parent} is a file, not a directory", "choose another output path"
        )
    return path
