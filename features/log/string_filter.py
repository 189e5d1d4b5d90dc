"""A cheap filter in front of exact string lookups: which ids surely are not in a set.

Netting returns looks up, among the order ids of every customer with a return, the few that
a return names. Taking those strings out of a log of millions of rows and hashing each
costs more than the rest of the matching; a table of bits, indexed by a hash of each id's
length and last eight bytes (read straight from the Arrow buffers, one gather per id), says
for most of them that they are not wanted, and only the rest go to the exact lookup
(``pyarrow.compute.index_in``). Equal strings always hash alike, so the filter only ever
lets too many ids through: a collision costs time, never a wrong match.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["maybe_in"]

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, bits well spread (Fibonacci hashing)
_LENGTH_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
_MAX_TABLE_BITS = 23


def maybe_in(ids: pa.Array, rows: np.ndarray, value_set: pa.Array) -> np.ndarray | None:
    """Per position of ``rows``, False where ``ids[rows]`` surely is not in ``value_set``
    (True: it may be); None when the ids are not one plain (large) string array or when
    most of an even sample of them may be in the set."""
    if not (_plain_strings(ids) and _plain_strings(value_set)):
        return None
    bits = int(min(max(len(value_set) * 32, 1024), 1 << _MAX_TABLE_BITS) - 1).bit_length()
    table = np.zeros(1 << bits, dtype=bool)
    table[_slots(value_set, np.arange(len(value_set)), bits)] = True
    rows = np.asarray(rows, dtype=np.int64)
    sample = rows[:: max(rows.size // 256, 1)]
    if sample.size and table[_slots(ids, sample, bits)].mean() > 0.5:
        return None  # most ids may be wanted (a column of few values): filtering saves nothing
    return table[_slots(ids, rows, bits)]


def _plain_strings(arr: pa.Array) -> bool:
    return isinstance(arr, pa.Array) and (
        pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
    )


def _slots(arr: pa.Array, rows: np.ndarray, bits: int) -> np.ndarray:
    """Per row, a ``bits``-bit hash of the string's length and its last (up to) 8 bytes
    (a missing value hashes as whatever its offsets span: it matches nothing anyway)."""
    _, offsets_buf, data_buf = arr.buffers()
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[arr.offset : arr.offset + len(arr) + 1]
    data = np.zeros(0, dtype=np.uint8) if data_buf is None else np.frombuffer(data_buf, np.uint8)
    end = offsets[rows + 1].astype(np.int64)
    length = end - offsets[rows]
    # the 8 bytes ending where the string ends, as one little-endian word (unaligned view)
    words = np.ndarray(shape=(max(data.size - 7, 0),), dtype="<u8", buffer=data, strides=(1,))
    start8 = end - 8
    near_start = np.flatnonzero(start8 < 0)  # strings ending in the buffer's first 8 bytes
    start8[near_start] = 0
    word = words[start8] if words.size else np.zeros(end.size, dtype=np.uint64)
    if near_start.size:  # read them from a copy of those bytes behind 8 zero bytes
        padded = np.zeros(16, dtype=np.uint8)
        head = data[:8]
        padded[8 : 8 + head.size] = head
        word[near_start] = np.ndarray(shape=(9,), dtype="<u8", buffer=padded, strides=(1,))[
            end[near_start]
        ]
    kept = np.minimum(length, 8)
    # keep the string's own last ``kept`` bytes: the word's top bytes
    word >>= (8 * (8 - np.maximum(kept, 1))).astype(np.uint64)
    word[kept == 0] = 0
    word ^= length.astype(np.uint64) * _LENGTH_MIX
    word *= _MULTIPLIER
    word >>= np.uint64(64 - bits)
    return word.astype(np.int64)
