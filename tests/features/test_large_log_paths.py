"""The frame path of ``build_features`` (the large-log path: batch, training) against the array
path and the formulas it replaced, on random logs with returns, cancellations and order ids.

The frame path nets only the returns before ``as_of`` and compares order ids only between
kept rows of one customer; the array path (``LogArrays.from_frame``) matches every return of
the log and compares integer order codes of every kept row, so equal frames show that both
shortcuts change no number. ``discount_share`` is held to the bincount formula it replaced.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.builders import build_feature_block, build_features
from features.log.log_arrays import LogArrays
from tests.features.conftest import make_log

_START = pd.Timestamp("2024-01-01", tz="UTC")
_ORDERS = ("o1", "o2", "o3", "o4")


@st.composite
def _rows(draw: st.DrawFn) -> list[dict]:
    n = draw(st.integers(1, 60))
    row = st.tuples(
        st.integers(0, 3),  # customer
        st.integers(0, 12),  # day: few instants, many ties
        st.sampled_from(_ORDERS),
        st.sampled_from(("none", "order", "cancel", "product")),  # purchase or kind of return
        st.sampled_from(("p1", "p2", "p3")),
        st.floats(0, 100, allow_nan=False),
        st.booleans(),  # discount
        st.sampled_from(("web", "store", None)),
    )
    out = []
    for customer, day, order, kind, product, amount, discount, channel in draw(
        st.lists(row, min_size=n, max_size=n)
    ):
        order_id = {"cancel": f"C{order}", "product": "r"}.get(kind, order)
        out.append(
            {
                "customer_id": f"k{customer}",
                "timestamp": _START + pd.Timedelta(days=day),
                "order_id": order_id,
                "product_id": product,
                "category": product,
                "amount": amount,
                "discount": discount,
                "channel": channel,
                "is_return": kind != "none",
            }
        )
    return out


def _reference_discount_share(log: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """The replaced formula: per order, any line discounted (bincount of the lines' flags
    > 0); per customer, the bincount of those flags over the orders, divided by n_orders."""
    kept = log.loc[(log["timestamp"] < as_of) & ~log["is_return"]]
    cust = kept["customer_id"].astype("str").to_numpy()
    order = kept["order_id"].to_numpy()
    new_order = np.ones(len(kept), dtype=bool)
    new_order[1:] = (cust[1:] != cust[:-1]) | (order[1:] != order[:-1])
    o_row = np.cumsum(new_order) - 1
    o_disc = np.bincount(o_row, weights=kept["discount"].to_numpy(), minlength=o_row[-1] + 1) > 0
    o_cust = cust[new_order]
    names, o_g = np.unique(o_cust, return_inverse=True)
    share = np.bincount(o_g, weights=o_disc) / np.bincount(o_g)
    return pd.Series(share, index=pd.Index(names, dtype="str", name="customer_id"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows(), cut_day=st.integers(0, 14))
def test_frame_path_equals_the_array_path_and_the_old_discount_share(
    rows: list[dict], cut_day: int
) -> None:
    log = make_log(rows)
    as_of = _START + pd.Timedelta(days=cut_day)
    got = build_features(log, as_of)
    expected = build_feature_block(LogArrays.from_frame(log), as_of).to_frame()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    if len(got):
        share = _reference_discount_share(log, as_of)
        np.testing.assert_array_equal(
            got["discount_share"].to_numpy(), share.reindex(got.index).to_numpy()
        )
