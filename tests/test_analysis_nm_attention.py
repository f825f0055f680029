"""§3.2 frames from a tiny random model: shapes, the clean / GN(nu=0) identity, and the patch taking effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ioi_like_prompts, tiny_ioi_model
from patchbench.analysis.nm_attention import (
    ATTENTION_COLUMNS,
    ATTENTION_EXTRA,
    RECOVERY_COLUMNS,
    RECOVERY_EXTRA,
    nm_attention_frames,
)
from patchbench.corruption import NoiseSpec
from patchbench.prompts import PromptSet


def _with_str(ps: PromptSet) -> PromptSet:
    corrupted = []
    for i, toks in enumerate(ps.clean):
        c = toks.copy()
        c[ps.positions["S2"][i]] = int(ps.answers[i][0])  # S2 -> IO
        corrupted.append(c)
    return PromptSet(task="ioi", clean=ps.clean, corrupted=corrupted, answer_pos=ps.answer_pos, answers=ps.answers,
                     wrong=ps.wrong, noise_positions=ps.noise_positions, positions=ps.positions)  # fmt: skip


def test_nm_attention_frames_on_a_tiny_model():
    torch.manual_seed(0)
    model = tiny_ioi_model()
    ps = _with_str(ioi_like_prompts())
    nm, si = ((1, 0), (1, 2)), ((0, 1), (0, 3))
    att, rec = nm_attention_frames(
        model, ps, "tiny", nm_heads=nm, si_heads=si, noise=NoiseSpec(nu=0.0, sigma=1.0)
    )
    assert list(att.columns) == [*ATTENTION_COLUMNS, *ATTENTION_EXTRA]
    assert list(rec.columns) == [*RECOVERY_COLUMNS, *RECOVERY_EXTRA]
    assert (att["n_prompts"] == len(ps)).all() and (rec["n_prompts"] == len(ps)).all()
    # the standard error over prompts: positive where the prompts differ, 0 where nothing varies
    assert (att.loc[att["corruption"] == "clean", "attention_se"] > 0).all()
    assert rec.set_index("corruption")["effect_se"]["STR"] > 0
    assert len(att) == 3 * 5  # clean + (STR, GN) x (unpatched, patched), three targets each
    piv = att.pivot_table(index=["corruption", "patched"], columns="target", values="attention")
    np.testing.assert_allclose(piv.sum(axis=1), 1.0, atol=1e-6)
    # GN with nu = 0 is the clean run
    np.testing.assert_allclose(piv.loc[("GN", False)], piv.loc[("clean", False)], atol=1e-6)
    # STR changes the prompt, so the NM attention moves; restoring the SI values (earlier layer) moves it again
    assert not np.allclose(piv.loc[("STR", False)], piv.loc[("clean", False)], atol=1e-4)
    assert not np.allclose(piv.loc[("STR", True)], piv.loc[("STR", False)], atol=1e-6)
    r = rec.set_index("corruption")["effect"]
    assert np.isnan(r["GN"])  # clean == corrupted: the normalisation is 0/0
    assert np.isfinite(r["STR"])
    # batching does not change the result (6 prompts: batches of 4 + 2 vs one batch)
    att4, rec4 = nm_attention_frames(model, ps, "tiny", nm_heads=nm, si_heads=si,
                                     noise=NoiseSpec(nu=0.0, sigma=1.0), batch_size=4)  # fmt: skip
    np.testing.assert_allclose(att4["attention"], att["attention"], atol=1e-6)
    np.testing.assert_allclose(rec4["effect"].iloc[0], rec["effect"].iloc[0], rtol=1e-5)
    # restoring no head's values recovers nothing
    _, rec0 = nm_attention_frames(model, ps, "tiny", nm_heads=nm, si_heads=(), corruptions=("str",))
    assert rec0["effect"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    # GN: real noise moves the attention, and the corrupted and patched runs share one draw
    # (with nothing restored they coincide exactly)
    attg, _ = nm_attention_frames(model, ps, "tiny", nm_heads=nm, si_heads=(), corruptions=("gn",),
                                  noise=NoiseSpec(nu=3.0, seed=1), batch_size=4)  # fmt: skip
    pg = attg.pivot_table(index=["corruption", "patched"], columns="target", values="attention")
    assert not np.allclose(pg.loc[("GN", False)], pg.loc[("clean", False)], atol=1e-4)
    np.testing.assert_allclose(pg.loc[("GN", True)], pg.loc[("GN", False)], atol=1e-7)
