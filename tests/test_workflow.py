"""The Snakemake workflow: both configs plan without network, bad references fail readably."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import snakemake

ROOT = Path(__file__).resolve().parents[1]


def effects_paths(cfg: dict, results: Path) -> list[str]:
    out = []
    for exp in cfg["experiments"].values():
        for m in exp["models"]:
            for c in exp.get("corruptions", ["str", "gn"]):
                for w in exp.get("windows", [1]):
                    pos = exp.get("position", "all")
                    out.append(
                        str(results / "effects" / m / exp["task"] / c / f"{exp['site']}-{pos}_w{w}.parquet")
                    )
    return out


@pytest.mark.parametrize("configfile", ["config/demo.yaml", "config/config.yaml"])
def test_dry_run_plans_every_target_without_network(configfile, tmp_path):
    results, figures = tmp_path / "results", tmp_path / "figures"
    res = snakemake(
        "-n", "--configfile", configfile, "--config", f"results_dir={results}", f"figures_dir={figures}"
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    plan = res.stdout + res.stderr
    cfg = yaml.safe_load((ROOT / configfile).read_text())
    for path in effects_paths(cfg, results):
        assert path in plan, f"{path} is not planned"
    for rule in (
        "prompts",
        "filter_correct",
        "clean_cache",
        "effects",
        *(f"sweep_{e}" for e in cfg["experiments"]),
    ):
        assert f"rule {rule}:" in plan or f"localrule {rule}:" in plan


def refused(tmp_path, mutate) -> str:
    """Plan the demo with ``mutate(experiments)`` applied: the run must fail; its output."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    mutate(cfg["experiments"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(bad))
    assert res.returncode != 0
    return res.stdout + res.stderr


def test_unknown_model_in_an_experiment_is_named(tmp_path):
    out = refused(tmp_path, lambda e: e["ioi_heads"].__setitem__("models", ["toy-gtp2"]))
    assert "experiment 'ioi_heads': unknown model 'toy-gtp2'" in out


def test_windows_on_a_head_site_are_refused(tmp_path):
    out = refused(tmp_path, lambda e: e["ioi_heads"].__setitem__("windows", [1, 3]))
    assert "windows [1, 3] only apply to site mlp" in out


def test_attribution_windows_restrict_the_agreement_to_those_cells(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    results = tmp_path / "results"

    def planned_attribution(windows):
        cfg["attribution"] = {"windows": windows} if windows else {}
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = snakemake("-n", "--configfile", str(path), "--config", f"results_dir={results}")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        attrib = f"{results}/attrib/organism-facts/factual/"
        found = re.findall(re.escape(attrib) + r"\S+?\.raw\.parquet", res.stdout + res.stderr)
        return sorted({Path(p).name for p in found})

    every = planned_attribution(None)
    single = planned_attribution([1])
    assert {n.split("_w")[1] for n in every} == {"1.raw.parquet", "3.raw.parquet", "5.raw.parquet"}
    assert single and all(n.endswith("_w1.raw.parquet") for n in single)
    assert set(single) < set(every)


def test_two_experiments_sweeping_the_same_cell_are_refused(tmp_path):
    out = refused(
        tmp_path, lambda e: e.__setitem__("factual_again", dict(e["factual_mlp_last"], windows=[5]))
    )
    assert "both sweep factual str mlp-subject_last window 5 on organism-facts" in out
    assert "'factual_mlp_last'" in out and "'factual_again'" in out


def test_one_sweep_job_runs_all_cells_of_an_experiment_on_a_model(tmp_path):
    results = tmp_path / "results"
    res = snakemake(
        "-n", "--configfile", "config/demo.yaml", "--config", f"results_dir={results}", "--", "all"
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    plan = res.stdout + res.stderr
    jobs = re.findall(
        r"^rule (sweep_factual_mlp_all):\n\s+input: .*\n\s+output: (.*)\n\s+log: (.*)", plan, flags=re.M
    )
    assert len(jobs) == 1, jobs
    outputs, logs = jobs[0][1].split(", "), jobs[0][2].split(", ")
    cells = {f"{c}/mlp-each_w{w}" for c in ("str", "gn") for w in (1, 3, 5)}
    assert {o.split("factual/")[1].removesuffix(".parquet") for o in outputs} == cells
    assert {p.split("factual/")[1].removesuffix(".log") for p in logs} == cells


def test_chains_of_every_position_sweeps_are_scheduled_first(tmp_path):
    res = snakemake(
        "-n", "--configfile", "config/demo.yaml", "--config", f"results_dir={tmp_path}", "--", "all"
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = re.split(r"\n(?=\[\w{3} \w{3} )", res.stdout + res.stderr)

    def priority(rule, wildcards):
        [job] = [j for j in jobs if re.search(rf"^(local)?rule {rule}:", j, flags=re.M) and wildcards in j]
        found = re.search(r"priority: (\d+)", job)
        return int(found.group(1)) if found else 0

    for rule in (
        "prompts",
        "filter_correct",
        "clean_cache",
    ):  # docstring sweeps one target per (head, position)
        assert priority(rule, "model=organism-docstring, task=docstring") == 10
        assert priority(rule, "model=organism-ioi, task=ioi\n") == 0
    assert priority("sweep_docstring_heads", "model=organism-docstring") == 10
    assert priority("sweep_ioi_heads", "model=organism-ioi") == 0
    # every toy model the demo patches is shipped (models/organisms/): the demo trains nothing
    trains = r"^(local)?rule (toy_corpus|toy_tokenizer|organism_tokenizer|toy_train|toy_accuracy):"
    assert not [j for j in jobs if re.search(trains, j, flags=re.M)]
