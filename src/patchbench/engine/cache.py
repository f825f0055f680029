"""The clean cache: the clean run's activations that patching copies in, and its answer logits.

The clean run does not depend on the corruption, so one cache per (model, prompts) serves the STR
and GN sweeps of every site it holds. It is a flat dict of CPU tensors (``safetensors``-saveable):

* one entry per hook point, ``[n_prompts, max_len, ...]``;
* ``answer_logits``, ``[n_prompts, d_vocab]`` at each prompt's ``answer_pos`` (float32 or float64);
* ``tokens``, the clean ids, so that a cache built from other prompts is refused.

Layer 0's residual stream is always included: the engine's sanity check patches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from patchbench.engine.forward import (
    embed_input,
    has_hook,
    hooked,
    rows_per_forward,
    run_blocks,
    site_heads,
    unembed_at,
)
from patchbench.engine.readout import AnswerIds, answer_values, index_tensor
from patchbench.prompts import PromptSet
from patchbench.rawframe import baseline_rows
from patchbench.sites import SITES, SweepSpec, enumerate_targets, hook_name

__all__ = ["ANSWER_LOGITS", "RESID0", "TOKENS", "check_cache", "clean_cache", "clean_rows", "required_hooks"]

ANSWER_LOGITS = "answer_logits"
TOKENS = "tokens"
RESID0 = "blocks.0.hook_resid_pre"


def required_hooks(model, spec_or_hooks: SweepSpec | Sequence[SweepSpec | str] | str) -> list[str]:
    """Hook points whose clean activations sweeps need, plus layer 0's residual (for the sanity check).

    Items may be SweepSpecs (their targets' hooks), site names (``attn_head``, ``head_v``, ``mlp``,
    ``resid_pre``: that site's hook at every layer) or hook point names.
    """
    if isinstance(spec_or_hooks, (SweepSpec, str)):
        spec_or_hooks = [spec_or_hooks]
    names: dict[str, None] = {RESID0: None}
    for item in spec_or_hooks:
        if isinstance(item, SweepSpec):
            for t in enumerate_targets(item, model.cfg.n_layers, site_heads(model, item.site), 1):
                names.update(dict.fromkeys(t.hooks))
        elif item in SITES:
            names.update(dict.fromkeys(hook_name(item, lay) for lay in range(model.cfg.n_layers)))
        elif has_hook(model, item):
            names[str(item)] = None
        else:
            raise ValueError(f"{item!r} is neither a SweepSpec, a site {SITES} nor a hook point of the model")
    return list(names)


def clean_cache(
    model,
    prompts: PromptSet,
    spec_or_hooks: SweepSpec | Sequence[SweepSpec | str] | str,
    *,
    memory_budget_mb: int = 1024,
) -> dict[str, torch.Tensor]:
    """Clean activations (CPU, contiguous) a sweep needs, plus the clean logits at ``answer_pos``.

    See the module docstring for the keys; ``spec_or_hooks`` as in :func:`required_hooks`.
    """
    prompts.validate(model.cfg.d_vocab)
    names = required_hooks(model, spec_or_hooks)
    tokens = prompts.tokens("clean")
    n, max_len = tokens.shape
    store: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    logits: list[torch.Tensor] = []

    def grab(act, hook):
        store[hook.name].append(act.detach().to("cpu"))

    step = rows_per_forward(model, max_len, memory_budget_mb)
    dev = model.cfg.device
    out_dtype = torch.promote_types(model.cfg.dtype, torch.float32)
    with torch.no_grad(), hooked(model, [(k, grab) for k in names]):
        for a in range(0, n, step):
            tok = tokens[a : a + step].to(dev)
            resid, sf = embed_input(model, tok, None)
            resid = run_blocks(model, resid, 0, sf)
            pos = index_tensor(prompts.answer_pos[a : a + step], resid.device)
            logits.append(unembed_at(model, resid, pos).to(out_dtype).cpu())
    out = {k: torch.cat(v).contiguous() for k, v in store.items()}
    out[ANSWER_LOGITS] = torch.cat(logits).contiguous()
    out[TOKENS] = tokens.contiguous()
    return out


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
