"""When customers' orders fall: counts and spend in windows before ``as_of``, and weekdays.

:mod:`features.builders` computes these from the orders of the purchase rows before ``as_of``,
sorted by customer then time. They are kept apart because each is a few array passes over the
orders that avoid a dense (bucket or weekday, customer) table: such tables are several times
the size of the orders, and filling and reading them cost more than the passes
(``tests/features/test_order_times.py`` holds the table versions as references).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from features.catalog import WINDOWS_DAYS
from features.utc import US_PER_DAY

__all__ = [
    "SEASON_LAG_DAYS",
    "TABLE_MAX_CUSTOMERS",
    "TREND_DAYS",
    "WEEKDAY_TABLE_MAX_CUSTOMERS",
    "most_on_one_weekday",
    "per_day",
    "weekday_most_by_fields",
    "weekday_most_by_table",
    "window_columns",
    "windows_by_runs",
    "windows_by_tables",
]

TREND_DAYS = 180
SEASON_LAG_DAYS = 365
_DIRECT_DAYS = 64  # ``per_day`` evaluates up to this many days directly (a request's few)


TABLE_MAX_CUSTOMERS = 4096
"""Up to this many customers the window columns come from dense (bucket, customer) tables:
small tables stay in the CPU's caches and take fewer numpy calls than the runs (a request's
customers; measured crossover 4,000-10,000 customers at about three orders each)."""
WEEKDAY_TABLE_MAX_CUSTOMERS = 65_536
"""Up to this many customers the weekday counts come from a dense (weekday, customer) table
(measured crossover 10,000-100,000 customers)."""


def window_columns(
    o_t: np.ndarray,
    o_g: np.ndarray,
    o_cust_new: np.ndarray,
    o_val: np.ndarray,
    n_cust: int,
    cutoff: int,
    horizon_days: int,
) -> dict[str, np.ndarray]:
    """The window columns (see :func:`windows_by_runs`), by whichever of the two equal
    computations costs less for ``n_cust`` customers."""
    if n_cust <= TABLE_MAX_CUSTOMERS:
        return windows_by_tables(o_t, o_g, o_val, n_cust, cutoff, horizon_days)
    return windows_by_runs(o_t, o_g, o_cust_new, o_val, n_cust, cutoff, horizon_days)


def windows_by_tables(
    o_t: np.ndarray, o_g: np.ndarray, o_val: np.ndarray, n_cust: int, cutoff: int, horizon_days: int
) -> dict[str, np.ndarray]:
    """The window columns from bincounts into dense (bucket, customer) tables, windows summed
    over the table's rows: the same bits as :func:`windows_by_runs` (runs are added in the
    order the rows are)."""
    season_end = SEASON_LAG_DAYS - horizon_days
    edge_days, first_bucket = _window_edges(season_end)
    key = _buckets(o_t, cutoff, edge_days)
    key *= n_cust
    key += o_g
    n_buckets = len(edge_days) + 1
    bucket_orders = np.bincount(key, minlength=n_buckets * n_cust).reshape(n_buckets, n_cust)
    bucket_spend = np.bincount(key, weights=o_val, minlength=n_buckets * n_cust).reshape(
        n_buckets, n_cust
    )

    def window(buckets: np.ndarray, start_days: int, end_days: int = 0) -> np.ndarray:
        """Orders or spend per customer in [as_of - start_days, as_of - end_days)."""
        lo = first_bucket[start_days]
        hi = first_bucket[end_days] if end_days > 0 else n_buckets
        return buckets[lo:hi].sum(axis=0)

    # order counts are integers, so one running total from the last bucket back gives every
    # window's count exactly (money keeps its sums: their order is part of the result)
    orders_from = bucket_orders[::-1].cumsum(axis=0)[::-1]  # [k]: orders in buckets k..
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        out[f"orders_{w}d"] = orders_from[first_bucket[w]]
        out[f"spend_{w}d"] = window(bucket_spend, w)
    recent = out.get(f"spend_{TREND_DAYS}d")  # the same sum when TREND_DAYS is a window
    if recent is None:
        recent = window(bucket_spend, TREND_DAYS)
    earlier = window(bucket_spend, 2 * TREND_DAYS, TREND_DAYS)
    out["spend_trend"] = np.log1p(recent) - np.log1p(earlier)
    later = orders_from[first_bucket[season_end]] if season_end > 0 else 0
    out["orders_same_season_last_year"] = orders_from[first_bucket[SEASON_LAG_DAYS]] - later
    return out


def windows_by_runs(
    o_t: np.ndarray,
    o_g: np.ndarray,
    o_cust_new: np.ndarray,
    o_val: np.ndarray,
    n_cust: int,
    cutoff: int,
    horizon_days: int,
) -> dict[str, np.ndarray]:
    """The window columns: orders and spend per customer in windows ``[as_of - a days,
    as_of - b days)``, from orders sorted by customer then time (``o_g`` their customer,
    ``o_cust_new`` where a customer starts, ``o_val`` their value).

    Orders are bucketed once by the window edges. A customer's orders then come in runs of
    one bucket, in bucket order, so a window is a suffix (or a slice) of each customer's
    runs: it is summed over the runs, run by run from its earliest bucket (the order in
    which a sum over dense (bucket, customer) tables adds them), without such a table:
    those tables are several times the size of the orders and cost more to fill and read
    than the runs.
    """
    season_end = SEASON_LAG_DAYS - horizon_days
    edge_days, first_bucket = _window_edges(season_end)
    bucket = _buckets(o_t, cutoff, edge_days)
    # bucket 0 (before the earliest edge) is in no window: only later orders are read
    later = (bucket > 0).nonzero()[0]
    if later.size == 0:
        run_cust = run_bucket = run_orders = np.zeros(0, dtype=np.int64)
        run_spend: np.ndarray = np.zeros(0)
    else:
        cust, bucket = o_g[later], bucket[later]
        new_run = np.empty(later.size, dtype=bool)
        new_run[0] = True
        np.not_equal(cust[1:], cust[:-1], out=new_run[1:])
        new_run[1:] |= bucket[1:] != bucket[:-1]
        run_start = new_run.nonzero()[0]
        run_of = new_run.cumsum(dtype=np.int64)
        run_of -= 1
        run_spend = np.bincount(run_of, weights=o_val[later], minlength=run_start.size)
        run_orders = np.diff(run_start, append=later.size)
        run_cust, run_bucket = cust[run_start], bucket[run_start]

    def runs_in(start_days: int, end_days: int) -> np.ndarray:
        """The runs in [as_of - start_days, as_of - end_days) (``end_days`` 0: to as_of)."""
        inside = run_bucket >= first_bucket[start_days]
        if end_days > 0:
            inside &= run_bucket < first_bucket[end_days]
        return inside.nonzero()[0]

    def spend(runs: np.ndarray) -> np.ndarray:
        return np.bincount(run_cust[runs], weights=run_spend[runs], minlength=n_cust)

    def orders(runs: np.ndarray) -> np.ndarray:
        # whole numbers far below 2**53: the float sums are exact
        counts = np.bincount(run_cust[runs], weights=run_orders[runs], minlength=n_cust)
        return counts.astype(np.int64)

    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        runs = runs_in(w, 0)
        out[f"orders_{w}d"] = orders(runs)
        out[f"spend_{w}d"] = spend(runs)
    recent = out.get(f"spend_{TREND_DAYS}d")  # the same sum when TREND_DAYS is a window
    if recent is None:
        recent = spend(runs_in(TREND_DAYS, 0))
    earlier = spend(runs_in(2 * TREND_DAYS, TREND_DAYS))
    out["spend_trend"] = np.log1p(recent) - np.log1p(earlier)
    out["orders_same_season_last_year"] = orders(runs_in(SEASON_LAG_DAYS, max(season_end, 0)))
    return out


def most_on_one_weekday(o_day: np.ndarray, o_g: np.ndarray, n_orders: np.ndarray) -> np.ndarray:
    """Per customer, the most orders placed on one weekday (see
    :func:`weekday_most_by_fields`), by whichever equal computation costs less."""
    if n_orders.size <= WEEKDAY_TABLE_MAX_CUSTOMERS:
        return weekday_most_by_table(o_day, o_g, n_orders.size)
    return weekday_most_by_fields(o_day, o_g, n_orders)


def weekday_most_by_table(o_day: np.ndarray, o_g: np.ndarray, n_cust: int) -> np.ndarray:
    """The most orders on one weekday per customer from a dense (weekday, customer) table."""
    weekday = per_day(lambda d: (d + 3) % 7, o_day)  # 1970-01-01 was a Thursday; Monday == 0
    weekday *= n_cust
    weekday += o_g
    return np.bincount(weekday, minlength=7 * n_cust).reshape(7, n_cust).max(axis=0)


def weekday_most_by_fields(o_day: np.ndarray, o_g: np.ndarray, n_orders: np.ndarray) -> np.ndarray:
    """Per customer, the most orders placed on one weekday (``o_g`` each order's customer,
    ``n_orders`` each customer's orders, ``o_day`` the orders' UTC days since the epoch).

    Each order adds 1 to its weekday's bit field of an int64, fields wide enough for the
    customer's order count, so one integer sum per customer counts every weekday (in as many
    passes as the fields need int64s): no (weekday, customer) table. The sums are
    ``np.add.at`` (a fast path for one int64 dimension), several times cheaper than
    ``np.add.reduceat`` over a million short runs.
    """
    bits = int(n_orders.max(initial=1)).bit_length()
    per_pass = 63 // bits
    mask = (1 << bits) - 1
    most = np.zeros(n_orders.size, dtype=np.int64)
    for first in range(0, 7, per_pass):
        last = min(first + per_pass, 7)

        def field(days: np.ndarray, first: int = first, last: int = last) -> np.ndarray:
            weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday == 0
            shift = np.clip(weekday - first, 0, None) * bits
            return np.where(weekday >= first, np.where(weekday < last, 1 << shift, 0), 0)

        packed = np.zeros(n_orders.size, dtype=np.int64)
        np.add.at(packed, o_g, per_day(field, o_day))
        for j in range(last - first):
            count = packed >> (bits * j) if j else packed.copy()
            count &= mask
            np.maximum(most, count, out=most)
    return most


def per_day(value_of: Callable[[np.ndarray], np.ndarray], days: np.ndarray) -> np.ndarray:
    """``value_of(days)`` for an elementwise ``value_of``, evaluated once per day of the
    range the days span when that range is shorter than the array (a log of years holds a
    few thousand days and millions of orders), then looked up."""
    if days.size <= _DIRECT_DAYS:
        return value_of(days)
    first = int(days.min(initial=0))
    n_table = int(days.max(initial=0)) - first + 1
    if n_table >= days.size:
        return value_of(days)
    return value_of(np.arange(first, first + n_table, dtype=days.dtype))[days - first]


def _buckets(o_t: np.ndarray, cutoff: int, edge_days: tuple[int, ...]) -> np.ndarray:
    """Each order's window bucket: k when at or after the k-th edge (``as_of - edge_days[k -
    1]`` days), 0 before the earliest. An order x = cutoff - o_t >= 1 microseconds before
    as_of is at or after the edge d days back iff ceil(x / day) <= d, so a table over
    ceil(x / day) buckets it without a search."""
    key = cutoff - o_t
    key += US_PER_DAY - 1
    key //= US_PER_DAY
    np.minimum(key, edge_days[0] + 1, out=key)
    return _bucket_table(edge_days)[key]


@lru_cache(maxsize=16)
def _window_edges(season_end: int) -> tuple[tuple[int, ...], dict[int, int]]:
    """The window edges in days back, descending, and each edge's first bucket (see
    ``window_columns``; the dict is shared, read only), once per horizon."""
    edge_days = sorted(
        {*WINDOWS_DAYS, TREND_DAYS, 2 * TREND_DAYS, SEASON_LAG_DAYS, season_end}, reverse=True
    )
    return tuple(edge_days), {d: i + 1 for i, d in enumerate(edge_days)}


@lru_cache(maxsize=16)
def _bucket_table(edge_days: tuple[int, ...]) -> np.ndarray:
    """Bucket of each whole number of days back, 0 .. ``edge_days[0] + 1`` (edges
    descending; see ``_build``), read-only: the same table for every call of a config."""
    ascending = np.array(edge_days[::-1])
    table = ascending.size - np.searchsorted(ascending, np.arange(edge_days[0] + 2))
    table.setflags(write=False)
    return table
