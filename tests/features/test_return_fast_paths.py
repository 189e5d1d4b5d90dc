"""The large-log shortcuts of return netting give what the general path gives.

``return_pairs(sorted_rows=True)`` finds the rows of the customers with a return as ranges
(the feature builder's path, after its sort check); ``maybe_in`` keeps most ids out of the
exact lookup. Both are held here to the general path (itself held to the pandas matcher in
``test_returns_oracle.py``) on random logs with ties in time around the last return.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.log.returns import (
    id_changes,
    match_returns,
    net_amounts,
    net_pair_amounts,
    return_pairs,
)
from features.log.string_filter import maybe_in

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


_TEXT = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.text(min_size=7, max_size=9),
    st.text(alphabet="ab\x00", max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(_TEXT, min_size=1, max_size=40),
    wanted=st.lists(_TEXT, max_size=6),
    large=st.booleans(),
    cut=st.integers(0, 5),
    data=st.data(),
)
def test_maybe_in_never_rules_out_a_member(
    values: list[str | None], wanted: list[str | None], large: bool, cut: int, data: st.DataObject
) -> None:
    kind = pa.large_string() if large else pa.string()
    ids = pa.array(values, kind).slice(min(cut, len(values) - 1))  # offsets need not start at 0
    members = [v for v in wanted if v is not None] + [
        v for v in data.draw(st.lists(st.sampled_from(values))) if v is not None
    ]
    value_set = pa.array(list(dict.fromkeys(members)), kind)
    rows = np.asarray(
        data.draw(st.lists(st.integers(0, len(ids) - 1), max_size=20)), dtype=np.int64
    )
    maybe = maybe_in(ids, rows, value_set)
    if maybe is None:
        return
    present = set(value_set.to_pylist())
    for i, row in enumerate(rows):
        if ids[int(row)].as_py() in present:
            assert maybe[i], (ids[int(row)].as_py(), value_set.to_pylist())


def test_maybe_in_rules_out_most_other_ids() -> None:
    ids = pa.array([f"o{i:09d}" for i in range(20_000)], pa.large_string())
    value_set = pa.array([f"Co{i:09d}"[1:] for i in range(0, 20_000, 100)], pa.large_string())
    maybe = maybe_in(ids, np.arange(len(ids)), value_set)
    assert maybe is not None
    members = np.arange(0, 20_000, 100)
    assert maybe[members].all()
    # a table of at least 32 slots per wanted id: about 1 in 32 others collide
    assert maybe.sum() < members.size + 0.06 * len(ids)
