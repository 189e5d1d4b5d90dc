"""``features.order_times``: the window columns and weekday counts by runs and bit fields (many
customers) equal those by dense (bucket or weekday, customer) tables (a request's few), bit for bit, on random orders: customers with one order to thousands, values of every
magnitude (float sums depend on their order), cutoffs at and off midnight, every horizon."""

from __future__ import annotations

import numpy as np
import pytest

from features.catalog import WINDOWS_DAYS
from features.order_times import (
    SEASON_LAG_DAYS,
    TABLE_MAX_CUSTOMERS,
    TREND_DAYS,
    WEEKDAY_TABLE_MAX_CUSTOMERS,
    most_on_one_weekday,
    per_day,
    weekday_most_by_fields,
    weekday_most_by_table,
    window_columns,
    windows_by_runs,
    windows_by_tables,
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


@pytest.mark.parametrize("seed", range(12))
def test_windows_equal_the_dense_tables(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_cust = int(rng.integers(1, 400))
    midnight = 19_800 * US_PER_DAY
    cutoff = midnight + (0 if seed % 3 == 0 else int(rng.integers(1, US_PER_DAY)))
    span = int(rng.choice([20, 200, 400, 1500]))  # from one bucket to every bucket
    o_t, o_g, o_cust_new, o_val = _orders(rng, n_cust, cutoff, span)
    horizon = int(rng.choice([1, 30, 90, 180, 364, 365, int(rng.integers(1, 366))]))
    got = windows_by_runs(o_t, o_g, o_cust_new, o_val, n_cust, cutoff, horizon)
    want = windows_by_tables(o_t, o_g, o_val, n_cust, cutoff, horizon)
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
    got = windows_by_runs(o_t, o_g, np.array([True, False, True]), np.ones(3), 2, cutoff, 90)
    want = windows_by_tables(o_t, o_g, np.ones(3), 2, cutoff, 90)
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
    got = weekday_most_by_fields(o_day, o_g, n_orders)
    np.testing.assert_array_equal(got, weekday_most_by_table(o_day, o_g, n_cust), strict=True)


def test_per_day_equals_the_direct_evaluation() -> None:
    rng = np.random.default_rng(5)
    for days in (rng.integers(0, 50, 10), rng.integers(19_000, 19_500, 10_000)):
        np.testing.assert_array_equal(per_day(lambda d: (d + 3) % 7, days), (days + 3) % 7)


@pytest.mark.parametrize("n_cust", [1, TABLE_MAX_CUSTOMERS, TABLE_MAX_CUSTOMERS + 1])
def test_window_columns_take_either_way_with_the_same_bits(n_cust: int) -> None:
    """On each side of the threshold, the way taken equals the other way."""
    rng = np.random.default_rng(n_cust)
    cutoff = 19_800 * US_PER_DAY + 12_345
    o_t, o_g, o_cust_new, o_val = _orders(rng, n_cust, cutoff, 800)
    got = window_columns(o_t, o_g, o_cust_new, o_val, n_cust, cutoff, 90)
    if n_cust <= TABLE_MAX_CUSTOMERS:
        want = windows_by_runs(o_t, o_g, o_cust_new, o_val, n_cust, cutoff, 90)
    else:
        want = windows_by_tables(o_t, o_g, o_val, n_cust, cutoff, 90)
    for name, values in want.items():
        assert got[name].tobytes() == values.tobytes(), name


@pytest.mark.parametrize(
    "n_cust", [1, WEEKDAY_TABLE_MAX_CUSTOMERS, WEEKDAY_TABLE_MAX_CUSTOMERS + 1]
)
def test_weekday_counts_take_either_way(n_cust: int) -> None:
    rng = np.random.default_rng(n_cust)
    o_t, o_g, _, _ = _orders(rng, n_cust, 19_800 * US_PER_DAY, 3000)
    o_day = o_t // US_PER_DAY
    n_orders = np.bincount(o_g, minlength=n_cust)
    got = most_on_one_weekday(o_day, o_g, n_orders)
    if n_cust <= WEEKDAY_TABLE_MAX_CUSTOMERS:
        want = weekday_most_by_fields(o_day, o_g, n_orders)
    else:
        want = weekday_most_by_table(o_day, o_g, n_cust)
    np.testing.assert_array_equal(got, want, strict=True)
