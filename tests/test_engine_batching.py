"""How the engine batches a sweep's patched runs (issue #17): rows join a chunk's forward at their
own start layer, a forward stays under the token cap, the sanity identities run on one row per
answer position, and the heap keeps freed memory. Equality with the full recompute and with
TransformerLens is tested per site in test_suffix_reuse.py and test_patching.py; these tests check
that the batching they exercise is the one described."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import N_LAYERS, make_model, make_prompts
from patchbench.engine import sweep as sweep_mod
from patchbench.engine.budget import LARGE_ALLOCATION, tokens_per_forward
from patchbench.engine.cache import RESID0, clean_cache
from patchbench.engine.sweep import chunk_targets, run_sweep
from patchbench.lm import LM
from patchbench.sites import SweepSpec, enumerate_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> LM:
    return make_model()


@pytest.fixture(scope="module")
def prompts(model):
    return make_prompts(model=model)


@pytest.mark.parametrize("site", ["mlp", "attn_head"])
def test_rows_join_the_forward_at_their_own_start_layer(model, prompts, site, monkeypatch):
    """One chunk holds targets of every start layer; its forward runs each layer once, on the rows of
    the targets that have entered by then (the head-output shortcut's targets enter after their
    layer), and gives the full recompute's numbers."""
    spec = SweepSpec("str", site, position="X")
    calls: list[tuple[int, int, int]] = []
    chunks: list[set[int]] = []
    run_blocks, patched = LM.run_blocks, sweep_mod.patch.patched_logits

    def spy_blocks(self, resid, start, stop=None, **kw):
        calls.append((start, self.shape.n_layers if stop is None else stop, resid.shape[0]))
        return run_blocks(self, resid, start, stop, **kw)

    def spy_patched(m, chunk, *a, **k):
        chunks.append({t.start_layer for t in chunk})
        return patched(m, chunk, *a, **k)

    targets = enumerate_targets(spec, N_LAYERS, model.site_heads(site), 6)
    clean = clean_cache(model, prompts, [*dict.fromkeys(h for t in targets for h in t.hooks), RESID0])
    model.head_shortcut()  # its one-off check runs blocks too
    with monkeypatch.context() as mp:
        mp.setattr(LM, "run_blocks", spy_blocks)
        mp.setattr(sweep_mod.patch, "patched_logits", spy_patched)
        fast = run_sweep(model, prompts, spec, clean, progress=False, check_identities=False)
    assert chunks == [set(range(N_LAYERS))], chunks  # one chunk, every start layer
    patched_calls = calls[1:]  # calls[0] is the corrupted run
    assert calls[0][:2] == (0, N_LAYERS)
    r = len(prompts)
    per_layer = len(targets) // N_LAYERS
    if site == "mlp":  # targets of layer i enter before layer i
        want = [(i, i + 1, (i + 1) * per_layer * r) for i in range(N_LAYERS)]
    else:  # ... after layer i (its attention is skipped); the last layer's rows run no block
        want = [(i + 1, i + 2, (i + 1) * per_layer * r) for i in range(N_LAYERS - 1)]
    assert patched_calls == want
    full = run_sweep(model, prompts, spec, progress=False, suffix_reuse=False, head_shortcut=False)
    cols = ["logit_ans", "logit_wrong", "prob_ans", "kl"]
    assert np.abs(fast[cols].to_numpy() - full[cols].to_numpy()).max() < 1e-10


def test_chunks_stay_under_the_token_cap():
    """No chunk's forward holds more than ``max_tokens`` token rows (rows x positions it runs), on the
    suffix path and the full one; every target is in exactly one chunk."""
    spec = SweepSpec("str", "attn_head", position="each")
    targets = enumerate_targets(spec, 4, 8, 20)
    rows, max_len = 3, 20
    for by_position, cap in [(True, 200), (True, 60), (False, 200), (False, 60)]:
        chunks = chunk_targets(targets, 10_000, by_position, max_len, 4, rows=rows, max_tokens=cap)
        assert sorted(t.id for c in chunks for t in c) == sorted(t.id for t in targets)
        for c in chunks:
            positions = max_len - min(t.position for t in c) if by_position else max_len
            assert len(c) == 1 or len(c) * rows * positions <= cap, (by_position, cap, len(c))
            assert [t.start_layer for t in c] == sorted(t.start_layer for t in c)
        uncapped = chunk_targets(targets, 10_000, by_position, max_len, 4, rows=rows)
        assert len(chunks) > len(uncapped)
    # a named position runs from its earliest position in any prompt (here 18 of 20: 2 positions)
    named = enumerate_targets(SweepSpec("str", "attn_head", position="X"), 4, 8, 20)
    chunks = chunk_targets(named, 10_000, True, max_len, 4, rows=rows, max_tokens=60, first={"X": 18})
    assert [len(c) for c in chunks] == [10, 10, 10, 2]


def test_token_cap_keeps_the_widest_activation_under_the_large_allocation(model):
    s = model.shape
    n = tokens_per_forward(s)
    widest = max(s.d_mlp, 3 * s.n_heads * s.d_head, s.d_model) * 8  # float64
    assert n * widest <= LARGE_ALLOCATION < (n + 1) * widest


def test_identities_run_on_one_row_per_answer_position(model, prompts):
    """The ragged prompts have two answer positions: the identities run on the first row of each."""
    raw = run_sweep(model, prompts, SweepSpec("str", "mlp", position="X"), progress=False)
    pos = np.asarray(prompts.answer_pos)
    assert len(set(pos.tolist())) == 2
    want = [int(np.flatnonzero(pos == p)[0]) for p in sorted(set(pos.tolist()))]
    assert raw.attrs["patchbench"]["sanity"]["rows"] == want


HEAP = """
import ctypes, sys, torch
from patchbench.engine.heap import keep_freed_memory
torch.set_num_threads(1)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
xs = [torch.ones(5 * 2**20) for _ in range(5)]  # a chunk's activations: five 20 MiB tensors
del xs
print(libc.mallinfo2().fordblks >> 20)  # MiB free in the heap, kept for the next chunk
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap: Linux only")
def test_freed_memory_stays_in_the_heap_for_the_next_chunk():
    """After keep_freed_memory, a chunk's 100 MiB of freed tensors stay in the heap (glibc's own
    accounting, mallinfo2), so the next chunk's tensors are not faulted in again page by page; with
    glibc's defaults the heap's top is trimmed back to the operating system."""

    def free_mib(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", HEAP, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    default, kept = free_mib("default"), free_mib("keep")
    assert default < 50, default
    assert kept >= 100, kept
