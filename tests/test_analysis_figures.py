"""Figures: every figure function writes a PNG and a PDF, and draws what its frames hold.

``drawn`` records each figure as it is saved, so the tests read back the plotted arrays, the
panel titles, the axes' labels and tick labels, the images and the detection markers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import bump, head_effects, layer_effects, nm_attention_frame
from patchbench.analysis import figures
from patchbench.analysis.frames import FrameError
from patchbench.analysis.positions import ROME_CATEGORIES


def _check(paths, tmp_path, stem):
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.pdf"]
    png, pdf = (tmp_path / f"{stem}.png").read_bytes(), (tmp_path / f"{stem}.pdf").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert pdf[:5] == b"%PDF-" and len(pdf) > 2000


def _outs(tmp_path, stem):
    return [tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf"]


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved by the figure functions (in order), still inspectable after saving."""
    figs = []
    real = figures.save_figure

    def keep(fig, outputs):
        figs.append(fig)
        return real(fig, outputs)

    monkeypatch.setattr(figures, "save_figure", keep)
    return figs


def _panels(fig) -> dict[str, object]:
    """The figure's visible axes by title (colour bars have none)."""
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def _lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labelled data lines of an axes: label -> (x, y)."""
    return {
        ln.get_label(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
        for ln in ax.get_lines()
        if not ln.get_label().startswith("_")
    }


def _factual():
    curves = {}
    for w in (1, 5):
        for m in ("prob", "logit_diff"):
            curves[("gn", m, w)] = bump(0.1 * w)
            curves[("str", m, w)] = bump(0.04 * w)
    return layer_effects(curves)


def test_factual_mlp_last_and_sliding_vs_summed(tmp_path, drawn):
    _check(figures.fig_factual_mlp_last(_factual(), _outs(tmp_path, "f1"), model="gpt2-xl"), tmp_path, "f1")
    panels = _panels(drawn[0])
    assert set(panels) == {f"{m}, window {w}" for m in ("Probability", "Logit difference") for w in (1, 5)}
    lines = _lines(panels["Probability, window 5"])
    assert set(lines) == {"STR", "GN"}
    np.testing.assert_allclose(lines["GN"][0], np.arange(12))
    np.testing.assert_allclose(lines["GN"][1], bump(0.5))
    np.testing.assert_allclose(lines["STR"][1], bump(0.2))
    assert panels["Probability, window 5"].get_xlabel() == "layer"
    assert drawn[0].texts[0].get_text() == "MLP at the last subject token gpt2-xl"

    _check(figures.fig_sliding_vs_summed(_factual(), _outs(tmp_path, "f2")), tmp_path, "f2")
    panels = _panels(drawn[1])
    assert "GN, Probability, window 5" in panels and not any(t.endswith("window 1") for t in panels)
    lines = _lines(panels["GN, Probability, window 5"])
    np.testing.assert_allclose(lines["sliding window"][1], bump(0.5))
    # the summed curve at centre l adds the window-1 effects of layers [l - 2, l + 3) (clipped to the model)
    single = bump(0.1)
    summed = [single[max(0, c - 2) : min(12, c + 3)].sum() for c in range(12)]
    np.testing.assert_allclose(lines["summed single layers"][1], summed)
    assert panels["GN, Probability, window 5"].get_xlabel() == "layer (window centre)"
    with pytest.raises(FrameError, match="window > 1"):
        figures.fig_sliding_vs_summed(layer_effects({("gn", "prob", 1): bump(0.1)}), _outs(tmp_path, "f3"))
    with pytest.raises(ValueError, match=".png or .pdf"):
        figures.fig_factual_mlp_last(_factual(), [tmp_path / "f.jpg"])


def test_arithmetic_curves_one_row_per_operator(tmp_path, drawn):
    parts = []
    for task, scale in (("arithmetic_add", 1.0), ("arithmetic_mul", 2.0)):
        curves = {
            (c, m, 1): bump(h * scale) for c, h in (("str", 0.5), ("gn", 0.2)) for m in ("prob", "stolfo")
        }
        parts.append(layer_effects(curves, model="gpt-j-6b", task=task))
    _check(figures.fig_arithmetic_mlp(pd.concat(parts), _outs(tmp_path, "ar")), tmp_path, "ar")
    panels = _panels(drawn[0])
    assert set(panels) == {
        f"{m}, {op}" for m in ("Probability", "Stolfo et al. (2)") for op in ("addition", "multiplication")
    }
    np.testing.assert_allclose(_lines(panels["Stolfo et al. (2), multiplication"])["STR"][1], bump(1.0))
    np.testing.assert_allclose(_lines(panels["Probability, addition"])["GN"][1], bump(0.2))


def test_head_heatmaps(tmp_path, drawn):
    det = {
        (c, m): {"positive": [(9, 9, -1)], "negative": [(10, 7, -1)]}
        for c in ("STR", "GN")
        for m in ("prob", "logit_diff")
    }
    eff = head_effects("gpt2", "ioi", det)
    _check(figures.fig_head_heatmaps(eff, _outs(tmp_path, "h"), title="IOI"), tmp_path, "h")
    panels = _panels(drawn[0])
    assert set(panels) == {f"{c}, {m}" for c in ("STR", "GN") for m in ("Logit difference", "Probability")}
    ax = panels["GN, Probability"]
    sel = eff[(eff["corruption"] == "gn") & (eff["metric"] == "prob")]
    grid = np.full((12, 12), np.nan)
    grid[sel["layer"], sel["head"]] = sel["effect"]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), grid)  # rows are layers, columns heads
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("head", "layer")
    assert all(float(t).is_integer() for t in ax.get_xticks())
    marks = {tuple(c.get_offsets()[0]): c.get_paths()[0] is not None for c in ax.collections}
    assert set(marks) == {(9.0, 9.0), (7.0, 10.0)}  # (head, layer) of the positive and the negative head


def test_docstring_head_by_position(tmp_path, drawn):
    det = {(c, m): {"positive": [(3, 0, 13), (3, 6, 13)]} for c in ("STR", "GN") for m in ("logit_diff",)}
    eff = head_effects("attn-only-4l", "docstring", det, n_layers=4, n_heads=8, positions=tuple(range(14)))
    out = figures.fig_docstring_heads(eff, _outs(tmp_path, "doc"), position_labels={9: "C_def", 13: "last"})
    _check(out, tmp_path, "doc")
    ax = _panels(drawn[0])["STR, Logit difference"]
    xticks = [t.get_text() for t in ax.get_xticklabels()]
    assert xticks == [*map(str, range(9)), "C_def", "10", "11", "12", "last"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{la}.{h}" for la in range(4) for h in range(8)]
    image = ax.get_images()[0].get_array()
    assert image.shape == (32, 14)
    assert image[3 * 8 + 0, 13] == 1.0 and image[3 * 8 + 6, 13] == 1.0  # the detected (head, position)s
    assert np.abs(np.delete(image[:, 13], [24, 30])).max() < 0.1


def test_mlp_positions_heatmap(tmp_path, drawn):
    rows = []
    for corr in ("str", "gn"):
        for w in (1,):
            for m in ("prob", "logit_diff"):
                for layer in range(12):
                    for k, cat in enumerate(ROME_CATEGORIES):
                        rows.append(dict(model="m", corruption=corr, window=w, layer=layer, category=cat, metric=m,
                                         effect=float(np.sin(layer + k)), n_prompts=10))  # fmt: skip
    _check(figures.fig_mlp_positions(pd.DataFrame(rows), _outs(tmp_path, "pos")), tmp_path, "pos")
    panels = _panels(drawn[0])
    assert set(panels) == {
        f"{c}, {m}, window 1" for c in ("STR", "GN") for m in ("Logit difference", "Probability")
    }
    ax = panels["STR, Logit difference, window 1"]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(ROME_CATEGORIES)
    expected = np.sin(np.arange(12)[None, :] + np.arange(len(ROME_CATEGORIES))[:, None])  # category x layer
    np.testing.assert_allclose(ax.get_images()[0].get_array(), expected)
    assert ax.get_xlabel() == "layer"


def test_nm_attention_figure(tmp_path, drawn):
    rec = pd.DataFrame(
        {"model": "gpt2", "corruption": ["str", "gn"], "metric": "logit_diff", "effect": [0.95, 0.3]}
    )
    _check(figures.fig_nm_attention(nm_attention_frame(), rec, _outs(tmp_path, "nm")), tmp_path, "nm")
    panels = _panels(drawn[0])
    unpatched, recovery, patched = (
        panels[t]
        for t in (
            "(a) unpatched runs",
            "(b) S-inhibition values restored",
            "(c) S-inhibition values restored",
        )
    )
    # (a): bars grouped by run (clean, STR, GN), one bar colour per target (IO, S1, other)
    assert [t.get_text() for t in unpatched.get_xticklabels()] == ["clean", "STR", "GN"]
    heights = [round(b.get_height(), 6) for b in unpatched.patches]
    assert heights[:3] == [0.6, 0.1, 0.3]  # IO: clean 0.6, STR 0.1, GN 0.3
    assert heights[3:6] == [0.1, 0.58, 0.3]  # S1
    assert [t.get_text() for t in patched.get_xticklabels()] == ["STR", "GN"]
    assert [round(b.get_height(), 6) for b in patched.patches][:2] == [0.55, 0.3]  # IO after the restore
    assert [round(b.get_height(), 6) for b in recovery.patches] == [0.95, 0.3]
    assert [t.get_text() for t in recovery.texts] == ["0.95", "0.30"]
    assert recovery.get_ylabel() == "normalised logit difference"
