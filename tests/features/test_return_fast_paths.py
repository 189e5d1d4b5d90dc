"""The large-log shortcuts of return netting give what the general path gives.

``return_pairs(sorted_rows=True)`` finds the rows of the customers with a return as ranges
(the feature builder's path, after its sort check); it is held here to the general path
(itself held to the pandas matcher in ``test_returns_oracle.py``) on random logs with ties
in time around the last return.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.log.returns import (
    _stable_descending,
    id_changes,
    match_returns,
    net_amounts,
    net_pair_amounts,
    return_pairs,
)

_ORDERS = ["o1", "o2", "Co1", "Co2", "C", "", "o10000000001", "Co10000000001", "x"]


@st.composite
def _sorted_logs(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(1, 60))
    customers = np.sort(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    # few instants: runs of rows tied in time after a customer's last return, some longer
    # than the ranges path follows (it then hands the log to the general path)
    t = np.asarray(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64)
    order = np.lexsort((t, customers))
    ids = draw(st.lists(st.sampled_from(_ORDERS), min_size=n, max_size=n))
    return {
        "codes": customers.astype(np.int32) * 2,  # codes need not be dense
        "t": t[order] * 1_000_000,
        "is_return": np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool),
        "order": pa.array([ids[i] for i in order], pa.large_string()),
        "product": pa.array(
            draw(st.lists(st.sampled_from(["p1", "p2", None]), min_size=n, max_size=n)),
            pa.large_string(),
        ),
        "amount": np.asarray(
            draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, 7.0]), min_size=n, max_size=n))
        ),
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=_sorted_logs())
def test_sorted_ranges_match_the_general_path(log: dict[str, np.ndarray]) -> None:
    args = (log["codes"], log["t"], log["is_return"], log["order"], log["product"], log["amount"])
    changes = id_changes(log["order"])
    expected = match_returns(*args, changes)
    returns, lines = return_pairs(*args, changes, sorted_rows=True)
    got = np.full(expected.size, -1, dtype=np.int64)
    got[returns] = lines
    np.testing.assert_array_equal(got, expected)
    assert (np.diff(returns) > 0).all()
    np.testing.assert_array_equal(
        net_pair_amounts(log["amount"], returns, lines),
        net_amounts(log["amount"], log["is_return"], expected),
    )


def test_a_long_run_of_rows_tied_with_the_last_return() -> None:
    # 20 lines at the time of the customer's last return: past the ranges path's reach
    n = 23
    codes = np.zeros(n, dtype=np.int64)
    t = np.r_[0, 0, np.ones(n - 2, dtype=np.int64)]
    is_return = np.zeros(n, dtype=bool)
    is_return[2] = True
    orders = pa.array(["o1", "o1", "Co9", *["o9"] * (n - 3)], pa.string())
    amount = np.arange(n, dtype=np.float64)
    returns, lines = return_pairs(codes, t, is_return, orders, None, amount, sorted_rows=True)
    np.testing.assert_array_equal(returns, [2])
    np.testing.assert_array_equal(lines, [n - 1])  # the largest line of o9 at that time


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 3000), distinct=st.integers(1, 50))
def test_stable_descending_is_the_stable_sort(seed: int, size: int, distinct: int) -> None:
    # the best line of an order goes by amount, ties by row: large arrays with many ties,
    # NaNs and signed zeros (a small array is insertion-sorted, stable anyway)
    rng = np.random.default_rng(seed)
    values = np.array([np.nan, -0.0, 0.0, *rng.normal(size=distinct).round(1)])
    a = rng.choice(values, size)
    expected = np.argsort(-a, kind="stable")
    np.testing.assert_array_equal(_stable_descending(a), expected)
