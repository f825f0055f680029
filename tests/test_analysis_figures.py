"""Figures: every figure kind renders, and its matplotlib objects say what a reader needs.

``drawn`` records each paper figure as it is saved; the generic figures of :mod:`patchbench.plot`
are returned. The tests read back the plotted arrays, titles, colour-bar labels, legends, tick
labels, colour scales, detection marks and circuit outlines, and check the layout on the rendered
figure (no title overlaps a panel's, nothing is cut at the figure's edge).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from conftest import bump, head_effects, layer_effects, nm_attention_frame
from patchbench import plot
from patchbench.analysis import figures
from patchbench.analysis.agreement import agreement_figure
from patchbench.analysis.frames import FrameError
from patchbench.analysis.positions import ROME_CATEGORIES
from patchbench.analysis.robustness_figure import robustness_figure
from patchbench.analysis.style import CIRCUIT_COLOR, circuit_members


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
    """The figure's data axes by title (colour bars have none)."""
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title() and not hasattr(ax, "_colorbar")}


def _colorbars(fig) -> list[str]:
    """The labels of the figure's colour bars."""
    return [ax.get_xlabel() or ax.get_ylabel() for ax in fig.axes if hasattr(ax, "_colorbar")]


def _title(fig) -> str:
    return fig.get_suptitle()


def _legend(fig) -> list[str]:
    """The entries of the figure's legends (outside the panels: no axes carries one)."""
    assert all(ax.get_legend() is None for ax in fig.axes), "a legend inside a panel covers data"
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def _lines(ax) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Data lines of an axes (not the zero line), in drawing order."""
    out = [
        (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
        for ln in ax.get_lines()
        if len(ln.get_xdata()) > 2
    ]
    return dict(enumerate(out))


def _outlines(ax) -> list[tuple[float, float, float, float]]:
    """Circuit outlines: (x, y, width, height) of the unfilled rectangles in the circuit colour."""
    return [
        (p.get_x(), p.get_y(), p.get_width(), p.get_height())
        for p in ax.patches
        if isinstance(p, Rectangle)
        and not p.get_fill()
        and p.get_edgecolor()[:3] == pytest.approx(_rgb(CIRCUIT_COLOR))
    ]


def _rgb(hex_color):
    from matplotlib.colors import to_rgb

    return to_rgb(hex_color)


def _no_overlaps_or_clipping(fig):
    """Rendered: the suptitle overlaps no panel title, and every title lies inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    sup = fig._suptitle.get_window_extent(renderer) if fig._suptitle else None
    for ax in fig.axes:
        t = ax.title
        if not t.get_text():
            continue
        b = t.get_window_extent(renderer)
        assert b.x0 >= box.x0 - 1 and b.x1 <= box.x1 + 1, (
            f"title {t.get_text()!r} is cut at the figure's edge"
        )
        if sup is not None:
            assert not sup.overlaps(b), f"the figure title overlaps {t.get_text()!r}"


def _factual():
    curves = {}
    for w in (1, 5):
        for m in ("prob", "logit_diff"):
            curves[("gn", m, w)] = bump(0.1 * w)
            curves[("str", m, w)] = bump(0.04 * w)
    return layer_effects(curves)


CIRCUIT_FACTS = {"subject_enrichment": ["5", "6"], "subject_composition": ["0.0"]}


def test_factual_mlp_last_and_sliding_vs_summed(tmp_path, drawn):
    _check(figures.fig_factual_mlp_last(_factual(), _outs(tmp_path, "f1"), model="gpt2-xl", circuit=CIRCUIT_FACTS),
           tmp_path, "f1")  # fmt: skip
    fig = drawn[0]
    assert _title(fig).startswith("Factual recall — MLP, gpt2-xl (50 prompts)\nZhang & Nanda §3.1")
    panels = _panels(fig)
    assert set(panels) == {f"{m}, window {w}" for m in ("Probability", "Logit difference") for w in (1, 5)}
    ax = panels["Probability, window 5"]
    lines = _lines(ax)
    np.testing.assert_allclose(lines[0][0], np.arange(12))
    np.testing.assert_allclose(lines[0][1], bump(0.2))  # STR first, then GN
    np.testing.assert_allclose(lines[1][1], bump(0.5))
    assert ax.get_ylabel() == "Probability\n(ΔP(answer))"
    assert panels["Logit difference, window 1"].get_ylabel() == "Logit difference\n(normalised, 1 = clean)"
    assert (
        ax.get_xlabel() == "layer (window centre)" and panels["Probability, window 1"].get_xlabel() == "layer"
    )
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert len(ax.collections) == 2  # the ±1 SE bands
    assert [p.get_x() for p in ax.patches] == [4.5, 5.5]  # the circuit's layers 5 and 6 shaded
    legend = _legend(fig)
    assert legend[:2] == ["STR", "GN"] and "±1 standard error over prompts" in legend
    assert "known circuit (layers)" in legend

    _check(figures.fig_sliding_vs_summed(_factual(), _outs(tmp_path, "f2")), tmp_path, "f2")
    fig = drawn[1]
    panels = _panels(fig)
    assert "GN, Probability, window 5" in panels and not any(t.endswith("window 1") for t in panels)
    ax = panels["GN, Probability, window 5"]
    lines = _lines(ax)
    np.testing.assert_allclose(lines[0][1], bump(0.5))  # sliding
    # the summed curve at centre l adds the window-1 effects of layers [l - 2, l + 3) (clipped to the model)
    single = bump(0.1)
    np.testing.assert_allclose(lines[1][1], [single[max(0, c - 2) : min(12, c + 3)].sum() for c in range(12)])
    assert ax.get_xlabel() == "layer (window centre)" and ax.get_ylabel() == "Probability\n(ΔP(answer))"
    assert _legend(fig) == [
        "sliding window (the window patched at once)",
        "summed single layers over the window",
    ]
    assert "§5" in _title(fig)
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
    np.testing.assert_allclose(_lines(panels["Stolfo et al. (2), multiplication"])[0][1], bump(1.0))
    np.testing.assert_allclose(_lines(panels["Probability, addition"])[1][1], bump(0.2))
    assert _title(drawn[0]).startswith("Arithmetic (+, −, ×) — MLP, gpt-j-6b (50 prompts)")


def test_head_heatmaps_share_one_scale_per_metric(tmp_path, drawn):
    det = {
        (c, m): {"positive": [(9, 9, -1)], "negative": [(10, 7, -1)]}
        for c in ("STR", "GN")
        for m in ("prob", "logit_diff")
    }
    eff = head_effects("gpt2", "ioi", det)
    eff.loc[eff["corruption"] == "gn", "effect"] *= 0.04  # GN's effects are 25 times smaller
    circuit = {"name_mover": ["9.9", "9.6"], "negative_name_mover": ["10.7"], "induction": ["5.5@S2"]}
    _check(
        figures.fig_head_heatmaps(eff, _outs(tmp_path, "h"), title="Zhang & Nanda Table 5", circuit=circuit),
        tmp_path,
        "h",
    )
    fig = drawn[0]
    assert _title(fig) == "IOI, S2 corrupted — attention heads, gpt2 (20 prompts)\nZhang & Nanda Table 5"
    panels = _panels(fig)
    assert set(panels) == {f"{c}, {m}" for c in ("STR", "GN") for m in ("Logit difference", "Probability")}
    ax = panels["GN, Probability"]
    sel = eff[(eff["corruption"] == "gn") & (eff["metric"] == "prob")]
    grid = np.full((12, 12), np.nan)
    grid[sel["layer"], sel["head"]] = sel["effect"]
    np.testing.assert_allclose(ax.get_images()[0].get_array(), grid)  # rows are layers, columns heads
    # one colour scale per metric: GN's panel uses STR's limits, not its own
    assert (
        ax.get_images()[0].get_clim() == panels["STR, Probability"].get_images()[0].get_clim() == (-1.0, 1.0)
    )
    assert sorted(_colorbars(fig)) == [
        "Logit difference (normalised, 1 = clean)",
        "Probability (ΔP(answer))",
    ]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("head", "layer")
    assert list(ax.get_xticks()) == list(range(12)) and list(ax.get_yticks()) == list(range(12))
    marks = {tuple(c.get_offsets()[0]) for c in ax.collections}
    assert marks == {(9.0, 9.0), (7.0, 10.0)}  # (head, layer) of the positive and the negative head
    assert sorted(_outlines(ax)) == sorted(
        [(5.5, 8.5, 1, 1), (8.5, 8.5, 1, 1), (6.5, 9.5, 1, 1), (4.5, 4.5, 1, 1)]
    )
    legend = _legend(fig)
    assert "detected, positive (> μ + 2 SD)" in legend and "detected, negative (< μ − 2 SD)" in legend
    assert "known circuit" in legend
    _no_overlaps_or_clipping(fig)


def test_docstring_head_by_position(tmp_path, drawn):
    det = {(c, m): {"positive": [(3, 0, 13), (3, 6, 13)]} for c in ("STR", "GN") for m in ("logit_diff",)}
    eff = head_effects("attn-only-4l", "docstring", det, n_layers=4, n_heads=8, positions=tuple(range(14)))
    out = figures.fig_docstring_heads(eff, _outs(tmp_path, "doc"), position_labels={9: "C_def", 13: "last"})
    _check(out, tmp_path, "doc")
    fig = drawn[0]
    ax = _panels(fig)["STR, Logit difference"]
    xticks = [t.get_text() for t in ax.get_xticklabels()]
    assert xticks == [*map(str, range(9)), "C_def", "10", "11", "12", "last"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{la}.{h}" for la in range(4) for h in range(8)]
    image = ax.get_images()[0].get_array()
    assert image.shape == (32, 14)
    assert image[3 * 8 + 0, 13] == 1.0 and image[3 * 8 + 6, 13] == 1.0  # the detected (head, position)s
    assert np.abs(np.delete(image[:, 13], [24, 30])).max() < 0.1
    assert _colorbars(fig) == ["Logit difference (normalised, 1 = clean)"]
    assert _title(fig).startswith("Docstring — attention heads, attn-only-4l (20 prompts)")


def test_mlp_positions_heatmap(tmp_path, drawn):
    rows = []
    for corr in ("str", "gn"):
        for m in ("prob", "logit_diff"):
            for layer in range(12):
                for k, cat in enumerate(ROME_CATEGORIES):
                    rows.append(dict(model="m", corruption=corr, window=1, layer=layer, category=cat, metric=m,
                                     effect=float(np.sin(layer + k)) * (0.1 if corr == "gn" else 1.0),
                                     n_prompts=10 if k != 1 else 7))  # fmt: skip
    out = figures.fig_mlp_positions(
        pd.DataFrame(rows), _outs(tmp_path, "pos"), circuit={"enrichment": ["3", "4"]}
    )
    _check(out, tmp_path, "pos")
    fig = drawn[0]
    panels = _panels(fig)
    assert set(panels) == {f"{c}, {m}" for c in ("STR", "GN") for m in ("Logit difference", "Probability")}
    ax = panels["STR, Logit difference"]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(ROME_CATEGORIES)
    expected = np.sin(np.arange(12)[None, :] + np.arange(len(ROME_CATEGORIES))[:, None])  # category x layer
    np.testing.assert_allclose(ax.get_images()[0].get_array(), expected)
    assert ax.get_xlabel() == "layer" and list(ax.get_xticks()) == list(range(12))  # every layer labelled
    assert panels["GN, Logit difference"].get_images()[0].get_clim() == ax.get_images()[0].get_clim()
    assert len(_colorbars(fig)) == 2
    assert _outlines(ax) == [(2.5, -0.5, 1, 6), (3.5, -0.5, 1, 6)]  # layers 3 and 4, every category
    assert _title(fig).startswith("Factual recall — MLP at every position, m (10 prompts)")


def test_nm_attention_figure_has_error_bars(tmp_path, drawn):
    rec = pd.DataFrame({"model": "gpt2", "corruption": ["str", "gn"], "metric": "logit_diff", "effect": [0.95, 0.3],
                        "effect_se": [0.02, 0.05], "n_prompts": 100})  # fmt: skip
    att = nm_attention_frame().assign(attention_se=0.01, n_prompts=100)
    _check(figures.fig_nm_attention(att, rec, _outs(tmp_path, "nm"), model="gpt2"), tmp_path, "nm")
    fig = drawn[0]
    panels = _panels(fig)
    unpatched, recovery, patched = (panels[t] for t in ("(a) unpatched runs", "(b) S-inhibition values restored",
                                                         "(c) S-inhibition values restored"))  # fmt: skip
    # (a): bars grouped by run (clean, STR, GN), one bar colour per target (IO, S1, other)
    assert [t.get_text() for t in unpatched.get_xticklabels()] == ["clean", "STR", "GN"]
    heights = [round(b.get_height(), 6) for b in unpatched.patches]
    assert heights[:3] == [0.6, 0.1, 0.3]  # IO: clean 0.6, STR 0.1, GN 0.3
    assert heights[3:6] == [0.1, 0.58, 0.3]  # S1
    assert [t.get_text() for t in patched.get_xticklabels()] == ["STR", "GN"]
    assert [round(b.get_height(), 6) for b in patched.patches][:2] == [0.55, 0.3]  # IO after the restore
    assert [round(b.get_height(), 6) for b in recovery.patches] == [0.95, 0.3]
    assert [t.get_text() for t in recovery.texts] == ["0.95", "0.30"]
    assert recovery.get_ylabel() == "Logit difference\n(normalised, 1 = clean)"
    # error bars: the recovery's ±SE segments span effect ± 0.02 and ± 0.05
    segs = [s for c in recovery.collections for s in c.get_segments()]
    assert sorted(round(s[1][1] - s[0][1], 6) for s in segs) == [0.04, 0.1]
    assert len([s for c in unpatched.collections for s in c.get_segments()]) == 9
    assert "±1 standard error over prompts" in _legend(fig)
    assert (
        _title(fig) == "IOI, S2 corrupted — name-mover heads, gpt2 (100 prompts)\nZhang & Nanda §3.2, Fig. 3"
    )


# ----------------------------------------------------------------------------- generic figures (patchbench.plot)
def _user_effects(corruptions=("str", "resample"), positions=(-1,), site="mlp", n_layers=6, heads=0):
    """Effects of a user's task (any name, any corruption), one of each figure kind."""
    rows = []
    rng = np.random.default_rng(0)
    for corr in corruptions:
        for m in ("logit_diff", "prob"):
            for layer in range(n_layers):
                for head in range(heads) if heads else (-1,):
                    for p in positions:
                        name = (f"{layer}.{head}" if head >= 0 else str(layer)) + (f"@{p}" if p >= 0 else "")
                        rows.append(dict(model="mine", task="capitals", corruption=corr, site=site, window=1,
                                         method="exact", component=name, layer=layer, head=head, position=p,
                                         positions="each" if p >= 0 else "all", metric=m, effect=rng.normal(),
                                         effect_sd=0.5, n_prompts=20, detected=""))  # fmt: skip
    return pd.DataFrame(rows)


def test_generic_figures_of_a_user_experiment():
    heads = _user_effects(site="attn_head", heads=8, n_layers=8)
    assert plot.figure_kind(heads) == "heads"
    fig = plot.experiment_figure(heads, circuit={"mine": ["2.3"]})
    assert _title(fig) == "capitals — attention heads, mine (20 prompts)"
    # corruptions are read from the frame: a new one ("resample", labelled by the registry) gets its own row of panels
    assert set(_panels(fig)) == {
        f"{c}, {m}" for c in ("STR", "Resample") for m in ("Logit difference", "Probability")
    }
    assert len(_colorbars(fig)) == 2 and all(label for label in _colorbars(fig))
    assert _outlines(_panels(fig)["Resample, Probability"]) == [(2.5, 1.5, 1, 1)]

    per_pos = _user_effects(positions=tuple(range(5)))
    assert plot.figure_kind(per_pos) == "positions"
    fig = plot.experiment_figure(per_pos, circuit={"mine": ["4"]})
    ax = _panels(fig)["STR, Logit difference"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("layer", "position")
    assert list(ax.get_xticks()) == list(range(6)) and list(ax.get_yticks()) == list(range(5))
    assert _title(fig) == "capitals — MLP at every position, mine (20 prompts)"
    assert _outlines(ax) == [(3.5, -0.5, 1, 5)]

    curves = pd.concat([_user_effects(), _user_effects().assign(window=3)])
    assert plot.figure_kind(curves) == "layers"
    fig = plot.layer_curves(curves)
    assert set(_panels(fig)) == {
        f"{m}, window {w}" for m in ("Logit difference", "Probability") for w in (1, 3)
    }
    assert _legend(fig)[:2] == ["STR", "Resample"]

    # a direction axis: denoising and noising become separate conditions
    both = pd.concat([heads.assign(direction="denoising"), heads.assign(direction="noising")])
    assert "STR noising, Probability" in _panels(plot.head_heatmap(both))
    with pytest.raises(FrameError, match="position_heatmap"):
        plot.head_heatmap(_user_effects(site="attn_head", heads=2, positions=(0, 1)))
    with pytest.raises(FrameError, match="head_heatmap"):
        plot.layer_curves(heads)


def test_agreement_figure_titles_neither_overlap_nor_get_cut(tmp_path, monkeypatch):
    import patchbench.analysis.style as style

    figs = []
    real = style.save_figure
    monkeypatch.setattr(style, "save_figure", lambda fig, out: figs.append(fig) or real(fig, out))
    rng = np.random.default_rng(1)
    rows = []
    for method in ("exact", "attribution"):
        for corr, site, positions in (("gn", "mlp", "each"), ("str", "mlp", "subject_last")):
            for m in ("prob", "logit_diff", "kl"):
                for k in range(20):
                    rows.append(dict(model="organism-facts", task="factual", corruption=corr, site=site, window=1,
                                     method=method, component=str(k), layer=k, head=-1, position=-1,
                                     positions=positions, metric=m, effect=rng.normal(), effect_sd=0.1,
                                     n_prompts=10, detected=""))  # fmt: skip
    df = pd.DataFrame(rows)
    agreement_figure(df[df["method"] == "exact"], df[df["method"] == "attribution"], _outs(tmp_path, "ag"),
                     title="Factual recall — MLP, organism-facts (10 prompts)\nexact vs attribution")  # fmt: skip
    fig = figs[0]
    _no_overlaps_or_clipping(fig)
    assert any("ρ =" in t for t in _panels(fig))
    assert "detected by both (same sign)" in _legend(fig)


def test_robustness_figure_effect_bars_have_an_axis(tmp_path, monkeypatch):
    import patchbench.analysis.robustness_figure as rf

    figs = []
    real = rf.save_figure
    monkeypatch.setattr(rf, "save_figure", lambda fig, out: figs.append(fig) or real(fig, out))
    cells = pd.DataFrame([dict(component=c, cell=cell, effect=e, ci_low=e - 0.1, ci_high=e + 0.1, p_positive=p,
                               p_negative=0.0, threshold_low=-0.3, threshold_high=0.5, ci_method="bootstrap")
                          for cell, scale in (("STR/LD", 1.0), ("GN/P", 0.05))
                          for c, e, p in (("3.0", 0.9 * scale, 1.0), ("2.1", 0.2 * scale, 0.4))])  # fmt: skip
    verdicts = pd.DataFrame({"component": ["3.0", "2.1"], "verdict": ["robust", "unstable"]})
    robustness_figure(cells, verdicts, [tmp_path / "r.png"], title="IOI — attention heads, m (20 prompts)")
    fig = figs[0]
    ax = fig.axes[0]
    top = [c for c in ax.child_axes if c.get_xlabel().startswith("effect")]
    assert len(top) == 1
    labels = [t.get_text() for t in top[0].get_xticklabels()]
    assert "1" in labels and "-0.3" in labels  # STR/LD's highest (0.9 + 0.1) and lowest (the threshold)
    assert "detection probability" in _colorbars(fig)[0]


def test_load_circuit_reads_any_circuit_file_for_its_tasks(tmp_path):
    root = Path(__file__).resolve().parents[1]
    ioi = plot.load_circuit(root / "models" / "organisms" / "organism-ioi" / "circuit.json", "ioi_abc")
    heads, _ = circuit_members(ioi)
    assert heads and all(isinstance(la, int) for la, _ in heads)
    assert (
        plot.load_circuit(root / "models" / "organisms" / "organism-ioi" / "circuit.json", "factual") is None
    )
    per_task = tmp_path / "c.json"
    per_task.write_text(json.dumps({"by_task": {"capitals": {"lookup": ["3", "4"]}}}))
    assert plot.load_circuit(per_task, "capitals") == {"lookup": ["3", "4"]}
    assert plot.load_circuit(per_task, "ioi") is None and plot.load_circuit(None, "ioi") is None
