"""Resumability: a sweep killed with SIGKILL part-way resumes from its finished chunks.

The rerun's frame must be bitwise identical to an uninterrupted run, and the chunks finished
before the kill must be neither recomputed nor rewritten. A checkpoint of another sweep, and a
damaged chunk, are discarded and recomputed (with a warning), never trusted and never fatal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_model, make_prompts
from patchbench.corruption import NoiseSpec
from patchbench.engine.sweep import run_sweep
from patchbench.sites import SweepSpec

TESTS = Path(__file__).parent
SPEC = SweepSpec("gn", "attn_head", layers=(0, 2), noise=NoiseSpec(n_samples=2), memory_budget_mb=1)

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from conftest import make_model, make_prompts
    from patchbench.engine import patch, sweep
    from patchbench.corruption import NoiseSpec
    from patchbench.sites import SweepSpec

    real = patch.patched_logits
    def slow(*a, **k):  # give the parent time to kill us part-way
        out = real(*a, **k)
        time.sleep(0.15)
        return out
    patch.patched_logits = slow
    model = make_model()
    spec = SweepSpec("gn", "attn_head", layers=(0, 2), noise=NoiseSpec(n_samples=2), memory_budget_mb=1)
    sweep.run_sweep(model, make_prompts(model=model), spec, progress=False, checkpoint_dir={ckpt!r})
    print("FINISHED")
    """
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, caplog):

    ckpt = tmp_path / "chunks"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), ckpt=str(ckpt)))
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=fh)
    deadline = time.time() + 120
    try:
        while len(list(ckpt.glob("chunk-*.parquet"))) < 4:
            if proc.poll() is not None:
                raise AssertionError(f"sweep subprocess ended early: {err.read_text()[-2000:]}")
            if time.time() > deadline:
                raise AssertionError("sweep subprocess wrote no chunks within 120 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = {p.name: p.stat().st_mtime_ns for p in ckpt.glob("chunk-*.parquet")}

    model = make_model()
    prompts = make_prompts(model=model)
    resumed = run_sweep(model, prompts, SPEC, progress=False, checkpoint_dir=ckpt)
    full = run_sweep(model, prompts, SPEC, progress=False)

    n_chunks = full.attrs["patchbench_run"]["chunks_computed"]
    assert 4 <= len(finished) < n_chunks, "the kill happened part-way"
    assert resumed.attrs["patchbench_run"]["chunks_computed"] == n_chunks - len(finished)
    assert "chunks_computed" not in resumed.attrs["patchbench"]  # the files of both runs are the same bytes
    assert resumed.attrs["patchbench"] == full.attrs["patchbench"]
    assert {
        p.name: p.stat().st_mtime_ns for p in ckpt.glob("chunk-*.parquet") if p.name in finished
    } == finished
    assert len(list(ckpt.glob("chunk-*.parquet"))) == n_chunks
    pd.testing.assert_frame_equal(resumed, full, check_exact=True)
    for c in ("logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl"):
        assert (resumed[c].to_numpy().view("int64") == full[c].to_numpy().view("int64")).all()

    # a checkpoint directory of another sweep is discarded and recomputed, not silently mixed in
    other = SweepSpec("str", "attn_head", memory_budget_mb=1)
    with caplog.at_level(logging.WARNING):
        mixed = run_sweep(model, prompts, other, progress=False, checkpoint_dir=ckpt)
    assert "another sweep" in caplog.text and "discarding" in caplog.text
    fresh = run_sweep(model, prompts, other, progress=False)
    assert (
        mixed.attrs["patchbench_run"]["chunks_computed"] == fresh.attrs["patchbench_run"]["chunks_computed"]
    )
    pd.testing.assert_frame_equal(mixed, fresh, check_exact=True)


def _changed(model, prompts, what):
    """A copy of the sweep's inputs with one fact changed that the checkpoint fingerprint must notice."""
    import dataclasses

    import torch

    def other(ids, avoid):  # another token id, never the prompt's other answer
        return [
            [next(x for x in range(1, 100) if x not in (int(i[0]), int(a[0])))]
            for i, a in zip(ids, avoid, strict=True)
        ]

    if what == "answers":
        return model, dataclasses.replace(prompts, answers=other(prompts.answers, prompts.wrong))
    if what == "wrong":
        return model, dataclasses.replace(prompts, wrong=other(prompts.wrong, prompts.answers))
    if what == "positions":
        return model, dataclasses.replace(prompts, noise_positions=[[0] for _ in prompts.noise_positions])
    changed = make_model()
    deep = [p for n, p in changed.bridge.named_parameters() if n.startswith("layers.2.") and ".attn." in n]
    with torch.no_grad():
        deep[-1].view(-1)[5] += 0.5  # one weight deep in the model (not in the first four tensors)
    return changed, prompts


@pytest.mark.parametrize("what", ["answers", "wrong", "positions", "weights"])
def test_a_checkpoint_of_other_inputs_is_recomputed_not_trusted(tmp_path, caplog, what):
    """Reusing a checkpoint directory with other answers, wrong answers, noise positions or weights
    computes every chunk again and gives the same frame as a fresh run (issue #14: it used to compute
    0 chunks and return effects off by up to 11.2)."""
    model = make_model()
    prompts = make_prompts(model=model)
    run_sweep(model, prompts, SPEC, progress=False, checkpoint_dir=tmp_path)
    model2, prompts2 = _changed(model, prompts, what)
    with caplog.at_level(logging.WARNING):
        reused = run_sweep(model2, prompts2, SPEC, progress=False, checkpoint_dir=tmp_path)
    fresh = run_sweep(model2, prompts2, SPEC, progress=False)
    assert "holds another sweep" in caplog.text
    assert reused.attrs["patchbench_run"]["chunks_computed"] == fresh.attrs["patchbench_run"]["chunks"]
    pd.testing.assert_frame_equal(reused, fresh, check_exact=True)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_rows"])
def test_a_damaged_chunk_is_discarded_and_recomputed(tmp_path, caplog, damage):
    model = make_model()
    prompts = make_prompts(model=model)
    full = run_sweep(model, prompts, SPEC, progress=False, checkpoint_dir=tmp_path)
    chunk = sorted(tmp_path.glob("chunk-*.parquet"))[3]
    data = chunk.read_bytes()
    if damage == "truncate":
        chunk.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        chunk.write_bytes(b"not parquet at all")
    else:
        pd.read_parquet(chunk).iloc[:1].to_parquet(chunk, index=False)
    with caplog.at_level(logging.WARNING):
        again = run_sweep(model, prompts, SPEC, progress=False, checkpoint_dir=tmp_path)
    assert f"discarding checkpoint chunk {chunk}" in caplog.text
    assert again.attrs["patchbench_run"]["chunks_computed"] == 1
    pd.testing.assert_frame_equal(again, full, check_exact=True)
