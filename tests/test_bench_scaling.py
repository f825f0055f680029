"""``bench_patching.py --scaling`` works (on tiny sizes: ``--quick``; its numbers mean nothing)."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_scaling_mode_times_both_engines_and_draws_the_curves(tmp_path, capsys):
    import bench_patching

    bench_patching.main(["--scaling", "--quick", "--threads", "1", "--device", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "scaling.csv")
    # two sweeps at (1 layer: 4 and 6 tokens) and (2 layers: 4 tokens)
    assert len(frame) == 6 and set(frame["sweep"]) == {"mlp_each", "heads_each"}
    assert (frame["tl_s"] > 0).all() and (frame["pb_s"] > 0).all() and (frame["maxdiff"] < 1e-3).all()
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    assert out.count("length ") >= 4 and "log-log slopes" in out
