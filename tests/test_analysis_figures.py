"""Figures: every figure function writes a non-empty PNG and PDF from small synthetic frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchbench.analysis import figures
from patchbench.analysis.frames import FrameError
from patchbench.analysis.positions import ROME_CATEGORIES
from test_analysis_claims import _attention, _bump, layer_effects  # noqa: I001
from test_analysis_tables import head_effects


def _check(paths, tmp_path, stem):
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.pdf"]
    png, pdf = (tmp_path / f"{stem}.png").read_bytes(), (tmp_path / f"{stem}.pdf").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert pdf[:5] == b"%PDF-" and len(pdf) > 2000


def _outs(tmp_path, stem):
    return [tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf"]


def _factual():
    curves = {}
    for w in (1, 5):
        for m in ("prob", "logit_diff"):
            curves[("gn", m, w)] = _bump(0.1 * w)
            curves[("str", m, w)] = _bump(0.04 * w)
    return layer_effects(curves)


def test_factual_mlp_last_and_sliding_vs_summed(tmp_path):
    _check(figures.fig_factual_mlp_last(_factual(), _outs(tmp_path, "f1"), model="gpt2-xl"), tmp_path, "f1")
    _check(figures.fig_sliding_vs_summed(_factual(), _outs(tmp_path, "f2")), tmp_path, "f2")
    with pytest.raises(FrameError, match="window > 1"):
        figures.fig_sliding_vs_summed(layer_effects({("gn", "prob", 1): _bump(0.1)}), _outs(tmp_path, "f3"))
    with pytest.raises(ValueError, match=".png or .pdf"):
        figures.fig_factual_mlp_last(_factual(), [tmp_path / "f.jpg"])


def test_arithmetic_curves_one_row_per_operator(tmp_path):
    parts = []
    for task in ("arithmetic_add", "arithmetic_mul"):
        curves = {(c, m, 1): _bump(h) for c, h in (("str", 0.5), ("gn", 0.2)) for m in ("prob", "stolfo")}
        parts.append(layer_effects(curves, model="gpt-j-6b", task=task))
    _check(figures.fig_arithmetic_mlp(pd.concat(parts), _outs(tmp_path, "ar")), tmp_path, "ar")


def test_head_heatmaps(tmp_path):
    det = {
        (c, m): {"positive": [(9, 9, -1)], "negative": [(10, 7, -1)]}
        for c in ("STR", "GN")
        for m in ("prob", "logit_diff")
    }
    _check(
        figures.fig_head_heatmaps(head_effects("gpt2", "ioi", det), _outs(tmp_path, "h"), title="IOI"),
        tmp_path,
        "h",
    )


def test_docstring_head_by_position(tmp_path):
    det = {(c, m): {"positive": [(3, 0, 13), (3, 6, 13)]} for c in ("STR", "GN") for m in ("logit_diff",)}
    eff = head_effects("attn-only-4l", "docstring", det, n_layers=4, n_heads=8, positions=tuple(range(14)))
    out = figures.fig_docstring_heads(eff, _outs(tmp_path, "doc"), position_labels={9: "C_def", 13: "last"})
    _check(out, tmp_path, "doc")


def test_mlp_positions_heatmap(tmp_path):
    rows = []
    for corr in ("str", "gn"):
        for w in (1,):
            for m in ("prob", "logit_diff"):
                for layer in range(12):
                    for k, cat in enumerate(ROME_CATEGORIES):
                        rows.append(dict(model="m", corruption=corr, window=w, layer=layer, category=cat, metric=m,
                                         effect=float(np.sin(layer + k)), n_prompts=10))  # fmt: skip
    _check(figures.fig_mlp_positions(pd.DataFrame(rows), _outs(tmp_path, "pos")), tmp_path, "pos")


def test_nm_attention_figure(tmp_path):
    rec = pd.DataFrame(
        {"model": "gpt2", "corruption": ["str", "gn"], "metric": "logit_diff", "effect": [0.95, 0.3]}
    )
    _check(figures.fig_nm_attention(_attention(), rec, _outs(tmp_path, "nm")), tmp_path, "nm")
