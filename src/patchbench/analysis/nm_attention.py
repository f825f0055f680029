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
from tqdm.auto import tqdm

from patchbench.analysis.frames import FrameError
from patchbench.analysis.labels import corruption_label

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
    batch_size: int = 32,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The attention and recovery frames of §3.2 for one model, ``batch_size`` prompts at a time.

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
    pos = {k: torch.as_tensor(np.asarray(prompts.positions[k]).copy()) for k in ("END", "IO", "S1")}
    ans_pos = torch.as_tensor(prompts.answer_pos.copy())
    a_tok = torch.as_tensor([int(a[0]) for a in prompts.answers])
    w_tok = torch.as_tensor([int(w[0]) for w in prompts.wrong])
    names = {f"blocks.{la}.attn.hook_pattern" for la, _ in nm_heads}
    names |= {f"blocks.{la}.attn.hook_v" for la, _ in si_heads}
    by_layer: dict[int, list[int]] = {}
    for la, h in si_heads:
        by_layer.setdefault(la, []).append(h)
    tokens = {"clean": prompts.tokens("clean")}
    tokens.update({c: corrupted_tokens(prompts, c) for c in corruptions})
    std = 0.0
    if "gn" in corruptions:
        std = noise.nu * (noise.sigma if noise.sigma is not None else embedding_sigma(model, prompts))
    # running sums over prompts (and GN samples): key -> [sum LD, sum att IO, sum att S1, count]
    sums: dict[tuple[str, bool], np.ndarray] = {}

    def run(key, sl: slice, toks, hooks):
        b = torch.arange(sl.stop - sl.start)
        with model.hooks(fwd_hooks=hooks):
            logits, cache = model.run_with_cache(toks.to(device), names_filter=lambda nm: nm in names)
        lg = logits[b, ans_pos[sl].to(device)].float().cpu()
        ld = (lg[b, a_tok[sl]] - lg[b, w_tok[sl]]).sum().item()
        to_io = to_s1 = 0.0
        for la, h in nm_heads:
            pat = (
                cache[f"blocks.{la}.attn.hook_pattern"][b, h, pos["END"][sl].to(device)].float().cpu()
            )  # b k
            to_io += pat[b, pos["IO"][sl]].sum().item() / len(nm_heads)
            to_s1 += pat[b, pos["S1"][sl]].sum().item() / len(nm_heads)
        sums.setdefault(key, np.zeros(4))
        sums[key] += (ld, to_io, to_s1, len(b))
        return cache

    def restore_v(layer, heads, clean_v):
        def hook(v, hook):  # v: batch pos head d_head
            v[:, :, heads] = clean_v[:, :, heads]
            return v

        return f"blocks.{layer}.attn.hook_v", hook

    for start in tqdm(range(0, n, batch_size), desc="§3.2 NM attention", disable=n <= batch_size):
        sl = slice(start, min(start + batch_size, n))
        clean_cache = run(("clean", False), sl, tokens["clean"][sl], [])
        patch = [restore_v(la, hs, clean_cache[f"blocks.{la}.attn.hook_v"]) for la, hs in by_layer.items()]
        for corr in corruptions:
            label = corruption_label(corr)
            for s in range(noise.n_samples if corr == "gn" else 1):
                hooks: list = []
                if corr == "gn":
                    rows = np.arange(sl.start, sl.stop)
                    eps = noise_tensor(
                        prompts, rows, np.full(len(rows), s), model.cfg.d_model, std, noise.seed
                    )
                    eps = eps[:, : tokens["clean"].shape[1]].to(device)
                    hooks = [("hook_embed", lambda x, hook, eps=eps: x + eps[:, : x.shape[1]].to(x.dtype))]
                run((label, False), sl, tokens[corr][sl], hooks)
                run((label, True), sl, tokens[corr][sl], hooks + patch)

    def mean(key):
        ld, io, s1, cnt = sums[key]
        return ld / cnt, {"IO": io / cnt, "S1": s1 / cnt, "other": 1.0 - (io + s1) / cnt}

    ld_clean, att_clean = mean(("clean", False))
    att_rows = [(model_name, "clean", False, t, att_clean[t]) for t in TARGETS]
    rec_rows = []
    for corr in corruptions:
        label = corruption_label(corr)
        (ld_c, att_c), (ld_p, att_p) = mean((label, False)), mean((label, True))
        att_rows += [(model_name, label, False, t, att_c[t]) for t in TARGETS]
        att_rows += [(model_name, label, True, t, att_p[t]) for t in TARGETS]
        denom = ld_clean - ld_c
        rec_rows.append((model_name, label, "logit_diff", (ld_p - ld_c) / denom if denom else float("nan")))
        log.info("%s: LD clean %.3f corrupted %.3f patched %.3f", label, ld_clean, ld_c, ld_p)
    return (
        pd.DataFrame(att_rows, columns=list(ATTENTION_COLUMNS)),
        pd.DataFrame(rec_rows, columns=list(RECOVERY_COLUMNS)),
    )
