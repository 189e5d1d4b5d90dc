"""Returns and cancellations are matched to the purchase they take money back from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.builders import build_features
from features.log.returns import match_log_returns, net_amounts
from tests.features.conftest import make_log


def _log() -> pd.DataFrame:
    rows = [
        # a: order o1 with two products; "Co1" cancels its p2 line
        {"customer_id": "a", "timestamp": "2024-01-01 10:00", "order_id": "o1", "amount": 30.0,
         "product_id": "p1"},
        {"customer_id": "a", "timestamp": "2024-01-01 10:00", "order_id": "o1", "amount": 20.0,
         "product_id": "p2"},
        {"customer_id": "a", "timestamp": "2024-01-03 09:00", "order_id": "Co1", "amount": 20.0,
         "product_id": "p2", "is_return": True},
        # b: the return names no order, but the product p7 bought twice: the later line
        {"customer_id": "b", "timestamp": "2024-01-01 10:00", "order_id": "b1", "amount": 15.0,
         "product_id": "p7"},
        {"customer_id": "b", "timestamp": "2024-01-05 10:00", "order_id": "b2", "amount": 16.0,
         "product_id": "p7"},
        {"customer_id": "b", "timestamp": "2024-01-06 10:00", "order_id": "b3", "amount": 50.0,
         "product_id": "p8"},
        {"customer_id": "b", "timestamp": "2024-01-09 10:00", "order_id": "R9", "amount": 10.0,
         "product_id": "p7", "is_return": True},
        # c: neither order nor product: the latest earlier purchase; more than its value
        {"customer_id": "c", "timestamp": "2024-01-01 10:00", "order_id": "c1", "amount": 40.0},
        {"customer_id": "c", "timestamp": "2024-01-02 10:00", "order_id": "c2", "amount": 5.0},
        {"customer_id": "c", "timestamp": "2024-01-04 10:00", "order_id": "R", "amount": 8.0,
         "is_return": True},
        # d: a return before any purchase of d nets nothing
        {"customer_id": "d", "timestamp": "2024-01-01 10:00", "order_id": "Cd0", "amount": 9.0,
         "is_return": True},
        {"customer_id": "d", "timestamp": "2024-01-02 10:00", "order_id": "d0", "amount": 9.0},
        # e: the only order, cancelled the same day
        {"customer_id": "e", "timestamp": "2024-01-10 09:00", "order_id": "e1", "amount": 77e3},
        {"customer_id": "e", "timestamp": "2024-01-10 17:00", "order_id": "Ce1", "amount": 77e3,
         "is_return": True},
    ]  # fmt: skip
    return make_log(rows)


def _row(log: pd.DataFrame, customer: str, order: str, product: str | None = None) -> int:
    hit = (log["customer_id"] == customer) & (log["order_id"] == order)
    if product is not None:
        hit &= log["product_id"] == product
    return int(np.flatnonzero(hit.to_numpy())[0])


def test_each_rule_finds_its_purchase() -> None:
    log = _log()
    matched = match_log_returns(log)
    assert matched[_row(log, "a", "Co1")] == _row(log, "a", "o1", "p2")  # order, same product
    assert matched[_row(log, "b", "R9")] == _row(log, "b", "b2")  # latest line of p7
    assert matched[_row(log, "c", "R")] == _row(log, "c", "c2")  # latest purchase
    assert matched[_row(log, "d", "Cd0")] == -1  # nothing earlier
    assert matched[_row(log, "e", "Ce1")] == _row(log, "e", "e1")
    assert (matched[~log["is_return"].to_numpy()] == -1).all()


def test_net_amounts_clip_at_zero_and_respect_time() -> None:
    log = _log()
    matched = match_log_returns(log)
    amount = log["amount"].to_numpy()
    is_return = log["is_return"].to_numpy()
    net = net_amounts(amount, is_return, matched)
    assert net[_row(log, "a", "o1", "p2")] == 0.0
    assert net[_row(log, "a", "o1", "p1")] == 30.0
    assert net[_row(log, "b", "b2")] == 6.0
    assert net[_row(log, "c", "c2")] == 0.0  # 5 - 8, clipped
    assert net[_row(log, "c", "c1")] == 40.0
    assert net[_row(log, "e", "e1")] == 0.0
    assert net[_row(log, "e", "Ce1")] == 77e3  # a return row keeps its refunded value
    # returns not counted (e.g. after as_of) net nothing
    early = (log["timestamp"] < pd.Timestamp("2024-01-02", tz="UTC")).to_numpy()
    assert net_amounts(amount, is_return, matched, early)[_row(log, "e", "e1")] == 77e3


def test_features_are_net_of_returns_made_before_as_of() -> None:
    log = _log()
    later = build_features(log, "2024-01-20")
    assert later.loc["e", "monetary_total"] == 0.0
    assert later.loc["e", "last_order_value"] == 0.0
    assert later.loc["e", "n_orders"] == 1  # the cancelled order still was an order
    assert later.loc["a", "monetary_total"] == 30.0
    assert later.loc["b", "monetary_total"] == 15.0 + 6.0 + 50.0
    # between the order and its cancellation the order still counts in full
    between = build_features(log, "2024-01-10 12:00")
    assert between.loc["e", "monetary_total"] == 77e3
