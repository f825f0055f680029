"""Fingerprints: short hashes of everything that determines a result's numbers.

A result that is cached or checkpointed (a sweep's finished chunks, the clean cache, a raw frame
and the effects computed from it) carries a fingerprint; a reader that finds another fingerprint
than the one it would compute discards the file and recomputes it (never trusts it, never fails).
Three kinds of facts enter them, each hashed in one function here:

* :func:`model_digest`: the model's weights and buffers (:func:`weights_digest`, any
  ``torch.nn.Module``: a HookedTransformer, TransformerLens 4's bridge, an ``LM`` wrapping one),
  its dtype and its architecture config;
* :func:`prompts_digest`: a PromptSet's clean and corrupted token ids, answers, wrong answers,
  answer positions, named positions, noise positions and the ids sigma is computed from;
* :func:`digest`: any JSON-serialisable facts (the SweepSpec: site, window, positions, heads,
  layers, noise settings and seed; GN's sigma; the batching plan), plus :data:`FORMAT_VERSION`.

The workflow's view of the same facts (what the config knows before anything runs) is
:meth:`patchbench.cell.Cell.fingerprint`, a Snakemake param of every sweep rule; the facts only a
running job can know (token ids, weights) reach Snakemake as the rules' file inputs.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "digest", "model_digest", "prompts_digest", "weights_digest"]

#: Version of the engine's output format and numerics: bump it when a change of the engine changes
#: the numbers or the files it writes, so that every checkpoint and cached result is recomputed.
FORMAT_VERSION = 3

#: Hex digits of a fingerprint.
LENGTH = 16


def digest(facts: Any) -> str:
    """The fingerprint of JSON-serialisable ``facts`` (key order does not matter) and the format version."""
    blob = json.dumps(
        {"format": FORMAT_VERSION, "facts": facts}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:LENGTH]


def _module(model: Any):
    """The ``torch.nn.Module`` holding a model's weights (the model itself, or the module it wraps)."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model
    for name in ("bridge", "model", "module"):
        inner = getattr(model, name, None)
        if isinstance(inner, torch.nn.Module):
            return inner
    raise TypeError(f"{type(model).__name__} is not a torch.nn.Module and wraps none (bridge, model, module)")


_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_digest(model: Any) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape and bytes, in ``state_dict`` order).

    Memoised per module while no tensor is replaced or changed in place (torch's version counters).
    """
    import torch

    module = _module(model)
    state = module.state_dict(keep_vars=True)
    key = tuple((k, v.data_ptr(), v._version) for k, v in state.items())
    hit = _WEIGHTS.get(module)
    if hit is not None and hit[0] == key:
        return hit[1]
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in state.items():
            t = t.detach()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    out = h.hexdigest()[:LENGTH]
    _WEIGHTS[module] = (key, out)
    return out


#: Config fields that name or place a model rather than determine its numbers.
_NOT_NUMERICS = frozenset({"model_name", "tokenizer_name", "device", "n_devices", "checkpoint_index"})


def _plain(value: Any) -> bool:
    """Whether ``value`` is JSON-native (its text is the same in every process)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def model_digest(model: Any) -> str:
    """The fingerprint of a model's numbers: weights and buffers, dtype, device type, architecture.

    The architecture is the model's ``cfg`` (TransformerLens): its JSON-native fields, without the
    ones that only name or place the model (:data:`_NOT_NUMERICS`).
    """
    module = _module(model)
    cfg = getattr(model, "cfg", None) or getattr(module, "cfg", None)
    fields = {} if cfg is None else vars(cfg)
    arch = {k: v for k, v in sorted(fields.items()) if k not in _NOT_NUMERICS and _plain(v)}
    first = next(iter(module.parameters()), None)  # (the bridge's state_dict costs tens of ms)
    dtype = fields.get("dtype", first.dtype if first is not None else None)
    device = first.device.type if first is not None else "cpu"
    return digest({"weights": weights_digest(module), "dtype": str(dtype), "device": device, "arch": arch})


def _ids(rows) -> list[list[int]]:
    return [np.asarray(r, dtype=np.int64).reshape(-1).tolist() for r in rows]


def prompts_digest(prompts: Any) -> str:
    """The fingerprint of a PromptSet's numbers: every id and position patching reads.

    Clean and corrupted token ids, answers, wrong answers, answer positions, noise positions, named
    positions and the per-prompt ids GN's sigma is computed from (meta columns
    :data:`patchbench.corruption.SIGMA_META_COLUMNS`), the task and variant, and the pad id.
    """
    from patchbench.corruption import SIGMA_META_COLUMNS

    sigma = {c: _ids(prompts.meta[c]) for c in SIGMA_META_COLUMNS if c in prompts.meta.columns}
    return digest(
        {
            "task": prompts.task,
            "variant": prompts.variant,
            "pad_id": int(prompts.pad_id),
            "clean": _ids(prompts.clean),
            "corrupted": _ids(prompts.corrupted),
            "answers": _ids(prompts.answers),
            "wrong": _ids(prompts.wrong),
            "answer_pos": np.asarray(prompts.answer_pos).tolist(),
            "noise_positions": _ids(prompts.noise_positions),
            "positions": {k: np.asarray(v).tolist() for k, v in sorted(prompts.positions.items())},
            "sigma_ids": sigma,
        }
    )
