"""The synthetic log: deterministic, consistent with its own truth, and carrying real signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.log.purchase_log import canonicalize
from features.synthetic.synth import (
    CATEGORIES,
    CHANNELS,
    customers_for_rows,
    default_campaigns,
    generate_purchase_log,
)

SOURCE_COLUMNS = [
    "customer_id",
    "timestamp",
    "amount",
    "order_id",
    "quantity",
    "product_id",
    "category",
    "discount",
    "channel",
]


@pytest.fixture(scope="module")
def synth():
    return generate_purchase_log(3_000, seed=11)


def purchases(log: pd.DataFrame) -> pd.DataFrame:
    return log.loc[log["amount"] > 0]


def test_same_seed_gives_identical_frames() -> None:
    first = generate_purchase_log(400, seed=5)
    second = generate_purchase_log(400, seed=5)
    pd.testing.assert_frame_equal(first.log, second.log)
    pd.testing.assert_frame_equal(first.truth, second.truth)
    other = generate_purchase_log(400, seed=6)
    assert not first.log["amount"].equals(other.log["amount"])


def test_source_contract(synth) -> None:
    log = synth.log
    assert list(log.columns) == SOURCE_COLUMNS
    assert log["customer_id"].dtype == pd.Series(["x"]).dtype
    assert str(log["timestamp"].dtype) == "datetime64[us, UTC]"
    assert log["discount"].dtype == bool
    assert set(log["category"]) <= set(CATEGORIES)
    assert set(log["channel"]) <= set(CHANNELS)
    assert log["timestamp"].is_monotonic_increasing
    assert log["timestamp"].min() >= pd.Timestamp("2022-01-01", tz="UTC")
    assert log["timestamp"].max() < pd.Timestamp("2025-01-01", tz="UTC")
    assert (log["quantity"] >= 1).all()
    assert not log.duplicated().any()
    assert set(log["customer_id"]) == set(synth.truth["customer_id"])


def test_loader_keeps_every_row(synth) -> None:
    result = canonicalize(synth.log)
    assert result.report.rows_kept == len(synth.log)
    assert result.report.dropped == {}
    assert result.report.n_returns == int((synth.log["amount"] < 0).sum())


def test_rows_scale_with_customers_and_rate() -> None:
    small = len(generate_purchase_log(2_000, seed=1).log)
    large = len(generate_purchase_log(8_000, seed=1).log)
    assert 3.4 < large / small < 4.6
    # The documented yield: about 10 rows per customer at the defaults.
    assert 8.5 < large / 8_000 < 11.5
    busier = len(generate_purchase_log(2_000, seed=1, mean_purchases_per_year=12.0).log)
    assert busier > 1.3 * small


def test_customers_for_rows_targets_row_count() -> None:
    n = customers_for_rows(50_000, pilot=5_000)
    rows = len(generate_purchase_log(n, seed=3).log)
    assert 0.85 * 50_000 < rows < 1.15 * 50_000


def test_truth_first_purchase_and_order_counts(synth) -> None:
    buys = purchases(synth.log)
    truth = synth.truth.set_index("customer_id")
    first = buys.groupby("customer_id")["timestamp"].min()
    pd.testing.assert_series_equal(
        first.sort_index(), truth["first_purchase"].sort_index(), check_names=False
    )
    orders = buys.groupby("customer_id")["order_id"].nunique()
    assert (orders.sort_index().to_numpy() == truth["n_orders"].sort_index().to_numpy()).all()


def test_no_purchase_after_dropout(synth) -> None:
    truth = synth.truth.set_index("customer_id")
    dead = truth.loc[~truth["alive_at_end"]]
    assert dead["dropout_time"].notna().all()
    assert truth.loc[truth["alive_at_end"], "dropout_time"].isna().all()
    assert 0.2 < len(dead) / len(truth) < 0.8
    last = purchases(synth.log).groupby("customer_id")["timestamp"].max()
    # BG/NBD convention: the customer leaves right after their last purchase.
    assert (last.reindex(dead.index) == dead["dropout_time"]).all()


def test_sale_only_customers_buy_only_discounted_in_campaigns(synth) -> None:
    truth = synth.truth
    sale_ids = set(truth.loc[truth["sale_only"], "customer_id"])
    assert 0.04 < len(sale_ids) / len(truth) < 0.14
    rows = synth.log.loc[synth.log["customer_id"].isin(sale_ids) & (synth.log["amount"] > 0)]
    assert len(rows) > 0
    assert rows["discount"].all()
    ts = rows["timestamp"]
    in_window = np.zeros(len(rows), dtype=bool)
    for start, end in synth.campaigns.itertuples(index=False):
        in_window |= ((ts >= start) & (ts < end)).to_numpy()
    assert in_window.all()


def test_q4_and_campaigns_lift_purchases(synth) -> None:
    buys = purchases(synth.log)
    orders = buys.drop_duplicates("order_id")
    q4_share = (orders["timestamp"].dt.quarter == 4).mean()
    # Q4 holds 92 of 365 days (25%); the seasonal peak and Black Friday push it well above.
    assert q4_share > 0.30
    day = orders["timestamp"].dt.floor("D")
    all_days = pd.date_range("2022-01-01", "2024-12-31", freq="D", tz="UTC")
    per_day = day.value_counts().reindex(all_days, fill_value=0)
    in_campaign = np.zeros(len(all_days), dtype=bool)
    for start, end in synth.campaigns.itertuples(index=False):
        in_campaign |= (all_days >= start) & (all_days < end)
    assert per_day[in_campaign].mean() > 1.5 * per_day[~in_campaign].mean()
    assert orders.loc[day.isin(all_days[in_campaign]), "discount"].all()


def test_default_campaigns_include_black_friday_week() -> None:
    windows = default_campaigns(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-12-31"))
    # Thanksgiving 2024 is on 28 November, Black Friday on the 29th.
    assert ("2024-11-29", "2024-12-06") in windows
    assert len(windows) == 4


def test_returns_are_later_negative_rows_of_real_lines(synth) -> None:
    log = synth.log
    returns = log.loc[log["amount"] < 0]
    share = len(returns) / len(log)
    assert 0.01 < share < 0.05
    assert returns["order_id"].str.startswith("C").all()
    original = log.loc[log["amount"] > 0, ["order_id", "product_id", "customer_id", "timestamp"]]
    matched = returns.assign(order_id=returns["order_id"].str.slice(1)).merge(
        original, on=["order_id", "product_id"], suffixes=("", "_bought"), how="left"
    )
    assert matched["timestamp_bought"].notna().all()
    assert (matched["customer_id"] == matched["customer_id_bought"]).all()
    assert (matched["timestamp"] > matched["timestamp_bought"]).all()


def test_multi_line_orders_share_time_channel_and_discount(synth) -> None:
    buys = purchases(synth.log)
    per_order = buys.groupby("order_id").agg(
        lines=("amount", "size"),
        times=("timestamp", "nunique"),
        channels=("channel", "nunique"),
        discounts=("discount", "nunique"),
    )
    assert (per_order["lines"] > 1).mean() > 0.25
    assert (per_order[["times", "channels", "discounts"]] == 1).all().all()


def test_custom_period_and_bad_arguments() -> None:
    result = generate_purchase_log(300, seed=2, start="2023-03-01", end="2023-06-30")
    assert result.log["timestamp"].min() >= pd.Timestamp("2023-03-01", tz="UTC")
    assert result.log["timestamp"].max() < pd.Timestamp("2023-07-01", tz="UTC")
    with pytest.raises(ValueError, match="n_customers"):
        generate_purchase_log(0)
    with pytest.raises(ValueError, match="return_share"):
        generate_purchase_log(10, return_share=1.5)
    with pytest.raises(ValueError, match="end"):
        generate_purchase_log(10, start="2024-01-02", end="2024-01-01")


@pytest.mark.slow
def test_a_million_customers_make_the_ten_million_row_benchmark_log() -> None:
    # The benchmarks' 10M-row log; its speed is printed by benchmarks/batch.py, not asserted.
    result = generate_purchase_log(1_000_000, seed=0)
    assert len(result.log) > 9_000_000
