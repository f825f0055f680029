"""State that cannot go stale, at the level of Snakemake (issue #14).

Each test runs the real workflow in its own copy of the project (its own ``.snakemake``: locks,
incomplete markers, params), on a tiny config with a sweep long enough to kill part-way
(``conftest.tiny_config``); the uninterrupted run is the session's ``tiny_workflow``:

* a run killed with SIGKILL while a sweep job is running (Snakemake and its job, the whole process
  group) resumes with the one command the README documents, recomputes only the unfinished
  chunks, and leaves every output byte-identical (sha256) to an uninterrupted run's;
* changing ``noise.nu`` in the config of a finished run and running ``snakemake`` again leaves no
  output at the old value: every frame that depends on the noise records the new nu, every output
  downstream of them was rewritten, the STR sweeps were not recomputed (0 chunks; same bytes) and
  nothing upstream of the sweeps ran.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_workflow, tiny_config, workflow_copy, workflow_env
from patchbench.rawframe import read_frame

ROOT = Path(__file__).resolve().parents[1]
GN_EACH = Path("results/sweeps/tiny-gpt2/ioi/gn/resid_pre-each_w1")  # the sweep that is killed

pytestmark = pytest.mark.slow


def resume_command() -> str:
    """The resume command, read from the README (so the documentation and this test cannot drift apart)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## After a crash or a kill: resume", 1)[1]
    return re.search(r"```bash\n(snakemake --unlock[^\n]*)\n```", section).group(1)


def outputs(project: Path) -> dict[str, tuple[str, int]]:
    """Every result and figure file (not logs, checkpoints, staleness stamps or temporaries): sha256 and mtime."""
    out = {}
    for base in ("results", "figures"):
        for p in sorted((project / base).rglob("*")):
            rel = p.relative_to(project)
            bookkeeping = {"logs", ".fingerprints"} & set(rel.parts)
            if p.is_file() and not bookkeeping and not any(x.endswith(".chunks") for x in rel.parts):
                out[str(rel)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def chunks(project: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (project / f"{GN_EACH}.chunks").glob("chunk-*.parquet")}


@pytest.fixture(scope="module")
def uninterrupted(tiny_workflow) -> Path:
    """The tiny workflow run once, start to end (shared with tests/test_e2e.py; read only here)."""
    return tiny_workflow


def test_a_killed_run_resumes_with_the_documented_command_byte_identical(uninterrupted, tmp_path):
    project = workflow_copy(tmp_path / "project", tiny_config())
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2"],
        cwd=project,
        env=workflow_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: Snakemake and its jobs are killed together
    )
    deadline = time.time() + 900
    try:
        while len(chunks(project)) < 2:
            assert proc.poll() is None, (
                f"the run ended before the kill: {(tmp_path / 'killed.log').read_text()[-3000:]}"
            )
            assert time.time() < deadline, "the sweep wrote no chunks within 15 minutes"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        log.close()
    finished = chunks(project)
    total = len(chunks(uninterrupted))
    assert 2 <= len(finished) < total, (
        f"the kill was not part-way through the sweep ({len(finished)} of {total})"
    )
    assert list((project / ".snakemake" / "locks").iterdir()), "a killed Snakemake leaves its lock behind"

    command = resume_command()
    assert command == "snakemake --unlock && snakemake --cores 2 --rerun-incomplete"
    run_workflow(project, command.replace("snakemake", f"{sys.executable} -m snakemake"))

    sweep_log = (
        (project / "results" / "logs" / GN_EACH.relative_to("results")).with_suffix(".log").read_text()
    )
    assert f"{total - len(finished)} of {total} chunk(s) computed" in sweep_log
    assert {k: v for k, v in chunks(project).items() if k in finished} == finished, (
        "finished chunks were rewritten"
    )
    mine, theirs = outputs(project), outputs(uninterrupted)
    assert sorted(mine) == sorted(theirs) and len(mine) > 30
    differ = [k for k in theirs if mine[k][0] != theirs[k][0]]
    assert not differ, f"resumed outputs differ from the uninterrupted run: {differ}"
    assert any(k.endswith(".pdf") for k in mine) and any(k.endswith(".png") for k in mine)


def test_a_config_change_leaves_no_output_at_the_old_value(uninterrupted, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(uninterrupted, project, symlinks=True)  # keeps mtimes and Snakemake's records
    before = outputs(project)
    config = project / "config" / "demo.yaml"
    config.write_text(config.read_text().replace("nu: 3.0", "nu: 2.0"))
    run_workflow(project, f"{sys.executable} -m snakemake --cores 2")
    after = outputs(project)
    assert sorted(after) == sorted(before)
    rewritten = {k for k in after if after[k][1] != before[k][1]}

    # nothing upstream of the sweeps ran: their inputs do not depend on the noise
    upstream = {k for k in after if re.match(r"results/(toy|models|prompts|cache|analysis/ioi_)", k)}
    # nor the practice summary: the tiny models have no known circuit, so it lists them as skipped
    upstream |= {"results/tables/practices_summary.md", "results/tables/practices_summary.json"}
    assert upstream and not upstream & rewritten, sorted(upstream & rewritten)
    # everything else was rewritten; nothing there can still hold a nu=3 result
    assert rewritten == set(after) - upstream, sorted(set(after) - upstream - rewritten)

    gn, st = [], []
    for k in after:
        if k.endswith(".parquet") and ("/gn/" in k or "/str/" in k):
            (gn if "/gn/" in k else st).append(k)
            meta = read_frame(project / k).attrs["patchbench"]
            if "/gn/" in k:
                assert meta["spec"]["noise"]["nu"] == 2.0, k
                assert after[k][0] != before[k][0], f"{k} is unchanged after nu changed"
            else:  # STR does not depend on nu: same bytes, and its sweeps reused every chunk
                assert meta["spec"]["noise"] is None and after[k][0] == before[k][0], k
    logs = project / "results" / "logs"
    for log in (logs / "sweeps").rglob("str/*.log"):
        assert re.search(r"sweep done: \d+ rows, 0 of \d+ chunk\(s\) computed", log.read_text()), log
    for log in (logs / "attrib").rglob("str/*.log"):
        assert "reusing the raw frame of checkpoint" in log.read_text(), log
    for log in (logs / "sweeps").rglob("gn/*.log"):
        text = log.read_text()
        assert "holds another sweep" in text and not re.search(r" 0 of \d+ chunk\(s\) computed", text), log

    again = run_workflow(project, f"{sys.executable} -m snakemake --cores 2 -n")
    assert "Nothing to be done" in again.stdout + again.stderr
    print(
        f"\nnu 3.0 -> 2.0: {len(rewritten)} of {len(after)} outputs rewritten, {len(upstream)} upstream untouched; "
        f"{len(gn)} GN frames now at nu=2.0 with new values, {len(st)} STR frames byte-identical (0 chunks recomputed)"
    )
