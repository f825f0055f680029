"""Nothing stale survives a change Snakemake cannot see (patchbench.staleness).

Unit tests of the pieces (stamps, recorded fingerprints, file digests, what identifies a model or a
task's files), then the real workflow: a small project (a copy of a shipped toy model with
``path:``, six IOI prompts, one head sweep under STR and GN) is run once; each test copies the
finished project without ``.snakemake/`` (a fresh clone over an existing results directory,
modification times kept), changes one input by content only (the file's old modification time
restored) or one config value, and checks that Snakemake plans exactly the jobs that depend on
it, and nothing when nothing changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import ROOT, run_workflow
from patchbench.staleness import (
    RECORD_KEY,
    Digests,
    hub_commit,
    model_sources,
    recorded,
    refresh_stamp,
)
from patchbench.tasks import task_files

MODEL = "toy-a"


# ============================================================================= the pieces
def frame(path: Path, fingerprint: str | None) -> Path:
    meta = {b"patchbench": json.dumps({} if fingerprint is None else {RECORD_KEY: fingerprint}).encode()}
    pq.write_table(pa.table({"x": [1, 2]}).replace_schema_metadata(meta), path)
    return path


def test_a_stamp_is_older_than_every_output_exactly_when_they_record_the_fingerprint(tmp_path):
    out, stamp = frame(tmp_path / "a.parquet", "f1"), tmp_path / "s" / "stamp.json"
    assert refresh_stamp(stamp, {str(out): "f1"}, "job1") is None
    assert stamp.stat().st_mtime_ns == 0 and json.loads(stamp.read_text()) == {"fingerprint": "job1"}

    before = time.time_ns()
    why = refresh_stamp(stamp, {str(out): "f2"}, "job2")
    assert why == f"{out} records fingerprint f1, the config and inputs give f2"
    assert stamp.stat().st_mtime_ns >= before - 10**9 and json.loads(stamp.read_text())["stale"] == {
        str(out): "f1"
    }

    frame(out, None)  # written before fingerprints were recorded
    assert "records fingerprint none" in refresh_stamp(stamp, {str(out): "f2"}, "job2")
    out.write_bytes(out.read_bytes()[:20])  # truncated
    assert "records fingerprint unreadable" in refresh_stamp(stamp, {str(out): "f2"}, "job2")
    frame(out, "f2")
    assert refresh_stamp(stamp, {str(out): "f2"}, "job2") is None and stamp.stat().st_mtime_ns == 0


def test_a_job_whose_outputs_cannot_record_has_its_stamp_rewritten_when_its_fingerprint_changes(tmp_path):
    out, stamp = tmp_path / "table.csv", tmp_path / "stamp.json"
    out.write_text("a,b\n")
    refresh_stamp(stamp, {str(out): "f1"}, "job1")
    os.utime(stamp, ns=(10**18, 10**18))
    refresh_stamp(stamp, {str(out): "f1"}, "job1")
    assert stamp.stat().st_mtime_ns == 10**18, "an unchanged fingerprint rewrote the stamp"
    refresh_stamp(stamp, {str(out): "f2"}, "job2")
    assert stamp.stat().st_mtime_ns != 10**18 and json.loads(stamp.read_text()) == {"fingerprint": "job2"}


def test_recorded_reads_frames_and_safetensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    assert recorded(frame(tmp_path / "a.parquet", "abc")) == "abc"
    assert recorded(frame(tmp_path / "b.parquet", None)) is None
    from patchbench.engine.cache import load_cache, save_cache

    save_cache({"t": torch.zeros(2)}, tmp_path / "c.safetensors", "cachefp", job_fingerprint="xyz")
    assert (
        recorded(tmp_path / "c.safetensors") == "xyz"
        and load_cache(tmp_path / "c.safetensors", "cpu")[1] == "cachefp"
    )
    first = (tmp_path / "c.safetensors").read_bytes()
    save_cache({"t": torch.zeros(2)}, tmp_path / "c.safetensors", "cachefp", job_fingerprint="xyz")
    assert (tmp_path / "c.safetensors").read_bytes() == first, "equal caches must be equal files"
    save_file({"t": torch.zeros(2)}, str(tmp_path / "d.safetensors"))
    assert recorded(tmp_path / "d.safetensors") is None
    (tmp_path / "d.parquet").write_bytes(b"PAR1 garbage")
    assert recorded(tmp_path / "d.parquet").startswith("unreadable")


def test_file_digests_follow_the_content_and_are_memoised(tmp_path):
    f, memo = tmp_path / "w.bin", tmp_path / "memo" / "digests.json"
    f.write_bytes(b"abc")
    digests = Digests(memo)
    first = digests.of(f)
    digests.save()
    assert json.loads(memo.read_text())[str(f.resolve())]["sha256"] == first
    assert Digests(memo).of(f) == first
    st = f.stat()
    time.sleep(0.01)
    f.write_bytes(b"abd")  # in place: same inode and size, its old modification time restored
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_ino, f.stat().st_size, f.stat().st_mtime_ns) == (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    )
    assert Digests(memo).of(f) != first, "a memoised digest outlived the content it was computed from"
    assert Digests(memo).of(tmp_path / "none") == "missing"


def test_what_identifies_a_model(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from patchbench.models import ModelSpec

    toy = tmp_path / "toy"
    shutil.copytree(ROOT / "models" / "organisms" / "organism-docstring", toy)
    spec = ModelSpec(name="t", source="toy", path=str(toy))
    weights, tokenizer = (model_sources(spec, part, Digests()) for part in ("weights", "tokenizer"))
    assert sorted(weights["files"]) == ["config.json", "model.safetensors"]
    assert sorted(tokenizer["files"]) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert model_sources(spec, "weights", Digests(), made_here=True) == {}
    random = ModelSpec(name="r", source="toy", path=str(toy), init="random")
    assert model_sources(random, "weights", Digests()) == {}

    snap = tmp_path / "hub" / "models--gpt2" / "snapshots" / "c0ffee"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--gpt2" / "refs" / "main").write_text("c0ffee")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = ModelSpec(name="gpt2", source="hub", hub_name="gpt2")
    assert model_sources(hub, "weights", Digests()) == {"hub": "gpt2@c0ffee"}
    (tmp_path / "hub" / "models--gpt2" / "refs" / "main").write_text("beef42")
    hub_commit.cache_clear()  # asked once per process (one planning)
    (snap.parent / "beef42").mkdir()
    (snap.parent / "beef42" / "config.json").write_text("{}")
    assert model_sources(hub, "tokenizer", Digests()) == {"hub": "gpt2@beef42"}
    other = ModelSpec(name="x", source="hub", hub_name="nobody/nothing")
    assert model_sources(other, "weights", Digests()) == {"hub": "nobody/nothing@not-in-cache"}


def test_the_files_a_task_reads():
    """A built-in task reads its vocabulary under data_dir; a task read from a file (``tasks.<name>.file``) that file."""
    config = {
        "data_dir": "data/toy",
        "tasks": {"ioi": {"n_prompts": 3}, "capitals": {"file": "my/prompts.csv"}},
    }
    assert task_files(config, "ioi") == ["data/toy/ioi/ioi_vocab.json"]
    assert task_files(config, "capitals") == ["my/prompts.csv"]


# ============================================================================= the workflow
CONFIG = {
    "data_dir": "data/toy",
    "filter_correct": False,
    "noise": {"nu": 3.0, "n_samples": 1, "seed": 0},
    "engine": {"check_identities": False},
    "models": {
        MODEL: {
            "source": "toy",
            "path": f"models/{MODEL}",
            "memory_budget_mb": 64,
            "resources": {"threads": 1},
        }
    },
    "tasks": {"ioi": {"n_prompts": 6, "seed": 0}, "pairs": {"file": "data/pairs.csv"}},
    "experiments": {
        "heads": {"task": "ioi", "models": [MODEL], "corruptions": ["str", "gn"], "site": "attn_head"},
        "file_heads": {"task": "pairs", "models": [MODEL], "corruptions": ["str"], "site": "attn_head"},
    },
}
EFFECTS = [
    *(f"results/effects/{MODEL}/ioi/{c}/attn_head-all_w1.parquet" for c in ("str", "gn")),
    f"results/effects/{MODEL}/pairs/str/attn_head-all_w1.parquet",
]
RAW = {c: f"results/sweeps/{MODEL}/ioi/{c}/attn_head-all_w1.parquet" for c in ("str", "gn")}
#: what reruns after the IOI task's or the file task's prompts change
IOI_CHAIN = {"prompts": 1, "filter_correct": 1, "clean_cache": 1, "sweep_heads": 1, "effects": 2}
FILE_CHAIN = {"prompts": 1, "filter_correct": 1, "clean_cache": 1, "sweep_file_heads": 1, "effects": 1}


def write_pairs(path: Path, model_dir: Path) -> None:
    """A file of prompt pairs (a task read from a file): six IOI prompts written out as text."""
    import csv

    from patchbench.models import ModelSpec, load_tokenizer
    from patchbench.tasks import build_task
    from patchbench.tokenizing import decode

    tok = load_tokenizer(ModelSpec(name=MODEL, source="toy", path=str(model_dir)))
    ps = build_task("ioi", tok, ROOT / "data" / "toy", n_prompts=6, seed=3)
    with open(path, "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=["clean", "corrupted", "answer", "wrong"])
        out.writeheader()
        for i in range(len(ps)):
            out.writerow({"clean": ps.meta["text"].iloc[i], "corrupted": ps.meta["corrupted_text"].iloc[i],
                          "answer": decode(tok, ps.answers[i]).strip(), "wrong": decode(tok, ps.wrong[i]).strip()})  # fmt: skip


def snakemake(project: Path, *args: str) -> str:
    res = run_workflow(
        project, " ".join([sys.executable, "-m", "snakemake", "--cores", "1", *args, *EFFECTS])
    )
    return res.stdout + res.stderr


def planned(project: Path) -> dict[str, int]:
    """The jobs a dry run plans, by rule (``{}`` for "Nothing to be done")."""
    text = snakemake(project, "-n")
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The small project, run once."""
    project = tmp_path_factory.mktemp("staleness") / "project"
    project.mkdir()
    for part in ("Snakefile", "workflow", "profiles", "data/toy"):
        src, dst = ROOT / part, project / part
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    shutil.copytree(ROOT / "models" / "organisms" / "organism-docstring", project / "models" / MODEL)
    write_pairs(project / "data" / "pairs.csv", project / "models" / MODEL)
    (project / "config").mkdir()
    (project / "config" / "demo.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    snakemake(project)
    return project


def fresh_clone(finished: Path, where: Path) -> Path:
    """The finished project copied with its modification times, without ``.snakemake/``."""
    shutil.copytree(finished, where, symlinks=True)
    shutil.rmtree(where / ".snakemake")
    return where


def rewrite_keeping_mtime(path: Path, edit) -> None:
    """Change a file's content and restore its modification time: only its content says it changed."""
    st = path.stat()
    edit(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def report(kind: str, plan: dict[str, int]) -> None:
    print(
        f"\nstaleness [{kind}] in a clone without .snakemake/: reruns {dict(sorted(plan.items())) or 'nothing'}"
    )


@pytest.mark.slow
def test_a_fresh_clone_of_a_finished_run_has_nothing_to_do(finished, tmp_path):
    plan = planned(fresh_clone(finished, tmp_path / "clone"))
    report("nothing changed", plan)
    assert plan == {}


@pytest.mark.slow
def test_new_weights_rerun_every_job_that_loads_the_model_and_nothing_else(finished, tmp_path):
    from safetensors.torch import load_file, save_file

    project = fresh_clone(finished, tmp_path / "clone")

    def scale(path):
        state = load_file(str(path))
        state["blocks.0.attn.W_Q"] = state["blocks.0.attn.W_Q"] * 1.5
        save_file(state, str(path))

    rewrite_keeping_mtime(project / "models" / MODEL / "model.safetensors", scale)
    plan = planned(project)
    report("weights", plan)
    assert plan == {
        "filter_correct": 2,
        "clean_cache": 2,
        "sweep_heads": 1,
        "sweep_file_heads": 1,
        "effects": 3,
    }


@pytest.mark.slow
def test_a_permuted_tokenizer_reruns_the_prompts_and_everything_after_them(finished, tmp_path):
    project = fresh_clone(finished, tmp_path / "clone")

    def permute(path):
        tok = json.loads(path.read_text())
        vocab = tok["model"]["vocab"]
        vocab["Ada"], vocab["Basil"] = vocab["Basil"], vocab["Ada"]
        path.write_text(json.dumps(tok))

    rewrite_keeping_mtime(project / "models" / MODEL / "tokenizer.json", permute)
    plan = planned(project)
    report("tokenizer", plan)
    assert plan == {k: IOI_CHAIN.get(k, 0) + FILE_CHAIN.get(k, 0) for k in {**IOI_CHAIN, **FILE_CHAIN}}


@pytest.mark.slow
def test_an_edited_task_data_file_reruns_the_prompts_and_everything_after_them(finished, tmp_path):
    """A file a task reads (here the IOI vocabulary; a task's own prompt file the same way)."""
    project = fresh_clone(finished, tmp_path / "clone")

    def reorder(path):
        vocab = json.loads(path.read_text())
        vocab["places"] = vocab["places"][::-1]
        path.write_text(json.dumps(vocab))

    rewrite_keeping_mtime(project / "data" / "toy" / "ioi" / "ioi_vocab.json", reorder)
    plan = planned(project)
    report("task data file", plan)
    assert plan == IOI_CHAIN


@pytest.mark.slow
def test_an_edited_prompt_file_reruns_its_task_and_nothing_else(finished, tmp_path):
    """A task read from a file of prompt pairs (``tasks.pairs.file``): one row's answers swapped."""
    project = fresh_clone(finished, tmp_path / "clone")

    def swap(path):
        head, *rows = path.read_text().splitlines()
        first = rows[0].rsplit(",", 2)
        rows[0] = ",".join([first[0], first[2], first[1]])
        path.write_text("\n".join([head, *rows]) + "\n")

    rewrite_keeping_mtime(project / "data" / "pairs.csv", swap)
    plan = planned(project)
    report("prompt file", plan)
    assert plan == FILE_CHAIN


@pytest.mark.slow
def test_a_config_value_reruns_its_jobs_then_nothing_is_stale(finished, tmp_path):
    """noise.seed: the GN sweep's job reruns, its STR frame keeps its bytes; the next plan is empty."""
    project = fresh_clone(finished, tmp_path / "clone")
    config = project / "config" / "demo.yaml"
    config.write_text(config.read_text().replace("seed: 0\n", "seed: 1\n", 1))
    assert yaml.safe_load(config.read_text())["noise"]["seed"] == 1
    plan = planned(project)
    report("config value (noise.seed)", plan)
    assert plan == {"sweep_heads": 1, "effects": 2}

    before = {p: (project / p).read_bytes() for p in (*RAW.values(), f"results/prompts/{MODEL}/ioi.parquet")}
    snakemake(project)
    from patchbench.rawframe import read_frame

    assert read_frame(project / RAW["gn"]).attrs["patchbench"]["spec"]["noise"]["seed"] == 1
    assert (project / RAW["gn"]).read_bytes() != before[RAW["gn"]]
    assert (project / RAW["str"]).read_bytes() == before[RAW["str"]], "STR does not depend on the noise seed"
    assert planned(project) == {}
    shutil.rmtree(project / ".snakemake")
    assert planned(project) == {}, "after the rerun, a clone without .snakemake/ still finds something stale"


@pytest.mark.slow
def test_a_truncated_sweep_is_rebuilt_by_the_command_its_message_names(
    finished, tmp_path, capsys, monkeypatch
):
    """The frame's reader names the fix; following it rebuilds the file byte for byte."""
    from patchbench import cli

    project = fresh_clone(finished, tmp_path / "clone")
    raw = project / RAW["gn"]
    good = raw.read_bytes()
    raw.write_bytes(good[: len(good) // 2])
    assert planned(project) == {"sweep_heads": 1, "effects": 2}, "the damaged frame is not seen as stale"

    monkeypatch.chdir(project)
    assert cli.main(["effects", RAW["gn"], "--out", str(tmp_path / "e.parquet")]) == 2
    message = capsys.readouterr().err
    assert "not a readable Parquet frame" in message and "Traceback" not in message
    fix = re.search(r"delete it and run (snakemake --cores 1 \S+)", message)
    assert fix, message
    raw.unlink()
    run_workflow(project, fix.group(1).replace("snakemake", f"{sys.executable} -m snakemake", 1))
    assert raw.read_bytes() == good
    print(f"\ntruncated {RAW['gn']}: `{fix.group(1)}` after deleting it rebuilt it byte-identical")
