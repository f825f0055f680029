"""Cluster requests from the cost estimate and the partition-limit check (patchbench.cost.cluster), both
while a run is planned: the requests of the jobs that load a model, a job that fits no partition
refused with one message naming it, the limit and the keys to change, an unknown device refused."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from patchbench.config import ConfigError, read_yaml
from patchbench.cost.cluster import PartitionError, cluster_requests, job_key, written_resources
from patchbench.cost.device import DEVICES
from patchbench.cost.jobs import estimate_jobs, jobs_of
from patchbench.cost.report import load_configs
from test_cost import cached_rates, small_config  # noqa: F401  (cached_rates is a fixture)


def config_of(path: str, **keys) -> tuple[dict, dict]:
    raw = yaml.safe_load(Path(path).read_text())
    raw.update(keys)
    written = written_resources(raw)
    Path(path).write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_configs([path]), written


def partitions(tmp_path: Path, **limits) -> str:
    path = tmp_path / "partitions.yaml"
    default = {"cpu": {"max_runtime": 2880, "max_mem_mb": 256000, "max_cpus_per_task": 64, "max_gpu": 0},
               "gpu": {"max_runtime": 2880, "max_mem_mb": 512000, "max_cpus_per_task": 32, "max_gpu": 4}}  # fmt: skip
    for name, values in limits.items():
        default[name].update(values)
    path.write_text(yaml.safe_dump({"partitions": default}))
    return str(path)


def test_no_device_and_no_partitions_leaves_the_config_as_written(tmp_path):
    config, written = config_of(small_config(tmp_path))
    assert cluster_requests(config, written) == {}


def test_an_unknown_device_is_refused_naming_the_known_ones(tmp_path):
    config, written = config_of(small_config(tmp_path), cluster_device="h200")
    with pytest.raises(ConfigError) as err:
        cluster_requests(config, written)
    assert "'h200'" in str(err.value) and all(d in str(err.value) for d in DEVICES)


def test_requests_are_the_estimate_times_the_safety_factor(tmp_path, cached_rates):  # noqa: F811
    config, written = config_of(small_config(tmp_path), cluster_device="cpu", cluster_safety_factor=1.5)
    requests = cluster_requests(config, written)
    (sweep,) = [j for j in jobs_of(config) if j.rule == "sweep_ioi_heads"]
    (est,) = estimate_jobs(config, lambda j: "cpu", lambda d, j, s: cached_rates, [sweep])
    req = requests[job_key("sweep_ioi_heads", "organism-ioi")]
    assert req["runtime"] == math.ceil(1.5 * est.total_seconds / 60)
    assert req["mem_mb"] == math.ceil(1.5 * est.host_bytes / 2**20)
    assert req["threads"] == 1 and req["gpu"] == 0
    assert set(requests) == {job_key(j.rule, j.model, j.task) for j in jobs_of(config)}


def test_written_resources_win_over_the_estimate(tmp_path):
    path = small_config(tmp_path)
    raw = yaml.safe_load(Path(path).read_text())
    raw["models"]["organism-ioi"]["resources"] = {"threads": 1, "mem_mb": 1500, "runtime": 7}
    Path(path).write_text(yaml.safe_dump(raw))
    config, written = config_of(path, cluster_device="h100")
    # no rates are cached here: nothing needs estimating when every request is written
    requests = cluster_requests(config, written)
    assert requests[job_key("sweep_ioi_heads", "organism-ioi")]["runtime"] == 7  # one cell x 7 min
    assert requests[job_key("clean_cache", "organism-ioi", "ioi")]["mem_mb"] == 1500


def test_a_job_that_fits_no_partition_is_refused_naming_it_the_limit_and_the_keys(tmp_path, cached_rates):  # noqa: F811
    parts = partitions(tmp_path, cpu={"max_mem_mb": 100}, gpu={"max_mem_mb": 100})
    config, written = config_of(small_config(tmp_path), cluster_device="cpu", cluster_partitions=parts)
    with pytest.raises(PartitionError) as err:
        cluster_requests(config, written)
    msg = str(err.value)
    assert "fits no partition" in msg and "max_mem_mb 100" in msg and parts in msg
    assert "filter_correct organism-ioi/ioi" in msg  # the first job named; the others counted
    assert "more job(s) do not fit either" in msg
    assert "models.organism-ioi.memory_budget_mb" in msg and "cluster_safety_factor (now 2)" in msg


def test_the_written_requests_are_checked_too(tmp_path):
    """Without a device the config's own requests meet the limits: the paper config's old 3840 minutes."""
    path = small_config(tmp_path)
    raw = yaml.safe_load(Path(path).read_text())
    raw["models"]["organism-ioi"]["resources"] = {"threads": 1, "runtime": 3840, "gpu": 1}
    Path(path).write_text(yaml.safe_dump(raw))
    config, written = config_of(path, cluster_partitions=partitions(tmp_path))
    with pytest.raises(PartitionError) as err:
        cluster_requests(config, written)
    assert "runtime 3840 > max_runtime 2880" in str(err.value)
    assert "models.organism-ioi.resources.runtime" in str(err.value)


def test_a_gpu_job_needs_a_gpu_partition(tmp_path):
    path = small_config(tmp_path)
    raw = yaml.safe_load(Path(path).read_text())
    raw["models"]["organism-ioi"]["resources"] = {"threads": 1, "gpu": 1}
    Path(path).write_text(yaml.safe_dump(raw))
    config, written = config_of(path, cluster_partitions=partitions(tmp_path, gpu={"max_gpu": 0}))
    with pytest.raises(PartitionError, match=r"1 GPU\(s\), more than any partition's max_gpu"):
        cluster_requests(config, written)


def test_the_slurm_profile_names_a_known_device_and_schema_keys():
    profile = read_yaml(ROOT / "profiles" / "slurm" / "config.yaml")
    keys = profile["config"]
    assert keys["cluster_device"] in DEVICES
    from patchbench.config import schema

    assert set(keys) <= set(schema()["properties"])


@pytest.mark.slow
def test_the_workflow_refuses_before_any_job(tmp_path, cached_rates):  # noqa: F811
    """Planning (a dry run) stops at the Snakefile with the one message, no traceback."""
    parts = partitions(tmp_path, cpu={"max_runtime": 0}, gpu={"max_runtime": 0})
    path = small_config(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory",
         str(tmp_path), "--configfile", path, "--config", "cluster_device=cpu", f"cluster_partitions={parts}"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "patchbench: error: config key 'cluster_partitions'" in out and "max_runtime 0" in out
    assert "Traceback" not in out
