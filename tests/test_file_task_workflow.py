"""The example task read from a file (examples/countries.csv) runs through the workflow beside a
built-in task: prompts, filter, cache, sweeps, effects, robustness, the report's front page."""

from __future__ import annotations

import shutil
import sys

import pytest

from conftest import ROOT, run_workflow, workflow_copy
from patchbench.rawframe import read_frame

MODEL = "organism-facts"


def example_config() -> dict:
    """The shipped factual organism on the built-in factual task and on the example file's task."""
    return {
        "suite": "own-task",
        "data_dir": "data/toy",
        "min_prompts": 5,
        "attribution": {"windows": [1], "tasks": ["factual", "countries"]},
        "robustness": {"n_boot": 200},
        "models": {MODEL: {"source": "toy", "path": str(ROOT / "models" / "organisms" / MODEL),
                           "resources": {"threads": 1}}},
        "tasks": {"factual": {"n_prompts": 24}, "countries": {"file": "examples/countries.csv"}},
        "experiments": {
            "factual_mlp_last": {"task": "factual", "models": [MODEL], "site": "mlp", "position": "subject_last",
                                 "windows": [1, 3]},
            "countries_mlp": {"task": "countries", "models": [MODEL], "site": "mlp", "position": "subject",
                              "windows": [1, 3]},
        },
    }  # fmt: skip


@pytest.mark.slow
def test_the_example_file_task_runs_beside_a_built_in_task(tmp_path):
    project = workflow_copy(tmp_path / "project", example_config())
    (project / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "countries.csv", project / "examples")
    run_workflow(project, f"{sys.executable} -m snakemake --cores 2")
    r = project / "results"
    assert (r / "prompts" / MODEL / "countries.parquet").is_file()
    acc = (r / "prompts" / MODEL / "countries.accuracy.json").read_text()
    assert '"n_total": 24' in acc
    for corruption in ("str", "gn"):
        for w in (1, 3):
            eff = read_frame(r / "effects" / MODEL / "countries" / corruption / f"mlp-subject_w{w}.parquet")
            assert set(eff["task"]) == {"countries"} and set(eff["positions"]) == {"subject"}
            assert (eff["component"].str.endswith("@subject")).all() and len(eff) == 8 * 3
    verdicts = (r / "tables" / f"robustness_countries_mlp_{MODEL}.md").read_text()
    assert "countries_mlp" in verdicts
    assert (project / "figures" / f"robustness_countries_mlp_{MODEL}.png").is_file()
    assert "countries_mlp" in (r / "robustness" / "summary.rst").read_text()
    assert (r / "tables" / f"agreement_{MODEL}_countries.csv").is_file()
    # editing the file reruns what depends on it, and only that
    csv = project / "examples" / "countries.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:-2]) + "\n")
    plan = run_workflow(project, f"{sys.executable} -m snakemake --cores 1 -n").stdout
    assert "prompts" in plan and "sweep_countries_mlp" in plan and "sweep_factual_mlp_last" not in plan
