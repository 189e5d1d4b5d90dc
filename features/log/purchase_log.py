"""Read a source purchase log (CSV, Parquet or a DataFrame) into the canonical log.

This is the one place where source quirks are understood: column names, time zones, returns,
duplicates and bad values. Everything downstream relies on the contract in
:mod:`features.log.schema`, so bad input is either repaired in a documented, counted way (see
:class:`LoadReport`) or rejected with a :class:`~features.log.schema.PurchaseLogError` that names the
column, the 1-based data row numbers (header line not counted) and the offending values.

A source column named ``is_return`` (or mapped to it: ``--map is_return=Returned``; bool, 0/1
or true-like text) is honoured, so a canonical log saved to CSV/Parquet loads back unchanged
(its returns already have positive amounts).

Everything is vectorised: a 10-million-row file loads without per-row Python. Text work runs
in Arrow and on distinct values where it can (customer ids are stripped and sorted once per
distinct id), rows are ordered with integer sorts, the full-row duplicate comparison only
sees rows that already agree on customer, instant and every numeric column, and typed
columns (timestamps, floats, low-cardinality Parquet text) skip parsing.

The steps live by concern: :mod:`features.log.reading` (files in, column mapping),
:mod:`features.log.canonical` (the rules for each column and the :class:`LoadReport`),
:mod:`features.log.text_columns` (ids as Arrow text) and :mod:`features.log.row_order` (row order,
exact duplicates); this module runs them in order and assembles the log.

The other end matters too: the HTTP service loads each request's few rows through here, so
fixed per-call costs are kept low (no conversion of a column that already has the canonical
dtype, no Series round trips for the report, the log assembled straight from arrays).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.log.canonical import (
    ROW_NUMBER_NOTE,
    LoadReport,
    check_timezone,
    column_label,
    fill_order_ids,
    parse_flag,
    parse_number,
    parse_timestamps,
    show_rows,
    utc_instant,
    utc_micros,
)
from features.log.reading import SourceColumns, read_source, resolve_columns, take_rows
from features.log.row_order import (
    break_ties,
    customer_time_order,
    exact_duplicates,
    is_identity,
    order_without,
)
from features.log.schema import (
    CANONICAL_COLUMNS,
    MAX_ABS_AMOUNT,
    MAX_ABS_QUANTITY,
    TIMESTAMP_DTYPE,
    LogConfig,
    PurchaseLogError,
)
from features.log.text_columns import arrow_text, code_customers, str_from_arrow
from features.sources.database import is_database_url, resolve_url
from features.sources.database_log import DatabaseLog

__all__ = ["LoadResult", "canonicalize", "read_purchase_log"]

_DEFAULT_CONFIG = LogConfig()


@dataclass(frozen=True)
class LoadResult:
    """The canonical log and the report of how it was obtained."""

    log: pd.DataFrame
    report: LoadReport


def read_purchase_log(
    source: str | Path | pd.DataFrame | DatabaseLog, config: LogConfig | None = None
) -> LoadResult:
    """Load a CSV (``.csv``, ``.csv.gz``), Parquet file, DataFrame or database table/query
    (:class:`~features.sources.database_log.DatabaseLog`) into the canonical log."""
    config = config or LogConfig()
    if isinstance(source, pd.DataFrame):
        return canonicalize(source, config)
    if is_database_url(source):
        source = DatabaseLog(resolve_url(str(source), None))  # type: ignore[arg-type]
    if isinstance(source, DatabaseLog):
        from features.sources.database_log import read_database_log

        return canonicalize(read_database_log(source, config), config, source=str(source))
    path = Path(source)
    return canonicalize(read_source(path, config), config, source=str(path))


def canonicalize(
    df: pd.DataFrame, config: LogConfig | None = None, *, source: str | None = None
) -> LoadResult:
    """Validate and convert an in-memory source frame into the canonical log.

    Row numbers in errors are positions in ``df`` counted from 1 (for a file read by
    :func:`read_purchase_log`, the data rows of the file, header not counted).

    The HTTP service calls this once per request on a few rows, where pandas' fixed per-call
    costs dominate: so each column is taken out of ``df`` once, conversions that are no-ops
    (a column already of the canonical dtype, a mask that keeps every row) are skipped, and
    the log and report are built from arrays.
    """
    config = config or _DEFAULT_CONFIG
    check_timezone(config.timezone)
    labels = df.columns.tolist()
    names = resolve_columns(labels, config)
    columns = SourceColumns(df, labels)
    rows_read = len(df)
    warnings: list[str] = []
    dropped: dict[str, int] = {}

    all_codes, customers = code_customers(columns[names["customer_id"]])
    missing_id = all_codes < 0
    n_missing_ids = int(np.count_nonzero(missing_id))
    if n_missing_ids:
        rows = np.flatnonzero(missing_id) + 1
        if config.strict:
            raise PurchaseLogError(
                f"column {column_label('customer_id', names)}: {n_missing_ids:,} empty customer "
                f"id(s) at data rows {show_rows(rows)} ({ROW_NUMBER_NOTE}); strict mode "
                f"rejects them (without strict they are dropped)"
            )
        dropped["missing_customer_id"] = n_missing_ids
        warnings.append(
            f"dropped {n_missing_ids:,} row(s) with an empty customer id "
            f"(column {column_label('customer_id', names)}; data rows {show_rows(rows)})"
        )

    present = ~missing_id
    present_rows = np.flatnonzero(present) + 1
    customer_codes = all_codes[present] if n_missing_ids else all_codes
    del all_codes
    timestamp = parse_timestamps(
        take_rows(columns[names["timestamp"]], present if n_missing_ids else None),
        names,
        config,
        present_rows,
        warnings,
    )
    instants = utc_micros(timestamp)
    order = customer_time_order(customer_codes, instants)

    duplicate = exact_duplicates(df, columns, present, customer_codes, instants, order)
    n_duplicates = int(np.count_nonzero(duplicate))
    keep = present
    if n_duplicates and config.duplicates == "drop":
        dropped["exact_duplicate"] = n_duplicates
        warnings.append(
            f"dropped {n_duplicates:,} exact duplicate row(s) (equal in every source column "
            f"to an earlier row; set duplicates='keep' to keep them)"
        )
        keep = present.copy()
        keep[present] = ~duplicate
        customer_codes = customer_codes[~duplicate]
        instants = instants[~duplicate]
        timestamp = timestamp[~duplicate]
        order = order_without(order, duplicate)
    elif n_duplicates:
        warnings.append(f"kept {n_duplicates:,} exact duplicate row(s) (duplicates='keep')")
    row_numbers = np.flatnonzero(keep) + 1
    keep_mask = keep if len(row_numbers) < rows_read else None

    def kept(column: str) -> pd.Series:
        return take_rows(columns[names[column]], keep_mask)

    amount = parse_number(kept("amount"), "amount", names, row_numbers, bound=MAX_ABS_AMOUNT)

    if "quantity" in names:
        quantity = parse_number(
            kept("quantity"),
            "quantity",
            names,
            row_numbers,
            bound=MAX_ABS_QUANTITY,
            missing_ok=True,
        )
        n_missing = int(np.isnan(quantity).sum())
        if n_missing:
            quantity = np.where(np.isnan(quantity), 1.0, quantity)
            warnings.append(
                f"{n_missing:,} empty quantity value(s) in column {column_label('quantity', names)} "
                f"taken as 1"
            )
    else:
        quantity = np.ones(len(instants), dtype="float64")

    is_return = (amount < 0) | (quantity < 0)
    source_ids = arrow_text(kept("order_id"), strip=True) if "order_id" in names else None
    if source_ids is not None and config.cancel_prefix:
        cancelled = pc.starts_with(source_ids, config.cancel_prefix)
        if cancelled.null_count:
            cancelled = cancelled.fill_null(False)
        is_return |= cancelled.to_numpy(zero_copy_only=False)
    if "is_return" in names:
        # A canonical log fed back in (e.g. saved to Parquet) keeps its returns: their amounts
        # are already non-negative, so only the flag still says "return".
        is_return |= parse_flag(kept("is_return"), "is_return", names, config, row_numbers)
    order_id = fill_order_ids(source_ids, instants, warnings)
    del source_ids

    discount = (
        parse_flag(kept("discount"), "discount", names, config, row_numbers)
        if "discount" in names
        else np.zeros(len(instants), dtype=bool)
    )
    optional = {
        column: arrow_text(kept(column), strip=False, dictionary_ok=True)
        if column in names
        else None
        for column in ("product_id", "category", "channel")
    }

    order, sorted_ids = break_ties(
        order, customer_codes, instants, order_id, ids_from_instants="order_id" not in names
    )
    del order_id
    log = _assemble(
        order=order,
        customer_codes=customer_codes,
        customers=customers,
        timestamp=timestamp,
        amount=np.abs(amount),
        quantity=np.abs(quantity),
        sorted_ids=sorted_ids,
        discount=discount,
        is_return=is_return,
        optional=optional,
    )
    # The report is read off the arrays (the log holds the same rows, reordered): Series
    # reductions on the log cost more than the rest of a request-sized load.
    report = LoadReport(
        rows_read=rows_read,
        rows_kept=len(log),
        dropped=dropped,
        n_returns=int(np.count_nonzero(is_return)),
        n_customers=len(customers),
        first_timestamp=utc_instant(instants.min()) if len(instants) else None,
        last_timestamp=utc_instant(instants.max()) if len(instants) else None,
        warnings=warnings,
        n_exact_duplicates=n_duplicates,
        source=source,
    )
    return LoadResult(log=log, report=report)


def _assemble(
    *,
    order: np.ndarray,
    customer_codes: np.ndarray,
    customers: pd.Index,
    timestamp: pd.api.extensions.ExtensionArray,
    amount: np.ndarray,
    quantity: np.ndarray,
    sorted_ids: pa.Array,
    discount: np.ndarray,
    is_return: np.ndarray,
    optional: Mapping[str, pa.Array | None],
) -> pd.DataFrame:
    """Build the canonical frame in contract order, rows taken in ``order``.

    ``sorted_ids`` are the order ids already in ``order``.
    """

    in_place = is_identity(order)

    def text(values: pa.Array | None) -> Any:
        if values is None:
            return str_from_arrow(pa.nulls(len(order), pa.large_string()))
        taken = values if in_place else values.take(order)
        if pa.types.is_dictionary(taken.type):
            taken = taken.cast(taken.type.value_type)
        return str_from_arrow(taken)

    timestamps = timestamp.take(order)
    if str(timestamps.dtype) != TIMESTAMP_DTYPE:
        raise AssertionError(f"timestamp dtype {timestamps.dtype} != {TIMESTAMP_DTYPE}")
    columns: dict[str, Any] = {
        # codes index ``customers`` by construction: no need to validate them again
        "customer_id": pd.Categorical.from_codes(
            customer_codes[order], categories=customers, validate=False
        ),
        "timestamp": timestamps,
        "amount": amount.astype("float64")[order],
        "quantity": quantity.astype("float64")[order],
        "order_id": str_from_arrow(sorted_ids),
        "product_id": text(optional["product_id"]),
        "category": text(optional["category"]),
        "discount": discount.astype(bool)[order],
        "channel": text(optional["channel"]),
        "is_return": np.asarray(is_return, dtype=bool)[order],
    }
    if tuple(columns) != CANONICAL_COLUMNS:
        raise AssertionError(f"columns {list(columns)} != {list(CANONICAL_COLUMNS)}")
    # from the dict in its own (canonical) order: passing ``columns=`` reindexes, which took
    # 0.2 ms of a 10-row load
    return pd.DataFrame(columns, copy=False)
