"""The CDNOW loader against the published figures and the raw files read by plain pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.log.purchase_log import LoadResult
from features.log.schema import CANONICAL_COLUMNS, TIMESTAMP_DTYPE, PurchaseLogError
from features.sources.cdnow import read_cdnow

SAMPLE_COLUMNS = ["customer_id", "sample_id", "date", "cds", "value"]


@pytest.fixture(scope="module")
def master(cdnow_master_path: Path) -> LoadResult:
    return read_cdnow(cdnow_master_path)


@pytest.fixture(scope="module")
def sample(cdnow_sample_path: Path) -> LoadResult:
    return read_cdnow(cdnow_sample_path)


@pytest.fixture(scope="module")
def raw_master(cdnow_master_path: Path) -> pd.DataFrame:
    return pd.read_csv(cdnow_master_path, sep=r"\s+", dtype=str)


@pytest.fixture(scope="module")
def raw_sample(cdnow_sample_path: Path) -> pd.DataFrame:
    return pd.read_csv(cdnow_sample_path, sep=r"\s+", header=None, names=SAMPLE_COLUMNS, dtype=str)


def test_master_published_counts(master: LoadResult) -> None:
    report = master.report
    assert report.rows_read == 69_659
    assert report.rows_kept == 69_659
    assert report.dropped == {}
    assert report.n_customers == 23_570
    assert report.first_timestamp == pd.Timestamp("1997-01-01", tz="UTC")
    assert report.last_timestamp == pd.Timestamp("1998-06-30", tz="UTC")
    assert report.rows_read == report.rows_kept + sum(report.dropped.values())


def test_sample_published_counts(sample: LoadResult) -> None:
    report = sample.report
    assert report.rows_read == 6_919
    assert report.rows_kept == 6_919
    assert report.dropped == {}
    assert report.n_customers == 2_357
    assert report.first_timestamp == pd.Timestamp("1997-01-01", tz="UTC")
    assert report.last_timestamp == pd.Timestamp("1998-06-30", tz="UTC")


def test_exact_duplicates_are_kept_and_counted(
    master: LoadResult, sample: LoadResult, raw_master: pd.DataFrame, raw_sample: pd.DataFrame
) -> None:
    """CDNOW repeats some rows verbatim; the published row counts include them, so they stay."""
    master_duplicates = int(raw_master.duplicated().sum())
    sample_duplicates = int(raw_sample.duplicated().sum())
    assert master_duplicates == 255  # checked with plain pandas, independent of the loader
    assert sample_duplicates == 21
    assert master.report.n_exact_duplicates == master_duplicates
    assert sample.report.n_exact_duplicates == sample_duplicates
    assert any("kept 255 exact duplicate" in warning for warning in master.report.warnings)


def test_zero_dollar_rows_are_purchases(master: LoadResult, raw_master: pd.DataFrame) -> None:
    zero_raw = int((raw_master["dollar_value"].astype(float) == 0).sum())
    assert zero_raw == 80
    log = master.log
    assert int((log["amount"] == 0).sum()) == zero_raw
    assert not log["is_return"].any()
    assert master.report.n_returns == 0


def test_master_values_match_raw_file(master: LoadResult, raw_master: pd.DataFrame) -> None:
    log = master.log
    assert log["amount"].sum() == pytest.approx(raw_master["dollar_value"].astype(float).sum())
    assert log["quantity"].sum() == raw_master["number_of_cds"].astype(float).sum()
    # one order per customer and day (no order ids in CDNOW; all dates are midnight)
    orders = log.groupby(["customer_id", "order_id"], observed=True).ngroups
    assert orders == raw_master.groupby(["customer_id", "date"]).ngroups
    # the first rows of the file, read by eye: 00001 on 1997-01-01 bought 1 CD for 11.77
    first = log.iloc[0]
    assert first["customer_id"] == "00001"
    assert first["timestamp"] == pd.Timestamp("1997-01-01", tz="UTC")
    assert first["amount"] == 11.77
    assert first["quantity"] == 1.0
    assert first["order_id"] == "1997-01-01T00:00:00Z"


def test_canonical_contract(master: LoadResult) -> None:
    log = master.log
    assert list(log.columns) == list(CANONICAL_COLUMNS)
    assert isinstance(log.index, pd.RangeIndex)
    assert isinstance(log["customer_id"].dtype, pd.CategoricalDtype)
    assert log["customer_id"].cat.categories.dtype == "str"
    assert "00001" in log["customer_id"].cat.categories
    assert str(log["timestamp"].dtype) == TIMESTAMP_DTYPE
    keys = pd.DataFrame({"c": log["customer_id"].astype(str), "t": log["timestamp"]})
    assert keys.equals(keys.sort_values(["c", "t"], kind="stable").reset_index(drop=True))


def test_sample_uses_original_ids_and_matches_master(
    master: LoadResult, sample: LoadResult, raw_sample: pd.DataFrame
) -> None:
    sample_ids = set(sample.log["customer_id"].astype(str))
    assert sample_ids == set(raw_sample["customer_id"])
    assert "00004" in sample_ids  # first line of the sample: original id 00004, sample id 0001
    # the sample is a 1/10 customer sample: its customers' complete histories from the master
    in_master = master.log[master.log["customer_id"].astype(str).isin(sample_ids)]
    assert len(in_master) == len(sample.log)
    assert in_master["amount"].sum() == pytest.approx(sample.log["amount"].sum())


def test_unknown_layout_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "odd.txt"
    path.write_text("00001 19970101 1\n", encoding="ascii")
    with pytest.raises(PurchaseLogError, match="3 fields"):
        read_cdnow(path)


def test_headerless_master_layout(tmp_path: Path) -> None:
    path = tmp_path / "master_no_header.txt"
    path.write_text(" 00007 19970305  2   25.98\n 00007 19970101  1   0.00\n", encoding="ascii")
    result = read_cdnow(path)
    assert list(result.log["timestamp"]) == [
        pd.Timestamp("1997-01-01", tz="UTC"),
        pd.Timestamp("1997-03-05", tz="UTC"),
    ]
    assert list(result.log["amount"]) == [0.0, 25.98]
    assert list(result.log["quantity"]) == [1.0, 2.0]
