"""``features.order_times`` against the dense (bucket or weekday, customer) tables it replaced,
bit for bit, on random orders: customers with one order to thousands, values of every
magnitude (float sums depend on their order), cutoffs at and off midnight, every horizon."""

from __future__ import annotations

import numpy as np
import pytest

from features.catalog import WINDOWS_DAYS
from features.order_times import (
    SEASON_LAG_DAYS,
    TREND_DAYS,
    most_on_one_weekday,
    per_day,
    window_columns,
)
from features.utc import US_PER_DAY


def _orders(
    rng: np.random.Generator, n_cust: int, cutoff: int, span_days: int, big: int = 0
) -> tuple[np.ndarray, ...]:
    """Orders sorted by customer then time, all before ``cutoff``; customer 0 has ``big``
    extra orders."""
    per = 1 + rng.poisson(rng.gamma(0.7, 3.0, n_cust))
    per[0] += big
    o_g = np.repeat(np.arange(n_cust), per)
    back = rng.integers(1, span_days * US_PER_DAY, o_g.size)
    # some orders exactly on a window edge, and at the microsecond just inside
    edge = rng.random(o_g.size) < 0.1
    days = rng.choice([*WINDOWS_DAYS, TREND_DAYS, 2 * TREND_DAYS, SEASON_LAG_DAYS, 275], o_g.size)
    back[edge] = days[edge] * US_PER_DAY - rng.integers(0, 2, int(edge.sum()))
    o_t = cutoff - back
    o_t = o_t[np.lexsort((o_t, o_g))]
    o_cust_new = np.r_[True, o_g[1:] != o_g[:-1]]
    o_val = rng.gamma(1.0, 30.0, o_g.size) * rng.choice([1.0, 1e-7, 1e9], o_g.size)
    o_val[rng.random(o_g.size) < 0.1] = 0.0
    return o_t, o_g, o_cust_new, o_val


def _dense_windows(
    o_t: np.ndarray, o_g: np.ndarray, o_val: np.ndarray, n_cust: int, cutoff: int, horizon: int
) -> dict[str, np.ndarray]:
    """The replaced code: bincounts into (bucket, customer) tables, windows summed by rows."""
    season_end = SEASON_LAG_DAYS - horizon
    edge_days = sorted(
        {*WINDOWS_DAYS, TREND_DAYS, 2 * TREND_DAYS, SEASON_LAG_DAYS, season_end}, reverse=True
    )
    ascending = np.array(edge_days[::-1])
    bucket_of = ascending.size - np.searchsorted(ascending, np.arange(edge_days[0] + 2))
    key = cutoff - o_t
    key += US_PER_DAY - 1
    key //= US_PER_DAY
    np.minimum(key, edge_days[0] + 1, out=key)
    key = bucket_of[key]
    key *= n_cust
    key += o_g
    n_buckets = len(edge_days) + 1
    bucket_orders = np.bincount(key, minlength=n_buckets * n_cust).reshape(n_buckets, n_cust)
    bucket_spend = np.bincount(key, weights=o_val, minlength=n_buckets * n_cust).reshape(
        n_buckets, n_cust
    )
    first_bucket = {d: i + 1 for i, d in enumerate(edge_days)}

    def window(buckets: np.ndarray, start_days: int, end_days: int = 0) -> np.ndarray:
        lo = first_bucket[start_days]
        hi = first_bucket[end_days] if end_days > 0 else n_buckets
        return buckets[lo:hi].sum(axis=0)

    orders_from = bucket_orders[::-1].cumsum(axis=0)[::-1]
    out = {}
    for w in WINDOWS_DAYS:
        out[f"orders_{w}d"] = orders_from[first_bucket[w]]
        out[f"spend_{w}d"] = window(bucket_spend, w)
    recent = window(bucket_spend, TREND_DAYS)
    earlier = window(bucket_spend, 2 * TREND_DAYS, TREND_DAYS)
    out["spend_trend"] = np.log1p(recent) - np.log1p(earlier)
    later = orders_from[first_bucket[season_end]] if season_end > 0 else 0
    out["orders_same_season_last_year"] = orders_from[first_bucket[SEASON_LAG_DAYS]] - later
    return out


def _dense_weekday(o_day: np.ndarray, o_g: np.ndarray, n_cust: int) -> np.ndarray:
    weekday = (o_day + 3) % 7 * n_cust + o_g
    return np.bincount(weekday, minlength=7 * n_cust).reshape(7, n_cust).max(axis=0)


@pytest.mark.parametrize("seed", range(12))
def test_windows_equal_the_dense_tables(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_cust = int(rng.integers(1, 400))
    midnight = 19_800 * US_PER_DAY
    cutoff = midnight + (0 if seed % 3 == 0 else int(rng.integers(1, US_PER_DAY)))
    span = int(rng.choice([20, 200, 400, 1500]))  # from one bucket to every bucket
    o_t, o_g, o_cust_new, o_val = _orders(rng, n_cust, cutoff, span)
    horizon = int(rng.choice([1, 30, 90, 180, 364, 365, int(rng.integers(1, 366))]))
    got = window_columns(o_t, o_g, o_cust_new, o_val, n_cust, cutoff, horizon)
    want = _dense_windows(o_t, o_g, o_val, n_cust, cutoff, horizon)
    assert got.keys() == want.keys()
    for name, values in want.items():
        assert got[name].dtype == values.dtype, name
        np.testing.assert_array_equal(got[name], values, strict=True, err_msg=name)
        # bit for bit, signed zeros included
        assert got[name].tobytes() == values.tobytes(), name


def test_windows_of_orders_older_than_every_window() -> None:
    cutoff = 19_800 * US_PER_DAY
    o_t = cutoff - np.array([400, 500, 401]) * US_PER_DAY
    o_g = np.array([0, 0, 1])
    got = window_columns(o_t, o_g, np.array([True, False, True]), np.ones(3), 2, cutoff, 90)
    want = _dense_windows(o_t, o_g, np.ones(3), 2, cutoff, 90)
    for name, values in want.items():
        assert got[name].tobytes() == values.tobytes(), name


@pytest.mark.parametrize(("seed", "big"), [(0, 0), (1, 1), (2, 600), (3, 5000), (4, 70_000)])
def test_weekday_counts_equal_the_dense_table(seed: int, big: int) -> None:
    """``big`` orders of one customer widen the bit fields until two int64 passes are needed."""
    rng = np.random.default_rng(seed)
    n_cust = int(rng.integers(1, 300))
    o_t, o_g, _, _ = _orders(rng, n_cust, 19_800 * US_PER_DAY, 3000, big)
    o_day = o_t // US_PER_DAY
    co = np.flatnonzero(np.r_[True, o_g[1:] != o_g[:-1]])
    n_orders = np.diff(co, append=o_g.size)
    got = most_on_one_weekday(o_day, o_g, n_orders)
    np.testing.assert_array_equal(got, _dense_weekday(o_day, o_g, n_cust), strict=True)


def test_per_day_equals_the_direct_evaluation() -> None:
    rng = np.random.default_rng(5)
    for days in (rng.integers(0, 50, 10), rng.integers(19_000, 19_500, 10_000)):
        np.testing.assert_array_equal(per_day(lambda d: (d + 3) % 7, days), (days + 3) % 7)
