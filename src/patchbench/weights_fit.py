"""Whether a model directory's weights fit its ``config.json``: the first tensor that differs.

A directory whose ``config.json`` was edited, or mixed with another model's weights, loads without
complaint through Hugging Face (more layers in the config than in the weights: the rest
initialised randomly; fewer: the rest ignored) or fails with a report of every key. Before a
model is loaded (:mod:`patchbench.models` for ``source: local``, :mod:`patchbench.toy.model` for a
toy directory) its weights' shapes are compared with those its config gives, and a misfit is one
:class:`~patchbench.errors.InputError` naming the first tensor of another shape, else the tensors
the weights lack or hold in excess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from patchbench.errors import InputError

__all__ = ["check_weights_fit", "weights_mismatch"]

Shapes = dict[str, tuple[str, list[int]]]


def weights_mismatch(
    found: Shapes,
    expected: dict[str, list[int]],
    tied: Mapping[str, Sequence[str]] | None = None,
    config: str = "config.json",
) -> str | None:
    """What is wrong when weights ``found`` (name -> (file, shape)) are loaded into a model whose config
    gives ``expected`` (name -> shape): the first tensor of another shape, else the tensors the weights
    lack (``tied``: names sharing one tensor, any one of them is enough) or hold in excess; None if they fit."""
    for name, shape in expected.items():
        if name in found and list(found[name][1]) != list(shape):
            file, has = found[name]
            return f"tensor {name!r} in {file} has shape {list(has)}, but {config} gives {list(shape)}"
    tied = tied or {}
    missing = [n for n in expected if n not in found and not any(t in found for t in tied.get(n, ()))]
    if missing:
        return (
            f"{config} describes {len(missing)} tensor(s) the weights lack (first: {missing[0]!r}): they would be "
            "initialised randomly (a model with more layers or another architecture than the weights)"
        )
    extra = [n for n in found if n not in expected]
    if extra:
        return (
            f"the weights hold {len(extra)} tensor(s) that {config} does not describe (first: {extra[0]!r} in "
            f"{found[extra[0]][0]}): they would be ignored (a model with fewer layers than the weights)"
        )
    return None


def check_weights_fit(spec: Any) -> None:
    """Refuse a ``save_pretrained`` directory whose safetensors weights do not fit its ``config.json``,
    naming the first mismatching tensor. The model is built on the meta device (no memory, no
    weights read), and only the files' headers are read; ``.bin`` weights are left to the loader."""
    import torch
    import transformers
    from safetensors import safe_open

    path = Path(spec.path)
    found: Shapes = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                found[k] = (f.name, list(sf.get_slice(k).get_shape()))
    if not found:
        return
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(cfg)
    except Exception:  # noqa: BLE001  (an architecture transformers cannot build: the loader says why)
        return
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}."
    if not set(found) & set(expected):  # saved from the base model: names without its prefix
        found = {prefix + k: v for k, v in found.items()}
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    tied = {n: g for g in groups.values() for n in g}
    skip_missing = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_missing", None) or ()]
    skip_extra = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()]
    expected = {k: v for k, v in expected.items() if k in found or not any(r.search(k) for r in skip_missing)}
    found = {k: v for k, v in found.items() if k in expected or not any(r.search(k) for r in skip_extra)}
    problem = weights_mismatch(found, expected, tied, str(path / "config.json"))
    if problem:
        raise InputError.of(
            f"model {spec.name!r} (source: {spec.source})",
            problem,
            f"{path} mixes two models: save the model and its config together (model.save_pretrained(path)), or "
            "restore the config.json that came with these weights",
        )
