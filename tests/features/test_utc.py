"""The one naive-to-UTC conversion (``features.utc``) every package uses for points in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from features.errors import InputError
from features.synthetic.synth import generate_purchase_log
from features.utc import as_utc, day_after_last_row, to_utc_timestamp


def test_naive_input_is_taken_as_utc() -> None:
    expected = pd.Timestamp("2024-03-01 12:30", tz="UTC")
    for value in ("2024-03-01 12:30", datetime(2024, 3, 1, 12, 30), pd.Timestamp(expected)):
        ts = to_utc_timestamp(value)
        assert ts == expected
        assert str(ts.tz) == "UTC"
    assert to_utc_timestamp("2024-03-01") == pd.Timestamp("2024-03-01", tz="UTC")


def test_zoned_input_is_converted_to_the_same_instant() -> None:
    berlin = pd.Timestamp("2024-03-01 12:30", tz="Europe/Berlin")
    assert to_utc_timestamp(berlin) == pd.Timestamp("2024-03-01 11:30", tz="UTC")
    assert str(to_utc_timestamp(berlin).tz) == "UTC"
    minus_five = datetime(2024, 3, 1, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert to_utc_timestamp(minus_five) == pd.Timestamp("2024-03-02 03:00", tz="UTC")
    assert to_utc_timestamp("2024-03-01T12:30:00+01:00") == pd.Timestamp(
        "2024-03-01 11:30", tz="UTC"
    )


def test_a_utc_timestamp_comes_back_unchanged() -> None:
    ts = pd.Timestamp("2024-03-01 12:30:00.123456", tz=UTC)
    assert to_utc_timestamp(ts) is ts


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not a date", "is not a point in time"),
        (None, "is not a point in time"),
        ("3000-01-01", "is outside the supported range [1900-01-01, 2200-01-01) UTC"),
        ("1899-12-31", "is outside the supported range"),
    ],
)
def test_bad_input_names_the_option_and_the_value(value: object, problem: str) -> None:
    with pytest.raises(InputError) as caught:
        to_utc_timestamp(value, "--as-of")  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"--as-of {value!r} ")
    assert problem in message


def test_synthetic_log_reads_naive_and_zoned_days_alike() -> None:
    """``generate_purchase_log`` (once a copy of the rule) takes its days through it."""
    zoned_days = generate_purchase_log(
        20, seed=2, start="2023-01-01T05:00+05:00", end=datetime(2023, 3, 31, 23, 0)
    )
    plain_days = generate_purchase_log(20, seed=2, start="2023-01-01", end="2023-03-31")
    pd.testing.assert_frame_equal(zoned_days.log, plain_days.log)
    with pytest.raises(InputError, match=r"^end '3000-01-01' is outside"):
        generate_purchase_log(20, seed=2, start="2023-01-01", end="3000-01-01")


def test_as_utc_takes_naive_as_utc_and_converts_zoned() -> None:
    naive = pd.DatetimeIndex(["2024-03-01 23:30"])
    zoned = pd.DatetimeIndex(["2024-03-02 00:30"]).tz_localize("Europe/Berlin")
    assert as_utc(naive)[0] == pd.Timestamp("2024-03-01 23:30", tz="UTC")
    assert as_utc(zoned)[0] == pd.Timestamp("2024-03-01 23:30", tz="UTC")
    assert as_utc(pd.Timestamp("2024-03-01 23:30")) == as_utc(zoned[0])


def test_day_after_last_row_is_the_utc_midnight_after_it() -> None:
    log = pd.DataFrame(
        {"timestamp": pd.to_datetime(["2024-01-05 10:00:00", "2024-03-01 23:59:59"], utc=True)}
    )
    assert day_after_last_row(log) == pd.Timestamp("2024-03-02", tz="UTC")
    with pytest.raises(InputError, match="the purchase log has no rows"):
        day_after_last_row(log.iloc[:0])
