"""The clean cache: the clean run's activations that patching copies in, and its answer logits.

The clean run does not depend on the corruption, so one cache per (model, prompts) serves the
sweeps of every corruption, direction and site it holds. It is a flat dict of CPU tensors (``safetensors``-saveable):

* one entry per hook point, ``[n_prompts, max_len, ...]``;
* ``answer_logits``, ``[n_prompts, d_vocab]`` at each prompt's ``answer_pos`` (float32 or float64);
* ``tokens``, the clean ids, so that a cache built from other prompts is refused.

Layer 0's residual stream is always included: the engine's sanity check patches it. On disk
(:func:`save_cache`, :func:`load_cache`) the file's metadata (:data:`META`) holds :func:`cache_fingerprint`
(the model's weights and the prompts' ids, :mod:`patchbench.fingerprint`) and, written by the
workflow, its job's fingerprint (:mod:`patchbench.staleness`); a reader whose model
or prompts give another fingerprint recomputes the cache instead of trusting the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from patchbench.atomic import atomic_path
from patchbench.engine.budget import rows_per_forward
from patchbench.engine.readout import AnswerIds, answer_values, index_tensor
from patchbench.fingerprint import digest, model_digest, prompts_digest
from patchbench.interventions.sites import SITES
from patchbench.lm import LM
from patchbench.prompts import PromptSet
from patchbench.rawframe import baseline_rows
from patchbench.sites import SweepSpec, enumerate_targets

__all__ = [
    "ANSWER_LOGITS",
    "RESID0",
    "TOKENS",
    "cache_fingerprint",
    "check_cache",
    "clean_cache",
    "clean_rows",
    "load_cache",
    "required_hooks",
    "save_cache",
    "usable_cache",
]

log = logging.getLogger(__name__)
#: The one metadata key of a cache file: JSON (sorted keys) of its ``fingerprint`` and, written by
#: the workflow, the job's (:data:`patchbench.staleness.RECORD_KEY`). One key, because safetensors
#: writes several in an arbitrary order: equal caches would not be equal files.
META = "patchbench"

ANSWER_LOGITS = "answer_logits"
TOKENS = "tokens"
#: The residual stream entering block 0 (every cache holds it: the sanity identity patches it), and its site.
RESID0_SITE = "resid_pre"
RESID0 = SITES[RESID0_SITE].hook_name(0)


def required_hooks(model: LM, spec_or_hooks: SweepSpec | Sequence[SweepSpec | str] | str) -> list[str]:
    """Hook points whose clean activations sweeps need, plus layer 0's residual (for the sanity check).

    Items may be SweepSpecs (their targets' hooks), site names (:data:`patchbench.interventions.sites.SITES`:
    that site's hook at every layer) or hook point names.
    """
    if isinstance(spec_or_hooks, (SweepSpec, str)):
        spec_or_hooks = [spec_or_hooks]
    names: dict[str, None] = {RESID0: None}
    for item in spec_or_hooks:
        if isinstance(item, SweepSpec):
            n_heads = SITES[item.site].n_heads(model.shape)
            for t in enumerate_targets(item, model.shape.n_layers, n_heads, 1):
                names.update(dict.fromkeys(t.hooks))
        elif item in SITES:
            names.update(dict.fromkeys(SITES[item].hook_name(lay) for lay in range(model.shape.n_layers)))
        elif model.has_hook(item):
            names[str(item)] = None
        else:
            raise ValueError(
                f"{item!r} is neither a SweepSpec, a site {tuple(SITES)} nor a hook point of the model"
            )
    return list(names)


def clean_cache(
    model: LM,
    prompts: PromptSet,
    spec_or_hooks: SweepSpec | Sequence[SweepSpec | str] | str,
    *,
    memory_budget_mb: int = 1024,
) -> dict[str, torch.Tensor]:
    """Clean activations (CPU, contiguous) a sweep needs, plus the clean logits at ``answer_pos``.

    See the module docstring for the keys; ``spec_or_hooks`` as in :func:`required_hooks`.
    """
    prompts.validate(model.shape.d_vocab)
    names = required_hooks(model, spec_or_hooks)
    tokens = prompts.tokens("clean")
    n, max_len = tokens.shape
    store: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    logits: list[torch.Tensor] = []

    def grab(act: torch.Tensor, name: str) -> None:
        store[name].append(act.detach().to("cpu"))

    step = rows_per_forward(model.shape, max_len, memory_budget_mb)
    dev = model.shape.device
    out_dtype = torch.promote_types(model.shape.dtype, torch.float32)
    with torch.no_grad(), model.hooks([(k, grab) for k in names]):
        for a in range(0, n, step):
            tok = tokens[a : a + step].to(dev)
            resid = model.run_blocks(model.embed(tok), 0)
            pos = index_tensor(prompts.answer_pos[a : a + step], resid.device)
            logits.append(model.unembed_at(resid, pos).to(out_dtype).cpu())
    out = {k: torch.cat(v).contiguous() for k, v in store.items()}
    out[ANSWER_LOGITS] = torch.cat(logits).contiguous()
    out[TOKENS] = tokens.contiguous()
    return out


def cache_fingerprint(model, prompts: PromptSet) -> str:
    """What a clean cache's numbers depend on: the model (weights, dtype, architecture) and the prompts."""
    return digest({"model": model_digest(model), "prompts": prompts_digest(prompts)})


def save_cache(
    cache: dict[str, torch.Tensor], path: str | Path, fingerprint: str, job_fingerprint: str | None = None
) -> None:
    """Write a cache atomically as safetensors, its fingerprint (and a workflow job's,
    :func:`patchbench.staleness.record`) in the file's metadata."""
    from safetensors.torch import save_file

    from patchbench.staleness import record

    tensors = {k: v.detach().cpu().contiguous() for k, v in cache.items()}
    meta = json.dumps(record({"fingerprint": fingerprint}, job_fingerprint), sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META: meta})


def load_cache(path: str | Path, device) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The cache at ``path`` on ``device`` and its fingerprint; ``(None, why)`` when it cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001  (safetensors' own error or OSError: the file is unusable either way)
        return None, f"unreadable ({type(err).__name__}: {err})"
    try:
        return tensors, str(json.loads(meta.get(META, "{}")).get("fingerprint", ""))
    except ValueError:
        return tensors, ""


def usable_cache(
    path: str | Path,
    model,
    prompts: PromptSet,
    names: Sequence[str],
    memory_budget_mb: int,
    logger: logging.Logger | None = None,
) -> dict[str, torch.Tensor]:
    """The cache at ``path`` if it was built from this model and these prompts and holds ``names``;
    otherwise (logged) a cache computed here. Never trusts a stale or damaged file, never fails on one."""
    log_ = logger or log
    cache, found = load_cache(path, model.shape.device)
    want = cache_fingerprint(model, prompts)
    problem = None
    if cache is None:
        problem = found
    elif found != want:
        problem = f"fingerprint {found or 'none'}, this model and prompt set give {want}"
    elif any(k not in cache for k in (*names, ANSWER_LOGITS, TOKENS)):
        problem = "it lacks hook points this job needs"
    if problem is None:
        return cache
    log_.warning("clean cache %s is not this job's (%s): computing the clean run here", path, problem)
    return clean_cache(model, prompts, list(names), memory_budget_mb=memory_budget_mb)


def check_cache(clean: dict[str, torch.Tensor], prompts: PromptSet, names: Iterable[str]) -> None:
    """Refuse a cache that lacks ``names`` or was built from other prompts."""
    missing = [k for k in (*names, ANSWER_LOGITS, TOKENS) if k not in clean]
    if missing:
        raise KeyError(
            f"clean cache lacks {missing}; build it with patchbench.engine.cache.clean_cache(model, prompts, spec) "
            "for every spec that will use it"
        )
    tok = clean[TOKENS].cpu()
    if tok.shape != prompts.tokens("clean").shape or not torch.equal(tok, prompts.tokens("clean")):
        raise ValueError(
            f"the clean cache was built from other prompts than {prompts.task!r}; rebuild it from this PromptSet"
        )


def clean_rows(clean: dict[str, torch.Tensor], prompts: PromptSet, spec: SweepSpec, device) -> pd.DataFrame:
    """The raw frame's clean rows (one per prompt), from the cache's answer logits: both engines' clean run."""
    rows = np.arange(len(prompts), dtype=np.int64)
    logits = clean[ANSWER_LOGITS].to(device)
    clean_logp = torch.log_softmax(logits.double(), dim=-1)
    answers, wrong = AnswerIds.of(prompts.answers, rows, device), AnswerIds.of(prompts.wrong, rows, device)
    values = {k: v.cpu().numpy() for k, v in answer_values(logits, clean_logp, answers, wrong).items()}
    return baseline_rows("clean", spec.site, spec.window, rows, np.zeros(len(rows), np.int64), values)
