"""Freed memory stays with the process: glibc's heap settings for the engine's allocation pattern.

A sweep allocates the same large activations chunk after chunk. With glibc's defaults a freed
block above the (dynamic) mmap threshold goes back to the operating system and the next
allocation faults it in again page by page: measured on the GPT-2-small all-heads benchmark case,
millions of minor page faults and a third of the run in the kernel. :func:`keep_freed_memory`
raises the mmap threshold to its maximum (32 MiB) and the trim threshold far above any sweep, once
per process; tensors below 32 MiB are then reused from the heap (the engine keeps its forwards'
activations below it, :func:`patchbench.engine.budget.tokens_per_forward`). A no-op where the C
library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

from patchbench.engine.budget import LARGE_ALLOCATION

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TRIM = 2**31 - 1  # the largest int: the heap's top is kept


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (once per process); whether they are set."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        ok = bool(mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM))
    except (OSError, AttributeError):
        ok = False
    log.debug("glibc heap thresholds %s", "set" if ok else "not set (no glibc mallopt)")
    return ok
