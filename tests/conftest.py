"""Shared fixtures: project paths, the mirrored data directory, the real GPT-2 tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# CI and developers keep the offline data mirror beside the checkout (../shared/data).
MIRROR = Path(os.environ.get("PATCHBENCH_MIRROR", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread avoids thread contention on a 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "gpt2-tokenizer" / "vocab.json").is_file():
        raise FileNotFoundError(
            f"the offline data mirror is not at {MIRROR}; put ../shared/data beside the checkout "
            "or set PATCHBENCH_MIRROR"
        )
    return MIRROR


@pytest.fixture(scope="session")
def gpt2_tokenizer(mirror):
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(str(mirror / "gpt2-tokenizer"))
    tok.pad_token = tok.eos_token
    return tok
