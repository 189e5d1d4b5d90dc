"""``distinct_pair_per_group`` (two columns in one bit set) against ``distinct_per_group`` of
each column, and that against a count of distinct pairs, on random grouped codes."""

from __future__ import annotations

import numpy as np
import pytest

from features.group_values import distinct_pair_per_group, distinct_per_group


def _grouped(rng: np.random.Generator, n_rows: int, n_values: int) -> np.ndarray:
    codes = rng.integers(-1, max(n_values, 1), n_rows)
    return np.where(codes >= n_values, -1, codes).astype(rng.choice([np.int32, np.int64]))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(
    ("n_a", "n_b"), [(8, 3), (1, 1), (0, 4), (5, 0), (30, 34), (40, 30), (70, 2), (200, 5)]
)
def test_pair_equals_each_column_alone(seed: int, n_a: int, n_b: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(2.0, int(rng.integers(1, 300)))
    group = np.repeat(np.arange(sizes.size), sizes)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    a, b = _grouped(rng, group.size, n_a), _grouped(rng, group.size, n_b)
    got_a, got_b = distinct_pair_per_group((a, n_a), (b, n_b), group, starts)
    for got, codes, n in ((got_a, a, n_a), (got_b, b, n_b)):
        want = distinct_per_group(codes, n, group, starts)
        np.testing.assert_array_equal(got, want, strict=True)
        pairs = {(int(g), int(c)) for g, c in zip(group, codes, strict=True) if c >= 0}
        by_count = np.bincount([g for g, _ in pairs], minlength=sizes.size)
        np.testing.assert_array_equal(want, by_count)
