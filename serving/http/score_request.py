"""A ``/score`` request as the scorer reads it: checked, then its histories as arrays.

What the schema cannot say (the per-deployment customer limit, a customer repeated with
the same ``as_of``) is checked here; the histories of many customers become one canonical
log in arrays, without a DataFrame.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, cast

import numpy as np
import pyarrow as pa

from features.log.log_arrays import LogArrays
from features.log.schema import LogConfig, PurchaseLogError
from features.log.small_log import typed_log_arrays
from serving.http.schemas import EARLIEST, LATEST, CustomerIn

_EARLIEST_US = int(EARLIEST.timestamp()) * 1_000_000
_LATEST_US = int(LATEST.timestamp()) * 1_000_000
_UTC_MICROS = pa.timestamp("us", tz="UTC")


def request_refusal(
    customers: Sequence[CustomerIn], max_customers: int
) -> tuple[int, str, tuple[str | int, ...]] | None:
    """(status, message, field) when the customers cannot be scored as sent, else None."""
    if len(customers) > max_customers:
        return (
            413,
            f"too many customers: {len(customers)} > limit {max_customers} "
            "per request (RETAIN_MAX_CUSTOMERS); split the request",
            ("customers",),
        )
    seen: dict[tuple[str, Any], int] = {}
    for index, customer in enumerate(customers):
        key = (customer.customer_id, customer.as_of)
        if key in seen:
            return (
                400,
                f"customers[{index}]: customer_id {customer.customer_id!r} repeats "
                f"customers[{seen[key]}] with the same as_of",
                ("customers", index, "customer_id"),
            )
        seen[key] = index
    return None


def history_log(customers: Sequence[CustomerIn], config: LogConfig | None = None) -> LogArrays:
    """The canonical log of many customers' history rows, as arrays (no DataFrame).

    Columns are built field by field, by C-level ``map`` calls (per-row Python is the cost
    here); an
    optional column is passed only when some row has a value, as a source file without that
    column would be, so the defaults (quantity 1, no discount, order ids from the time) are
    applied in one place: :func:`features.log.log_arrays.canonical_log_arrays` (or, for a few
    rows, its plain-Python twin :func:`features.log.small_log.typed_log_arrays` picks). ``config`` is the
    model's log config (its counting rules apply; a request has no source column names).
    """
    rows = list(chain.from_iterable(customer.history for customer in customers))
    ids = list(chain.from_iterable(repeat(c.customer_id, len(c.history)) for c in customers))
    n = len(rows)
    sent = set().union(*rows)  # an optional field no row sends is not read at all

    def column(name: str) -> list[Any] | None:
        """The field's values, or None when no row has one (as a file without it)."""
        if name not in sent:
            return None
        plain = cast(list[dict[str, Any]], rows)
        values = list(map(dict.get, plain, repeat(name)))  # no Python frame per row
        return values if values.count(None) != n else None

    quantity = column("quantity")
    discount = column("discount")
    text = {name: column(name) for name in ("order_id", "product_id", "category", "channel")}
    return typed_log_arrays(
        ids,
        utc_micros(list(map(itemgetter("timestamp"), rows))),
        np.fromiter(map(itemgetter("amount"), rows), np.float64, n),
        quantity=(
            None
            if quantity is None
            else np.array([1.0 if q is None else q for q in quantity], dtype=np.float64)
        ),
        discount=(
            np.array([bool(d) for d in discount], dtype=bool)
            if discount is not None and any(discount)
            else None
        ),
        config=config,
        **text,
    )


def utc_micros(stamps: list[datetime]) -> np.ndarray:
    """Datetimes (naive ones are UTC) as int64 UTC microseconds, exactly, bounds checked.

    Arrow converts the datetime objects in C++ (naive ones as UTC wall time, aware ones by
    their offset), at about half the cost of a ``datetime.timestamp()`` call per row (pydantic's
    ``TzInfo`` makes every offset lookup a call into its extension) and exactly.
    """
    micros = pa.array(stamps, type=_UTC_MICROS).to_numpy(zero_copy_only=False).view(np.int64)
    bad = ~((micros >= _EARLIEST_US) & (micros < _LATEST_US))
    if bad.any():
        row = int(np.argmax(bad))
        raise PurchaseLogError(
            f"history[{row}].timestamp must lie between {EARLIEST.date()} and {LATEST.date()} (UTC)"
        )
    return micros
