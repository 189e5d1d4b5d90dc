"""build_features on small hand-computed logs, plus the "future rows change nothing" property."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import builders
from features.builders import COUNT_COLUMNS, FeatureConfig, build_features
from features.catalog import FEATURE_COLUMNS
from features.log.schema import PurchaseLogError
from tests.features.conftest import make_log, random_log

AS_OF = "2024-07-01"  # a Monday; 2024 is a leap year (Feb has 29 days)


def _rows_a() -> list[dict]:
    """Customer a: four orders (one with two lines) on three days, a return, future rows."""
    return [
        # o1: Mon 2024-01-01 10:00, two lines, one discounted -> value 30, 3 units
        {"customer_id": "a", "timestamp": "2024-01-01 10:00", "order_id": "o1", "amount": 10.0,
         "quantity": 1.0, "category": "books", "channel": "web"},
        {"customer_id": "a", "timestamp": "2024-01-01 10:00", "order_id": "o1", "amount": 20.0,
         "quantity": 2.0, "category": "music", "channel": "web", "discount": True},
        # o2: same day 18:00 -> value 5
        {"customer_id": "a", "timestamp": "2024-01-01 18:00", "order_id": "o2", "amount": 5.0,
         "category": "books", "channel": "store"},
        # o3: Fri 2024-03-01 12:00, unknown category -> value 40
        {"customer_id": "a", "timestamp": "2024-03-01 12:00", "order_id": "o3", "amount": 40.0,
         "channel": "web"},
        # return of 15 on 2024-03-05
        {"customer_id": "a", "timestamp": "2024-03-05 09:00", "order_id": "C-o3", "amount": 15.0,
         "is_return": True},
        # o4: Fri 2024-06-21 00:00, exactly 10 days before as_of, discounted -> value 25
        {"customer_id": "a", "timestamp": "2024-06-21 00:00", "order_id": "o4", "amount": 25.0,
         "quantity": 2.0, "category": "electronics", "channel": "app", "discount": True},
        # exactly at as_of and after it: ignored
        {"customer_id": "a", "timestamp": "2024-07-01 00:00", "order_id": "o5", "amount": 1000.0,
         "category": "toys", "channel": "phone"},
        {"customer_id": "a", "timestamp": "2024-07-02 00:00", "order_id": "C-o4", "amount": 25.0,
         "is_return": True},
    ]  # fmt: skip


def _rows_b() -> list[dict]:
    """Customer b: a single purchase last summer, no category or channel."""
    return [{"customer_id": "b", "timestamp": "2023-08-01 12:00", "order_id": "b1", "amount": 12.5}]


def _rows_c() -> list[dict]:
    """Customer c: only returns, so not in the output."""
    return [
        {"customer_id": "c", "timestamp": "2024-02-01", "order_id": "Cx", "amount": 9.0,
         "is_return": True},
    ]  # fmt: skip


@pytest.fixture
def features() -> pd.DataFrame:
    return build_features(make_log(_rows_a() + _rows_b() + _rows_c()), AS_OF)


def test_output_shape_and_dtypes(features: pd.DataFrame) -> None:
    assert list(features.columns) == list(FEATURE_COLUMNS)
    assert features.index.name == "customer_id"
    assert features.index.dtype == "str"
    assert list(features.index) == ["a", "b"]  # c has only returns
    for name in FEATURE_COLUMNS:
        expected = np.int64 if name in COUNT_COLUMNS else np.float64
        assert features[name].dtype == expected, name


def test_every_column_for_a_multi_order_customer(features: pd.DataFrame) -> None:
    # orders: o1 Jan 1 10:00 (30), o2 Jan 1 18:00 (5), o3 Mar 1 12:00 (40), o4 Jun 21 00:00 (25)
    # days from Jan 1 to Jul 1 2024: 31+29+31+30+31+30 = 182; Jan 1 -> Mar 1: 31+29 = 60;
    # Mar 1 -> Jun 21: 31+30+31+20 = 112; Jun 21 -> Jul 1: 10
    tenure = 182 - 10 / 24  # first order Jan 1 10:00
    expected = {
        "recency_days": 10.0,
        "tenure_days": tenure,
        "active_span_days": tenure - 10.0,
        "n_orders": 4,
        "n_purchase_days": 3,  # Jan 1, Mar 1, Jun 21
        "n_repeat_days": 2,
        "n_items": 1 + 2 + 1 + 1 + 2,
        # money is net of returns: the 15 returned on Mar 5 ("C-o3" is no id of an order
        # once "C" is stripped, and no product is given) nets against the customer's latest
        # earlier purchase, o3 (40 -> 25)
        "monetary_total": 30 + 5 + 25 + 25,
        "monetary_mean": 85 / 4,
        "monetary_max": 30.0,
        "last_order_value": 25.0,
        "items_per_order": 7 / 4,
        "gap_mean_days": (60 + 112) / 2,  # 86
        "gap_std_days": 26.0,  # |60 - 86| = |112 - 86| = 26
        "gap_last_days": 112.0,
        "recency_gap_ratio": 10 / 86,
        "purchase_rate_30d": 3 / tenure * 30,
        # the history (182 days) does not reach last year's Jul-Sep window: no share
        "season_share": math.nan,
        # 2024-07-01 is day 19,905 since 1970-01-01; 19,905 mod 365.25 = 181.5 days into
        # the (epoch-aligned) year, just under half of 365.25: the angle is just under pi
        "calendar_sin": math.sin(2 * math.pi * 181.5 / 365.25),
        "calendar_cos": math.cos(2 * math.pi * 181.5 / 365.25),
        # windows end at as_of: 30d and 90d (from Apr 2) hold o4 only; 180d starts Jan 3
        # (after o1 and o2): o3 + o4; 365d holds everything
        "orders_30d": 1,
        "spend_30d": 25.0,
        "orders_90d": 1,
        "spend_90d": 25.0,
        "orders_180d": 2,
        "spend_180d": 50.0,
        "orders_365d": 4,
        "spend_365d": 85.0,
        # earlier half-year [2023-07-07, 2024-01-03) holds o1 + o2 = 35
        "spend_trend": math.log1p(50) - math.log1p(35),
        # [2023-07-02, 2023-09-30): nothing
        "orders_same_season_last_year": 0,
        "discount_share": 2 / 4,  # o1 (one of its lines) and o4
        "n_returns": 1,  # the return after as_of is ignored
        "return_rate": 15 / (85 + 15),
        "n_categories": 3,  # books, music, electronics; o3's missing category does not count
        "weekday_concentration": 2 / 4,  # Monday: o1, o2; Friday: o3, o4
        "n_channels": 3,  # web, store, app (phone is at as_of)
    }
    assert set(expected) == set(FEATURE_COLUMNS)
    row = features.loc["a"]
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(row[name]), name
        else:
            assert row[name] == pytest.approx(value, rel=1e-12), name


def test_every_column_for_a_single_purchase_customer(features: pd.DataFrame) -> None:
    # one order 2023-08-01 12:00; Aug 1 2023 -> Aug 1 2024 is 366 days, minus 31 (Jul) and 12 h
    recency = 366 - 31 - 0.5  # 334.5
    expected = {
        "recency_days": recency,
        "tenure_days": recency,
        "active_span_days": 0.0,
        "n_orders": 1,
        "n_purchase_days": 1,
        "n_repeat_days": 0,
        "n_items": 1.0,
        "monetary_total": 12.5,
        "monetary_mean": 12.5,
        "monetary_max": 12.5,
        "last_order_value": 12.5,
        "items_per_order": 1.0,
        "gap_mean_days": math.nan,
        "gap_std_days": math.nan,
        "gap_last_days": math.nan,
        "recency_gap_ratio": math.nan,
        "purchase_rate_30d": 1 / recency * 30,
        "season_share": 1.0,  # its only purchase day, Aug 1, lies in last year's Jul-Sep
        "calendar_sin": math.sin(2 * math.pi * 181.5 / 365.25),  # the same for everyone
        "calendar_cos": math.cos(2 * math.pi * 181.5 / 365.25),
        "orders_30d": 0,
        "spend_30d": 0.0,
        "orders_90d": 0,
        "spend_90d": 0.0,
        "orders_180d": 0,
        "spend_180d": 0.0,
        "orders_365d": 1,
        "spend_365d": 12.5,
        "spend_trend": math.log1p(0) - math.log1p(12.5),  # Aug 1 is in [2023-07-07, 2024-01-03)
        "orders_same_season_last_year": 1,  # in [2023-07-02, 2023-09-30)
        "discount_share": 0.0,
        "n_returns": 0,
        "return_rate": 0.0,
        "n_categories": 0,
        "weekday_concentration": 1.0,
        "n_channels": 0,
    }
    assert set(expected) == set(FEATURE_COLUMNS)
    row = features.loc["b"]
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(row[name]), name
        else:
            assert row[name] == pytest.approx(value, rel=1e-12), name


def test_orders_on_one_day_are_one_purchase_day() -> None:
    rows = [
        {"customer_id": "d", "timestamp": "2024-05-10 08:00", "order_id": "d1", "amount": 10.0},
        {"customer_id": "d", "timestamp": "2024-05-10 12:00", "order_id": "d2", "amount": 20.0},
        {"customer_id": "d", "timestamp": "2024-05-10 12:00", "order_id": "d2", "amount": 1.0},
        {"customer_id": "d", "timestamp": "2024-05-10 20:00", "order_id": "d3", "amount": 15.0},
    ]
    row = build_features(make_log(rows), AS_OF).loc["d"]
    assert row["n_orders"] == 3
    assert row["n_purchase_days"] == 1
    assert row["n_repeat_days"] == 0
    assert math.isnan(row["gap_mean_days"]) and math.isnan(row["gap_last_days"])
    assert math.isnan(row["recency_gap_ratio"])
    assert row["monetary_max"] == 21.0  # d2 = 20 + 1
    assert row["last_order_value"] == 15.0
    assert row["monetary_total"] == 46.0
    # May 10 20:00 -> Jul 1 00:00: 21 days of May + 30 of June + 4 h
    assert row["recency_days"] == pytest.approx(51 + 4 / 24)
    assert row["active_span_days"] == pytest.approx(12 / 24)


def test_order_lines_with_later_timestamps_stay_one_order() -> None:
    # lines of one order stamped a few minutes apart: one order, timed by its first line
    rows = [
        {"customer_id": "e", "timestamp": "2024-06-30 23:50", "order_id": "e1", "amount": 4.0},
        {"customer_id": "e", "timestamp": "2024-06-30 23:55", "order_id": "e1", "amount": 6.0},
    ]
    row = build_features(make_log(rows), AS_OF).loc["e"]
    assert row["n_orders"] == 1
    assert row["monetary_max"] == 10.0
    assert row["recency_days"] == pytest.approx(10 / (24 * 60))


def test_gap_std_with_three_gaps() -> None:
    # purchase days Jan 1, Jan 3, Jan 9, Jan 10 -> gaps 2, 6, 1; mean 3;
    # variance ((2-3)^2 + (6-3)^2 + (1-3)^2) / 3 = 14 / 3
    days = ["2024-01-01 23:00", "2024-01-03 01:00", "2024-01-09", "2024-01-10 12:00"]
    rows = [{"customer_id": "g", "timestamp": d, "amount": 1.0} for d in days]
    row = build_features(make_log(rows), AS_OF).loc["g"]
    assert row["gap_mean_days"] == 3.0
    assert row["gap_std_days"] == pytest.approx(math.sqrt(14 / 3))
    assert row["gap_last_days"] == 1.0
    # Jan 10 12:00 -> Jul 1: 182 - 9.5 days
    assert row["recency_gap_ratio"] == pytest.approx((182 - 9.5) / 3)


def test_window_includes_its_start_and_excludes_as_of() -> None:
    # as_of - 30 days = 2024-06-01 00:00 exactly: inside the 30-day window [as_of - 30 d, as_of)
    rows = [
        {"customer_id": "w", "timestamp": "2024-05-31 23:59:59.999999", "amount": 1.0},
        {"customer_id": "w", "timestamp": "2024-06-01 00:00", "amount": 2.0},
        {"customer_id": "w", "timestamp": "2024-07-01 00:00", "amount": 4.0},  # at as_of
    ]
    row = build_features(make_log(rows), AS_OF).loc["w"]
    assert row["orders_30d"] == 1
    assert row["spend_30d"] == 2.0
    assert row["orders_90d"] == 2
    assert row["spend_90d"] == 3.0
    assert row["n_orders"] == 2
    assert row["recency_days"] == 30.0


def test_purchase_exactly_at_as_of_is_excluded() -> None:
    rows = [{"customer_id": "x", "timestamp": "2024-07-01 00:00", "amount": 5.0}]
    assert build_features(make_log(rows), AS_OF).empty
    one_us_later = pd.Timestamp(AS_OF) + pd.Timedelta(microseconds=1)
    assert list(build_features(make_log(rows), one_us_later).index) == ["x"]


def test_same_season_uses_the_configured_horizon() -> None:
    # [as_of - 365 d, as_of - 365 d + horizon) = [2023-07-02, 2023-07-02 + h)
    rows = [
        {"customer_id": "s", "timestamp": "2023-07-02 00:00", "amount": 1.0},
        {"customer_id": "s", "timestamp": "2023-07-20 00:00", "amount": 1.0},
        {"customer_id": "s", "timestamp": "2023-09-29 23:00", "amount": 1.0},
    ]
    log = make_log(rows)
    assert build_features(log, AS_OF).loc["s", "orders_same_season_last_year"] == 3
    short = build_features(log, AS_OF, FeatureConfig(horizon_days=18))
    assert short.loc["s", "orders_same_season_last_year"] == 1  # Jul 20 is day 18: outside


def test_as_of_forms_agree() -> None:
    log = make_log(_rows_a() + _rows_b())
    naive = build_features(log, "2024-07-01")
    aware = build_features(log, datetime(2024, 7, 1, 2, tzinfo=timezone(timedelta(hours=2))))
    stamp = build_features(log, pd.Timestamp("2024-06-30 20:00", tz="America/New_York"))
    pd.testing.assert_frame_equal(naive, aware)
    pd.testing.assert_frame_equal(naive, stamp)


def test_empty_result_has_the_columns() -> None:
    out = build_features(make_log(_rows_a()), "2020-01-01")
    assert out.empty
    assert list(out.columns) == list(FEATURE_COLUMNS)
    assert out.index.name == "customer_id"
    assert out["n_orders"].dtype == np.int64
    assert out["recency_days"].dtype == np.float64


def test_empty_log_gives_an_empty_frame() -> None:
    out = build_features(make_log([]), AS_OF)
    assert out.empty
    assert list(out.columns) == list(FEATURE_COLUMNS)


def test_unsorted_log_is_rejected() -> None:
    log = make_log(_rows_a()).iloc[::-1].reset_index(drop=True)
    with pytest.raises(PurchaseLogError, match="sorted by customer_id, timestamp"):
        build_features(log, AS_OF)


def test_bad_input_is_named() -> None:
    log = make_log(_rows_a())
    with pytest.raises(PurchaseLogError, match="missing column"):
        build_features(log.drop(columns="channel"), AS_OF)
    with pytest.raises(PurchaseLogError, match="customer_id"):
        build_features(log.assign(customer_id=log["customer_id"].astype("str")), AS_OF)
    with pytest.raises(PurchaseLogError, match="amount"):
        build_features(log.assign(amount=-log["amount"]), AS_OF)
    with pytest.raises(PurchaseLogError, match="timestamp"):
        build_features(log.assign(timestamp=log["timestamp"].dt.tz_localize(None)), AS_OF)


def test_threaded_path_matches_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(_rows_a() + _rows_b() + _rows_c())
    inline = build_features(log, AS_OF)
    monkeypatch.setattr(builders, "_THREADED_MIN_ROWS", 0)
    pd.testing.assert_frame_equal(build_features(log, AS_OF), inline)


def test_categorical_string_columns_give_the_same_result(features: pd.DataFrame) -> None:
    log = make_log(_rows_a() + _rows_b() + _rows_c())
    as_categories = log.astype({c: "category" for c in ("order_id", "category", "channel")})
    pd.testing.assert_frame_equal(build_features(as_categories, AS_OF), features)


def test_order_id_reused_after_another_order_is_a_new_order() -> None:
    # documented rule: an order is a run of adjacent rows in canonical order; o1 comes back
    # after o2, so the customer has three orders (the loader keeps real orders adjacent)
    rows = [
        {"customer_id": "r", "timestamp": "2024-01-01", "order_id": "o1", "amount": 1.0},
        {"customer_id": "r", "timestamp": "2024-01-02", "order_id": "o2", "amount": 2.0},
        {"customer_id": "r", "timestamp": "2024-01-03", "order_id": "o1", "amount": 4.0},
    ]
    row = build_features(make_log(rows), AS_OF).loc["r"]
    assert row["n_orders"] == 3
    assert row["last_order_value"] == 4.0


def test_output_is_sorted_by_customer_id_whatever_the_category_order(
    features: pd.DataFrame,
) -> None:
    log = make_log(_rows_a() + _rows_b() + _rows_c())
    # categories in reverse order; rows re-sorted to follow the codes, as the check demands
    reordered = log.assign(customer_id=log["customer_id"].cat.reorder_categories(["c", "b", "a"]))
    codes = reordered["customer_id"].cat.codes
    reordered = (
        reordered.assign(_code=codes)
        .sort_values(["_code", "timestamp", "order_id"], kind="stable")
        .drop(columns="_code")
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(build_features(reordered, AS_OF), features)


# --- property: rows at or after as_of never change the output -------------------------------

_AS_OF = pd.Timestamp("2024-01-01", tz="UTC")
_SPAN_US = 800 * 86_400_000_000


def _row(customer: str, offset_us: int, order: str, amount: float, is_return: bool) -> dict:
    return {
        "customer_id": customer,
        "timestamp": _AS_OF + pd.Timedelta(microseconds=offset_us),
        "order_id": order,
        "amount": amount,
        "is_return": is_return,
        "category": ["books", "toys", None][int(amount) % 3],
        "channel": ["web", None][int(amount) % 2],
        "discount": int(amount) % 4 == 0,
    }


_past = st.builds(
    _row,
    st.sampled_from(["a", "b", "c"]),
    st.integers(-_SPAN_US, -1),
    st.sampled_from(["o1", "o2", "o3"]),
    st.floats(0, 100, allow_nan=False),
    st.booleans(),
)
_future = st.builds(
    _row,
    st.sampled_from(["a", "b", "c", "new1", "new2"]),
    st.integers(0, _SPAN_US),
    st.sampled_from(["o1", "o2", "o9"]),
    st.floats(0, 100, allow_nan=False),
    st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(past=st.lists(_past, max_size=25), future=st.lists(_future, min_size=1, max_size=10))
@pytest.mark.slow
def test_rows_at_or_after_as_of_change_nothing(past: list[dict], future: list[dict]) -> None:
    before = build_features(make_log(past), _AS_OF)
    after = build_features(make_log(past + future), _AS_OF)
    pd.testing.assert_frame_equal(before, after)


# --- an independent, slow reference (pandas per customer) on a random log -------------------


def _net_of_returns(rows: pd.DataFrame) -> pd.DataFrame:
    """Purchase lines minus their returns, one return at a time (features.log.returns' rules)."""
    out = rows.copy()
    amount = out["amount"].to_numpy(dtype=np.float64).copy()
    products = out["product_id"] if "product_id" in out else pd.Series(pd.NA, index=out.index)
    for r in np.flatnonzero(out["is_return"].to_numpy()):
        ret = out.iloc[r]
        earlier = [
            p
            for p in range(len(out))
            if not out["is_return"].iloc[p]
            and out["customer_id"].iloc[p] == ret["customer_id"]
            and out["timestamp"].iloc[p] <= ret["timestamp"]
        ]
        name = ret["order_id"][1:] if ret["order_id"].startswith("C") else ret["order_id"]
        in_order = [p for p in earlier if out["order_id"].iloc[p] == name]
        same = [
            p
            for p in earlier
            if pd.notna(products.iloc[r]) and products.iloc[p] == products.iloc[r]
        ]

        def latest(lines: list[int]) -> int:  # ties on time: the largest line
            return max(lines, key=lambda q: (out["timestamp"].iloc[q], out["amount"].iloc[q]))

        if in_order:
            target = max(
                [p for p in in_order if p in same] or in_order,
                key=lambda p: out["amount"].iloc[p],
            )
        elif same:
            target = latest(same)
        elif earlier:
            target = latest(earlier)
        else:
            continue
        amount[target] = max(amount[target] - ret["amount"], 0.0)
    out["amount"] = np.where(out["is_return"].to_numpy(), out["amount"].to_numpy(), amount)
    return out


def _reference(log: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int = 90) -> pd.DataFrame:
    """The catalog definitions written the obvious way, one customer at a time."""
    day = pd.Timedelta(days=1)
    rows = _net_of_returns(log.loc[log["timestamp"] < as_of])
    records = {}
    for customer, group in rows.groupby("customer_id", observed=True):
        bought, returned = group.loc[~group["is_return"]], group.loc[group["is_return"]]
        if bought.empty:
            continue
        orders = (
            bought.groupby("order_id")
            .agg(t=("timestamp", "min"), value=("amount", "sum"), disc=("discount", "any"))
            .sort_values("t")
        )
        days = np.array(sorted({t.normalize() for t in orders["t"]}))
        gaps = np.array([(b - a) / day for a, b in itertools.pairwise(days)])
        tenure = (as_of - orders["t"].min()) / day
        recency = (as_of - orders["t"].max()) / day
        total = orders["value"].sum()

        def spend(lo_days: float, hi_days: float, orders: pd.DataFrame = orders) -> pd.Series:
            inside = (orders["t"] >= as_of - lo_days * day) & (orders["t"] < as_of - hi_days * day)
            return orders.loc[inside, "value"]

        rec = {
            "recency_days": recency,
            "tenure_days": tenure,
            "active_span_days": (orders["t"].max() - orders["t"].min()) / day,
            "n_orders": len(orders),
            "n_purchase_days": len(days),
            "n_repeat_days": len(days) - 1,
            "n_items": bought["quantity"].sum(),
            "monetary_total": total,
            "monetary_mean": orders["value"].mean(),
            "monetary_max": orders["value"].max(),
            "last_order_value": orders["value"].iloc[-1],
            "items_per_order": bought["quantity"].sum() / len(orders),
            "gap_mean_days": gaps.mean() if len(gaps) else np.nan,
            "gap_std_days": gaps.std() if len(gaps) >= 2 else np.nan,
            "gap_last_days": gaps[-1] if len(gaps) else np.nan,
            "recency_gap_ratio": recency / gaps.mean() if len(gaps) else np.nan,
            "purchase_rate_30d": len(days) / max(tenure, 1.0) * 30,
        }
        for w in (30, 90, 180, 365):
            rec[f"orders_{w}d"] = len(spend(w, 0))
            rec[f"spend_{w}d"] = spend(w, 0).sum()
        rec["spend_trend"] = np.log1p(spend(180, 0).sum()) - np.log1p(spend(360, 180).sum())
        rec["orders_same_season_last_year"] = len(spend(365, 365 - horizon_days))
        # a purchase day is in season when some earlier year's copy of the horizon holds it
        in_season = [
            any(
                as_of - k * 365.25 * day <= d < as_of - k * 365.25 * day + horizon_days * day
                for k in range(1, 200)
            )
            for d in days
        ]
        reaches = tenure > 365.25 - horizon_days
        rec["season_share"] = float(np.mean(in_season)) if reaches else np.nan
        angle = 2 * np.pi * (((as_of - pd.Timestamp(0, tz="UTC")) / day) % 365.25) / 365.25
        rec["calendar_sin"], rec["calendar_cos"] = np.sin(angle), np.cos(angle)
        rec["discount_share"] = orders["disc"].mean()
        rec["n_returns"] = len(returned)
        ret_value = returned["amount"].sum()
        rec["return_rate"] = ret_value / (total + ret_value) if ret_value > 0 else 0.0
        rec["n_categories"] = bought["category"].nunique()
        rec["weekday_concentration"] = orders["t"].dt.day_of_week.value_counts().max() / len(orders)
        rec["n_channels"] = bought["channel"].nunique()
        records[str(customer)] = rec
    out = pd.DataFrame.from_dict(records, orient="index")[list(FEATURE_COLUMNS)]
    out.index = pd.Index(out.index, dtype="str", name="customer_id")
    return out.astype({c: np.int64 for c in COUNT_COLUMNS})


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.slow
def test_matches_a_slow_reference_on_a_random_log(seed: int) -> None:
    as_of = pd.Timestamp("2024-03-01", tz="UTC")
    log = random_log(seed, start=as_of - pd.Timedelta(days=600), n_customers=25, n_rows=500)
    expected = _reference(log, as_of)
    assert len(expected) > 15
    pd.testing.assert_frame_equal(build_features(log, as_of), expected, rtol=1e-9)


def test_text_columns_split_into_arrow_chunks_give_the_same_features() -> None:
    """Parquet readers hand back string columns in many Arrow chunks; codes must not clash."""
    import pyarrow as pa

    log = random_log(seed=11, start=datetime(2023, 1, 1, tzinfo=UTC))
    chunked = log.copy()
    for column in ("category", "channel"):
        values = pa.array(log[column].astype("str").array)
        half = len(values) // 2
        parts = pa.chunked_array([values.slice(0, half), values.slice(half)])
        chunked[column] = pd.Series(pd.arrays.ArrowStringArray(parts), index=log.index)
    as_of = datetime(2023, 9, 1, tzinfo=UTC)
    pd.testing.assert_frame_equal(build_features(chunked, as_of), build_features(log, as_of))


def test_season_share_counts_earlier_years_copies_of_the_horizon() -> None:
    # as_of 2024-07-01, H = 90: the coming window is Jul 1 - Sep 28; earlier years' copies
    # hold 2022-07-10 (722 days back, phase 8.5) and 2023-08-20 (316 back, phase 49.25);
    # 2023-01-15 (phase 197.5) and 2024-05-01 (phase 304.25) lie outside
    days = ["2022-07-10", "2023-01-15", "2023-08-20", "2024-05-01"]
    rows = [
        {"customer_id": "s", "timestamp": f"{d} 00:00", "order_id": f"s{i}", "amount": 10.0}
        for i, d in enumerate(days)
    ]
    out = build_features(make_log(rows), AS_OF)
    assert out.loc["s", "season_share"] == pytest.approx(2 / 4)
    shorter = build_features(make_log(rows), AS_OF, FeatureConfig(horizon_days=30))
    assert shorter.loc["s", "season_share"] == pytest.approx(1 / 4)  # Jul 1 - 30: only 2022-07-10


def test_feature_block_matrix_frame_and_rows_agree() -> None:
    """A built block keeps its columns apart until the matrix is asked for: the frame made
    from those columns, the matrix, and a block rebuilt from the matrix all agree."""
    log = random_log(seed=5, start=datetime(2023, 1, 1, tzinfo=UTC), n_customers=40)
    as_of = datetime(2024, 6, 1, tzinfo=UTC)
    block = builders.build_feature_block(log, as_of)
    frame = block.to_frame()  # from the columns
    values = block.values  # the matrix, built now
    assert values.shape == (len(frame), len(FEATURE_COLUMNS)) and len(block) == len(frame)
    assert list(block.customer_id) == frame.index.tolist()
    for j, name in enumerate(FEATURE_COLUMNS):
        column = frame[name].to_numpy(dtype=np.float64)
        assert column.tobytes() == values[:, j].tobytes(), name
        assert np.array_equal(block.column(name), column, equal_nan=True), name
    rebuilt = builders.FeatureBlock(block.customer_id, values)
    pd.testing.assert_frame_equal(rebuilt.to_frame(), frame)
    rows = np.array([3, 0, 7])
    picked = block.take(rows)
    assert list(picked.customer_id) == frame.index[rows].tolist()
    assert picked.values.tobytes() == values[rows].tobytes()
    with pytest.raises(ValueError, match="one column of each"):
        builders.FeatureBlock(block.customer_id, None, columns={})
