"""The paper's 2-SD detection rule on hand-made effects frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchbench.detection import detect


def frame(effects, metric="logit_diff", positions="all", site="attn_head"):
    n = len(effects)
    return pd.DataFrame(
        {
            "model": "m",
            "task": "t",
            "corruption": "str",
            "site": site,
            "window": 1,
            "method": "exact",
            "component": [f"0.{i}" for i in range(n)],
            "layer": 0,
            "head": list(range(n)),
            "position": -1,
            "metric": metric,
            "effect": effects,
            "effect_sd": 0.0,
            "n_prompts": 5,
            "detected": "",
            "positions": positions,
        }
    )


def test_positive_and_negative():
    e = [0.0] * 9 + [10.0]  # mean 1, population SD 3: threshold 7
    out = detect(frame(e))
    assert list(out["detected"]) == [""] * 9 + ["positive"]
    neg = detect(frame([0.0] * 9 + [-10.0]))
    assert list(neg["detected"]) == [""] * 9 + ["negative"]


def test_threshold_is_k_sd_from_mean():
    e = np.array([0.0] * 20 + [1.0])
    mu, sd = e.mean(), e.std()
    assert 1.0 > mu + 2 * sd  # detected at k = 2 ...
    assert detect(frame(list(e)))["detected"].iloc[-1] == "positive"
    k = (1.0 - mu) / sd + 0.01  # ... and not just above its own z-score
    assert detect(frame(list(e)), k=k)["detected"].iloc[-1] == ""


def test_groups_are_plots():
    a = frame([0.0] * 9 + [10.0], metric="prob")
    b = frame([5.0] * 9 + [10.0], metric="kl")  # 10 is not an outlier among 5s? it is: mean 5.5, sd 1.5
    c = frame([0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], metric="prob", positions="each")
    out = detect(pd.concat([a, b, c], ignore_index=True))
    assert out.loc[out.metric == "prob"].query("positions == 'all'")["detected"].tolist()[-1] == "positive"
    assert out.loc[out.positions == "each", "detected"].tolist()[1] == "positive"
    assert (out.loc[out.positions == "each", "detected"].tolist().count("positive")) == 1
    # the kl plot alone: 10 vs mean 5.5 and SD 1.5 -> 3 SD -> positive; 5s are not detected
    assert out.loc[out.metric == "kl", "detected"].tolist() == [""] * 9 + ["positive"]


def test_degenerate_plots_detect_nothing():
    assert (detect(frame([3.0]))["detected"] == "").all()
    assert (detect(frame([1.0] * 5))["detected"] == "").all()


def test_refuses_per_prompt_frames():
    f = frame([0.0, 1.0]).assign(prompt=0)
    with pytest.raises(ValueError, match="per-prompt"):
        detect(f)
    with pytest.raises(KeyError, match="metric"):
        detect(frame([0.0, 1.0]).drop(columns="metric"))
