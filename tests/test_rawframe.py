"""patchbench.rawframe: both engines' frames are built here, with one schema and one metadata layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import make_model, make_prompts
from patchbench.attribution import run_attribution
from patchbench.engine.sweep import run_sweep
from patchbench.rawframe import (
    RAW_COLUMNS,
    VALUE_COLUMNS,
    assemble_raw,
    baseline_rows,
    patched_rows,
    position_mode,
    read_frame,
    write_frame,
)
from patchbench.sites import SweepSpec, enumerate_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _values(n_targets, n_rows, offset=0.0):
    return {
        c: offset + k + np.arange(n_targets * n_rows, dtype=float).reshape(n_targets, n_rows)
        for k, c in enumerate(VALUE_COLUMNS)
    }


def test_rows_and_order():
    targets = enumerate_targets(
        SweepSpec("str", "mlp", position="X", window=3), n_layers=3, n_heads=2, max_len=6
    )
    prompt, sample = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    positions = np.array([[2, 2, 4, 4]] * len(targets))
    pat = patched_rows(targets, prompt, sample, _values(len(targets), 4), positions)
    assert list(pat.columns) == list(RAW_COLUMNS) and len(pat) == 3 * 4
    assert pat["target"].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # target-major
    assert pat["layers"].tolist()[::4] == ["0:2", "0:3", "1:3"] and set(pat["window"]) == {3}
    assert pat["position"].tolist()[:4] == [2, 2, 4, 4] and pat["kl"].tolist()[4] == 4 + 4
    base = baseline_rows("corrupted", "mlp", 3, prompt, sample, {c: v[0] for c, v in _values(1, 4).items()})
    assert (base[["target", "layer", "head", "position"]] == -1).all().all() and set(base["layers"]) == {""}
    clean = baseline_rows(
        "clean", "mlp", 3, np.array([0, 1]), np.zeros(2, int), {c: np.zeros(2) for c in VALUE_COLUMNS}
    )
    raw = assemble_raw([pat.iloc[::-1], base, clean], {"task": "t", "spec": {"position": "X"}})
    assert raw["run"].tolist() == ["clean"] * 2 + ["corrupted"] * 4 + ["patched"] * 12
    assert raw.loc[raw["run"] == "patched", "target"].is_monotonic_increasing
    assert dict(raw.dtypes.astype(str)) == RAW_COLUMNS
    assert position_mode(raw.attrs["patchbench"]) == "X" and position_mode({}) == "all"


def test_both_engines_write_one_metadata_layout(tmp_path):
    model = make_model()
    prompts = make_prompts(model=model)
    spec = SweepSpec("gn", "attn_head", layers=(2,))
    exact = run_sweep(model, prompts, spec, name="tiny", progress=False)
    approx = run_attribution(model, prompts, spec, name="tiny", progress=False)
    identity = {
        "model": "tiny",
        "task": "toytask",
        "corruption": "gn",
        "site": "attn_head",
        "position": "all",
        "window": 1,
    }
    for raw, method in ((exact, "exact"), (approx, "attribution")):
        meta = raw.attrs["patchbench"]
        assert {k: meta[k] for k in identity} == identity and meta["method"] == method
        assert meta["spec"] == spec.to_dict() and meta["sigma"] > 0 and meta["noise_std"] == 3 * meta["sigma"]
        write_frame(raw, tmp_path / f"{method}.parquet")
        back = read_frame(tmp_path / f"{method}.parquet")
        pd.testing.assert_frame_equal(back, raw)
        assert back.attrs["patchbench"] == json.loads(json.dumps(meta, default=str))  # JSON: int keys -> str
        pandas_meta = json.loads(pq.read_schema(tmp_path / f"{method}.parquet").metadata[b"pandas"])
        assert not pandas_meta.get("attributes"), "the metadata is stored once, under the patchbench key"
    shared = ["run", "target", "site", "layer", "layers", "head", "position", "window", "prompt", "sample"]
    pd.testing.assert_frame_equal(exact[shared], approx[shared])
    base = exact["run"] != "patched"
    pd.testing.assert_frame_equal(exact.loc[base, list(VALUE_COLUMNS)], approx.loc[base, list(VALUE_COLUMNS)])
