"""What the feature builder reads from a canonical log, as validated arrays.

:func:`features.builders.build_feature_block` takes the canonical log as a DataFrame or as
:class:`~features.log.log_arrays.LogArrays`; this module turns either into the same arrays: the
customer codes, UTC microseconds, amounts and flags of every row (checked against the contract
cheaply, since sorting or repairing 10 million rows per call would cost more than the features)
and, for the purchase rows before ``as_of``, order changes and category/channel codes. The
text work (pyarrow, which releases the GIL) can run in a thread pool beside the numeric work.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, NamedTuple, Protocol, TypeVar, TypeVarTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.log.log_arrays import LogArrays
from features.log.returns import id_changes
from features.log.schema import CANONICAL_COLUMNS, PurchaseLogError
from features.memory_reuse import reuse_freed_memory

__all__ = [
    "InputColumns",
    "PurchaseRows",
    "array_columns",
    "bool_column",
    "check_amount",
    "check_columns",
    "check_sorted",
    "frame_columns",
    "order_id_changes",
    "take_kept",
    "timestamps_us",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Ts = TypeVarTuple("Ts")
_USED_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "timestamp",
    "amount",
    "quantity",
    "order_id",
    "category",
    "discount",
    "channel",
    "is_return",
)


class Pending(Protocol[T_co]):
    """Work that may run in a thread pool: a ``Future``, or a result computed already."""

    def result(self) -> T_co: ...


class PurchaseRows(NamedTuple):
    """Validated whole-log arrays and the purchase rows before as_of (``rows``)."""

    codes: np.ndarray
    ts: np.ndarray
    amount: np.ndarray
    is_return: np.ndarray
    before: np.ndarray
    rows: np.ndarray
    all_rows: bool  # every row is a purchase before as_of: skip the gathers


class InputColumns(NamedTuple):
    """The rest of the log the features read: futures for the text work, kept rows only."""

    order_changes: Pending[np.ndarray]  # consecutive kept rows: does the order id change
    category_codes: Pending[tuple[np.ndarray, int]]
    channel_codes: Pending[tuple[np.ndarray, int]]
    quantity: np.ndarray
    discount: np.ndarray
    customers: pd.Index | np.ndarray  # what customer codes index


def frame_columns(
    log: pd.DataFrame,
    data: PurchaseRows,
    pool: ThreadPoolExecutor | None,
    order_changes: np.ndarray | None = None,
) -> InputColumns:
    """The columns of a canonical frame; ``order_changes`` is :func:`order_id_changes` of
    its order ids when the caller has it already. A ``pool`` (given for large logs) also
    has the process keep freed memory (:mod:`features.memory_reuse`)."""
    rows, all_rows = data.rows, data.all_rows
    order = log["order_id"]
    if pool is not None:  # a large log: the next build's arrays come without page faults
        reuse_freed_memory()
    return InputColumns(
        order_changes=_submit(
            pool, _adjacent_changes, order, rows, all_rows, order_changes, data.codes
        ),
        category_codes=_submit(pool, _value_codes, log["category"], rows, all_rows),
        channel_codes=_submit(pool, _value_codes, log["channel"], rows, all_rows),
        quantity=take_kept(log["quantity"].to_numpy(dtype=np.float64), rows, all_rows),
        discount=take_kept(bool_column(log, "discount"), rows, all_rows),
        customers=log["customer_id"].array.categories,
    )


def array_columns(log: LogArrays, data: PurchaseRows) -> InputColumns:
    rows, all_rows = data.rows, data.all_rows
    order = take_kept(log.order_codes, rows, all_rows)
    return InputColumns(
        order_changes=_ready(order[1:] != order[:-1]),
        category_codes=_ready((take_kept(log.category_codes, rows, all_rows), log.n_categories)),
        channel_codes=_ready((take_kept(log.channel_codes, rows, all_rows), log.n_channels)),
        quantity=take_kept(log.quantity, rows, all_rows),
        discount=take_kept(log.discount, rows, all_rows),
        customers=log.customers,
    )


def take_kept(values: np.ndarray, rows: np.ndarray, all_rows: bool) -> np.ndarray:
    return values if all_rows else values[rows]


def check_columns(log: pd.DataFrame) -> None:
    missing = [c for c in _USED_COLUMNS if c not in log.columns]
    if missing:
        raise PurchaseLogError(
            f"log is not canonical: missing column(s) {missing}; expected {list(CANONICAL_COLUMNS)}"
        )
    if not isinstance(log["customer_id"].dtype, pd.CategoricalDtype):
        raise PurchaseLogError(
            f"column 'customer_id' must be category dtype, got {log['customer_id'].dtype}"
        )


def timestamps_us(col: pd.Series) -> np.ndarray:
    dtype = col.dtype
    if not isinstance(dtype, pd.DatetimeTZDtype) or str(dtype.tz) != "UTC":
        raise PurchaseLogError(f"column 'timestamp' must be datetime64[us, UTC], got {dtype}")
    arr = col.array
    if dtype.unit != "us":
        arr = arr.as_unit("us")
    values = np.asarray(arr.asi8)
    if col.hasnans:
        raise PurchaseLogError(f"column 'timestamp' has NaT at row {int(np.argmax(col.isna()))}")
    return values


def bool_column(log: pd.DataFrame, name: str) -> np.ndarray:
    col = log[name]
    if col.dtype != np.bool_:
        if col.isna().any():
            raise PurchaseLogError(f"column {name!r} must be bool, found missing values")
        return col.to_numpy(dtype=bool)
    return col.to_numpy()


def check_sorted(codes: np.ndarray, ts: np.ndarray) -> None:
    if codes.size == 0:
        return
    if codes[0] < 0:
        raise PurchaseLogError("column 'customer_id' has missing values (row 0)")
    same = codes[1:] == codes[:-1]
    bad = (codes[1:] < codes[:-1]) | (same & (ts[1:] < ts[:-1]))
    if bad.any():
        row = int(np.argmax(bad)) + 1
        raise PurchaseLogError(
            "log is not canonical: rows must be sorted by customer_id, timestamp, order_id "
            f"(row {row} comes before row {row - 1}); canonicalize it first"
        )


def check_amount(amount: np.ndarray) -> None:
    if amount.size and not amount.min() >= 0:
        bad = int(np.argmax(~(amount >= 0)))
        raise PurchaseLogError(
            f"column 'amount' must be >= 0 and not missing; row {bad} has {amount[bad]!r}"
        )


def _arrow(col: pd.Series) -> pa.Array:
    """The column as one Arrow string array (zero-copy for pandas' default ``str`` dtype).

    Columns read from Parquet can be split into many Arrow chunks; they are joined so that
    dictionary encoding sees one dictionary.
    """
    arr = pa.array(col.array)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pa.array(col.astype("str").array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr


def order_id_changes(col: pd.Series) -> np.ndarray:
    """Per row from the second on, whether the order id differs from the row before's (a
    missing id differs from every id): :func:`features.log.returns.id_changes` of the column,
    without hashing."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = np.asarray(col.array.codes)
        return (codes[1:] != codes[:-1]) | (codes[1:] < 0)
    return id_changes(_arrow(col))


def _adjacent_changes(
    col: pd.Series,
    rows: np.ndarray,
    all_rows: bool,
    full: np.ndarray | None,
    customers: np.ndarray | None = None,
) -> np.ndarray:
    """For consecutive kept rows, whether ``col`` differs; compares strings without hashing.
    ``full`` is :func:`order_id_changes` of ``col`` if known. With ``customers`` (the
    rows' customer codes), a pair of kept rows of two customers counts as a change without
    comparing ids (an order starts there either way)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        kept = take_kept(np.asarray(col.array.codes), rows, all_rows)
        if kept.size and kept.min() < 0:
            raise PurchaseLogError(f"column {col.name!r} has missing values")
        return kept[1:] != kept[:-1]
    arr = _arrow(col)
    if arr.null_count:
        first = int(np.argmax(col.isna().to_numpy()))
        raise PurchaseLogError(f"column {col.name!r} has missing values (first at row {first})")
    if full is None:
        full = _not_equal(arr.slice(1), arr.slice(0, len(arr) - 1))
    if all_rows:
        return full
    before, after = rows[:-1], rows[1:]
    changes = full[before]  # right where the next kept row is the next row; gaps fixed below
    gap = np.flatnonzero(after - before != 1)
    if gap.size and customers is not None:
        across = customers[before[gap]] != customers[after[gap]]
        changes[gap[across]] = True
        gap = gap[~across]
    if gap.size:
        changes[gap] = _not_equal(arr.take(before[gap]), arr.take(after[gap]))
    return changes


def _not_equal(left: pa.Array, right: pa.Array) -> np.ndarray:
    return pc.not_equal(left, right).to_numpy(zero_copy_only=False)


def _value_codes(col: pd.Series, rows: np.ndarray, all_rows: bool) -> tuple[np.ndarray, int]:
    """Integer codes (-1 for missing) of the kept rows and the number of distinct values."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return take_kept(np.asarray(col.array.codes), rows, all_rows), len(col.array.categories)
    encoded = pc.dictionary_encode(_arrow(col))
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    return take_kept(indices, rows, all_rows), len(encoded.dictionary)


def _submit(pool: ThreadPoolExecutor | None, fn: Callable[[*Ts], T], *args: *Ts) -> Pending[T]:
    """``pool.submit`` or, without a pool, the result computed right away."""
    if pool is not None:
        return pool.submit(fn, *args)
    return _ready(fn(*args))


class _Ready(Generic[T]):
    """A result already computed, read like a finished future (no lock, no condition: a
    request's features read three of them)."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def result(self) -> T:
        return self._value


def _ready(value: T) -> Pending[T]:
    return _Ready(value)
