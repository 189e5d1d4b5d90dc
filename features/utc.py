"""Times as UTC: the one conversion of a point in time every package uses, and its units.

The canonical log holds UTC instants (``features.log.schema``). A time given from outside (an
``--as-of`` option, a config value, a notebook cell, a model tag) may be a date, an ISO 8601
string, a ``datetime`` or a ``Timestamp``, naive or zoned: :func:`to_utc_timestamp` turns each
into one tz-aware UTC ``Timestamp`` (naive input is taken as UTC, zoned input is converted) and
rejects what is not a time in the contract's range with an error naming the option. Array code
counts time in int64 microseconds since the epoch; ``US_PER_DAY`` is its day.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

import pandas as pd

from features.errors import InputError
from features.log.schema import EARLIEST_TIME, LATEST_TIME

__all__ = ["US_PER_DAY", "as_utc", "day_after_last_row", "to_utc_timestamp"]

US_PER_DAY = 86_400_000_000
"""Microseconds in a (UTC) day: the unit of the int64 time arrays."""

_Times = TypeVar("_Times", pd.Timestamp, pd.DatetimeIndex)


def as_utc(times: _Times) -> _Times:
    """``times`` in UTC: naive values are taken as UTC, zoned ones converted.

    The one rule for a time that is already parsed (a log's column, a ``Timestamp`` handed
    in by code); text from a user goes through :func:`to_utc_timestamp`, which also checks
    the range and names the option.
    """
    return times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")


def day_after_last_row(log: pd.DataFrame) -> pd.Timestamp:
    """The first UTC day the log does not cover: midnight after its last row's UTC day.

    What "as of the end of the data" means for every command and default that needs it
    (``retain train``'s production fit, scoring and reporting without ``--as-of``, the end
    of what ``retain lift`` and ``retain uplift-train`` can observe): a date from the data,
    never the clock.
    """
    if len(log) == 0:
        raise InputError("the purchase log has no rows")
    return as_utc(pd.Timestamp(log["timestamp"].max())).normalize() + pd.Timedelta(days=1)


def to_utc_timestamp(as_of: str | datetime | pd.Timestamp, name: str = "as_of") -> pd.Timestamp:
    """``as_of`` as a tz-aware UTC timestamp; naive input is taken as UTC.

    A UTC ``Timestamp`` is returned as is: the scorer passes one on every call. Anything else
    is parsed and must lie in the purchase log's time range (``features.log.schema``), else an
    :class:`~features.errors.InputError` names ``name`` (e.g. ``"--as-of"``) and the value.
    """
    if type(as_of) is pd.Timestamp and as_of.tzinfo is UTC:  # type: ignore[union-attr]  # pandas is untyped: no narrowing
        return as_of
    try:
        ts = pd.Timestamp(as_of)
    except (ValueError, TypeError, OverflowError):
        ts = None
    if ts is None or ts is pd.NaT:
        raise InputError(
            f"{name} {as_of!r} is not a point in time; use YYYY-MM-DD (UTC) or an ISO 8601 time"
        )
    ts = as_utc(ts)
    if not EARLIEST_TIME <= ts < LATEST_TIME:
        raise InputError(
            f"{name} {as_of!r} is outside the supported range "
            f"[{EARLIEST_TIME.date()}, {LATEST_TIME.date()}) UTC"
        )
    return ts
