"""Distinct values per group of rows, for the builder's ``n_categories`` and ``n_channels``.

Rows come grouped (a customer's rows together); values are integer codes, -1 for missing.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

__all__ = ["distinct_pair_per_group", "distinct_per_group"]


def distinct_pair_per_group(
    first: tuple[np.ndarray, int],
    second: tuple[np.ndarray, int],
    group: np.ndarray,
    starts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`distinct_per_group` of two code columns ``(codes, n_values)`` at once: when
    their values fit one 64-bit set together (categories and channels), each row's bits of
    both are OR-ed per group in one reduction, half the cost of two."""
    (a, n_a), (b, n_b) = first, second
    if n_a == 0 or n_b == 0 or n_a + n_b > 64:
        return (
            distinct_per_group(a, n_a, group, starts),
            distinct_per_group(b, n_b, group, starts),
        )
    bits_a, bits_b, mask_a = _pair_bits(n_a, n_b)
    bits = bits_a[a]
    bits |= bits_b[b]
    seen = np.bitwise_or.reduceat(bits, starts)
    of_a = np.bitwise_and(seen, mask_a)
    seen ^= of_a  # the second column's bits
    return (
        np.bitwise_count(of_a).astype(np.int64),
        np.bitwise_count(seen).astype(np.int64),
    )


@lru_cache(maxsize=64)
def _pair_bits(n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray, np.generic]:
    """Bit tables of two columns sharing one set (the first's values in the low bits; the
    last slot of each, for code -1, is 0; read-only) and the mask of the first's bits."""
    both = _value_bits(n_a + n_b)
    bits_a = np.append(both[:n_a], both[-1])
    bits_b = np.append(both[n_a:-1], both[-1])
    for table in (bits_a, bits_b):
        table.setflags(write=False)
    return bits_a, bits_b, np.bitwise_or.reduce(bits_a)


def distinct_per_group(
    codes: np.ndarray, n_values: int, group: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    """Distinct non-missing codes per group (``group`` is each row's group number; rows
    come grouped, group ``g`` starting at row ``starts[g]``)."""
    n_groups = starts.size
    if n_values == 0:
        return np.zeros(n_groups, dtype=np.int64)
    if n_values <= 64:
        # few values (categories, channels): a bit per value, OR-ed per group, then counted
        bits = _value_bits(n_values)[codes]
        return np.bitwise_count(np.bitwise_or.reduceat(bits, starts)).astype(np.int64)
    width = n_values + 1  # slot 0 collects missing values
    if n_groups * width <= max(4 * codes.size, 1 << 16):
        key = codes.astype(np.int64)
        key += 1
        key *= n_groups
        key += group
        seen = np.bincount(key, minlength=n_groups * width).reshape(width, n_groups)[1:] > 0
        return seen.sum(axis=0, dtype=np.int64)
    known = codes >= 0
    pairs = pd.unique(group[known] * np.int64(n_values) + codes[known].astype(np.int64))
    return np.bincount(pairs // n_values, minlength=n_groups).astype(np.int64)


@lru_cache(maxsize=64)
def _value_bits(n_values: int) -> np.ndarray:
    """Each code's bit in the narrowest unsigned type with ``n_values`` bits (read-only);
    the last slot, for code -1 (missing), is 0."""
    dtype = next(
        t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if n_values <= 8 * t().itemsize
    )
    bit_of = np.zeros(n_values + 1, dtype=dtype)
    bit_of[:-1] = np.left_shift(1, np.arange(n_values, dtype=np.uint64)).astype(dtype)
    bit_of.setflags(write=False)
    return bit_of
