"""Freed memory kept for the next large feature build instead of going back to the kernel.

A feature build over millions of rows allocates and frees dozens of arrays the length of the
log. glibc's malloc hands freed memory at the top of its heaps back to the kernel once more
than a threshold is free (a threshold it adapts, at most 64 MiB), so the next build's arrays
arrive as fresh pages that the kernel zeroes on first touch: about 20,000 page faults and a
tenth of the CPU time of a build of 3 million rows. Training (a build per cutoff), batch
scoring (a build per chunk) and a benchmark's repeated builds run many builds in one
process, so the first large build raises the trim threshold to ``TRIM_THRESHOLD`` and fixes
the mmap threshold at glibc's ceiling (32 MiB on 64-bit): arrays up to that size then come
from memory the process already holds. The cost is resident memory that stays near the
process's peak (at most ``TRIM_THRESHOLD`` above what it uses). Other C libraries (musl,
macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

__all__ = ["TRIM_THRESHOLD", "reuse_freed_memory"]

TRIM_THRESHOLD = 256 * 1024 * 1024
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_lock = threading.Lock()
_done = False
_applied = False


def reuse_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory (once per process); whether it is set."""
    global _done
    with _lock:
        if not _done:
            _done = True
            _set_thresholds()
        return _applied


def _set_thresholds() -> None:
    global _applied
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; setting either turns off glibc's own adjustment
    _applied = bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
