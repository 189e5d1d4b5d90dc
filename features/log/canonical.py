"""The canonical rules for a log's values, and the report of what they did.

:func:`features.log.purchase_log.canonicalize` applies these rules column by column: times
(explicit offsets honoured, naive values read in ``LogConfig.timezone``, within the contract's
range), amounts and quantities (finite, bounded; an empty quantity is 1), flags (``discount``,
``is_return``), and order ids (a missing one is the row's UTC instant, so a customer's rows at
one instant form one order). Bad input is rejected with a
:class:`~features.log.schema.PurchaseLogError` that names the column, the 1-based data rows
(header line not counted) and the offending values; repairs are counted in a
:class:`LoadReport`.
"""

from __future__ import annotations

import datetime
import json
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.log.schema import EARLIEST_TIME, LATEST_TIME, LogConfig, PurchaseLogError
from features.log.text_columns import as_text, blank_to_na, empty_text

__all__ = [
    "MAX_SHOWN_ROWS",
    "ROW_NUMBER_NOTE",
    "LoadReport",
    "bad_values_error",
    "check_timezone",
    "column_label",
    "fill_order_ids",
    "parse_flag",
    "parse_number",
    "parse_timestamps",
    "show_rows",
    "utc_instant",
    "utc_micros",
]

MAX_SHOWN_ROWS = 5
"""How many offending rows an error message lists; enough to find the problem, short to read."""

ROW_NUMBER_NOTE = "row numbers are 1-based data rows, header line not counted"

# A time of day followed by a UTC offset or "Z": such strings carry their own zone.
_OFFSET_PATTERN = r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(?:[Zz]|UTC|[+-]\d\d(?::?\d\d)?)$"


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


def column_label(column: str, names: Mapping[str, str]) -> str:
    source = names.get(column, column)
    return repr(column) if source == column else f"{source!r} (canonical {column!r})"


def show_rows(rows: np.ndarray, values: Sequence[Any] | None = None) -> str:
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


def bad_values_error(
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
        f"column {column_label(column, names)}: {len(positions):,} {problem} at data rows "
        f"{show_rows(row_numbers[positions], values)} ({ROW_NUMBER_NOTE})"
    )
    return PurchaseLogError(message + (f". {hint}" if hint else ""))


class _Shown(str):
    """A marker shown as is in messages (``{value!r}`` would add quotes)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


_NAN = _Shown("NaN")
_MISSING = _Shown("<missing>")


def _display(value: Any) -> Any:  # any cell of a user's log
    """A cell as a message shows it: NaN as ``NaN``, a missing cell as ``<missing>``."""
    if isinstance(value, float | np.floating) and np.isnan(value):
        return _NAN
    if value is None or value is pd.NA or value is pd.NaT:
        return _MISSING
    return value.item() if isinstance(value, np.generic) else value


def check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise PurchaseLogError(
            f"unknown time zone {name!r} in LogConfig.timezone (use an IANA name such as "
            f"'UTC' or 'Europe/Berlin')"
        ) from error


def parse_timestamps(
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
                raise bad_values_error(
                    "timestamp",
                    names,
                    "numeric timestamp(s) without a date format",
                    bad,
                    raw,
                    row_numbers,
                    hint="set date_format (e.g. '%Y%m%d' for 19970101)",
                )
            text = as_text(raw, strip=True)
        else:
            text = blank_to_na(raw.astype("str").str.strip())
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
            raise bad_values_error(
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
        raise bad_values_error("timestamp", names, "empty timestamp(s)", bad, raw, row_numbers)
    values = values if values.unit == "us" else values.as_unit("us")
    outside = (values < _EARLIEST) | (values >= _LATEST)
    if outside.any():
        raise bad_values_error(
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


def utc_micros(timestamp: pd.api.extensions.ExtensionArray) -> np.ndarray:
    """UTC microseconds since the epoch, for fast integer keys."""
    return timestamp.to_numpy(dtype="datetime64[us]").view("int64")


def utc_instant(micros: np.integer) -> pd.Timestamp:
    """The UTC timestamp (unit us) of microseconds since the epoch."""
    return pd.Timestamp(int(micros), unit="us", tz="UTC")


def parse_number(
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
        raise bad_values_error(
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
        text = blank_to_na(raw.astype("str").str.strip())
        present = text.notna().to_numpy()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = present & ~np.isfinite(values)
    if not missing_ok:
        bad |= ~present
    if bad.any():
        problem = "non-numeric or infinite" if missing_ok else "non-numeric, infinite or empty"
        raise bad_values_error(column, names, f"{problem} value(s)", bad, raw, row_numbers)
    with np.errstate(invalid="ignore"):
        beyond = np.abs(values) > bound  # NaN (allowed missing) compares False
    if beyond.any():
        raise bad_values_error(
            column,
            names,
            f"value(s) beyond ±{bound:g}",
            beyond,
            raw,
            row_numbers,
            hint=f"retain accepts |{column}| <= {bound:g}",
        )
    return values


def parse_flag(
    raw: pd.Series,
    column: str,
    names: Mapping[str, str],
    config: LogConfig,
    row_numbers: np.ndarray,
) -> np.ndarray:
    """Bool, 0/1 or text (``discount_true_values`` / ``discount_false_values``, any case);
    empty is False; any other value is an error naming its rows, never a silent False."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=bool, na_value=False)
    if pd.api.types.is_numeric_dtype(raw.dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        bad = ~np.isnan(values) & (values != 0) & (values != 1)
        if bad.any():
            raise bad_values_error(column, names, "value(s) other than 0/1", bad, raw, row_numbers)
        return values == 1
    text = raw.astype("str").str.strip().str.lower()
    empty = (raw.isna() | (text == "")).to_numpy(dtype=bool)
    truth = text.isin([value.lower() for value in config.discount_true_values]).to_numpy(bool)
    known = truth | text.isin([v.lower() for v in config.discount_false_values]).to_numpy(bool)
    bad = ~(known | empty)
    if bad.any():
        spellings = "/".join(config.discount_true_values + config.discount_false_values)
        raise bad_values_error(
            column,
            names,
            f"value(s) other than {spellings} or empty",
            bad,
            raw,
            row_numbers,
            hint="set discount_true_values / discount_false_values in the log config",
        )
    return truth & ~empty


_ISO_UTC_SUFFIX = pa.scalar("Z", pa.string())


def fill_order_ids(ids: pa.Array | None, instants: np.ndarray, warnings: list[str]) -> pa.Array:
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
    synthetic = pc.binary_join_element_wise(text, _ISO_UTC_SUFFIX, empty_text(pa.string()))
    if ids is None:
        return synthetic  # (string, not large_string: the log's column is cast once, at the end)
    synthetic = synthetic.cast(pa.large_string())
    return pc.replace_with_mask(ids.cast(pa.large_string()), pa.array(missing), synthetic)
