"""Agreement numbers on synthetic effects frames whose correlations and detections are known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchbench.analysis.agreement import (
    AGREEMENT_COLUMNS,
    agreement_figure,
    agreement_table,
    disagreements,
    paired,
)
from patchbench.rawframe import EFFECTS_COLUMNS


def frame(effect, method: str, metric: str = "logit_diff", corruption: str = "str") -> pd.DataFrame:
    n = len(effect)
    return pd.DataFrame(
        {
            "model": "m",
            "task": "t",
            "corruption": corruption,
            "site": "attn_head",
            "window": 1,
            "method": method,
            "component": [f"{i // 4}.{i % 4}" for i in range(n)],
            "layer": np.arange(n) // 4,
            "head": np.arange(n) % 4,
            "position": -1,
            "metric": metric,
            "effect": np.asarray(effect, float),
            "effect_sd": 0.1,
            "n_prompts": 10,
            "detected": "",
            "positions": "all",
        }
    )[list(EFFECTS_COLUMNS)]


def orthonormal_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    e = rng.normal(size=n)
    x -= x.mean()
    e -= e.mean()
    x /= np.linalg.norm(x)
    e -= (e @ x) * x
    e /= np.linalg.norm(e)
    return x, e


@pytest.mark.parametrize("a,b", [(1.0, 0.0), (3.0, 4.0), (1.0, 1.0), (-2.0, 1.0)])
def test_pearson_is_the_constructed_correlation(a, b):
    x, e = orthonormal_pair(48, seed=1)
    y = a * x + b * e + 0.7  # an offset must not matter
    t = agreement_table(frame(x, "exact"), frame(y, "attribution"))
    assert len(t) == 1 and list(t.columns) == AGREEMENT_COLUMNS
    assert t["pearson"].iloc[0] == pytest.approx(a / np.hypot(a, b), abs=1e-12)
    assert t["n_components"].iloc[0] == 48


def test_spearman_sees_rank_agreement_pearson_does_not():
    x, _ = orthonormal_pair(40, seed=2)
    t = agreement_table(
        frame(x, "exact"), frame(np.sinh(8 * x) ** 3, "attribution")
    )  # monotone, very nonlinear
    assert t["spearman"].iloc[0] == pytest.approx(1.0)
    assert t["pearson"].iloc[0] < 0.9
    t = agreement_table(frame(x, "exact"), frame(-x, "attribution"))
    assert t["spearman"].iloc[0] == pytest.approx(-1.0)


def test_detection_overlap_counts_and_jaccard():
    base = np.linspace(-0.01, 0.01, 40)
    ex = base.copy()
    at = base.copy()
    ex[3] = 5.0  # exact: one positive outlier
    at[3] = 4.0  # attribution: the same one ...
    at[17] = -4.0  # ... and a negative one exact does not see
    t = agreement_table(frame(ex, "exact"), frame(at, "attribution")).iloc[0]
    assert (t["detected_exact"], t["detected_attribution"], t["detected_both"]) == (1, 2, 1)
    assert t["jaccard"] == pytest.approx(0.5)
    # the same component detected with opposite signs is not shared
    at2 = base.copy()
    at2[3] = -4.0
    t2 = agreement_table(frame(ex, "exact"), frame(at2, "attribution")).iloc[0]
    assert t2["detected_both"] == 0 and t2["jaccard"] == 0.0
    # nobody detects anything: perfect (vacuous) agreement
    t3 = agreement_table(frame(base, "exact"), frame(base, "attribution")).iloc[0]
    assert t3["detected_exact"] == 0 and t3["jaccard"] == 1.0


def test_worst_disagreement_is_the_swapped_component():
    x, _ = orthonormal_pair(36, seed=3)
    y = x.copy()
    i, j = int(np.argmax(x)), int(np.argmin(x))
    y[i], y[j] = x[j], x[i]
    pairs = paired(frame(x, "exact"), frame(y, "attribution"))
    worst = disagreements(pairs, 2)
    assert set(worst["component"]) == {frame(x, "exact")["component"][i], frame(x, "exact")["component"][j]}
    t = agreement_table(frame(x, "exact"), frame(y, "attribution"), top=1).iloc[0]
    assert t["top_disagreements"].split(" (")[0] in set(worst["component"])


def test_plots_are_kept_apart_and_unmatched_components_refused():
    x, e = orthonormal_pair(24, seed=4)
    ex = pd.concat([frame(x, "exact", "logit_diff"), frame(x, "exact", "prob", "gn")])
    at = pd.concat([frame(x, "attribution", "logit_diff"), frame(-x, "attribution", "prob", "gn")])
    t = agreement_table(ex, at).set_index("metric")
    assert t.loc["logit_diff", "spearman"] == pytest.approx(1.0)
    assert t.loc["prob", "spearman"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="only in the exact frame"):
        paired(frame(x, "exact"), frame(x[:-1], "attribution"))


def test_figure_writes_png_and_pdf(tmp_path):
    x, e = orthonormal_pair(24, seed=5)
    ex = pd.concat([frame(x, "exact"), frame(x, "exact", "kl"), frame(x, "exact").assign(window=3)])
    at = pd.concat(
        [
            frame(x + 0.3 * e, "attribution"),
            frame(2 * x, "attribution", "kl"),
            frame(x, "attribution").assign(window=3),
        ]
    )
    assert len(agreement_table(ex, at)) == 3
    out = agreement_figure(ex, at, [tmp_path / "a.png", tmp_path / "a.pdf"], title="synthetic")
    assert [p.suffix for p in out] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in out)
