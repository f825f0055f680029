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
  ``attention`` = END's attention probability, averaged over the NM heads and the prompts;
  ``attention_se`` its standard error over prompts, ``n_prompts``.
- recovery frame, :data:`RECOVERY_COLUMNS`: ``model, corruption, metric, effect`` with metric
  ``logit_diff`` = (LD_pt - LD_*) / (LD_cl - LD_*) over dataset means (the effects frame of the
  ``head_v`` sweep has the same columns and can be passed instead); ``effect_se`` (the standard
  error over prompts of the per-prompt terms divided by the dataset denominator), ``n_prompts``.

:func:`nm_attention_frames` computes both from a model (:class:`patchbench.lm.LM`) and the IOI ``PromptSet``
through the engine's pattern capture (:mod:`patchbench.engine.patterns`: the same forward, patch
and seeded GN draw as the sweeps, one draw shared by the corrupted and patched run).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

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
#: Columns the frames of :func:`nm_attention_frames` add (spread and count; optional for readers).
ATTENTION_EXTRA = ("attention_se", "n_prompts")
RECOVERY_EXTRA = ("effect_se", "n_prompts")
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


def nm_attention_frames(
    model,
    prompts,
    model_name: str,
    nm_heads: Sequence[tuple[int, int]] = NM_HEADS_GPT2_SMALL,
    si_heads: Sequence[tuple[int, int]] = SI_HEADS_GPT2_SMALL,
    corruptions: Sequence[str] | None = None,
    noise=None,
    batch_size: int = 32,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The attention and recovery frames of §3.2 for one model, ``batch_size`` rows at a time.

    ``prompts`` is the IOI PromptSet (positions IO, S1, END; ``answers`` = IO, ``wrong`` = S);
    ``noise`` a :class:`patchbench.corruption.NoiseSpec` for GN (sigma computed from the data when
    it is None); ``corruptions`` default to the paper's two. The runs and the S-inhibition patch are
    :func:`patchbench.engine.patterns.capture_patterns`.
    """
    from patchbench.corruption import NoiseSpec
    from patchbench.engine.patterns import capture_patterns
    from patchbench.sites import SweepSpec

    for k in ("IO", "S1", "END"):
        if k not in prompts.positions:
            raise ValueError(f"PromptSet lacks position {k}; §3.2 needs an IOI PromptSet")
    if not nm_heads:
        raise ValueError(f"{model_name}: no name-mover heads given; §3.2 measures their attention")
    noise = noise or NoiseSpec()

    def per_prompt(values, prompt) -> pd.Series:
        """Row values (a tensor or an array; GN samples) averaged per prompt."""
        v = values.double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)
        return pd.Series(v).groupby(np.asarray(prompt)).mean()

    def se(s: pd.Series) -> float:
        return float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else float("nan")

    def summary(cap, run: str) -> tuple[float, pd.Series, dict[str, tuple[float, float]]]:
        """Mean LD over the run's rows, per-prompt LD, and the NM attention from END to IO / S1 / the
        rest (mean over heads and rows, standard error over prompts)."""
        prompt, _ = cap.rows(run)
        pattern, rows = getattr(cap, run), torch.arange(len(prompt))
        end = torch.as_tensor(prompts.named_position("END")[prompt])
        per = {
            t: pattern[rows, :, end, torch.as_tensor(prompts.named_position(t)[prompt])].mean(dim=-1)
            for t in ("IO", "S1")
        }
        per["other"] = 1.0 - (per["IO"] + per["S1"])
        att = {t: (float(v.mean()), se(per_prompt(v, prompt))) for t, v in per.items()}
        return float(cap.logit_diff[run].mean()), per_prompt(cap.logit_diff[run], prompt), att

    att_rows, rec_rows = [], []
    clean = None
    from patchbench.interventions.corruptions import paper

    for corr in corruptions or paper():
        label = corruption_label(corr)
        patch = SweepSpec(corr, "head_v", heads=tuple(si_heads), noise=noise) if si_heads else None
        cap = capture_patterns(model, prompts, nm_heads, corr, patch, noise=noise, batch_size=batch_size)
        n = len(prompts)
        if clean is None:
            clean = summary(cap, "clean")
            att_rows += [(model_name, "clean", False, t, *clean[2][t], n) for t in TARGETS]
        ld_c, per_c, att_c = summary(cap, "corrupted")
        ld_p, per_p, att_p = summary(cap, "patched") if patch is not None else (ld_c, per_c, att_c)
        att_rows += [(model_name, label, False, t, *att_c[t], n) for t in TARGETS]
        att_rows += [(model_name, label, True, t, *att_p[t], n) for t in TARGETS]
        denom = clean[0] - ld_c
        rec = (ld_p - ld_c) / denom if denom else float("nan")
        rec_se = se((per_p - per_c) / denom) if denom else float("nan")
        rec_rows.append((model_name, label, "logit_diff", rec, rec_se, n))
        log.info("%s: LD clean %.3f corrupted %.3f patched %.3f", label, clean[0], ld_c, ld_p)
    return (
        pd.DataFrame(att_rows, columns=[*ATTENTION_COLUMNS, *ATTENTION_EXTRA]),
        pd.DataFrame(rec_rows, columns=[*RECOVERY_COLUMNS, *RECOVERY_EXTRA]),
    )
