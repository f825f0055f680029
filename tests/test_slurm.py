"""The SLURM profile on a real one-node SLURM cluster: a slice of the workflow runs as SLURM jobs
through ``snakemake --profile profiles/slurm`` and gives the same outputs as a local run.

The cluster is brought up by ``.ci/slurm-up`` (``.ci/run`` does it, and stops it by PID on exit).
Without a cluster the test fails when ``CI`` is set and is skipped otherwise.

The slice: the IOI prompt set and the correctness filter (accuracy, logit differences) of a tiny
random GPT-2 saved as a ``source: local`` Hugging Face directory with the real GPT-2 tokenizer,
tasks read from the data mirror. Two SLURM jobs in a chain, whose SLURM job ids, logs and
requested resources are checked; the local run (``profiles/default``) runs at the same time in
its own directory, and every output must be equal bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
KILL_AFTER_S = 300  # hard bound on each snakemake run (a hung SLURM executor ignores SIGTERM)
# The model's resources, distinctive so that the test can see them in the SLURM job records.
RESOURCES = {"mem_mb": 1500, "runtime": 7, "threads": 1, "gpu": 0}
TARGETS = ("results/prompts/tiny/ioi.accuracy.json", "results/prompts/tiny/ioi.parquet")
OUTPUTS = ("prompts/tiny/ioi.all.parquet", "prompts/tiny/ioi.parquet", "prompts/tiny/ioi.accuracy.json")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _cluster_problem() -> str | None:
    """Why the cluster cannot be used, or None when it can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "the SLURM client tools (sinfo, sbatch) are not on PATH"
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld is not answering"
    if res.returncode != 0:
        return f"sinfo failed ({res.stderr.strip() or res.stdout.strip()}): the cluster is not up"
    states = res.stdout.split()
    if not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no usable SLURM node (sinfo node states: {states or 'none'})"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _cluster_problem()
    if problem is None:
        return
    msg = f"SLURM test cannot run: {problem}. Bring a one-node cluster up with `.ci/slurm-up` (as root; .ci/run does this)."
    if _in_ci():
        pytest.fail(msg + " CI is set, so this is a failure, not a skip.", pytrace=False)
    pytest.skip(msg + " (skipped because CI is unset; in CI this fails)")


@pytest.fixture(scope="module")
def slice_config(tmp_path_factory, mirror) -> Path:
    """A tiny random GPT-2 (local HF directory, real GPT-2 tokenizer) and a one-experiment config."""
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path_factory.mktemp("slurm-slice")
    model_dir = base / "tiny-gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128, n_ctx=128)).save_pretrained(
        model_dir
    )
    for f in TOKENIZER_FILES:
        shutil.copy(mirror / "gpt2-tokenizer" / f, model_dir / f)
    cfg = {
        "suite": "slurm-slice",
        "results_dir": "results",
        "figures_dir": "figures",
        "data_dir": str(mirror),
        "filter_correct": False,  # random weights answer nothing; the filter still runs the model
        "min_prompts": 1,
        "models": {
            "tiny": {"source": "local", "path": str(model_dir), "device": "cpu", "resources": RESOURCES}
        },
        "tasks": {"ioi": {"n_prompts": 8, "seed": 0}},
        "experiments": {
            "ioi_heads": {"task": "ioi", "models": ["tiny"], "corruptions": ["str"], "site": "attn_head"}
        },
    }
    path = base / "slice.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _snakemake(workdir: Path, config: Path, profile: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    """Start snakemake on the slice in its own working directory, killed after KILL_AFTER_S."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "timeout", "-s", "KILL", str(KILL_AFTER_S),
        sys.executable, "-m", "snakemake", *TARGETS,
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--profile", str(ROOT / "profiles" / profile),
        "--configfile", str(config),
        *extra,
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    log = workdir / "snakemake.out"
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    return proc, log


def _wait(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    return proc.wait(), log.read_text()


def _scontrol(jobid: str) -> dict[str, str]:
    res = subprocess.run(["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, f"scontrol show job {jobid}: {res.stderr}"
    return dict(kv.split("=", 1) for kv in res.stdout.split() if "=" in kv)


def _assert_same_outputs(a: Path, b: Path) -> None:
    for rel in OUTPUTS:
        fa, fb = a / "results" / rel, b / "results" / rel
        assert fa.is_file() and fb.is_file(), f"{rel} missing: slurm {fa.is_file()}, local {fb.is_file()}"
        if rel.endswith(".json"):
            assert json.loads(fa.read_text()) == json.loads(fb.read_text()), rel
            continue
        ta, tb = pq.read_table(fa), pq.read_table(fb)
        assert ta.schema.metadata == tb.schema.metadata, f"{rel}: parquet metadata differs"
        pd.testing.assert_frame_equal(ta.to_pandas(), tb.to_pandas(), check_exact=True, obj=rel)


def test_slice_runs_as_slurm_jobs_and_matches_a_local_run(cluster, slice_config, tmp_path):
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    t0 = time.monotonic()
    slurm, slurm_log = _snakemake(
        slurm_dir, slice_config, "slurm",
        # fast polling for a 2-job test (the profile's 30 s / 20 s suit real queues); the plugin adds
        # 10 s to the interval after every check that finds nothing finished
        "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "8",
        "--slurm-keep-successful-logs", "--retries", "0",
    )  # fmt: skip
    local, local_log = _snakemake(local_dir, slice_config, "default", "--cores", "2")
    submitted: list[tuple[str, str, str]] = []
    try:
        rc_local, out_local = _wait(local, local_log)
        t_local = time.monotonic() - t0
        if rc_local != 0:  # no point waiting for the cluster
            slurm.kill()
        rc_slurm, out_slurm = _wait(slurm, slurm_log)
        t_slurm = time.monotonic() - t0
        submitted = SUBMITTED.findall(out_slurm)
    finally:
        for p in (slurm, local):
            if p.poll() is None:
                p.kill()
        ids = [j for _, j, _ in submitted]
        if ids:  # never leave this test's jobs in the queue
            subprocess.run(["scancel", *ids], capture_output=True)
    print(f"\nlocal run {t_local:.1f} s, SLURM run {t_slurm:.1f} s (started together)")
    for line in out_slurm.splitlines():
        if SUBMITTED.search(line):
            print(line)

    assert rc_local == 0, f"local run failed (rc {rc_local}):\n{out_local[-4000:]}"
    assert rc_slurm == 0, (
        f"SLURM run failed (rc {rc_slurm}; 137 = killed after {KILL_AFTER_S} s):\n{out_slurm[-4000:]}\n"
        + "\n".join(p.read_text()[-2000:] for p in (slurm_dir / ".snakemake" / "slurm_logs").rglob("*.log"))
    )

    # Every rule of the slice was submitted to SLURM, once, and ran there to completion.
    rules = {Path(log).parent.parent.name.removeprefix("rule_"): (jobid, log) for _, jobid, log in submitted}
    assert sorted(rules) == ["filter_correct", "prompts"], f"submitted: {submitted}"
    assert len(submitted) == 2 and len({j for _, j, _ in submitted}) == 2
    assert "SLURM jobid" not in out_local, "the local profile must not submit to SLURM"
    for rule, (jobid, log) in rules.items():
        log = Path(log)
        assert log.is_relative_to(slurm_dir / ".snakemake" / "slurm_logs") and log.is_file(), log
        assert "1 of 1 steps (100%) done" in log.read_text(), (
            f"{rule}: job {jobid} log does not end in success"
        )
        job = _scontrol(jobid)
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (
            rule,
            job["JobState"],
            job["ExitCode"],
        )
        assert job["WorkDir"] == str(slurm_dir), job["WorkDir"]
    # The model's configured resources reached SLURM (filter_correct takes them from models.tiny.resources).
    job = _scontrol(rules["filter_correct"][0])
    assert job["TimeLimit"] == f"00:{RESOURCES['runtime']:02d}:00", job["TimeLimit"]
    assert job["MinMemoryNode"] == f"{RESOURCES['mem_mb']}M", job["MinMemoryNode"]
    assert job["NumCPUs"] == str(RESOURCES["threads"]), job["NumCPUs"]

    _assert_same_outputs(slurm_dir, local_dir)
