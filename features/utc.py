"""Times as UTC: the one conversion of a point in time every package uses, and its units.

The canonical log holds UTC instants (``features.schema``). A time given from outside (an
``--as-of`` option, a config value, a notebook cell, a model tag) may be a date, an ISO 8601
string, a ``datetime`` or a ``Timestamp``, naive or zoned: :func:`to_utc_timestamp` turns each
into one tz-aware UTC ``Timestamp`` (naive input is taken as UTC, zoned input is converted) and
rejects what is not a time in the contract's range with an error naming the option. Array code
counts time in int64 microseconds since the epoch; ``US_PER_DAY`` is its day.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from features.errors import InputError
from features.schema import EARLIEST_TIME, LATEST_TIME

__all__ = ["US_PER_DAY", "to_utc_timestamp"]

US_PER_DAY = 86_400_000_000
"""Microseconds in a (UTC) day: the unit of the int64 time arrays."""


def to_utc_timestamp(as_of: str | datetime | pd.Timestamp, name: str = "as_of") -> pd.Timestamp:
    """``as_of`` as a tz-aware UTC timestamp; naive input is taken as UTC.

    A UTC ``Timestamp`` is returned as is: the scorer passes one on every call. Anything else
    is parsed and must lie in the purchase log's time range (``features.schema``), else an
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
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if not EARLIEST_TIME <= ts < LATEST_TIME:
        raise InputError(
            f"{name} {as_of!r} is outside the supported range "
            f"[{EARLIEST_TIME.date()}, {LATEST_TIME.date()}) UTC"
        )
    return ts
