"""Read a source purchase log (CSV, Parquet or a DataFrame) into the canonical log.

This is the one place where source quirks are understood: column names, time zones, returns,
duplicates and bad values. Everything downstream relies on the contract in
:mod:`features.schema`, so bad input is either repaired in a documented, counted way (see
:class:`LoadReport`) or rejected with a :class:`~features.schema.PurchaseLogError` that names the
column, the 1-based data row numbers (header line not counted) and the offending values.

A source column named ``is_return`` (or mapped to it: ``--map is_return=Returned``; bool, 0/1
or true-like text) is honoured, so a canonical log saved to CSV/Parquet loads back unchanged
(its returns already have positive amounts).

Everything is vectorised: a 10-million-row file loads without per-row Python. Text work runs
in Arrow and on distinct values where it can (customer ids are stripped and sorted once per
distinct id), rows are ordered with integer sorts, the full-row duplicate comparison only
sees rows that already agree on customer, instant and every numeric column, and typed
columns (timestamps, floats, low-cardinality Parquet text) skip parsing.

The other end matters too: the HTTP service loads each request's few rows through here, so
fixed per-call costs are kept low (no conversion of a column that already has the canonical
dtype, no Series round trips for the report, the log assembled straight from arrays).
"""

from __future__ import annotations

import datetime
import json
import zoneinfo
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.schema import (
    CANONICAL_COLUMNS,
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_ABS_AMOUNT,
    MAX_ABS_QUANTITY,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TIMESTAMP_DTYPE,
    LogConfig,
    PurchaseLogError,
)

__all__ = [
    "LoadReport",
    "LoadResult",
    "canonicalize",
    "parse_mapping",
    "read_purchase_log",
]

MAX_SHOWN_ROWS = 5
"""How many offending rows an error message lists; enough to find the problem, short to read."""

ROW_NUMBER_NOTE = "row numbers are 1-based data rows, header line not counted"

_STRING_COLUMNS = ("customer_id", "order_id", "product_id", "category", "channel")
# Columns read as text from CSV so ids keep leading zeros and values are validated here,
# not guessed by the CSV reader.
_CSV_TEXT_COLUMNS = (*_STRING_COLUMNS, "timestamp", "discount", "is_return")
# A time of day followed by a UTC offset or "Z": such strings carry their own zone.
_OFFSET_PATTERN = r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(?:[Zz]|UTC|[+-]\d\d(?::?\d\d)?)$"
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_STR = pd.api.types.pandas_dtype("str")
"""The canonical text dtype, resolved once (a dtype given by name is looked up per use)."""
_DEFAULT_CONFIG = LogConfig()


@dataclass(frozen=True)
class LoadReport:
    """What the loader did to the rows: the audit trail of every repair and drop.

    ``rows_read == rows_kept + sum(dropped.values())`` always holds (checked on construction).
    ``n_exact_duplicates`` counts rows equal in every source column to an earlier row, whether
    they were dropped (``dropped["exact_duplicate"]``) or kept (``duplicates="keep"``).
    """

    rows_read: int
    rows_kept: int
    dropped: dict[str, int]
    n_returns: int
    n_customers: int
    first_timestamp: pd.Timestamp | None
    last_timestamp: pd.Timestamp | None
    warnings: list[str] = field(default_factory=list)
    n_exact_duplicates: int = 0
    source: str | None = None

    def __post_init__(self) -> None:
        if self.rows_read != self.rows_kept + sum(self.dropped.values()):
            raise ValueError(
                f"LoadReport invariant broken: rows_read={self.rows_read} != rows_kept="
                f"{self.rows_kept} + dropped={self.dropped}"
            )

    def summary(self, not_used: Mapping[str, int] | None = None) -> str:
        """Readable multi-line text for CLI output and logs.

        ``not_used`` counts kept rows a command then leaves out (e.g. ``"at or after
        2024-06-01"``: rows after an ``as_of``), so no row disappears without a count.
        """
        lines = [f"purchase log{f' {self.source}' if self.source else ''}"]
        lines.append(f"  rows read:  {self.rows_read:,}")
        lines.append(f"  rows kept:  {self.rows_kept:,}")
        for reason, count in sorted(self.dropped.items()):
            lines.append(f"  dropped ({reason}): {count:,}")
        for reason, count in (not_used or {}).items():
            lines.append(f"  kept, not used ({reason}): {count:,}")
        lines.append(f"  returns:    {self.n_returns:,}")
        lines.append(f"  customers:  {self.n_customers:,}")
        if self.first_timestamp is not None and self.last_timestamp is not None:
            lines.append(
                f"  time span:  {self.first_timestamp.isoformat()} .. "
                f"{self.last_timestamp.isoformat()}"
            )
        if self.n_exact_duplicates:
            lines.append(f"  exact duplicate rows found: {self.n_exact_duplicates:,}")
        lines.extend(f"  warning: {message}" for message in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (timestamps as ISO 8601 strings)."""
        data = asdict(self)
        for key in ("first_timestamp", "last_timestamp"):
            value = data[key]
            data[key] = None if value is None else value.isoformat()
        data["dropped"] = dict(self.dropped)
        data["warnings"] = list(self.warnings)
        json.dumps(data)  # fail here, not in the caller, if something is not JSON-able
        return data


@dataclass(frozen=True)
class LoadResult:
    """The canonical log and the report of how it was obtained."""

    log: pd.DataFrame
    report: LoadReport


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """Turn CLI ``--map canonical=source`` items into ``LogConfig.columns``.

    Only the first ``=`` splits, so source column names may themselves contain ``=``.
    """
    known = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
    mapping: dict[str, str] = {}
    for item in items:
        canonical, sep, source = item.partition("=")
        canonical, source = canonical.strip(), source.strip()
        if not sep or not canonical or not source:
            raise PurchaseLogError(
                f"malformed column mapping {item!r}: expected CANONICAL=SOURCE, "
                f"e.g. customer_id=CustomerID"
            )
        if canonical not in known:
            raise PurchaseLogError(
                f"column mapping {item!r}: unknown canonical column {canonical!r}; "
                f"known: {', '.join(known)}"
            )
        if canonical in mapping and mapping[canonical] != source:
            raise PurchaseLogError(
                f"column mapping {item!r}: {canonical!r} is already mapped to "
                f"{mapping[canonical]!r}"
            )
        mapping[canonical] = source
    return mapping


def read_purchase_log(
    source: str | Path | pd.DataFrame, config: LogConfig | None = None
) -> LoadResult:
    """Load a CSV (``.csv``, ``.csv.gz``), Parquet file or DataFrame into the canonical log."""
    config = config or LogConfig()
    if isinstance(source, pd.DataFrame):
        return canonicalize(source, config)
    path = Path(source)
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        frame = _read_csv(path, config)
    elif name.endswith(_PARQUET_SUFFIXES):
        if not path.exists():
            raise FileNotFoundError(f"purchase log not found: {path}")
        frame = _read_parquet(path, config)
    else:
        raise PurchaseLogError(
            f"unsupported purchase-log file {str(path)!r}: expected one of "
            f"{', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
        )
    return canonicalize(frame, config, source=str(path))


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
    _check_timezone(config.timezone)
    labels = df.columns.tolist()
    names = _resolve_columns(labels, config)
    columns = _SourceColumns(df, labels)
    rows_read = len(df)
    warnings: list[str] = []
    dropped: dict[str, int] = {}

    all_codes, customers = _customer_codes(columns[names["customer_id"]])
    missing_id = all_codes < 0
    n_missing_ids = int(np.count_nonzero(missing_id))
    if n_missing_ids:
        rows = np.flatnonzero(missing_id) + 1
        if config.strict:
            raise PurchaseLogError(
                f"column {_label('customer_id', names)}: {n_missing_ids:,} empty customer "
                f"id(s) at data rows {_show_rows(rows)} ({ROW_NUMBER_NOTE}); strict mode "
                f"rejects them (without strict they are dropped)"
            )
        dropped["missing_customer_id"] = n_missing_ids
        warnings.append(
            f"dropped {n_missing_ids:,} row(s) with an empty customer id "
            f"(column {_label('customer_id', names)}; data rows {_show_rows(rows)})"
        )

    present = ~missing_id
    present_rows = np.flatnonzero(present) + 1
    customer_codes = all_codes[present] if n_missing_ids else all_codes
    del all_codes
    timestamp = _parse_timestamps(
        _take(columns[names["timestamp"]], present if n_missing_ids else None),
        names,
        config,
        present_rows,
        warnings,
    )
    instants = _instants(timestamp)
    order = _customer_time_order(customer_codes, instants)

    duplicate = _exact_duplicates(df, columns, present, customer_codes, instants, order)
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
        order = _without(order, duplicate)
    elif n_duplicates:
        warnings.append(f"kept {n_duplicates:,} exact duplicate row(s) (duplicates='keep')")
    row_numbers = np.flatnonzero(keep) + 1
    keep_mask = keep if len(row_numbers) < rows_read else None

    def kept(column: str) -> pd.Series:
        return _take(columns[names[column]], keep_mask)

    amount = _parse_number(kept("amount"), "amount", names, row_numbers, bound=MAX_ABS_AMOUNT)

    if "quantity" in names:
        quantity = _parse_number(
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
                f"{n_missing:,} empty quantity value(s) in column {_label('quantity', names)} "
                f"taken as 1"
            )
    else:
        quantity = np.ones(len(instants), dtype="float64")

    is_return = (amount < 0) | (quantity < 0)
    source_ids = _text(kept("order_id"), strip=True) if "order_id" in names else None
    if source_ids is not None and config.cancel_prefix:
        cancelled = pc.starts_with(source_ids, config.cancel_prefix)
        if cancelled.null_count:
            cancelled = cancelled.fill_null(False)
        is_return |= cancelled.to_numpy(zero_copy_only=False)
    if "is_return" in names:
        # A canonical log fed back in (e.g. saved to Parquet) keeps its returns: their amounts
        # are already non-negative, so only the flag still says "return".
        is_return |= _parse_flag(kept("is_return"), "is_return", names, config, row_numbers)
    order_id = _order_ids(source_ids, instants, warnings)
    del source_ids

    discount = (
        _parse_flag(kept("discount"), "discount", names, config, row_numbers)
        if "discount" in names
        else np.zeros(len(instants), dtype=bool)
    )
    optional = {
        column: _text(kept(column), strip=False, dictionary_ok=True) if column in names else None
        for column in ("product_id", "category", "channel")
    }

    order, sorted_ids = _break_ties(
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
        first_timestamp=_utc_instant(instants.min()) if len(instants) else None,
        last_timestamp=_utc_instant(instants.max()) if len(instants) else None,
        warnings=warnings,
        n_exact_duplicates=n_duplicates,
        source=source,
    )
    return LoadResult(log=log, report=report)


class _SourceColumns:
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


def _take(values: pd.Series, mask: np.ndarray | None) -> pd.Series:
    """Rows where ``mask`` holds (all rows if None), with a fresh RangeIndex."""
    if mask is not None:
        values = values[mask]
    elif _has_default_index(values):
        return values
    return values.reset_index(drop=True)


def _has_default_index(values: pd.Series) -> bool:
    index = values.index
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def _instants(timestamp: pd.api.extensions.ExtensionArray) -> np.ndarray:
    """UTC microseconds since the epoch, for fast integer keys."""
    return timestamp.to_numpy(dtype="datetime64[us]").view("int64")


def _utc_instant(micros: np.integer) -> pd.Timestamp:
    """The UTC timestamp (unit us) of microseconds since the epoch."""
    return pd.Timestamp(int(micros), unit="us", tz="UTC")


def _without(order: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """A sort order of all rows, restricted to the rows not ``dropped`` (renumbered)."""
    renumber = np.cumsum(~dropped) - 1
    return renumber[order[~dropped[order]]]


def _exact_duplicates(
    df: pd.DataFrame,
    columns: _SourceColumns,
    present: np.ndarray,
    customer_codes: np.ndarray,
    instants: np.ndarray,
    order: np.ndarray,
) -> np.ndarray:
    """Rows (among ``present``) equal in every source column to an earlier row.

    Exact duplicates share customer and instant (adjacent in ``order``) and every numeric
    source column, so the full-row comparison (slow on wide text frames) only runs on rows
    that tie on all of these; order lines share customer and instant, not usually amounts.
    Numeric columns are compared first, text lengths (dearer to get) only for rows still tied.
    """
    duplicate = np.zeros(len(order), dtype=bool)
    codes, times = customer_codes[order], instants[order]
    same = (codes[1:] == codes[:-1]) & (times[1:] == times[:-1])
    del codes, times
    if not same.any():
        return duplicate
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    run = np.cumsum(np.concatenate(([True], ~same)))[tied]
    members = order[tied]  # positions among present rows, runs contiguous
    positions = np.flatnonzero(present)[members] if not present.all() else members
    signature = np.zeros(len(members), dtype=np.uint64)
    for stage in _signature_stages(columns.all()):
        with np.errstate(over="ignore"):
            signature = signature * _MIX + _row_signature(stage, len(df), positions)
        tie = _tie_within_runs(run, signature)
        run, members, positions, signature = run[tie], members[tie], positions[tie], signature[tie]
        if not members.size:
            return duplicate
    candidate = members
    if candidate.size:
        candidate.sort()  # source order: "earlier" means an earlier data row
        rows = np.flatnonzero(present)[candidate] if not present.all() else candidate
        duplicate[candidate] = df.iloc[rows].duplicated(keep="first").to_numpy(dtype=bool)
    return duplicate


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _signature_stages(columns: Sequence[pd.Series]) -> list[list[pd.Series]]:
    """The columns a row signature is built from: numeric-like first, then text (if any)."""
    cheap: list[pd.Series] = []
    text: list[pd.Series] = []
    for column in columns:
        kind = _signature_kind(column.dtype)
        if kind == "text":
            text.append(column)
        elif kind is not None:
            cheap.append(column)
    return [stage for stage in (cheap, text) if stage]


def _signature_kind(dtype: Any) -> str | None:
    """How a column enters the row signature, or None when it does not."""
    # Common dtypes first: what the general checks below conclude for them, sooner.
    if isinstance(dtype, np.dtype):
        return "integer" if dtype.kind in "biu" else "float" if dtype.kind == "f" else None
    if isinstance(dtype, pd.StringDtype):
        return "text"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return None
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    ):
        return "float"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    return None


def _row_signature(columns: Sequence[pd.Series], n_rows: int, positions: np.ndarray) -> np.ndarray:
    """A 64-bit value per row that is equal for rows equal in every one of ``columns``.

    Built from numeric and boolean columns (-0.0 and 0.0 alike, every NaN alike, as in
    ``DataFrame.duplicated``) and the length of text columns; unequal rows may collide, which
    only costs a full comparison. Mixed in source order (sequential memory), then gathered.
    """
    signature = np.zeros(n_rows, dtype=np.uint64)
    for column in columns:
        kind = _signature_kind(column.dtype)
        if kind == "integer":
            values = column.to_numpy().astype(np.uint64)
        elif kind == "float":
            values = _float_bits(column.to_numpy(dtype="float64", na_value=np.nan))
        elif kind == "category":
            values = column.cat.codes.to_numpy().astype(np.uint64)
        elif kind == "text":
            lengths = pc.binary_length(pa.array(column.array))
            if lengths.null_count:
                lengths = lengths.fill_null(-1)
            values = lengths.to_numpy().astype(np.uint64)
        else:
            continue
        with np.errstate(over="ignore"):
            signature *= _MIX
            signature += values
    return signature[positions]


def _float_bits(values: np.ndarray) -> np.ndarray:
    canonical = np.where(np.isnan(values), np.nan, values + 0.0)  # one NaN, no -0.0
    return canonical.view(np.uint64)


_MAX_PAIR_DISTANCE = 32
"""Runs longer than this are searched with a hash table instead of pairwise comparisons."""


def _tie_within_runs(run: np.ndarray, signature: np.ndarray) -> np.ndarray:
    """Rows whose signature equals that of another row of the same run (runs contiguous)."""
    found = np.zeros(len(run), dtype=bool)
    left = np.arange(len(run))
    for distance in range(1, _MAX_PAIR_DISTANCE + 1):
        left = left[left + distance < len(run)]
        left = left[run[left + distance] == run[left]]
        if not left.size:
            return found
        equal = left[signature[left] == signature[left + distance]]
        found[equal] = True
        found[equal + distance] = True
    long_run = np.isin(run, np.unique(run[left]))
    key = pd.DataFrame({"run": run[long_run], "signature": signature[long_run]})
    found[long_run] |= key.duplicated(keep=False).to_numpy(dtype=bool)
    return found


def _stable_order(key: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integers: one vectorised sort of (key, position)."""
    position_bits = max(int(len(key) - 1).bit_length(), 1)
    if len(key) == 0 or int(key.max()).bit_length() + position_bits > 63:
        return np.argsort(key, kind="stable")
    packed = (key.astype(np.int64) << position_bits) | np.arange(len(key), dtype=np.int64)
    packed.sort()  # values are unique, so the fast unstable sort gives the stable order
    return packed & ((1 << position_bits) - 1)


def _customer_time_order(customer_codes: np.ndarray, instants: np.ndarray) -> np.ndarray:
    """Stable argsort by (customer, instant): by instant, then by customer (skipped if sorted)."""
    if len(instants) == 0:
        return np.zeros(0, dtype=np.int64)
    codes_diff = np.diff(customer_codes)
    if ((codes_diff > 0) | ((codes_diff == 0) & (np.diff(instants) >= 0))).all():
        return np.arange(len(instants))
    del codes_diff
    if (np.diff(instants) >= 0).all():
        return _stable_order(customer_codes)
    start = int(instants.min())
    step = 1_000_000 if not (instants % 1_000_000).any() else 1
    by_time = _stable_order((instants - start) // step)
    return by_time[_stable_order(customer_codes[by_time])]


def _is_identity(order: np.ndarray) -> bool:
    """Whether a permutation of row positions keeps every row in place.

    Taking Arrow text in such an order is a costly no-op (a strictly increasing permutation
    is the identity, so one comparison pass tells).
    """
    return bool((order[1:] > order[:-1]).all())


def _break_ties(
    order: np.ndarray,
    customer_codes: np.ndarray,
    instants: np.ndarray,
    order_id: pa.Array,
    *,
    ids_from_instants: bool,
) -> tuple[np.ndarray, pa.Array]:
    """Order rows sharing customer and instant by order id; stable, so ties keep source order.

    Order ids (text, slow to rank) are only ranked in runs where they differ; when every id
    was made from its row's instant (``ids_from_instants``), tied rows have equal ids. Also
    returns the order ids taken in the final order (taking text is costly, so done once).
    """
    sorted_ids = order_id if _is_identity(order) else order_id.take(order)
    if ids_from_instants:
        return order, sorted_ids
    codes, times = customer_codes[order], instants[order]
    same = (codes[1:] == codes[:-1]) & (times[1:] == times[:-1])
    del codes, times
    if not same.any():
        return order, sorted_ids
    differs = same & pc.not_equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
    if not differs.any():
        return order, sorted_ids
    run = np.cumsum(np.concatenate(([True], ~same)))
    mixed = np.isin(run, np.unique(run[1:][differs]))
    local = np.flatnonzero(mixed)
    ranks = pc.rank(sorted_ids.take(local), sort_keys="ascending", tiebreaker="dense")
    order = order.copy()
    within = local[np.lexsort((ranks.to_numpy(), run[local]))]
    order[local] = order[within]
    fixed = np.arange(len(order))
    fixed[local] = within
    return order, sorted_ids.take(fixed)


# --- reading -------------------------------------------------------------------------------


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


# --- columns -------------------------------------------------------------------------------


def _resolve_columns(found: Sequence[Hashable], config: LogConfig) -> dict[str, str]:
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
    return names


def _label(column: str, names: Mapping[str, str]) -> str:
    source = names.get(column, column)
    return repr(column) if source == column else f"{source!r} (canonical {column!r})"


def _show_rows(rows: np.ndarray, values: Sequence[Any] | None = None) -> str:
    shown = rows[:MAX_SHOWN_ROWS]
    if values is None:
        text = ", ".join(str(int(row)) for row in shown)
    else:
        text = ", ".join(
            f"{int(row)} ({value!r})" for row, value in zip(shown, values, strict=False)
        )
    if len(rows) > MAX_SHOWN_ROWS:
        text += f", ... ({len(rows):,} in all)"
    return text


def _bad_values_error(
    column: str,
    names: Mapping[str, str],
    problem: str,
    bad: np.ndarray,
    raw: pd.Series,
    row_numbers: np.ndarray,
    hint: str = "",
) -> PurchaseLogError:
    positions = np.flatnonzero(bad)
    values = [_display(value) for value in raw.iloc[positions[:MAX_SHOWN_ROWS]]]
    message = (
        f"column {_label(column, names)}: {len(positions):,} {problem} at data rows "
        f"{_show_rows(row_numbers[positions], values)} ({ROW_NUMBER_NOTE})"
    )
    return PurchaseLogError(message + (f". {hint}" if hint else ""))


class _Shown(str):
    """A marker shown as is in messages (``{value!r}`` would add quotes)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


_NAN = _Shown("NaN")
_MISSING = _Shown("<missing>")


def _display(value: Any) -> Any:
    """A cell as a message shows it: NaN as ``NaN``, a missing cell as ``<missing>``."""
    if isinstance(value, float | np.floating) and np.isnan(value):
        return _NAN
    if value is None or value is pd.NA or value is pd.NaT:
        return _MISSING
    return value.item() if isinstance(value, np.generic) else value


# --- conversions ---------------------------------------------------------------------------


def _as_text(values: pd.Series, *, strip: bool) -> pd.Series:
    """Any id-like column as pandas ``str`` (missing stays missing, ``""`` counts as missing)."""
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and bool((finite == np.floor(finite)).all()):
            # 123.0 in a float column (an int column with holes) means id "123".
            values = values.astype("Int64")
    text = values.astype("str")
    if strip:
        text = text.str.strip()
    return _blank_to_na(text)


def _blank_to_na(text: pd.Series) -> pd.Series:
    blank = (text == "").to_numpy(dtype=bool, na_value=False)
    return text.mask(blank) if blank.any() else text


def _arrow(values: Any) -> pa.Array:
    """One contiguous Arrow array (pandas ``str`` columns hold Arrow data already)."""
    array = pa.array(values)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _text(values: pd.Series, *, strip: bool, dictionary_ok: bool = False) -> pa.Array:
    """An id-like column as Arrow text, like :func:`_as_text` (``""`` becomes missing).

    With ``dictionary_ok`` a categorical column stays dictionary-encoded (cleaned per category).
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = _clean_text(_arrow(values.cat.categories.astype("str").array), strip=strip)
        codes = values.cat.codes.to_numpy()
        encoded = pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), categories)
        if dictionary_ok:
            return encoded
        return encoded.cast(categories.type)
    return _clean_text(_arrow(_str_array(values)), strip=strip)


def _str_array(values: pd.Series) -> pd.api.extensions.ExtensionArray:
    """The values as a pandas ``str`` array (no conversion when they already are one)."""
    if _is_str(values.dtype):
        return values.array
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and bool((finite == np.floor(finite)).all()):
            values = values.astype("Int64")  # 123.0 in an int column with holes means "123"
    return values.astype(_STR).array


def _is_str(dtype: Any) -> bool:
    return isinstance(dtype, pd.StringDtype) and dtype == _STR


def _clean_text(text: pa.Array, *, strip: bool) -> pa.Array:
    if strip:
        text = pc.utf8_trim_whitespace(text)
    blank = pc.equal(text, _empty_text(text.type))
    if not blank.true_count:
        return text
    return pc.if_else(blank.fill_null(False), pa.scalar(None, text.type), text)


# Compute calls given a Python str convert it to a scalar of the array's type on every call,
# which costs several times the comparison itself on request-sized arrays.
_EMPTY_TEXT = {kind: pa.scalar("", kind) for kind in (pa.string(), pa.large_string())}


def _empty_text(kind: pa.DataType) -> pa.Scalar:
    """``""`` as an Arrow scalar of text type ``kind``."""
    empty = _EMPTY_TEXT.get(kind)
    return pa.scalar("", kind) if empty is None else empty


def _str_from_arrow(values: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """Arrow text as a pandas ``str`` array: what ``pd.array(values, dtype="str")`` builds
    (the same large_string cast), without its dtype dispatch."""
    if not pa.types.is_large_string(values.type):
        values = pc.cast(values, pa.large_string())
    return pd.arrays.ArrowStringArray(values, dtype=_STR)


def _customer_codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes into the sorted, stripped customer ids (-1 where empty) and those ids."""
    return _text_customer_codes(_arrow(_str_array(values)))


def _text_customer_codes(text: pa.Array) -> tuple[np.ndarray, pd.Index]:
    """:func:`_customer_codes` of Arrow text (``features.log_arrays`` shares the rule).

    Stripping and sorting run on the distinct raw values only, not on every row.
    """
    encoded = pc.dictionary_encode(text)
    dictionary = encoded.dictionary
    stripped = pc.utf8_trim_whitespace(dictionary)
    if (
        stripped.equals(dictionary)  # a dictionary holds no nulls: equal values, element-wise
        and not pc.equal(dictionary, _empty_text(dictionary.type)).true_count
    ):  # the usual case: already stripped, so already distinct; only sort
        by_value = pc.array_sort_indices(dictionary).to_numpy()
        distinct = dictionary if _is_identity(by_value) else dictionary.take(by_value)
        lookup = np.empty(len(dictionary) + 1, dtype=np.int64)
        lookup[by_value] = np.arange(len(dictionary))
        lookup[-1] = -1
    else:
        distinct = pc.unique(stripped)
        distinct = distinct.take(pc.array_sort_indices(distinct))
        if len(distinct) and distinct[0].as_py() == "":  # "" sorts first; it means "missing"
            distinct = distinct[1:]
        entry_code = pc.index_in(stripped, value_set=distinct).fill_null(-1)
        lookup = np.append(entry_code.to_numpy(zero_copy_only=False).astype(np.int64), -1)
    indices = encoded.indices
    if indices.null_count:
        indices = indices.fill_null(len(lookup) - 1)
    codes = lookup[indices.to_numpy(zero_copy_only=False)]
    return codes, pd.Index(_str_from_arrow(distinct), copy=False)


def _check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise PurchaseLogError(
            f"unknown time zone {name!r} in LogConfig.timezone (use an IANA name such as "
            f"'UTC' or 'Europe/Berlin')"
        ) from error


def _parse_timestamps(
    raw: pd.Series,
    names: Mapping[str, str],
    config: LogConfig,
    row_numbers: np.ndarray,
    warnings: list[str],
) -> pd.api.extensions.ExtensionArray:
    """To UTC microseconds (a ``DatetimeArray``): explicit offsets are honoured, naive values
    are read in ``config.timezone``."""
    dtype = raw.dtype
    parsed: pd.Series | pd.api.extensions.ExtensionArray
    if isinstance(dtype, pd.DatetimeTZDtype):
        # Already UTC microseconds (what the HTTP service sends): converting would be a no-op.
        canonical = dtype.unit == "us" and dtype.tz is datetime.UTC
        parsed = raw.array if canonical else raw.dt.tz_convert("UTC")
        naive = None
    elif pd.api.types.is_datetime64_dtype(dtype):
        parsed = raw.dt.tz_localize("UTC")
        naive = np.ones(len(raw), dtype=bool)
    else:
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            if config.date_format is None and len(raw):
                bad = np.ones(len(raw), dtype=bool)
                raise _bad_values_error(
                    "timestamp",
                    names,
                    "numeric timestamp(s) without a date format",
                    bad,
                    raw,
                    row_numbers,
                    hint="set date_format (e.g. '%Y%m%d' for 19970101)",
                )
            text = _as_text(raw, strip=True)
        else:
            text = _blank_to_na(raw.astype("str").str.strip())
        fmt = config.date_format or "ISO8601"
        parsed = None if config.date_format else _parse_plain_iso(text)
        if parsed is None:
            parsed = pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            expected = (
                f"format {config.date_format!r}"
                if config.date_format
                else "ISO 8601, e.g. 2024-03-01T12:00:00+01:00 or 2024-03-01 12:00"
            )
            raise _bad_values_error(
                "timestamp",
                names,
                "unparseable or empty timestamp(s)",
                bad,
                raw,
                row_numbers,
                hint=f"expected {expected}; set date_format for other layouts",
            )
        naive = None
        if config.timezone != "UTC":
            carries_zone = pc.match_substring_regex(
                pa.array(text.array),
                _OFFSET_PATTERN,
            )
            naive = ~np.asarray(carries_zone.fill_null(False), dtype=bool)
    if naive is not None and config.timezone != "UTC" and naive.any():
        parsed = _localize(parsed, naive, config.timezone, warnings)
    values = parsed.array if isinstance(parsed, pd.Series) else parsed
    bad = values.isna()
    if bad.any():
        raise _bad_values_error("timestamp", names, "empty timestamp(s)", bad, raw, row_numbers)
    values = values if values.unit == "us" else values.as_unit("us")
    outside = (values < _EARLIEST) | (values >= _LATEST)
    if outside.any():
        raise _bad_values_error(
            "timestamp",
            names,
            f"timestamp(s) outside [{_EARLIEST.date()}, {_LATEST.date()}) UTC",
            outside,
            raw,
            row_numbers,
            hint="retain reads purchases in that range only",
        )
    return values


_EARLIEST = pd.Timestamp(EARLIEST_TIME).as_unit("us")
_LATEST = pd.Timestamp(LATEST_TIME).as_unit("us")


# The common ISO 8601 layouts, all zoned or all naive, that Arrow parses in one pass (and
# pandas would parse to the same instants); anything else goes to pandas.
_PLAIN_ISO_PATTERN = (
    r"^\d{4}-\d\d-\d\d(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?$"
)


def _parse_plain_iso(text: pd.Series) -> pd.Series | None:
    """UTC instants for plain ISO 8601 text, or None (pandas then parses and reports)."""
    values = pa.array(text.array)
    if values.null_count or not len(values):
        return None
    if not pc.all(pc.match_substring_regex(values, _PLAIN_ISO_PATTERN)).as_py():
        return None
    try:
        parsed = values.cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        try:
            parsed = pc.assume_timezone(values.cast(pa.timestamp("us")), "UTC")
        except pa.ArrowInvalid:
            return None
    micros = parsed.cast(pa.int64()).to_numpy(zero_copy_only=False).view("datetime64[us]")
    return pd.Series(pd.DatetimeIndex(micros).tz_localize("UTC"))


def _localize(
    parsed: pd.Series, naive: np.ndarray, timezone: str, warnings: list[str]
) -> pd.Series:
    """Reinterpret the wall times of naive rows (parsed as UTC) in ``timezone``.

    Wall times that occur twice (end of daylight saving) are taken as standard time and wall
    times that never occur (start of daylight saving) are shifted forward; both are counted in
    a warning rather than rejected, because a real log always has purchases in those hours.
    """
    wall = parsed[naive].dt.tz_localize(None)
    probe = wall.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    n_odd = int(probe.isna().sum() - wall.isna().sum())
    local = wall.dt.tz_localize(
        timezone, ambiguous=np.zeros(len(wall), dtype=bool), nonexistent="shift_forward"
    )
    if n_odd:
        warnings.append(
            f"{n_odd:,} naive timestamp(s) fall in a daylight-saving change of {timezone}: "
            f"repeated wall times read as standard time, skipped ones shifted forward"
        )
    out = parsed.copy()
    out[naive] = local.dt.tz_convert("UTC").dt.as_unit(parsed.dt.unit)
    return out


def _parse_number(
    raw: pd.Series,
    column: str,
    names: Mapping[str, str],
    row_numbers: np.ndarray,
    *,
    bound: float,
    missing_ok: bool = False,
) -> np.ndarray:
    """To float64; non-numeric, infinite, beyond ``±bound`` (and, unless ``missing_ok``, empty)
    values fail: sums of such values overflow or lose the cents downstream."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise _bad_values_error(
            column,
            names,
            "boolean value(s) where a number is needed",
            np.ones(len(raw), dtype=bool),
            raw,
            row_numbers,
        )
    if isinstance(raw.dtype, np.dtype) and raw.dtype == np.float64:
        values = raw.to_numpy()  # NaN is its only missing value: nothing to convert
        present = ~np.isnan(values)
    elif pd.api.types.is_numeric_dtype(raw.dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        present = ~np.isnan(values)
    else:
        text = _blank_to_na(raw.astype("str").str.strip())
        present = text.notna().to_numpy()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = present & ~np.isfinite(values)
    if not missing_ok:
        bad |= ~present
    if bad.any():
        problem = "non-numeric or infinite" if missing_ok else "non-numeric, infinite or empty"
        raise _bad_values_error(column, names, f"{problem} value(s)", bad, raw, row_numbers)
    with np.errstate(invalid="ignore"):
        beyond = np.abs(values) > bound  # NaN (allowed missing) compares False
    if beyond.any():
        raise _bad_values_error(
            column,
            names,
            f"value(s) beyond ±{bound:g}",
            beyond,
            raw,
            row_numbers,
            hint=f"retain accepts |{column}| <= {bound:g}",
        )
    return values


def _parse_flag(
    raw: pd.Series,
    column: str,
    names: Mapping[str, str],
    config: LogConfig,
    row_numbers: np.ndarray,
) -> np.ndarray:
    """Bool, 0/1 or text (true when in ``discount_true_values``, any case); empty is False."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=bool, na_value=False)
    if pd.api.types.is_numeric_dtype(raw.dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        bad = ~np.isnan(values) & (values != 0) & (values != 1)
        if bad.any():
            raise _bad_values_error(column, names, "value(s) other than 0/1", bad, raw, row_numbers)
        return values == 1
    text = raw.astype("str").str.strip().str.lower()
    true_values = [value.lower() for value in config.discount_true_values]
    return text.isin(true_values).to_numpy(dtype=bool, na_value=False)


_ISO_UTC_SUFFIX = pa.scalar("Z", pa.string())


def _order_ids(ids: pa.Array | None, instants: np.ndarray, warnings: list[str]) -> pa.Array:
    """Source order ids; where none, the UTC ISO time, so a customer's rows at one instant form one order."""
    if ids is not None:
        if not ids.null_count:
            return ids
        missing = ids.is_null().to_numpy(zero_copy_only=False)
        warnings.append(f"{missing.sum():,} empty order id(s) replaced by the row's UTC timestamp")
    else:
        missing = None
    micros = instants if missing is None else instants[missing]
    times = micros.view("datetime64[us]")
    if not (micros % 1_000_000).any():
        times = times.astype("datetime64[s]")  # no ".000000" when there are no fractions
    # Arrow casts to "YYYY-MM-DD HH:MM:SS[.ffffff]" quickly; make that ISO 8601 in UTC.
    text = pc.cast(pa.array(times), pa.string())
    text = pc.replace_substring(text, " ", "T")
    synthetic = pc.binary_join_element_wise(text, _ISO_UTC_SUFFIX, _EMPTY_TEXT[pa.string()])
    if ids is None:
        return synthetic  # (string, not large_string: the log's column is cast once, at the end)
    synthetic = synthetic.cast(pa.large_string())
    return pc.replace_with_mask(ids.cast(pa.large_string()), pa.array(missing), synthetic)


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

    in_place = _is_identity(order)

    def text(values: pa.Array | None) -> Any:
        if values is None:
            return _str_from_arrow(pa.nulls(len(order), pa.large_string()))
        taken = values if in_place else values.take(order)
        if pa.types.is_dictionary(taken.type):
            taken = taken.cast(taken.type.value_type)
        return _str_from_arrow(taken)

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
        "order_id": _str_from_arrow(sorted_ids),
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
