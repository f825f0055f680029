"""Resumability: a sweep killed with SIGKILL part-way resumes from its finished chunks.

The rerun's frame must be bitwise identical to an uninterrupted run, and the chunks finished
before the kill must be neither recomputed nor rewritten.
"""

from __future__ import annotations

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


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):

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

    n_chunks = full.attrs["patchbench"]["chunks_computed"]
    assert 4 <= len(finished) < n_chunks, "the kill happened part-way"
    assert resumed.attrs["patchbench"]["chunks_computed"] == n_chunks - len(finished)
    assert {
        p.name: p.stat().st_mtime_ns for p in ckpt.glob("chunk-*.parquet") if p.name in finished
    } == finished
    assert len(list(ckpt.glob("chunk-*.parquet"))) == n_chunks
    pd.testing.assert_frame_equal(resumed, full, check_exact=True)
    for c in ("logit_ans", "logit_wrong", "prob_ans", "prob_wrong", "kl"):
        assert (resumed[c].to_numpy().view("int64") == full[c].to_numpy().view("int64")).all()

    # a checkpoint directory of another sweep is refused, not silently mixed in
    with pytest.raises(ValueError, match="another sweep"):
        run_sweep(
            model,
            prompts,
            SweepSpec("str", "attn_head", memory_budget_mb=1),
            progress=False,
            checkpoint_dir=ckpt,
        )
