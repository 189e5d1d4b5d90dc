"""The data fingerprint: one digest that names a canonical purchase log's content.

The promotion gate only compares two models' backtest metrics when they were computed on the
same data, and an MLflow run records which data it trained on; both need a digest that
stays the same for the same log across machines, library upgrades and row orders. So retain
defines the bytes that are hashed here instead of relying on
``pandas.util.hash_pandas_object``, whose algorithm pandas does not promise to keep.

Definition (version 1), over a canonical log (``features.log.schema``):

1. Rows are put in a canonical order: sorted by every canonical column in
   ``CANONICAL_COLUMNS`` order (text by its Unicode code points, missing text before any
   text, numbers by value, ``False`` before ``True``). The log is a multiset of rows, so two
   logs that differ only in row order (or in the order of a categorical's categories) have
   the same fingerprint; a repeated row counts twice.
2. The fingerprint is the first 32 hex digits (128 bits) of the sha256 of: the header
   ``b"retain-log-fingerprint/1\\n"``, the row count as 8 bytes little-endian, then for each
   column of ``CANONICAL_COLUMNS`` in order its name in UTF-8 and a newline followed by its
   values in the canonical row order:

   - ``timestamp``: int64 little-endian microseconds since 1970-01-01 UTC;
   - ``amount``, ``quantity``: IEEE-754 float64 little-endian (-0.0 written as 0.0);
   - ``discount``, ``is_return``: one byte, 0 or 1;
   - text (``customer_id``, ``order_id``, ``product_id``, ``category``, ``channel``): one
     byte per row (1 = present, 0 = missing), then the UTF-8 byte lengths as int64
     little-endian (0 when missing), then the UTF-8 bytes of the present values
     concatenated.

32 hex digits because that is what MLflow stores as a dataset's digest (at most 36
characters), so the run's dataset, its ``data.fingerprint`` parameter and the registry's
promotion gate all carry the same value.

Every canonical column must be present (a missing one is an error, not a default), and the
version number is part of the header, so a changed definition can never match an old digest.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.log.schema import CANONICAL_COLUMNS

__all__ = ["FINGERPRINT_HEX_DIGITS", "FINGERPRINT_VERSION", "log_fingerprint"]

FINGERPRINT_VERSION = 1
FINGERPRINT_HEX_DIGITS = 32
_HEADER = f"retain-log-fingerprint/{FINGERPRINT_VERSION}\n".encode()
_TEXT = frozenset({"customer_id", "order_id", "product_id", "category", "channel"})
_BOOL = frozenset({"discount", "is_return"})


def _column(log: pd.DataFrame, name: str) -> pa.Array:
    """A canonical column as an Arrow array of the type it is hashed as."""
    values = log[name]
    if name in _TEXT:
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype("str")  # the ids, not the category codes
        return pa.array(values.astype("object"), type=pa.large_string(), from_pandas=True)
    if name == "timestamp":
        return pa.array(np.asarray(values.array.as_unit("us").asi8, dtype=np.int64))
    if name in _BOOL:
        return pa.array(values.to_numpy(dtype=bool))
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan).copy()
    numbers[numbers == 0.0] = 0.0  # -0.0 and 0.0 are the same number
    return pa.array(numbers)


def _text_bytes(text: pa.Array) -> bytes:
    """Presence bytes, int64 LE lengths, then the UTF-8 data, of a large_string array."""
    present = np.asarray(text.is_valid(), dtype=bool) if len(text) else np.empty(0, bool)
    lengths = pc.binary_length(text).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.frombuffer(text.buffers()[1], dtype="<i8")[
        text.offset : text.offset + len(text) + 1
    ]
    data = text.buffers()[2]
    payload = b"" if data is None or not len(text) else data.to_pybytes()[offsets[0] : offsets[-1]]
    return present.astype(np.uint8).tobytes() + np.asarray(lengths, dtype="<i8").tobytes() + payload


def log_fingerprint(log: pd.DataFrame) -> str:
    """32 hex digits naming a canonical log's content, as defined in this module's docstring."""
    missing = [c for c in CANONICAL_COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"cannot fingerprint a log without canonical column(s) {missing}")
    table = pa.table({name: _column(log, name) for name in CANONICAL_COLUMNS})
    order = pc.sort_indices(
        table, sort_keys=[(name, "ascending", "at_start") for name in CANONICAL_COLUMNS]
    )
    table = table.take(order).combine_chunks()
    digest = hashlib.sha256(_HEADER)
    digest.update(np.int64(len(table)).astype("<i8").tobytes())
    for name in CANONICAL_COLUMNS:
        digest.update(name.encode() + b"\n")
        column = table.column(name).combine_chunks()
        if name in _TEXT:
            digest.update(_text_bytes(column))
        elif name in _BOOL:
            flags = column.to_numpy(zero_copy_only=False).astype(np.uint8)
            digest.update(flags.tobytes())
        elif name == "timestamp":
            digest.update(column.to_numpy().astype("<i8").tobytes())
        else:
            digest.update(column.to_numpy().astype("<f8").tobytes())
    return digest.hexdigest()[:FINGERPRINT_HEX_DIGITS]
