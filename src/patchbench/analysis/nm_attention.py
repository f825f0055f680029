"""§3.2's evidence for GN's off-distribution behaviour: name-mover attention and S-inhibition values.

Zhang & Nanda (§3.2, Fig. 3) look at the Name Mover heads (GPT-2 small: 9.6, 9.9, 10.0) from END:

(a) their attention to IO, to S1 and to the other tokens in the clean run, the STR run (S2 -> IO)
    and the GN run (noise on S2);
(b) the normalised logit difference after restoring the clean values (``hook_v``) of all four
    S-inhibition heads (7.3, 7.9, 8.6, 8.10) in the corrupted run, STR vs GN;
(c) the NM attention in that patched run.

The frames (inputs of :func:`patchbench.analysis.figures.fig_nm_attention` and of the §3.2
claims):

- attention frame, :data:`ATTENTION_COLUMNS`: ``model``; ``corruption`` in clean / STR / GN;
  ``patched`` (True = S-inhibition values restored); ``target`` in IO / S1 / other (1 - IO - S1);
  ``attention`` = END's attention probability, averaged over the NM heads and the prompts.
- recovery frame, :data:`RECOVERY_COLUMNS`: ``model, corruption, metric, effect`` with metric
  ``logit_diff`` = (LD_pt - LD_*) / (LD_cl - LD_*) over dataset means (the effects frame of the
  ``head_v`` sweep has the same columns and can be passed instead).

:func:`nm_attention_frames` computes both from a ``HookedTransformer`` and the IOI ``PromptSet``;
GN uses :mod:`patchbench.corruption` (the same seeded draw for the corrupted and patched run).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from patchbench.analysis.frames import FrameError
from patchbench.analysis.style import corruption_label

__all__ = [
    "ATTENTION_COLUMNS",
    "NM_HEADS_GPT2_SMALL",
    "RECOVERY_COLUMNS",
    "SI_HEADS_GPT2_SMALL",
    "TARGETS",
    "nm_attention_frames",
    "validate_attention",
]

log = logging.getLogger(__name__)

ATTENTION_COLUMNS = ("model", "corruption", "patched", "target", "attention")
RECOVERY_COLUMNS = ("model", "corruption", "metric", "effect")
TARGETS = ("IO", "S1", "other")
NM_HEADS_GPT2_SMALL: tuple[tuple[int, int], ...] = ((9, 6), (9, 9), (10, 0))
SI_HEADS_GPT2_SMALL: tuple[tuple[int, int], ...] = ((7, 3), (7, 9), (8, 6), (8, 10))


def validate_attention(df: pd.DataFrame) -> pd.DataFrame:
    """Check the attention frame's columns and labels; normalise corruption names."""
    missing = [c for c in ATTENTION_COLUMNS if c not in df.columns]
    if missing:
        raise FrameError(f"NM attention frame lacks columns {missing}; expected {list(ATTENTION_COLUMNS)}")
    out = df.copy()
    out["corruption"] = out["corruption"].map(
        lambda c: "clean" if str(c).lower() == "clean" else corruption_label(c)
    )
    bad = set(out["target"]) - set(TARGETS)
    if bad:
        raise FrameError(f"NM attention frame: unknown targets {sorted(bad)}; use {list(TARGETS)}")
    out["patched"] = out["patched"].astype(bool)
    return out


@torch.no_grad()
def nm_attention_frames(
    model,
    prompts,
    model_name: str,
    nm_heads: Sequence[tuple[int, int]] = NM_HEADS_GPT2_SMALL,
    si_heads: Sequence[tuple[int, int]] = SI_HEADS_GPT2_SMALL,
    corruptions: Sequence[str] = ("str", "gn"),
    noise=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The attention and recovery frames of §3.2 for one model (all prompts in one batch per run).

    ``prompts`` is the IOI PromptSet (positions IO, S1, END; ``answers`` = IO, ``wrong`` = S);
    ``noise`` a :class:`patchbench.corruption.NoiseSpec` for GN (sigma computed from the data when
    it is None).
    """
    from patchbench.corruption import NoiseSpec, corrupted_tokens, embedding_sigma, noise_tensor

    for k in ("IO", "S1", "END"):
        if k not in prompts.positions:
            raise ValueError(f"PromptSet lacks position {k}; §3.2 needs an IOI PromptSet")
    if not nm_heads:
        raise ValueError(f"{model_name}: no name-mover heads given; §3.2 measures their attention")
    noise = noise or NoiseSpec()
    device = model.cfg.device
    n = len(prompts)
    idx = torch.arange(n)
    end = torch.as_tensor(np.asarray(prompts.positions["END"]).copy())
    io = torch.as_tensor(np.asarray(prompts.positions["IO"]).copy())
    s1 = torch.as_tensor(np.asarray(prompts.positions["S1"]).copy())
    ans_pos = torch.as_tensor(prompts.answer_pos.copy())
    a_tok = torch.as_tensor([int(a[0]) for a in prompts.answers])
    w_tok = torch.as_tensor([int(w[0]) for w in prompts.wrong])
    nm_layers = sorted({la for la, _ in nm_heads})
    names = {f"blocks.{la}.attn.hook_pattern" for la in nm_layers} | {
        f"blocks.{la}.attn.hook_v" for la, _ in si_heads
    }

    def run(tokens, hooks):
        with model.hooks(fwd_hooks=hooks):
            logits, cache = model.run_with_cache(tokens.to(device), names_filter=lambda nm: nm in names)
        lg = logits[idx, ans_pos].float().cpu()
        ld = (lg[idx, a_tok] - lg[idx, w_tok]).mean().item()
        att = {t: 0.0 for t in TARGETS}
        for la, h in nm_heads:
            pat = cache[f"blocks.{la}.attn.hook_pattern"][idx, h, end].float().cpu()  # n k
            to_io, to_s1 = pat[idx, io].mean().item(), pat[idx, s1].mean().item()
            att["IO"] += to_io / len(nm_heads)
            att["S1"] += to_s1 / len(nm_heads)
        att["other"] = 1.0 - att["IO"] - att["S1"]
        return ld, att, cache

    clean_tokens = prompts.tokens("clean")
    ld_clean, att_clean, clean_cache = run(clean_tokens, [])
    att_rows = [(model_name, "clean", False, t, att_clean[t]) for t in TARGETS]
    rec_rows = []
    by_layer: dict[int, list[int]] = {}
    for la, h in si_heads:
        by_layer.setdefault(la, []).append(h)

    def restore_v(layer, heads):
        clean_v = clean_cache[f"blocks.{layer}.attn.hook_v"]

        def hook(v, hook):  # v: batch pos head d_head
            v[:, :, heads] = clean_v[:, :, heads]
            return v

        return f"blocks.{layer}.attn.hook_v", hook

    patch_hooks = [restore_v(la, hs) for la, hs in by_layer.items()]
    for corr in corruptions:
        hooks: list = []
        if corr == "gn":
            std = noise.nu * (noise.sigma if noise.sigma is not None else embedding_sigma(model, prompts))
            lds, atts, lds_pt, atts_pt = [], [], [], []
            for s in range(noise.n_samples):
                eps = noise_tensor(
                    prompts, np.arange(n), np.full(n, s), model.cfg.d_model, std, noise.seed
                ).to(device)
                hooks = [("hook_embed", lambda x, hook, eps=eps: x + eps[:, : x.shape[1]].to(x.dtype))]
                ld, att, _ = run(clean_tokens, hooks)
                ld_pt, att_pt, _ = run(clean_tokens, hooks + patch_hooks)
                lds.append(ld), atts.append(att), lds_pt.append(ld_pt), atts_pt.append(att_pt)
            ld_c, ld_p = float(np.mean(lds)), float(np.mean(lds_pt))
            att_c = {t: float(np.mean([a[t] for a in atts])) for t in TARGETS}
            att_p = {t: float(np.mean([a[t] for a in atts_pt])) for t in TARGETS}
        else:
            toks = corrupted_tokens(prompts, corr)
            ld_c, att_c, _ = run(toks, [])
            ld_p, att_p, _ = run(toks, patch_hooks)
        label = corruption_label(corr)
        att_rows += [(model_name, label, False, t, att_c[t]) for t in TARGETS]
        att_rows += [(model_name, label, True, t, att_p[t]) for t in TARGETS]
        denom = ld_clean - ld_c
        rec_rows.append((model_name, label, "logit_diff", (ld_p - ld_c) / denom if denom else float("nan")))
        log.info("%s: LD clean %.3f corrupted %.3f patched %.3f", label, ld_clean, ld_c, ld_p)
    return (
        pd.DataFrame(att_rows, columns=list(ATTENTION_COLUMNS)),
        pd.DataFrame(rec_rows, columns=list(RECOVERY_COLUMNS)),
    )
