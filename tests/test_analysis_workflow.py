"""analysis.smk end to end on synthetic effects files: named targets build the paper's tables and figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PAPER_TABLE3, PAPER_TABLE5, head_effects, signed_detections, workflow_project
from patchbench.rawframe import write_frame

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_named_targets_build_tables_and_figures(tmp_path):
    workflow_project(tmp_path, ["common", "analysis"])  # the effects files below are its sources
    model = "organism-ioi"  # the demo runs its IOI head experiments on it, greater-than's on organism-greater-than
    for model_, task, df in (
        (model, "ioi", head_effects(model, "ioi", signed_detections(PAPER_TABLE5, "negative", "positive"))),
        (
            "organism-greater-than",
            "greater_than",
            head_effects(
                "organism-greater-than",
                "greater_than",
                signed_detections(PAPER_TABLE3, "positive", "negative"),
            ),
        ),
    ):
        for c in ("str", "gn"):
            path = tmp_path / f"results/effects/{model_}/{task}/{c}/attn_head-all_w1.parquet"
            part = df[df["corruption"] == c].copy()
            part.attrs["patchbench"] = {"model": model_, "task": task, "corruption": c}
            write_frame(part, path)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "table5",
        "fig_ioi_heads",
        "--cores",
        "1",
        "--quiet",
        "all",
    ]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    md = (tmp_path / f"results/tables/table5_{model}.md").read_text()
    assert "| GN           | Probability      | 0.10, 10.7, 11.10 | 3.0, 5.5, 7.9, 8.6" in md
    tex = (tmp_path / f"results/tables/table5_{model}.tex").read_text()
    assert "GN & KL divergence & 0.10, 10.7, 11.10 & 5.5, 7.9, 8.6" in tex
    assert not (
        tmp_path / "results/tables/table3_organism-greater-than.csv"
    ).exists()  # only what was asked for
    for ext in ("png", "pdf"):
        assert (tmp_path / f"figures/fig_ioi_heads_{model}.{ext}").stat().st_size > 2000
