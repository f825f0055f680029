"""End to end: one Snakemake call on a tiny slice of the demo builds the IOI table and heatmaps.

Corpus -> toy tokenizer -> prompt set -> (filter) -> clean cache -> STR and GN sweeps of every
head -> effects + detection -> Table 5 (CSV / Markdown) and the head heatmaps (PNG / PDF).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from patchbench.rawframe import read_frame

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    results, figures = out / "results", out / "figures"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--nolock",
        "--configfile",
        "tests/configs/tiny.yaml",
        "--config",
        f"results_dir={results}",
        f"figures_dir={figures}",
        "--",
        "table5",
        "fig_ioi_heads",
        "agreement_all",
    ]
    res = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return results, figures


@pytest.mark.slow
def test_table_and_heatmaps_are_produced(tiny_run):
    results, figures = tiny_run
    table = pd.read_csv(results / "tables" / "table5_tiny-gpt2.csv")
    assert len(table) == 6  # 2 corruptions x 3 metrics, the paper's Table 5 layout
    assert (results / "tables" / "table5_tiny-gpt2.md").read_text().count("|") > 20
    for ext in ("png", "pdf"):
        f = figures / f"fig_ioi_heads_tiny-gpt2.{ext}"
        assert f.stat().st_size > 1000


@pytest.mark.slow
def test_sweeps_hold_raw_outputs_for_every_head_and_metric(tiny_run):
    results, _ = tiny_run
    for corruption, samples in (("str", 1), ("gn", 2)):
        raw = read_frame(results / "sweeps" / "tiny-gpt2" / "ioi" / corruption / "attn_head-all_w1.parquet")
        patched = raw[raw["run"] == "patched"]
        assert set(zip(patched["layer"], patched["head"], strict=True)) == {(0, 0), (0, 1), (1, 0), (1, 1)}
        n_prompts = raw["prompt"].nunique()
        assert n_prompts >= 3
        assert len(patched) == 4 * n_prompts * samples
        assert raw.attrs["patchbench"]["corruption"] == corruption
        eff = read_frame(results / "effects" / "tiny-gpt2" / "ioi" / corruption / "attn_head-all_w1.parquet")
        assert set(eff["metric"]) >= {"prob", "logit_diff", "kl"}
        assert eff.groupby("metric")["component"].nunique().eq(4).all()
        assert set(eff["detected"]) <= {"", "positive", "negative"}
    log = (results / "logs" / "sweeps" / "tiny-gpt2" / "ioi" / "gn" / "attn_head-all_w1.log").read_text()
    assert "sanity" in log.lower()


@pytest.mark.slow
def test_one_attribution_job_writes_each_cell_with_its_own_log(tiny_run):
    results, _ = tiny_run
    for corruption in ("str", "gn"):
        cell = Path("tiny-gpt2") / "ioi" / corruption / "attn_head-all_w1"
        eff = read_frame(results / "attrib" / cell.with_suffix(".parquet"))
        assert set(eff["method"]) == {"attribution"} and set(eff["corruption"]) == {corruption}
        assert eff.groupby("metric")["component"].nunique().eq(4).all()
        raw = read_frame(results / "attrib" / f"{cell}.raw.parquet")
        assert raw.attrs["patchbench"]["corruption"] == corruption
        assert (
            f"attribution {corruption} attn_head w1"
            in (results / "logs" / "attrib" / cell.with_suffix(".log")).read_text()
        )
    assert (results / "tables" / "agreement_tiny-gpt2_ioi.csv").exists()
