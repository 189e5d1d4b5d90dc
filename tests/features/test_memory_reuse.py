"""A large feature build's freed memory serves the next build without new page faults."""

from __future__ import annotations

import platform
import resource

import numpy as np
import pytest

from features.memory_reuse import reuse_freed_memory

_ROWS = 3_000_000  # float64 arrays of 24 MB, the length of a 3M-row log's columns


def _faults_of_one_round() -> int:
    """Minor page faults while eight log-length arrays are alive at once, then freed (what
    a build does many times over)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(_ROWS) for _ in range(8)]
    total = sum(float(a[::4096].sum()) for a in arrays)
    del arrays
    assert total == 8 * len(range(0, _ROWS, 4096))
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_arrays_are_reused_without_page_faults() -> None:
    assert reuse_freed_memory()
    assert reuse_freed_memory()  # once per process; later calls say it is set
    _faults_of_one_round()  # the process grows to hold the round once
    faults = min(_faults_of_one_round() for _ in range(3))
    # a round touches 192 MB: glibc's own thresholds hand most of it back in between, and
    # the next round faults it in again (about 4,000 faults here, with huge pages)
    assert faults < 500, faults
