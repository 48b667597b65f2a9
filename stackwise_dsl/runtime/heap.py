"""Keeping the temporaries of building a stage from staying resident (glibc only).

glibc serves allocations above its mmap threshold with mmap and returns them when freed;
below it they come from the heap, where freed blocks stay resident. The threshold starts at
128 KiB and rises as large blocks are freed, up to 32 MiB. Building a stage quantizes stack
after stack, each through temporaries of many megabytes, so after the first few they all
came from the heap: quantizing a 720 MB trunk to NVFP4 left about 1 GB resident instead of
130 MB. While a stage is built the threshold is held at 1 MiB, so those temporaries are
mapped and returned; afterwards it is held at 32 MiB, where it ends up anyway, so the
training step's buffers are reused from the heap instead of mapped afresh every step (a
1 MiB threshold throughout made steps 25-90% slower). Elsewhere nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # malloc.h


def _set_threshold(size: int) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, size)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def building():
    """Around building a stage's model."""
    _set_threshold(1 << 20)
    try:
        yield
    finally:
        _set_threshold(32 << 20)
