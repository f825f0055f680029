"""The practice benchmark through the workflow: `snakemake practices` on a two-layer model with a
circuit, beside one without (skipped, named in the log); the experiment's own sweeps reused; a
corruption the prompt set refuses listed as not defined with its reason."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from conftest import run_workflow, tiny_config, workflow_copy


@pytest.mark.slow
def test_practices_target_on_a_two_layer_model(tmp_path):
    cfg = tiny_config()
    cfg["experiments"].pop("ioi_resid_each")
    cfg["tasks"]["ioi"]["n_prompts"] = (
        12  # 14 templates: most prompts are alone in theirs, so resample refuses
    )
    circuit = tmp_path / "circuit.json"
    circuit.write_text(
        json.dumps({"classes": {"name_mover": ["1.0"], "negative_name_mover": ["1.1"]}, "tasks": ["ioi"]})
    )
    cfg["models"]["tiny-gpt2"]["circuit"] = str(circuit)
    cfg["models"]["tiny-plain"] = {**cfg["models"]["tiny-gpt2"], "circuit": None}
    cfg["experiments"]["ioi_heads"]["models"] = ["tiny-gpt2", "tiny-plain"]
    cfg["robustness"] = {"n_boot": 50}
    cfg["practices"] = {
        "experiments": ["ioi_heads"], "corruptions": ["str", "gn@nu=1", "resample", "zero"], "n_perm": 199,
    }  # fmt: skip
    project = workflow_copy(tmp_path / "project", cfg)
    res = run_workflow(project, f"{sys.executable} -m snakemake --cores 2 practices")
    out = res.stdout + res.stderr
    assert "practices_sweep_ioi_heads_tiny_gpt2_str" in out  # str's noising and attribution cells are new
    assert "rule sweep_ioi_heads" in out  # the experiment's own str / gn denoising sweeps, made by their rule
    assert "practices_sweep_ioi_heads_tiny_plain" not in out  # no circuit: no practice sweeps

    table = pd.read_csv(project / "results" / "tables" / "practices_ioi.csv")
    assert len(table) == 4 * 2 * 3 * 3 * 3  # corruptions x directions x metrics x methods x rules, window 1
    assert set(table["organism"]) == {"tiny-gpt2"}
    undefined = table[~table["defined"]]
    assert set(undefined["corruption"]) == {"resample", "zero"}
    assert (
        undefined.loc[undefined["corruption"] == "resample", "reason"]
        .str.contains("only one of its template")
        .all()
    )
    zero = undefined[undefined["corruption"] == "zero"]
    assert set(zero["method"]) == {"attribution_qk"} and zero["reason"].str.contains("QK fix").all()
    ok = table[table["defined"]]
    assert ok["f1"].between(0, 1).all() and (ok["f1_low"] <= ok["f1_high"]).all()
    assert (ok["circuit_size"] == 2).all()
    summary = (project / "results" / "tables" / "practices_summary.md").read_text()
    assert "Prefer STR to GN" in summary and "Verdict rule" in summary
    log = (project / "results" / "logs" / "practices" / "practices.log").read_text()
    assert "skipping model tiny-plain of experiment ioi_heads: no circuit.json" in log
    assert (project / "figures" / "practices_ioi.png").stat().st_size > 0

    again = run_workflow(project, f"{sys.executable} -m snakemake --cores 2 practices -n")
    assert "Nothing to be done" in again.stdout + again.stderr
