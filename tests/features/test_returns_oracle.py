"""The array matcher of returns gives exactly what the pandas matcher it replaced gave.

``_reference_match_returns`` and its helpers are the pandas implementation (``merge`` and
``merge_asof``) that ``features.log.returns`` used before it became array work, copied verbatim:
the rules are subtle (order ids with and without the cancel prefix, the same product first,
ties on time and amount), so the new code is held to the old one on random logs with
returns, cancellations, order ids, missing ids, products, ties in time and several customers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.feature_inputs import order_id_changes
from features.log.returns import id_changes, match_log_returns, match_returns
from tests.features.conftest import make_log

CANCEL_PREFIX = "C"
_UNMATCHED = -1


def _reference_match_returns(
    customer_codes: np.ndarray,
    timestamp_us: np.ndarray,
    is_return: np.ndarray,
    order_ids: pa.Array | None = None,
    product_ids: pa.Array | None = None,
    amount: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, the purchase row (position) a return nets against; -1 for purchases and
    unmatched returns. Rows may come in any order; ids are Arrow string arrays or None."""
    n = len(timestamp_us)
    out = np.full(n, _UNMATCHED, dtype=np.int64)
    ret = np.flatnonzero(is_return)
    if ret.size == 0:
        return out
    codes = np.asarray(customer_codes, dtype=np.int64)
    ts = np.asarray(timestamp_us, dtype=np.int64)
    with_returns = np.zeros(int(codes.max()) + 1, dtype=bool)
    with_returns[codes[ret]] = True
    pur = np.flatnonzero(~np.asarray(is_return, dtype=bool) & with_returns[codes])
    if pur.size == 0:
        return out
    product = None
    if product_ids is not None:
        encoded = pc.dictionary_encode(pc.cast(product_ids, pa.string()))
        product = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    left = pd.DataFrame({"c": codes[ret], "t": ts[ret], "r": ret})
    value = np.zeros(n) if amount is None else np.asarray(amount, dtype=np.float64)
    right = pd.DataFrame({"c": codes[pur], "t": ts[pur], "a": value[pur], "p": pur})
    if product is not None:
        left["prod"], right["prod"] = product[ret], product[pur]
    matched = pd.Series(_UNMATCHED, index=ret, dtype=np.int64)
    if order_ids is not None:
        matched = _reference_by_order(left, right, order_ids, matched)
    if product is not None:
        todo = matched.to_numpy() == _UNMATCHED
        known = left["prod"].to_numpy() >= 0
        found = _reference_latest_before(
            left[todo & known], right[right["prod"] >= 0], ["c", "prod"]
        )
        matched.loc[found.index] = found.to_numpy()
    todo = matched.to_numpy() == _UNMATCHED
    found = _reference_latest_before(left[todo], right, ["c"])
    matched.loc[found.index] = found.to_numpy()
    out[matched.index.to_numpy()] = matched.to_numpy()
    return out


def _reference_by_order(
    left: pd.DataFrame, right: pd.DataFrame, order_ids: pa.Array, matched: pd.Series
) -> pd.Series:
    """Rule 1: the return names its order (with or without the cancel prefix)."""
    ids = pc.cast(order_ids, pa.string())
    given = ids.take(pa.array(left["r"].to_numpy()))
    prefixed = pc.fill_null(pc.starts_with(given, CANCEL_PREFIX), False)
    stripped = pc.if_else(prefixed, pc.utf8_slice_codeunits(given, len(CANCEL_PREFIX)), given)
    keys = left.assign(o=pd.Series(stripped.to_pandas(), dtype=object).to_numpy())
    lines = right.assign(o=pd.Series(ids.take(pa.array(right["p"].to_numpy())).to_pandas()))
    lines = lines.dropna(subset=["o"])
    hit = keys.merge(lines, on=["c", "o"], suffixes=("", "_p"))
    hit = hit[hit["t_p"] <= hit["t"]]
    if hit.empty:
        return matched
    if "prod" in hit:
        # the line of the same product first, then the order's largest line
        hit = hit.assign(other=(hit["prod"] != hit["prod_p"]) | (hit["prod"] < 0))
        hit = hit.sort_values(["r", "other", "a", "p"], ascending=[True, True, False, True])
    else:
        hit = hit.sort_values(["r", "a", "p"], ascending=[True, False, True])
    first = hit.drop_duplicates("r")
    matched.loc[first["r"].to_numpy()] = first["p"].to_numpy()
    return matched


def _reference_latest_before(left: pd.DataFrame, right: pd.DataFrame, by: list[str]) -> pd.Series:
    """For each return, the latest purchase row with equal ``by`` keys at or before it."""
    if left.empty or right.empty:
        return pd.Series(dtype=np.int64)
    # ties on time go to the largest line (the last one in this order)
    lines = right.sort_values(["t", "a", "p"], kind="stable")
    hit = pd.merge_asof(
        left.sort_values("t", kind="stable"),
        lines[[*by, "t", "p"]],
        on="t",
        by=by,
        direction="backward",
        allow_exact_matches=True,
    ).dropna(subset=["p"])
    return pd.Series(hit["p"].to_numpy(dtype=np.int64), index=hit["r"].to_numpy())


_ORDERS = ("o1", "o2", "o3", "Co1", "Co2", "Cx", "C", "", None)
_PRODUCTS = ("p1", "p2", "p3", "", None)
_AMOUNTS = (0.0, 1.0, 2.5, 2.5, 7.0, 10.0, 1e6)


@st.composite
def _logs(draw: st.DrawFn) -> dict[str, list]:
    n = draw(st.integers(1, 40))
    n_customers = draw(st.integers(1, 4))
    row = st.tuples(
        st.integers(0, n_customers - 1),
        st.integers(0, 6),  # few instants: many ties in time
        st.booleans(),
        st.sampled_from(_ORDERS),
        st.sampled_from(_PRODUCTS),
        st.one_of(st.sampled_from(_AMOUNTS), st.floats(0, 100, allow_nan=False)),
    )
    rows = draw(st.lists(row, min_size=n, max_size=n))
    return {
        name: [r[i] for r in rows]
        for i, name in enumerate(("customer", "t", "is_return", "order", "product", "amount"))
    }


def _both(
    log: dict[str, list], *, orders: bool, products: bool, amounts: bool, given: bool = False
) -> None:
    codes = np.asarray(log["customer"], dtype=np.int64) * 3  # codes need not be dense
    ts = np.asarray(log["t"], dtype=np.int64) * 1_000_000
    is_return = np.asarray(log["is_return"], dtype=bool)
    order_ids = pa.array(log["order"], pa.string()) if orders else None
    product_ids = pa.array(log["product"], pa.string()) if products else None
    amount = np.asarray(log["amount"], dtype=np.float64) if amounts else None
    expected = _reference_match_returns(codes, ts, is_return, order_ids, product_ids, amount)
    changes = id_changes(order_ids) if given and order_ids is not None else None
    got = match_returns(codes, ts, is_return, order_ids, product_ids, amount, changes)
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=_logs(), orders=st.booleans(), products=st.booleans(), amounts=st.booleans())
def test_matches_the_pandas_matcher_on_rows_in_any_order(
    log: dict[str, list], orders: bool, products: bool, amounts: bool
) -> None:
    _both(log, orders=orders, products=products, amounts=amounts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=_logs())
def test_matches_the_pandas_matcher_on_canonical_order(log: dict[str, list]) -> None:
    # the order every canonical log has (customer, time), which skips the sort
    order = np.lexsort((np.asarray(log["t"]), np.asarray(log["customer"])))
    _both(
        {name: [values[i] for i in order] for name, values in log.items()},
        orders=True,
        products=True,
        amounts=True,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=_logs(), given=st.booleans())
def test_matches_the_pandas_matcher_with_orders_in_runs(log: dict[str, list], given: bool) -> None:
    # sorted by customer, time and order id as well, the lines of an order come in runs
    # (looked up once per run), with the order id changes computed here or given
    key = [str(order) for order in log["order"]]
    order = np.lexsort((key, np.asarray(log["t"]), np.asarray(log["customer"])))
    _both(
        {name: [values[i] for i in order] for name, values in log.items()},
        orders=True,
        products=True,
        amounts=True,
        given=given,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=_logs())
def test_log_frame_matches_the_pandas_matcher(log: dict[str, list]) -> None:
    rows = [
        {
            "customer_id": f"k{customer}",
            "timestamp": pd.Timestamp("2024-01-01") + pd.Timedelta(hours=t),
            "order_id": order if order is not None else f"k{customer}@{t}",
            "product_id": product,
            "amount": amount,
            "is_return": is_return,
        }
        for customer, t, is_return, order, product, amount in zip(*log.values(), strict=True)
    ]
    frame = make_log(rows)
    ts = frame["timestamp"].array.as_unit("us").asi8
    codes = frame["customer_id"].array.codes.astype(np.int64)
    expected = _reference_match_returns(
        codes,
        ts,
        frame["is_return"].to_numpy(dtype=bool),
        pc.cast(pa.array(frame["order_id"].array), pa.string()),
        pc.cast(pa.array(frame["product_id"].array), pa.string()),
        frame["amount"].to_numpy(dtype=np.float64),
    )
    np.testing.assert_array_equal(match_log_returns(frame), expected)
    changes = order_id_changes(frame["order_id"])  # what the feature builder passes
    np.testing.assert_array_equal(match_log_returns(frame, changes), expected)
    # matching only the returns before an instant (as the feature builder does): theirs
    # are the same matches, the later returns match nothing
    for hour in (0, 3, 7):
        cut = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1000) + hour * 3_600_000_000
        only_before = np.where(ts < cut, expected, -1)
        np.testing.assert_array_equal(match_log_returns(frame, changes, cut), only_before)


def test_a_history_without_returns_matches_nothing() -> None:
    got = match_returns(np.zeros(3, np.int64), np.arange(3), np.zeros(3, bool))
    np.testing.assert_array_equal(got, [-1, -1, -1])
