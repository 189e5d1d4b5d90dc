"""Purchase-log files in, raw frame out: CSV, CSV.gz and Parquet, column mapping.

Reading keeps the source's values as they are (text columns stay text, so ids keep leading
zeros; only empty cells are missing) and leaves every rule to :mod:`features.log.canonical`.
This module also holds what maps source columns to canonical ones (``--map`` items,
:class:`~features.log.schema.LogConfig` ``columns``) and the frame's columns taken out once
(:class:`SourceColumns`), which the loader reads from files and in-memory frames alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.log.column_map import parse_column_map
from features.log.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, LogConfig, PurchaseLogError

__all__ = [
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
    "SourceColumns",
    "parse_mapping",
    "read_source",
    "resolve_columns",
    "take_rows",
]

_STRING_COLUMNS = ("customer_id", "order_id", "product_id", "category", "channel")
# Columns read as text from CSV so ids keep leading zeros and values are validated later,
# not guessed by the CSV reader.
_CSV_TEXT_COLUMNS = (*_STRING_COLUMNS, "timestamp", "discount", "is_return")
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """Turn CLI ``--map canonical=source`` items into ``LogConfig.columns``.

    The rules are :func:`features.log.column_map.parse_column_map`'s (the one parser of every
    ``CANONICAL=SOURCE`` option); errors are :class:`PurchaseLogError`.
    """
    known = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
    return parse_column_map(items, known, what="column mapping", error=PurchaseLogError)


def read_source(path: Path, config: LogConfig) -> pd.DataFrame:
    """The raw frame of a CSV (``.csv``, ``.csv.gz``) or Parquet file, chosen by its suffix."""
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return _read_csv(path, config)
    if name.endswith(PARQUET_SUFFIXES):
        if not path.exists():
            raise FileNotFoundError(f"purchase log not found: {path}")
        return _read_parquet(path, config)
    raise PurchaseLogError(
        f"unsupported purchase-log file {str(path)!r}: expected one of "
        f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def _read_csv(path: Path, config: LogConfig) -> pd.DataFrame:
    """Read with the pyarrow CSV engine; text columns stay text so ids keep leading zeros."""
    if not path.exists():
        raise FileNotFoundError(f"purchase log not found: {path}")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise PurchaseLogError(
            f"purchase log {str(path)!r} is empty: expected a header line naming the columns"
        ) from None
    except UnicodeDecodeError as error:
        raise PurchaseLogError(
            f"purchase log {str(path)!r} is not UTF-8 text (byte {error.object[error.start]:#x} "
            f"at offset {error.start}); save it as UTF-8"
        ) from None
    text_sources = {
        config.columns.get(column, column)
        for column in _CSV_TEXT_COLUMNS
        if config.columns.get(column, column) in header
    }
    # Only empty cells are missing: "NA" or "null" can be a real customer or product id.
    options: dict[str, Any] = {
        "dtype": {name: "str" for name in text_sources},
        "keep_default_na": False,
        "na_values": [""],
    }
    try:
        frame = pd.read_csv(path, engine="pyarrow", **options)
    except (pa.ArrowInvalid, ValueError) as error:  # (UnicodeDecodeError is a ValueError)
        raise PurchaseLogError(f"cannot parse CSV {str(path)!r}: {error}") from error
    for name, column in frame.items():  # Arrow reads cells that are not UTF-8 as bytes
        first = column.first_valid_index() if column.dtype == object else None
        if first is not None and isinstance(column.at[first], bytes):
            raise PurchaseLogError(
                f"purchase log {str(path)!r}: column {name!r} is not UTF-8 text; save the file "
                "as UTF-8"
            )
    return frame


_DICTIONARY_BYTES_PER_VALUE = 4.0
"""Text columns stored in fewer bytes per value than this hold few distinct values."""


def _read_parquet(path: Path, config: LogConfig) -> pd.DataFrame:
    """``pd.read_parquet``; optional text columns with few distinct values come as categoricals.

    Decoding those from their Parquet dictionaries and reordering codes instead of strings is
    several times cheaper; the values are the same.
    """
    metadata = pq.ParquetFile(path).metadata
    leaves = [metadata.schema.column(index) for index in range(metadata.num_columns)]
    few_distinct = []
    for column in ("product_id", "category", "channel"):
        name = config.columns.get(column, column)
        found = [
            index
            for index, leaf in enumerate(leaves)
            if leaf.path == name and leaf.physical_type == "BYTE_ARRAY"
            and leaf.logical_type.type == "STRING"
        ]  # fmt: skip
        if len(found) != 1:
            continue
        chunks = [
            metadata.row_group(group).column(found[0]) for group in range(metadata.num_row_groups)
        ]
        values = sum(chunk.num_values for chunk in chunks)
        size = sum(chunk.total_uncompressed_size for chunk in chunks)
        if all(chunk.has_dictionary_page for chunk in chunks) and (
            size <= _DICTIONARY_BYTES_PER_VALUE * values
        ):
            few_distinct.append(name)
    return pd.read_parquet(path, read_dictionary=few_distinct or None)


def resolve_columns(found: Sequence[Hashable], config: LogConfig) -> dict[str, str]:
    """Map canonical names to the source columns present; fail naming what is missing."""
    available = [str(name) for name in found]
    present = set(available)
    names: dict[str, str] = {}
    missing: list[str] = []
    for column in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        source = config.columns.get(column, column)
        if source in present:
            names[column] = source
        elif column in REQUIRED_COLUMNS or column in config.columns:
            missing.append(column)
    if missing:
        parts = []
        for column in missing:
            source = config.columns.get(column, column)
            text = repr(column) if source == column else f"{column!r} (mapped to {source!r})"
            close = [name for name in available if name.strip().lower() == source.lower()]
            if close:
                text += f" (did you mean {close[0]!r}?)"
            parts.append(text)
        raise PurchaseLogError(
            f"missing required column(s): {', '.join(parts)}; columns found: {available}. "
            f"Map source columns with --map CANONICAL=SOURCE "
            f"(e.g. --map customer_id=CustomerID) or LogConfig.columns"
        )
    readers: dict[str, list[str]] = {}
    for column, source in names.items():
        readers.setdefault(source, []).append(column)
    shared = {source: columns for source, columns in readers.items() if len(columns) > 1}
    if shared:  # e.g. --map customer_id=amount: ids would be amounts, silently
        source, columns = next(iter(shared.items()))
        raise PurchaseLogError(
            f"source column {source!r} would be read as {' and '.join(map(repr, columns))}; "
            "map each canonical column to its own source column (--map CANONICAL=SOURCE)"
        )
    return names


class SourceColumns:
    """The source frame's columns, each taken out of ``df`` at most once.

    Taking a column out of a DataFrame builds a Series (tens of microseconds); the loader
    reads the canonical columns and, when rows tie, every column for the duplicate check.
    """

    def __init__(self, df: pd.DataFrame, labels: list[Hashable]) -> None:
        self._df = df
        self._labels = labels  # ``df.columns.tolist()``
        self._cache: dict[Hashable, pd.Series] = {}

    def __getitem__(self, name: Hashable) -> pd.Series:
        column = self._cache.get(name)
        if column is None:
            column = self._cache[name] = self._df[name]
        return column

    def all(self) -> list[pd.Series]:
        """Every column of the frame in order (duplicate labels included)."""
        labels = self._labels
        if len(set(labels)) < len(labels):  # (``Index.is_unique`` hashes, slow on text)
            return [column for _, column in self._df.items()]
        return [self[label] for label in labels]


def take_rows(values: pd.Series, mask: np.ndarray | None) -> pd.Series:
    """Rows where ``mask`` holds (all rows if None), with a fresh RangeIndex."""
    if mask is not None:
        values = values[mask]
    elif _has_default_index(values):
        return values
    return values.reset_index(drop=True)


def _has_default_index(values: pd.Series) -> bool:
    index = values.index
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
