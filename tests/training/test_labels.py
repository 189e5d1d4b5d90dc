"""Labels by hand on a tiny log, window boundaries, and no leakage past the label window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.training.conftest import make_log, simulate_log
from training.dataset.labels import build_labels, build_training_set, snapshot_cutoffs

AS_OF = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.fixture
def tiny_log() -> pd.DataFrame:
    rows = [
        ("a", "2023-12-01", 10.0),  # before
        ("a", "2024-01-01 00:00", 5.0),  # exactly at as_of: in the window, day 0
        ("a", "2024-01-01 18:00", 7.0),  # same purchase day
        ("a", "2024-01-20", 3.0),  # second purchase day
        ("b", "2023-06-01", 20.0),  # before
        ("b", "2024-03-31", 99.0),  # exactly as_of + 90 days: outside
        ("c", "2023-11-15", 8.0),  # before
        ("c", "2024-01-11 12:00", 4.0),  # a return: not a purchase
        ("c", "2024-02-05 06:00", 30.0),  # first order in the window
        ("d", "2024-01-05", 50.0),  # new customer in the window: not in the population
        ("e", "2023-10-01", 12.0),
        ("e", "2024-06-01", 40.0),  # outside 90 d, inside 365 d
    ]
    return make_log(rows, returns=frozenset({7}))


def test_labels_by_hand(tiny_log: pd.DataFrame) -> None:
    labels = build_labels(tiny_log, AS_OF, horizon_days=90)
    assert list(labels.index) == ["a", "b", "c", "e"]
    assert labels.loc["a", "churn"] == 0
    assert labels.loc["a", "days_to_next"] == 0.0
    assert labels.loc["a", "n_purchase_days_h"] == 2
    assert labels.loc["a", "spend_h"] == pytest.approx(15.0)
    # b's order at as_of + H is outside the window: censored at H
    assert labels.loc["b", "churn"] == 1
    assert labels.loc["b", "event"] == 0
    assert labels.loc["b", "days_to_next"] == 90.0
    assert labels.loc["b", "spend_h"] == 0.0
    # c's return does not count; the order 35.25 days after as_of does
    assert labels.loc["c", "event"] == 1
    assert labels.loc["c", "days_to_next"] == pytest.approx(35.25)
    assert labels.loc["c", "spend_h"] == pytest.approx(30.0)
    assert labels.loc["e", "churn"] == 1
    assert "spend_365d" not in labels


def test_labels_365d(tiny_log: pd.DataFrame) -> None:
    labels = build_labels(tiny_log, AS_OF, horizon_days=90, include_365d=True)
    assert labels.loc["e", "spend_365d"] == pytest.approx(40.0)
    assert labels.loc["e", "n_purchase_days_365d"] == 1
    assert labels.loc["b", "spend_365d"] == pytest.approx(99.0)
    assert labels.loc["a", "n_purchase_days_365d"] == 2


def test_naive_as_of_is_utc(tiny_log: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        build_labels(tiny_log, "2024-01-01", 90), build_labels(tiny_log, AS_OF, 90)
    )


def test_snapshot_cutoffs_never_reach_past_eval_cutoff() -> None:
    cutoffs = snapshot_cutoffs("2024-06-30", horizon_days=90, n_snapshots=4, step_days=30)
    assert cutoffs == sorted(cutoffs)
    assert len(cutoffs) == 4
    assert cutoffs[-1] + pd.Timedelta(days=90) == pd.Timestamp("2024-06-30", tz="UTC")
    assert all(c + pd.Timedelta(days=90) <= pd.Timestamp("2024-06-30", tz="UTC") for c in cutoffs)
    assert cutoffs[-1] - cutoffs[-2] == pd.Timedelta(days=30)


def test_snapshot_cutoffs_respect_earliest() -> None:
    cutoffs = snapshot_cutoffs("2024-06-30", 90, 6, 30, earliest="2024-02-15")
    assert cutoffs[0] >= pd.Timestamp("2024-02-15", tz="UTC")
    assert len(cutoffs) == 2
    with pytest.raises(ValueError, match="no training cutoff"):
        snapshot_cutoffs("2024-06-30", 90, 6, 30, earliest="2024-05-01")


@settings(max_examples=25, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 400 * 24), min_size=1, max_size=30),
    customers=st.lists(st.sampled_from(["x", "y", "z"]), min_size=30, max_size=30),
    extra=st.lists(st.integers(0, 400 * 24), min_size=1, max_size=10),
    horizon=st.integers(1, 120),
)
def test_labels_only_depend_on_rows_before_window_end(
    offsets: list[int], customers: list[str], extra: list[int], horizon: int
) -> None:
    """Rows at or after as_of + H never change the labels at as_of."""
    start = pd.Timestamp("2024-01-01")
    as_of = start + pd.Timedelta(days=200)
    end = as_of + pd.Timedelta(days=horizon)
    rows = [
        (customers[i], str(start + pd.Timedelta(hours=h)), 1.0 + i) for i, h in enumerate(offsets)
    ]
    base = make_log(rows)
    labels = build_labels(base, as_of, horizon)
    late = [(customers[i], str(end + pd.Timedelta(hours=h)), 5.0) for i, h in enumerate(extra)]
    more = build_labels(make_log(rows + late), as_of, horizon)
    pd.testing.assert_frame_equal(labels, more)
    truncated = build_labels(
        make_log([r for r in rows if pd.Timestamp(r[1]) < end]), as_of, horizon
    )
    pd.testing.assert_frame_equal(labels, truncated)
    assert (labels["days_to_next"] <= horizon).all()
    assert np.array_equal(labels["churn"] + labels["event"], np.ones(len(labels)))


def test_training_set_never_reads_past_eval_cutoff() -> None:
    """Every stacked row's label window ends by the eval cutoff; truncating the log there
    changes nothing, and features at each cutoff only see rows before it."""
    log = simulate_log(300, seed=3)
    eval_cutoff = pd.Timestamp("2024-06-01", tz="UTC")
    cutoffs = snapshot_cutoffs(eval_cutoff, 60, 3, 30)
    full = build_training_set(log, cutoffs, 60)
    assert set(full["cutoff"]) == set(cutoffs)
    assert (full["cutoff"] + pd.Timedelta(days=60) <= eval_cutoff).all()
    past = build_training_set(log.loc[log["timestamp"] < eval_cutoff], cutoffs, 60)
    pd.testing.assert_frame_equal(full, past)
    first = full.loc[full["cutoff"] == cutoffs[0]]
    # the population at a cutoff is exactly the customers with an order before it
    before = log.loc[log["timestamp"] < cutoffs[0], "customer_id"].astype(str).unique()
    assert sorted(first.index) == sorted(before)


def test_spend_labels_are_net_of_returns_before_the_window_ends() -> None:
    rows = [
        ("f", "2023-12-01", 10.0),  # before
        ("f", "2024-01-10", 100.0),  # in the window
        ("f", "2024-01-15", 60.0),  # its partial return, in the window: nets
        ("f", "2024-02-01", 50.0),  # in the window
        ("f", "2024-04-15", 50.0),  # returned after the window: nets in 365 d only
        ("g", "2023-12-20", 70.0),  # before
        ("g", "2024-01-02", 70.0),  # a return of the earlier order: not this window's spend
        ("h", "2023-12-20", 5.0),  # before
        ("h", "2024-02-03 10:00", 300.0),  # the only order in the window ...
        ("h", "2024-02-03 16:00", 300.0),  # ... cancelled the same day
    ]
    log = make_log(rows, returns=frozenset({2, 4, 6, 9}))
    labels = build_labels(log, AS_OF, horizon_days=90, include_365d=True)
    assert labels.loc["f", "spend_h"] == pytest.approx(40.0 + 50.0)
    assert labels.loc["f", "spend_365d"] == pytest.approx(40.0)
    assert labels.loc["g", "spend_h"] == 0.0
    assert labels.loc["g", "churn"] == 1
    assert labels.loc["h", "spend_h"] == 0.0
    assert labels.loc["h", "n_purchase_days_h"] == 1  # the order was placed: counts stay
