"""KPIs on a small log whose every figure is computed by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from features.log.purchase_log import canonicalize
from features.retention.kpis import cohort_retention, compute_kpis, monthly_repeat_buyers

START, END = "2024-01-01", "2024-04-01"

# customer, timestamp, amount, order_id, is_return
ROWS = [
    ("a", "2023-12-15 10:00", 50.0, "a1", False),  # before the period
    ("a", "2024-01-10 09:00", 20.0, "a2", False),  # two lines, one order of 50
    ("a", "2024-01-10 09:00", 30.0, "a2", False),
    ("a", "2024-01-20 12:00", 40.0, "a3", False),
    ("a", "2024-01-25 08:00", 20.0, "Ca2", True),  # a return: never an order
    ("b", "2024-01-05 08:00", 100.0, "b1", False),
    ("b", "2024-01-05 18:00", 60.0, "b2", False),  # same day: 2 orders, 1 purchase day
    ("b", "2024-03-02 18:00", 80.0, "b3", False),
    ("c", "2024-02-14 11:00", 30.0, "c1", False),
    ("c", "2024-04-03 11:00", 70.0, "c2", False),  # after the period
    ("d", "2024-03-31 23:00", 10.0, "d1", False),
    ("d", "2024-04-01 00:00", 25.0, "d2", False),  # exactly at end: outside
    ("e", "2024-02-10 10:00", 15.0, "e1", False),
    ("e", "2024-02-10 11:00", 25.0, "e2", False),  # same day as e1
]


@pytest.fixture
def log(log_factory) -> pd.DataFrame:
    return log_factory(
        {"customer_id": c, "timestamp": t, "amount": a, "order_id": o, "is_return": r}
        for c, t, a, o, r in ROWS
    )


def test_period_metrics(log: pd.DataFrame) -> None:
    kpis = compute_kpis(log, START, END)
    m = kpis.metrics
    # In the period: a2 50, a3 40, b1 100, b2 60, b3 80, c1 30, d1 10, e1 15, e2 25.
    assert m["customers"] == 5
    assert m["orders"] == 9
    assert m["revenue"] == pytest.approx(410.0)
    # a: 10 and 20 Jan; b: 5 Jan and 2 Mar; c, d, e: one day each.
    assert m["purchase_days"] == 7
    # 2+ orders: a, b, e; 2+ purchase days: a, b.
    assert m["repeat_rate"] == pytest.approx(3 / 5)
    assert m["repeat_rate_purchase_days"] == pytest.approx(2 / 5)
    assert m["purchase_frequency"] == pytest.approx(9 / 5)
    assert m["average_order_value"] == pytest.approx(410 / 9)
    # Gaps: a 10 d 3 h = 10.125; b 10 h and 57 d; e 1 h.
    gaps = [10.125, 10 / 24, 57.0, 1 / 24]
    assert m["avg_days_between_orders"] == pytest.approx(sum(gaps) / 4)
    # Purchase-day gaps: a 10, b 57.
    assert m["avg_days_between_purchase_days"] == pytest.approx(33.5)
    assert m["returns"] == 1
    assert m["returned_value"] == pytest.approx(20.0)


def test_monthly_repeat_buyers(log: pd.DataFrame) -> None:
    table = monthly_repeat_buyers(log, START, END)
    assert list(table.index) == ["2024-01", "2024-02", "2024-03"]
    # Jan: a (a2, a3; first order in Dec), b (b1, b2; new). Feb: c (new), e (e1, e2; new).
    # Mar: b (b3; returning), d (d1; new).
    assert table["buyers"].tolist() == [2, 2, 2]
    assert table["orders"].tolist() == [4, 3, 2]
    assert table["multi_order_buyers"].tolist() == [2, 1, 0]
    assert table["returning_buyers"].tolist() == [1, 0, 1]
    assert table["multi_order_share"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert table["returning_share"].tolist() == pytest.approx([0.5, 0.0, 0.5])


def test_monthly_includes_months_without_buyers(log: pd.DataFrame) -> None:
    table = monthly_repeat_buyers(log, "2023-10-01", "2024-01-01")
    assert list(table.index) == ["2023-10", "2023-11", "2023-12"]
    assert table["buyers"].tolist() == [0, 0, 1]
    assert math.isnan(table.loc["2023-10", "multi_order_share"])


def test_cohort_retention(log: pd.DataFrame) -> None:
    table = cohort_retention(log, START, END)
    # Cohorts with a first order in the period: Jan {b}, Feb {c, e}, Mar {d}; a is a Dec
    # customer. b orders again in Mar (k=2); nobody of Feb orders in Mar; Apr is not observed.
    expected = pd.DataFrame(
        [[1.0, 0.0, 1.0], [1.0, 0.0, np.nan], [1.0, np.nan, np.nan]],
        index=pd.Index(["2024-01", "2024-02", "2024-03"], name="cohort"),
        columns=pd.Index([0, 1, 2], name="months_since"),
    )
    pd.testing.assert_frame_equal(table, expected)
    counts = cohort_retention(log, START, END, counts=True)
    assert counts[0].tolist() == [1.0, 2.0, 1.0]


def test_cohort_retention_over_a_longer_period(log: pd.DataFrame) -> None:
    table = cohort_retention(log, "2023-12-01", "2024-05-01")
    # Dec {a}: Dec, Jan; Jan {b}: Jan, Mar; Feb {c, e}: c again in Apr; Mar {d}: d2 in Apr.
    assert table.loc["2023-12"].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert table.loc["2024-01"].tolist()[:4] == [1.0, 0.0, 1.0, 0.0]
    assert math.isnan(table.loc["2024-01", 4])
    assert table.loc["2024-02"].tolist()[:3] == [1.0, 0.0, 0.5]
    assert table.loc["2024-03"].tolist()[:2] == [1.0, 1.0]
    limited = cohort_retention(log, "2023-12-01", "2024-05-01", max_months=1)
    assert list(limited.columns) == [0, 1]


def test_kpis_carry_tables_and_serialise(log: pd.DataFrame) -> None:
    kpis = compute_kpis(log, START, END)
    assert kpis.cohort_sizes.tolist() == [1, 2, 1]
    data = json.loads(json.dumps(kpis.to_dict()))
    assert data["start"] == "2024-01-01T00:00:00+00:00"
    assert data["metrics"]["orders"] == 9
    assert data["monthly"]["2024-02"]["multi_order_buyers"] == 1
    assert data["cohort_retention"]["2024-02"] == {
        "customers": 2,
        "retention": [1.0, 0.0, None],
    }
    summary = kpis.summary()
    assert summary.set_index("metric").loc["repeat_rate", "value"] == pytest.approx(0.6)
    console = Console(record=True, width=200)
    for table in kpis.render():
        console.print(table)
    text = console.export_text()
    assert "repeat_rate" in text
    assert "60.0%" in text
    assert "2024-03" in text


def test_loader_round_trip_gives_the_same_kpis() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": [c for c, *_ in ROWS],
            "timestamp": [t for _, t, *_ in ROWS],
            "amount": [-a if r else a for _, _, a, _, r in ROWS],
            "order_id": [o for *_, o, _ in ROWS],
        }
    )
    log = canonicalize(raw).log
    m = compute_kpis(log, START, END).metrics
    assert (m["customers"], m["orders"], m["returns"]) == (5, 9, 1)
    assert m["revenue"] == pytest.approx(410.0)


def test_empty_period_and_bad_periods(log: pd.DataFrame) -> None:
    kpis = compute_kpis(log, "2030-01-01", "2030-02-01")
    assert kpis.metrics["customers"] == 0
    assert math.isnan(kpis.metrics["repeat_rate"])
    assert kpis.cohorts.empty
    json.dumps(kpis.to_dict())
    with pytest.raises(ValueError, match="empty period"):
        compute_kpis(log, END, START)
    with pytest.raises(ValueError, match="start"):
        compute_kpis(log, "not a date", END)
    with pytest.raises(ValueError, match="is_return"):
        compute_kpis(log.drop(columns=["is_return"]), START, END)
