"""The purchase-log loader: validation messages, repairs and the canonical contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config_file import LogConfigError, load_log_config
from features.log.canonical import LoadReport
from features.log.purchase_log import canonicalize, read_purchase_log
from features.log.reading import parse_mapping
from features.log.schema import CANONICAL_COLUMNS, TIMESTAMP_DTYPE, LogConfig, PurchaseLogError
from features.sources.cdnow import read_cdnow
from features.synthetic.synth import generate_purchase_log
from tests.features.conftest import make_log


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def frame(**columns: list[object]) -> pd.DataFrame:
    return pd.DataFrame(columns)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


SIMPLE = frame(
    customer_id=["c2", "c1", "c1"],
    timestamp=["2024-01-02 10:00", "2024-01-03 09:00", "2024-01-01 08:00"],
    amount=["5", "7.5", "2"],
)


# --- the contract -----------------------------------------------------------------------------


def test_canonical_dtypes_sort_and_index() -> None:
    result = canonicalize(SIMPLE)
    log = result.log
    assert list(log.columns) == list(CANONICAL_COLUMNS)
    assert isinstance(log["customer_id"].dtype, pd.CategoricalDtype)
    assert log["customer_id"].cat.categories.dtype == "str"
    assert str(log["timestamp"].dtype) == TIMESTAMP_DTYPE
    assert log["amount"].dtype == "float64"
    assert log["quantity"].dtype == "float64"
    assert log["order_id"].dtype == "str"
    for column in ("product_id", "category", "channel"):
        assert log[column].dtype == "str"
        assert log[column].isna().all()
    assert log["discount"].dtype == bool
    assert log["is_return"].dtype == bool
    assert isinstance(log.index, pd.RangeIndex)
    assert list(log.index) == [0, 1, 2]
    # sorted by customer, then time
    assert list(log["customer_id"].astype(str)) == ["c1", "c1", "c2"]
    assert list(log["timestamp"]) == [
        utc("2024-01-01 08:00"),
        utc("2024-01-03 09:00"),
        utc("2024-01-02 10:00"),
    ]
    assert list(log["amount"]) == [2.0, 7.5, 5.0]
    assert list(log["quantity"]) == [1.0, 1.0, 1.0]
    assert not log["discount"].any()
    assert not log["is_return"].any()


def test_order_id_breaks_ties_in_sort_order() -> None:
    df = frame(
        customer_id=["a", "a", "a", "b"],
        timestamp=["2024-01-01 10:00"] * 3 + ["2024-01-01 09:00"],
        amount=[1, 2, 3, 4],
        order_id=["o3", "o1", "o2", "o9"],
    )
    log = canonicalize(df).log
    assert list(log["order_id"]) == ["o1", "o2", "o3", "o9"]
    assert list(log["amount"]) == [2.0, 3.0, 1.0, 4.0]


def test_customer_ids_keep_leading_zeros_and_are_stripped(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "log.csv",
        "customer_id,timestamp,amount\n007, 2024-01-01,1\n 007 ,2024-01-02,2\n70,2024-01-03,3\n",
    )
    log = read_purchase_log(path).log
    assert list(log["customer_id"].astype(str)) == ["007", "007", "70"]


def test_report_counts_and_time_span() -> None:
    report = canonicalize(SIMPLE).report
    assert report.rows_read == 3
    assert report.rows_kept == 3
    assert report.dropped == {}
    assert report.n_customers == 2
    assert report.n_returns == 0
    assert report.first_timestamp == utc("2024-01-01 08:00")
    assert report.last_timestamp == utc("2024-01-03 09:00")


def test_report_summary_and_json() -> None:
    df = frame(
        customer_id=["a", "", "a", "a"],
        timestamp=["2024-01-01"] * 4,
        amount=[1, 2, 1, -3],
    )
    report = canonicalize(df).report
    data = json.loads(json.dumps(report.to_dict()))
    assert data["rows_read"] == 4
    assert data["rows_kept"] == 2
    assert data["dropped"] == {"missing_customer_id": 1, "exact_duplicate": 1}
    assert data["n_returns"] == 1
    assert data["first_timestamp"] == "2024-01-01T00:00:00+00:00"
    text = report.summary()
    assert "rows read:  4" in text
    assert "dropped (missing_customer_id): 1" in text
    assert "dropped (exact_duplicate): 1" in text
    assert "returns:    1" in text


def test_report_rejects_broken_invariant() -> None:
    with pytest.raises(ValueError, match="invariant"):
        LoadReport(
            rows_read=5,
            rows_kept=3,
            dropped={"exact_duplicate": 1},
            n_returns=0,
            n_customers=1,
            first_timestamp=None,
            last_timestamp=None,
        )


def test_empty_input_gives_empty_canonical_log() -> None:
    result = canonicalize(frame(customer_id=[], timestamp=[], amount=[]))
    assert len(result.log) == 0
    assert list(result.log.columns) == list(CANONICAL_COLUMNS)
    assert str(result.log["timestamp"].dtype) == TIMESTAMP_DTYPE
    assert result.report.first_timestamp is None


# --- validation errors ------------------------------------------------------------------------


def test_missing_required_columns_are_named_with_found_columns_and_hint() -> None:
    df = frame(CustomerID=["a"], when=["2024-01-01"], amount=[1])
    with pytest.raises(PurchaseLogError) as caught:
        canonicalize(df)
    message = str(caught.value)
    assert "'customer_id'" in message
    assert "'timestamp'" in message
    assert "'amount'" not in message.split("columns found")[0]
    assert "['CustomerID', 'when', 'amount']" in message
    assert "--map" in message


def test_missing_column_suggests_case_insensitive_match() -> None:
    df = frame(Customer_ID=["a"], timestamp=["2024-01-01"], amount=[1])
    with pytest.raises(PurchaseLogError, match="did you mean 'Customer_ID'"):
        canonicalize(df)


def test_explicitly_mapped_optional_column_must_exist() -> None:
    config = LogConfig(columns={"quantity": "Qty"})
    with pytest.raises(PurchaseLogError, match=r"'quantity' \(mapped to 'Qty'\)"):
        canonicalize(SIMPLE, config)


def test_unparseable_timestamps_name_column_rows_and_values(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "log.csv",
        "customer_id,timestamp,amount\n"
        "a,2024-01-01,1\n"
        "a,yesterday,1\n"
        "b,2024-01-03,1\n"
        "b,2024-02-30,1\n",
    )
    with pytest.raises(PurchaseLogError) as caught:
        read_purchase_log(path)
    message = str(caught.value)
    assert "'timestamp'" in message
    assert "2 unparseable" in message
    assert "2 ('yesterday')" in message
    assert "4 ('2024-02-30')" in message
    assert "1-based data rows, header line not counted" in message


def test_error_lists_at_most_five_rows() -> None:
    df = frame(customer_id=list("abcdefgh"), timestamp=["2024-01-01"] * 8, amount=["x"] * 8)
    with pytest.raises(PurchaseLogError) as caught:
        canonicalize(df)
    message = str(caught.value)
    assert "1 ('x'), 2 ('x'), 3 ('x'), 4 ('x'), 5 ('x'), ... (8 in all)" in message
    assert "6 ('x')" not in message


def test_non_numeric_amount_names_column_rows_and_values(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "log.csv",
        "cust,timestamp,Revenue\na,2024-01-01,1.50\nb,2024-01-02,$3\nc,2024-01-03,\n",
    )
    config = LogConfig(columns={"customer_id": "cust", "amount": "Revenue"})
    with pytest.raises(PurchaseLogError) as caught:
        read_purchase_log(path, config)
    message = str(caught.value)
    assert "'Revenue' (canonical 'amount')" in message
    assert "2 ('$3')" in message
    assert "3 (NaN)" in message  # an empty cell is read as NaN, and shown as such


def test_infinite_amount_is_rejected() -> None:
    df = frame(customer_id=["a", "b"], timestamp=["2024-01-01"] * 2, amount=["1", "inf"])
    with pytest.raises(PurchaseLogError, match=r"'amount'.*2 \('inf'\)"):
        canonicalize(df)


def test_non_numeric_quantity_names_column_rows_and_values() -> None:
    df = frame(
        customer_id=["a", "b", "c"],
        timestamp=["2024-01-01"] * 3,
        amount=[1, 2, 3],
        quantity=["1", "two", "3"],
    )
    with pytest.raises(PurchaseLogError) as caught:
        canonicalize(df)
    message = str(caught.value)
    assert "'quantity'" in message
    assert "2 ('two')" in message


def test_empty_quantity_is_one_with_warning() -> None:
    df = frame(
        customer_id=["a", "b"], timestamp=["2024-01-01"] * 2, amount=[1, 2], quantity=["3", ""]
    )
    result = canonicalize(df)
    assert list(result.log["quantity"]) == [3.0, 1.0]
    assert any("empty quantity" in warning for warning in result.report.warnings)


def test_numeric_timestamps_need_a_date_format() -> None:
    df = frame(customer_id=["a"], timestamp=[20240101], amount=[1])
    with pytest.raises(PurchaseLogError, match=r"'timestamp'.*1 \(20240101\).*date_format"):
        canonicalize(df)


def test_error_row_numbers_count_dropped_rows() -> None:
    """Row numbers stay those of the input even after rows without a customer are dropped."""
    df = frame(
        customer_id=["", "a", "b"],
        timestamp=["2024-01-01"] * 3,
        amount=["1", "2", "oops"],
    )
    with pytest.raises(PurchaseLogError, match=r"3 \('oops'\)"):
        canonicalize(df)


def test_discount_numbers_other_than_zero_one_are_rejected() -> None:
    df = frame(customer_id=["a", "b"], timestamp=["2024-01-01"] * 2, amount=[1, 2], discount=[1, 2])
    with pytest.raises(PurchaseLogError, match=r"'discount'.*2 \(2\)"):
        canonicalize(df)


def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(PurchaseLogError, match="Mars/Olympus"):
        canonicalize(SIMPLE, LogConfig(timezone="Mars/Olympus"))


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.xlsx", "x")
    with pytest.raises(PurchaseLogError, match="unsupported"):
        read_purchase_log(path)


# --- missing customer ids ---------------------------------------------------------------------


def test_missing_customer_ids_are_dropped_counted_and_warned() -> None:
    df = frame(
        customer_id=["a", None, "  ", "b", ""],
        timestamp=["2024-01-01"] * 5,
        amount=[1, 2, 3, 4, 5],
    )
    result = canonicalize(df)
    assert result.report.dropped == {"missing_customer_id": 3}
    assert result.report.rows_kept == 2
    assert list(result.log["amount"]) == [1.0, 4.0]
    (warning,) = result.report.warnings
    assert "3 row(s) with an empty customer id" in warning
    assert "data rows 2, 3, 5" in warning


def test_missing_customer_ids_raise_in_strict_mode() -> None:
    df = frame(customer_id=["a", "", "b"], timestamp=["2024-01-01"] * 3, amount=[1, 2, 3])
    with pytest.raises(PurchaseLogError) as caught:
        canonicalize(df, LogConfig(strict=True))
    message = str(caught.value)
    assert "'customer_id'" in message
    assert "data rows 2" in message
    assert "strict" in message


def test_na_like_text_is_a_real_id_in_csv(tmp_path: Path) -> None:
    """Only empty cells are missing: 'NA' could be somebody's initials."""
    path = write_csv(
        tmp_path / "log.csv", "customer_id,timestamp,amount\nNA,2024-01-01,1\n,2024-01-01,1\n"
    )
    result = read_purchase_log(path)
    assert list(result.log["customer_id"].astype(str)) == ["NA"]
    assert result.report.dropped == {"missing_customer_id": 1}


# --- mapping and config files -----------------------------------------------------------------


def test_parse_mapping() -> None:
    assert parse_mapping(["customer_id=CustomerID", "amount = Revenue", "order_id=a=b"]) == {
        "customer_id": "CustomerID",
        "amount": "Revenue",
        "order_id": "a=b",
    }


@pytest.mark.parametrize("item", ["customer_id", "=CustomerID", "customer_id=", "  "])
def test_parse_mapping_rejects_malformed_items(item: str) -> None:
    with pytest.raises(PurchaseLogError, match="malformed") as caught:
        parse_mapping(["amount=Revenue", item])
    assert repr(item) in str(caught.value)


def test_parse_mapping_rejects_unknown_canonical_name() -> None:
    with pytest.raises(PurchaseLogError, match=r"'client=CustomerID'.*unknown canonical"):
        parse_mapping(["client=CustomerID"])


def test_mapping_reads_renamed_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "log.csv",
        "InvoiceNo,CustomerID,InvoiceDate,Price,Qty\n"
        "536365,17850,2010-12-01 08:26:00,2.55,6\n"
        "C536379,17850,2010-12-01 09:41:00,27.50,-1\n",
    )
    config = LogConfig(
        columns=parse_mapping(
            [
                "customer_id=CustomerID",
                "timestamp=InvoiceDate",
                "amount=Price",
                "quantity=Qty",
                "order_id=InvoiceNo",
            ]
        )
    )
    log = read_purchase_log(path, config).log
    assert list(log["order_id"]) == ["536365", "C536379"]
    assert list(log["quantity"]) == [6.0, 1.0]
    assert list(log["is_return"]) == [False, True]
    assert log["timestamp"].iloc[1] == utc("2010-12-01 09:41")


def test_load_log_config_yaml(tmp_path: Path) -> None:
    path = tmp_path / "log.yaml"
    path.write_text(
        "columns:\n  customer_id: CustomerID\ntimezone: Europe/Berlin\n"
        "discount_true_values: [promo]\nduplicates: keep\n",
        encoding="utf-8",
    )
    config = load_log_config(path)
    assert config == LogConfig(
        columns={"customer_id": "CustomerID"},
        timezone="Europe/Berlin",
        discount_true_values=("promo",),
        duplicates="keep",
    )


def test_load_log_config_toml(tmp_path: Path) -> None:
    path = tmp_path / "log.toml"
    path.write_text(
        'cancel_prefix = "X"\nstrict = true\n[columns]\namount = "Revenue"\n', encoding="utf-8"
    )
    assert load_log_config(path) == LogConfig(
        cancel_prefix="X", strict=True, columns={"amount": "Revenue"}
    )


def test_load_log_config_log_section_beside_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "retain.yaml"
    path.write_text("log:\n  timezone: Asia/Tokyo\nsegments:\n  anything: 1\n", encoding="utf-8")
    assert load_log_config(path) == LogConfig(timezone="Asia/Tokyo")


def test_load_log_config_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "log.yaml"
    path.write_text("timezon: UTC\n", encoding="utf-8")
    with pytest.raises(LogConfigError, match=r"unknown key\(s\) \['timezon'\].*timezone"):
        load_log_config(path)


def test_load_log_config_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "log.yaml"
    path.write_text("duplicates: sometimes\ncolumns: {client: X}\n", encoding="utf-8")
    with pytest.raises(LogConfigError) as caught:
        load_log_config(path)
    assert "duplicates" in str(caught.value)
    assert "columns" in str(caught.value)


# --- timestamps -------------------------------------------------------------------------------


def test_mixed_offsets_are_normalised_to_utc() -> None:
    df = frame(
        customer_id=["a", "a", "a"],
        timestamp=["2024-03-01T12:00:00+01:00", "2024-03-01T12:00:00Z", "2024-03-01 06:30-05:00"],
        amount=[1, 2, 3],
    )
    log = canonicalize(df).log
    assert list(log["timestamp"]) == [
        utc("2024-03-01 11:00"),
        utc("2024-03-01 11:30"),
        utc("2024-03-01 12:00"),
    ]
    assert list(log["amount"]) == [1.0, 3.0, 2.0]


def test_naive_timestamps_use_configured_zone_and_offsets_win() -> None:
    df = frame(
        customer_id=["a", "a", "a"],
        # winter (UTC+1), summer (UTC+2), and an explicit offset that must not be re-zoned
        timestamp=["2024-01-15 12:00", "2024-07-15 12:00:00", "2024-07-15T12:00:00+00:00"],
        amount=[1, 2, 3],
    )
    log = canonicalize(df, LogConfig(timezone="Europe/Berlin")).log
    assert list(log["timestamp"]) == [
        utc("2024-01-15 11:00"),
        utc("2024-07-15 10:00"),
        utc("2024-07-15 12:00"),
    ]


def test_naive_datetime_column_uses_configured_zone() -> None:
    df = frame(
        customer_id=["a"],
        timestamp=pd.to_datetime(["2024-06-01 09:00"]),
        amount=[1.0],
    )
    log = canonicalize(df, LogConfig(timezone="America/New_York")).log
    assert log["timestamp"].iloc[0] == utc("2024-06-01 13:00")


def test_aware_datetime_column_is_converted() -> None:
    df = frame(
        customer_id=["a"],
        timestamp=pd.to_datetime(["2024-06-01 09:00"]).tz_localize("Asia/Tokyo"),
        amount=[1.0],
    )
    log = canonicalize(df, LogConfig(timezone="America/New_York")).log
    assert log["timestamp"].iloc[0] == utc("2024-06-01 00:00")
    assert str(log["timestamp"].dtype) == TIMESTAMP_DTYPE


def test_daylight_saving_gaps_and_repeats_are_resolved_with_warning() -> None:
    df = frame(
        customer_id=["a", "b"],
        # 02:30 does not exist on 2024-03-31 in Berlin; 02:30 happens twice on 2024-10-27
        timestamp=["2024-03-31 02:30", "2024-10-27 02:30"],
        amount=[1, 2],
    )
    result = canonicalize(df, LogConfig(timezone="Europe/Berlin"))
    assert list(result.log["timestamp"]) == [
        utc("2024-03-31 01:00"),  # shifted forward to 03:00 CEST
        utc("2024-10-27 01:30"),  # the standard-time (CET, UTC+1) reading
    ]
    assert any("daylight-saving" in warning for warning in result.report.warnings)


def test_numeric_yyyymmdd_with_date_format() -> None:
    df = frame(customer_id=["a", "b"], timestamp=[19970101, 19980630], amount=[1, 2])
    log = canonicalize(df, LogConfig(date_format="%Y%m%d")).log
    assert list(log["timestamp"]) == [utc("1997-01-01"), utc("1998-06-30")]


# --- returns, duplicates, discount, orders ----------------------------------------------------


def test_negative_amount_is_a_return_stored_positive() -> None:
    df = frame(customer_id=["a", "a"], timestamp=["2024-01-01", "2024-01-02"], amount=[10, -4])
    result = canonicalize(df)
    assert list(result.log["amount"]) == [10.0, 4.0]
    assert list(result.log["is_return"]) == [False, True]
    assert result.report.n_returns == 1


def test_negative_quantity_is_a_return_stored_positive() -> None:
    df = frame(
        customer_id=["a", "a"],
        timestamp=["2024-01-01", "2024-01-02"],
        amount=[10, 4],
        quantity=[2, -1],
    )
    log = canonicalize(df).log
    assert list(log["quantity"]) == [2.0, 1.0]
    assert list(log["amount"]) == [10.0, 4.0]
    assert list(log["is_return"]) == [False, True]


def test_cancel_prefix_marks_returns() -> None:
    df = frame(
        customer_id=["a", "a", "a"],
        timestamp=["2024-01-01", "2024-01-02", "2024-01-03"],
        amount=[10, 10, 0],
        order_id=["1001", "C1002", "c1003"],
    )
    assert list(canonicalize(df).log["is_return"]) == [False, True, False]
    no_prefix = canonicalize(df, LogConfig(cancel_prefix=None)).log
    assert not no_prefix["is_return"].any()


def test_zero_amount_is_not_a_return() -> None:
    df = frame(customer_id=["a"], timestamp=["2024-01-01"], amount=[0.0])
    assert not canonicalize(df).log["is_return"].any()


def test_exact_duplicates_dropped_and_reported() -> None:
    df = frame(
        customer_id=["a", "a", "a", "a", "b"],
        timestamp=["2024-01-01"] * 5,
        amount=[5, 5, 5, 6, 5],
        product_id=["p", "p", "q", "p", "p"],
    )
    # rows 1 and 2 are identical; row 3 differs in product, row 4 in amount, row 5 in customer
    result = canonicalize(df)
    assert result.report.dropped == {"exact_duplicate": 1}
    assert result.report.n_exact_duplicates == 1
    assert result.report.rows_kept == 4
    assert any("1 exact duplicate" in warning for warning in result.report.warnings)

    kept = canonicalize(df, LogConfig(duplicates="keep"))
    assert kept.report.dropped == {}
    assert kept.report.rows_kept == 5
    assert kept.report.n_exact_duplicates == 1


def test_discount_parsing() -> None:
    df = frame(
        customer_id=list("abcdef"),
        timestamp=["2024-01-01"] * 6,
        amount=[1] * 6,
        discount=["Yes", "no", "TRUE", "1", "0", ""],
    )
    assert list(canonicalize(df).log["discount"]) == [True, False, True, True, False, False]
    custom = frame(
        customer_id=list("abc"),
        timestamp=["2024-01-01"] * 3,
        amount=[1] * 3,
        discount=["promo", "none", ""],
    )
    rules = LogConfig(discount_true_values=("promo",), discount_false_values=("none",))
    assert list(canonicalize(custom, rules).log["discount"]) == [True, False, False]
    numeric = frame(
        customer_id=["a", "b"], timestamp=["2024-01-01"] * 2, amount=[1, 1], discount=[0, 1]
    )
    assert list(canonicalize(numeric).log["discount"]) == [False, True]
    booleans = numeric.assign(discount=[True, False])
    assert list(canonicalize(booleans).log["discount"]) == [True, False]


@pytest.mark.parametrize("spelling", ["maybe", "10.0", "promo"])
def test_a_discount_spelling_neither_true_nor_false_is_refused_naming_its_row(
    spelling: str,
) -> None:
    # Read as False it would silently drop the discount from every feature built on it.
    df = frame(
        customer_id=list("abc"),
        timestamp=["2024-01-01"] * 3,
        amount=[1] * 3,
        discount=["yes", spelling, "no"],
    )
    with pytest.raises(
        PurchaseLogError, match=rf"'discount': 1 value\(s\) other than .*{spelling}"
    ):
        canonicalize(df)


def test_order_id_synthesised_per_customer_and_instant() -> None:
    df = frame(
        customer_id=["a", "a", "a", "b"],
        timestamp=[
            "2024-01-01T10:00:00+01:00",
            "2024-01-01T09:00:00Z",
            "2024-01-01T09:00:01Z",
            "2024-01-01T09:00:00Z",
        ],
        amount=[1, 2, 3, 4],
    )
    log = canonicalize(df).log
    assert list(log["order_id"]) == [
        "2024-01-01T09:00:00Z",
        "2024-01-01T09:00:00Z",
        "2024-01-01T09:00:01Z",
        "2024-01-01T09:00:00Z",
    ]
    orders = log.groupby(["customer_id", "order_id"], observed=True).size()
    assert orders.to_dict() == {
        ("a", "2024-01-01T09:00:00Z"): 2,
        ("a", "2024-01-01T09:00:01Z"): 1,
        ("b", "2024-01-01T09:00:00Z"): 1,
    }


def test_empty_order_ids_are_filled_from_timestamp() -> None:
    df = frame(
        customer_id=["a", "a"],
        timestamp=["2024-01-01 09:00", "2024-01-02 09:00:00.250"],
        amount=[1, 2],
        order_id=["X1", ""],
    )
    result = canonicalize(df)
    assert list(result.log["order_id"]) == ["X1", "2024-01-02T09:00:00.250000Z"]
    assert any("empty order id" in warning for warning in result.report.warnings)


def test_optional_text_columns_kept() -> None:
    df = SIMPLE.assign(product_id=[1, 2, 3], category=["x", "", "z"], channel=["web"] * 3)
    log = canonicalize(df).log
    # sorted: row 3 (c1, Jan 1), row 2 (c1, Jan 3), row 1 (c2)
    assert list(log["product_id"]) == ["3", "2", "1"]
    assert log["category"].isna().tolist() == [False, True, False]
    assert list(log["channel"]) == ["web"] * 3


# --- files ------------------------------------------------------------------------------------


def _source_log() -> pd.DataFrame:
    return frame(
        customer_id=["0042", "0042", "7", "", "7"],
        timestamp=[
            "2024-01-01T10:00:00+01:00",
            "2024-01-02T10:00:00Z",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
        ],
        amount=[10.5, -3.0, 1.0, 2.0, 1.0],
        order_id=["A", "B", "C9", "D", "C9"],
        channel=["web", "app", "store", "web", "store"],
    )


def _check_source_log(result_log: pd.DataFrame, report: LoadReport) -> None:
    assert report.rows_read == 5
    assert report.dropped == {"missing_customer_id": 1, "exact_duplicate": 1}
    assert list(result_log["customer_id"].astype(str)) == ["0042", "0042", "7"]
    assert list(result_log["timestamp"]) == [
        utc("2024-01-01 09:00"),
        utc("2024-01-02 10:00"),
        utc("2024-01-01 00:00"),
    ]
    assert list(result_log["amount"]) == [10.5, 3.0, 1.0]
    assert list(result_log["is_return"]) == [False, True, True]  # negative; prefix "C"
    assert list(result_log["channel"]) == ["web", "app", "store"]
    assert str(result_log["timestamp"].dtype) == TIMESTAMP_DTYPE


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz"])
def test_csv_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    _source_log().to_csv(path, index=False)
    result = read_purchase_log(path)
    _check_source_log(result.log, result.report)
    assert result.report.source == str(path)


def test_parquet_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    _source_log().to_parquet(path, index=False)
    result = read_purchase_log(path)
    _check_source_log(result.log, result.report)


@pytest.mark.parametrize("name", ["canonical.parquet", "canonical.csv"])
def test_canonical_log_loads_back_unchanged(tmp_path: Path, name: str) -> None:
    """A canonical log saved and reloaded is the same log (returns keep their flag)."""
    first = read_purchase_log(_source_log()).log
    path = tmp_path / name
    if name.endswith(".csv"):
        first.to_csv(path, index=False)
    else:
        first.to_parquet(path, index=False)
    second = read_purchase_log(path).log
    pd.testing.assert_frame_equal(first, second)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_purchase_log(tmp_path / "nope.csv")


# --- the rows-in = kept + dropped invariant ---------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "", " ", "007"]),
            st.sampled_from(["2024-01-01", "2024-01-01T10:00:00+02:00", "2024-03-31 02:30"]),
            st.sampled_from([0.0, 1.5, -2.0, 10.0]),
            st.sampled_from(["", "C1", "o1", "o2"]),
        ),
        max_size=25,
    ),
    duplicates=st.sampled_from(["drop", "keep"]),
)
def test_rows_read_equal_kept_plus_dropped(
    rows: list[tuple[str, str, float, str]], duplicates: str
) -> None:
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount", "order_id"])
    df = df.astype({"customer_id": "str", "timestamp": "str", "order_id": "str"})
    result = canonicalize(df, LogConfig(duplicates=duplicates, timezone="Europe/Berlin"))
    report = result.report
    assert report.rows_read == len(rows)
    assert report.rows_read == report.rows_kept + sum(report.dropped.values())
    assert len(result.log) == report.rows_kept
    # independent counts: blank ids, then exact repeats among the rest
    blank = df["customer_id"].str.strip() == ""
    assert report.dropped.get("missing_customer_id", 0) == int(blank.sum())
    expected_duplicates = int(df[~blank].duplicated().sum())
    assert report.n_exact_duplicates == expected_duplicates
    assert report.dropped.get("exact_duplicate", 0) == (
        expected_duplicates if duplicates == "drop" else 0
    )
    log = result.log
    assert (log["amount"] >= 0).all()
    keys = pd.DataFrame(
        {
            "c": log["customer_id"].astype(str),
            "t": log["timestamp"],
            "o": log["order_id"],
        }
    )
    assert keys.equals(keys.sort_values(["c", "t", "o"], kind="stable").reset_index(drop=True))
    # -2.0 is the only negative amount and no purchase is worth 2.0, so amount 2.0 marks a
    # negative source row; synthesised order ids start with a digit, never with "C".
    expected_returns = log["order_id"].str.startswith("C").to_numpy(dtype=bool) | (
        log["amount"].to_numpy() == 2.0
    )
    assert np.array_equal(log["is_return"].to_numpy(), expected_returns)


# --- fast paths (typed columns, sorting, duplicate search) --------------------------------------


def test_is_return_column_can_be_mapped(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "log.csv",
        "cust,when,value,Returned\na,2024-01-01,5,no\na,2024-01-02,5,yes\nb,2024-01-03,2,0\n",
    )
    config = LogConfig(
        columns=parse_mapping(
            ["customer_id=cust", "timestamp=when", "amount=value", "is_return=Returned"]
        )
    )
    result = read_purchase_log(path, config)
    assert list(result.log["is_return"]) == [False, True, False]
    assert list(result.log["amount"]) == [5.0, 5.0, 2.0]
    assert result.report.n_returns == 1


def test_unsorted_typed_input_is_sorted_by_customer_time_order_id() -> None:
    # Typed (Parquet-like) columns, times out of order across and within customers, one
    # customer/instant tie with order ids out of order and one tie within one order.
    t = pd.to_datetime(
        ["2024-03-01 10:00", "2024-01-01 09:00", "2024-03-01 10:00", "2024-02-01 00:00",
         "2024-01-05 12:00", "2024-03-01 10:00"],
        utc=True,
    ).as_unit("us")  # fmt: skip
    df = pd.DataFrame(
        {
            "customer_id": pd.array(["b", "b", "b", "a", "a", "b"], dtype="str"),
            "timestamp": t,
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "order_id": pd.array(["o9", "o1", "o2", "o5", "o4", "o2"], dtype="str"),
        }
    )
    log = canonicalize(df).log
    assert list(log["customer_id"].astype(str)) == ["a", "a", "b", "b", "b", "b"]
    # a: Jan 5 (5.0), Feb 1 (4.0); b: Jan 1 (2.0), then the Mar 1 tie by order id:
    # o2 (3.0, then 6.0 in source order), o9 (1.0)
    assert list(log["amount"]) == [5.0, 4.0, 2.0, 3.0, 6.0, 1.0]
    assert list(log["order_id"]) == ["o4", "o5", "o1", "o2", "o2", "o9"]
    assert list(log["customer_id"].cat.categories) == ["a", "b"]


def test_stripped_customer_ids_merge_and_categories_are_sorted() -> None:
    df = frame(
        customer_id=[" b", "a ", "b", "\tc", "  "],
        timestamp=["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"],
        amount=[1, 2, 3, 4, 5],
    )
    result = canonicalize(df)
    assert list(result.log["customer_id"].cat.categories) == ["a", "b", "c"]
    assert list(result.log["customer_id"].astype(str)) == ["a", "b", "b", "c"]
    assert list(result.log["amount"]) == [2.0, 1.0, 3.0, 4.0]
    assert result.report.dropped == {"missing_customer_id": 1}


def test_float_customer_ids_with_holes_read_as_integers() -> None:
    df = frame(
        customer_id=[12.0, np.nan, 3.0],
        timestamp=["2024-01-01", "2024-01-02", "2024-01-03"],
        amount=[1, 2, 3],
    )
    result = canonicalize(df)
    assert list(result.log["customer_id"].astype(str)) == ["12", "3"]
    assert result.report.dropped == {"missing_customer_id": 1}


def test_duplicates_in_a_long_tie_run() -> None:
    # 40 lines of one order at one instant (amounts 1..40), then repeats of lines 3 and 39
    # and a line equal to line 7 except for its product id (same length): 2 duplicates.
    amounts = [float(a) for a in range(1, 41)] + [3.0, 39.0, 7.0]
    products = [f"p{a:02d}" for a in range(1, 41)] + ["p03", "p39", "pXX"]
    df = pd.DataFrame(
        {
            "customer_id": ["c"] * 43,
            "timestamp": ["2024-01-01 10:00"] * 43,
            "amount": amounts,
            "order_id": ["o1"] * 43,
            "product_id": products,
        }
    )
    result = canonicalize(df)
    assert result.report.n_exact_duplicates == 2
    assert result.report.dropped == {"exact_duplicate": 2}
    assert len(result.log) == 41
    assert list(result.log["product_id"][-1:]) == ["pXX"]
    kept = canonicalize(df, LogConfig(duplicates="keep"))
    assert len(kept.log) == 43
    assert kept.report.n_exact_duplicates == 2


def test_duplicates_treat_missing_numbers_and_signed_zero_as_equal() -> None:
    # DataFrame.duplicated semantics: NaN equals NaN and -0.0 equals 0.0.
    df = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b"],
            "timestamp": ["2024-01-01"] * 4,
            "amount": [0.0, -0.0, 1.0, 0.0],
            "quantity": [np.nan, np.nan, np.nan, np.nan],
        }
    )
    result = canonicalize(df)
    assert result.report.n_exact_duplicates == 1
    assert list(result.log["amount"]) == [0.0, 1.0, 0.0]
    assert list(result.log["customer_id"].astype(str)) == ["a", "a", "b"]


def test_same_customer_and_instant_with_other_values_is_not_a_duplicate() -> None:
    df = frame(
        customer_id=["a", "a", "a"],
        timestamp=["2024-01-01 10:00"] * 3,
        amount=[5, 5, 6],
        product_id=["p1", "p2", "p1"],
    )
    result = canonicalize(df)
    assert result.report.n_exact_duplicates == 0
    assert len(result.log) == 3


def test_typed_parquet_log_with_duplicates_and_drops(tmp_path: Path) -> None:
    # 3 rows with an empty id, 1 exact duplicate; times descending in the file.
    t = pd.date_range("2024-01-01", periods=8, freq="h", tz="UTC").as_unit("us")[::-1]
    df = pd.DataFrame(
        {
            "customer_id": ["x", "", "y", None, "x", "x", " ", "y"],
            "timestamp": t,
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 7.0, 8.0],
            "order_id": ["o1", "o2", "o3", "o4", "o5", "o5", "o7", "o8"],
        }
    )
    df.loc[5, "timestamp"] = df.loc[4, "timestamp"]  # row 6 repeats row 5 exactly
    path = tmp_path / "log.parquet"
    df.to_parquet(path, index=False)
    result = read_purchase_log(path)
    assert result.report.dropped == {"missing_customer_id": 3, "exact_duplicate": 1}
    assert list(result.log["customer_id"].astype(str)) == ["x", "x", "y", "y"]
    assert list(result.log["amount"]) == [5.0, 1.0, 8.0, 3.0]
    assert list(result.log["order_id"]) == ["o5", "o1", "o8", "o3"]


# --- request-sized typed frames (the HTTP service) -------------------------------------------
# The service sends already-typed columns (str ids, datetime64[us, UTC] times, float amounts);
# those skip conversion. The log must be the one the parsing path builds from the same values.


def _request_frame(*, as_text: bool = False) -> pd.DataFrame:
    """Rows as ``serving.http.score_request.history_log`` builds them (or the same values as text).

    Unsorted; c1 has a return and two lines of one order (same instant, other amounts);
    the last row repeats the first exactly; one category is missing, one is empty.
    """
    times = [
        "2024-03-01 10:00:00",
        "2024-02-01 09:30:00",
        "2024-01-15 12:00:00",
        "2024-02-01 09:30:00",
        "2024-03-01 10:00:00",
    ]
    amounts = [5.0, 7.5, -2.0, 3.25, 5.0]
    columns: dict[str, object] = {
        "customer_id": pd.array(["c2", "c1", "c1", "c1", "c2"], dtype="str"),
        "timestamp": times if as_text else pd.to_datetime(times, utc=True).as_unit("us"),
        "amount": [str(a) for a in amounts] if as_text else np.asarray(amounts),
        "category": pd.array(["books", None, "toys", "", "books"], dtype="str"),
        "channel": pd.array(["web", "store", "web", "store", "web"], dtype="str"),
    }
    return pd.DataFrame(columns)


def test_request_sized_typed_frame_gives_the_hand_computed_log() -> None:
    expected = make_log(
        [
            {"customer_id": "c1", "timestamp": "2024-01-15 12:00", "amount": 2.0,
             "order_id": "2024-01-15T12:00:00Z", "category": "toys", "channel": "web",
             "is_return": True},
            {"customer_id": "c1", "timestamp": "2024-02-01 09:30", "amount": 7.5,
             "order_id": "2024-02-01T09:30:00Z", "channel": "store"},
            {"customer_id": "c1", "timestamp": "2024-02-01 09:30", "amount": 3.25,
             "order_id": "2024-02-01T09:30:00Z", "channel": "store"},
            {"customer_id": "c2", "timestamp": "2024-03-01 10:00", "amount": 5.0,
             "order_id": "2024-03-01T10:00:00Z", "category": "books", "channel": "web"},
        ]
    )  # fmt: skip
    typed = _request_frame()
    assert str(typed["timestamp"].dtype) == TIMESTAMP_DTYPE  # the fast path is the one tested
    for df in (typed, _request_frame(as_text=True)):
        result = canonicalize(df)
        pd.testing.assert_frame_equal(result.log, expected)
        report = result.report
        assert (report.rows_read, report.rows_kept) == (5, 4)
        assert report.dropped == {"exact_duplicate": 1}
        assert (report.n_returns, report.n_customers, report.n_exact_duplicates) == (1, 2, 1)
        assert report.first_timestamp == utc("2024-01-15 12:00")
        assert report.last_timestamp == utc("2024-03-01 10:00")
        assert report.first_timestamp.unit == report.last_timestamp.unit == "us"
        assert len(report.warnings) == 1 and "1 exact duplicate" in report.warnings[0]


def test_request_sized_frame_with_any_index_and_unsorted_rows() -> None:
    typed = _request_frame()
    expected = canonicalize(typed).log
    shuffled = typed.iloc[[3, 0, 4, 2, 1]].set_index(pd.Index([30, 10, 50, 20, 40]))
    # Same rows, another order and index labels: only the two c1 lines of one order (same
    # instant and order id) keep their source order, which now puts 3.25 before 7.5.
    log = canonicalize(shuffled).log
    assert list(log["amount"]) == [2.0, 3.25, 7.5, 5.0]
    pd.testing.assert_frame_equal(
        log.iloc[[0, 2, 1, 3]].reset_index(drop=True), expected, check_index_type=True
    )


def test_missing_time_in_a_typed_utc_column_is_rejected_with_its_row() -> None:
    df = _request_frame()
    df.loc[3, "timestamp"] = pd.NaT
    assert str(df["timestamp"].dtype) == TIMESTAMP_DTYPE
    with pytest.raises(
        PurchaseLogError, match=r"'timestamp': 1 empty timestamp\(s\) at data rows 4"
    ):
        canonicalize(df)


def test_log_shares_no_state_with_its_input_or_other_logs() -> None:
    df = _request_frame()
    before = df.copy()
    first = canonicalize(df).log
    second = canonicalize(df).log
    first.loc[0, "amount"] = 99.0
    first.loc[0, "category"] = "changed"
    first.columns.name = "renamed"
    pd.testing.assert_frame_equal(df, before)
    assert second["amount"].iloc[0] == 2.0 and second["category"].iloc[0] == "toys"
    assert second.columns.name is None


def test_typed_cdnow_sample_loads_like_the_text_file(cdnow_sample_path: Path) -> None:
    """The CDNOW sample as typed columns (dates parsed, numbers as floats) gives the same log
    and report as the text file read by :func:`read_cdnow`."""
    text = read_cdnow(cdnow_sample_path)
    raw = pd.read_csv(
        cdnow_sample_path,
        sep=r"\s+",
        header=None,
        names=["customer_id", "sample_id", "date", "cds", "value"],
        dtype="str",
    )
    typed = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "sample_id": raw["sample_id"],
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d", utc=True).dt.as_unit("us"),
            "quantity": raw["cds"].astype("float64"),
            "amount": raw["value"].astype("float64"),
        }
    )
    result = canonicalize(typed, LogConfig(cancel_prefix=None, duplicates="keep"))
    pd.testing.assert_frame_equal(result.log, text.log)
    assert result.report.to_dict() == {**text.report.to_dict(), "source": None}
    assert result.report.n_exact_duplicates > 0  # the sample has repeated rows: kept, counted


def _messy(log: pd.DataFrame) -> pd.DataFrame:
    """Exact duplicates, more returns and missing order ids, rows shuffled."""
    rng = np.random.default_rng(5)
    out = log.copy()
    out.loc[rng.random(len(out)) < 0.1, "order_id"] = None
    returns = rng.random(len(out)) < 0.05
    out.loc[returns, "amount"] = -out.loc[returns, "amount"]
    out = pd.concat([out, out.sample(25, random_state=1)], ignore_index=True)
    return out.sample(frac=1, random_state=2).reset_index(drop=True)


@pytest.mark.parametrize("variant", ["as generated", "messy"])
def test_typed_synthetic_log_loads_like_its_csv(tmp_path: Path, variant: str) -> None:
    """A synthetic log with every optional column, typed as generated, gives the same log
    and report as the same rows written to CSV and parsed as text."""
    raw = generate_purchase_log(60, seed=7).log
    if variant == "messy":
        raw = _messy(raw)
    path = tmp_path / "log.csv"
    raw.to_csv(path, index=False)
    typed, text = canonicalize(raw), read_purchase_log(path)
    pd.testing.assert_frame_equal(typed.log, text.log)
    assert typed.report.to_dict() == {**text.report.to_dict(), "source": None}
    assert typed.report.n_returns > 0
    if variant == "messy":
        assert typed.report.dropped == {"exact_duplicate": 25}
        assert any("empty order id" in warning for warning in typed.report.warnings)


# --- bounds and messages of issue 14 ----------------------------------------------------------


@pytest.mark.parametrize("value", ["1e308", "-2e12", "1000000000000.01"])
def test_amount_beyond_the_bound_is_rejected_naming_the_row(value: str) -> None:
    """|amount| > 1e12 overflowed sums (1e308 wrote Infinity into KPI JSON)."""
    df = frame(
        customer_id=["a", "b", "c"], timestamp=["2024-01-01"] * 3, amount=["1", value, "1e12"]
    )
    with pytest.raises(PurchaseLogError) as caught:
        canonicalize(df)
    message = str(caught.value)
    assert "'amount'" in message and "beyond ±1e+12" in message
    assert f"rows 2 ('{value}')" in message
    assert "3 (" not in message  # exactly 1e12 is accepted


@pytest.mark.parametrize("stamp", ["2262-04-12", "2300-01-01", "1899-12-31"])
def test_timestamps_outside_the_supported_range_are_rejected(stamp: str) -> None:
    """From 2262 on pandas' nanoseconds overflow (kpis crashed); the bound is 1900..2200."""
    df = frame(customer_id=["a", "b"], timestamp=["2024-01-01", stamp], amount=["1", "2"])
    with pytest.raises(
        PurchaseLogError, match=rf"outside \[1900-01-01, 2200-01-01\).*2 \('{stamp}'\)"
    ):
        canonicalize(df)


def test_nan_cells_are_shown_as_nan() -> None:
    df = frame(customer_id=["a", "b"], timestamp=["2024-01-01"] * 2, amount=[1.0, float("nan")])
    with pytest.raises(PurchaseLogError, match=r"rows 2 \(NaN\)"):
        canonicalize(df)


def test_empty_and_non_utf8_files_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(PurchaseLogError, match=r"purchase log '.*empty\.csv' is empty"):
        read_purchase_log(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("customer_id,timestamp,amount,café\na,2024-01-01,1,x\n".encode("latin-1"))
    with pytest.raises(PurchaseLogError, match=r"'.*latin\.csv' is not UTF-8 text \(byte 0xe9"):
        read_purchase_log(latin)
    body = tmp_path / "body.csv"
    body.write_bytes("customer_id,timestamp,amount\na,2024-01-01,café\n".encode("latin-1"))
    with pytest.raises(PurchaseLogError, match=r"'.*body\.csv': column 'amount' is not UTF-8"):
        read_purchase_log(body)


def test_load_report_counts_rows_not_used() -> None:
    report = canonicalize(SIMPLE).report
    text = report.summary({"at or after 2024-01-02": 2})
    assert "  kept, not used (at or after 2024-01-02): 2" in text.splitlines()
