"""``canonical_log_arrays`` is ``canonicalize`` without the DataFrame: same rows, same features.

Every case builds one set of typed columns twice: as the source frame the HTTP service used
to hand to :func:`features.log.purchase_log.canonicalize` (``str`` text, ``datetime64[us, UTC]``
times, float64 numbers, bool discount) and as the arguments of
:func:`features.log.log_arrays.canonical_log_arrays`; :func:`assert_same_log` then checks the
two logs row by row and the features built from each.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.builders import build_feature_block
from features.log.log_arrays import LogArrays, canonical_log_arrays
from features.log.purchase_log import canonicalize
from features.log.schema import TIMESTAMP_DTYPE, LogConfig, PurchaseLogError

US = 1_000_000
DAY = 86_400 * US
T0 = int(pd.Timestamp("2024-03-10T12:00:00", tz="UTC").value // 1000)  # UTC microseconds
ALL_PAIRS_MAX_ROWS = 60
TEXT_COLUMNS = ("order_id", "product_id", "category", "channel")


@dataclass(frozen=True)
class Both:
    """The two canonical logs of one input."""

    arrays: LogArrays
    log: pd.DataFrame


def source_frame(
    customer_id: Sequence[str],
    timestamp_us: Sequence[int],
    amount: Sequence[float],
    optional: dict[str, Any],
) -> pd.DataFrame:
    """The frame the service built for ``canonicalize`` (``history_frame``'s dtypes)."""
    micros = np.asarray(timestamp_us, dtype=np.int64).view("datetime64[us]")
    frame: dict[str, Any] = {
        "customer_id": pd.array(list(customer_id), dtype="str"),
        "timestamp": pd.DatetimeIndex(micros).tz_localize("UTC"),
        "amount": np.asarray(amount, dtype=np.float64),
    }
    for name, values in optional.items():
        if values is None:
            continue
        if name == "quantity":
            frame[name] = np.asarray(values, dtype=np.float64)
        elif name == "discount":
            frame[name] = np.asarray(values, dtype=bool)
        else:
            frame[name] = pd.array(list(values), dtype="str")
    df = pd.DataFrame(frame)
    assert str(df["timestamp"].dtype) == TIMESTAMP_DTYPE
    return df


def both_logs(
    customer_id: Sequence[str],
    timestamp_us: Sequence[int],
    amount: Sequence[float],
    *,
    quantity: Sequence[float] | None = None,
    discount: Sequence[bool] | None = None,
    order_id: Sequence[str | None] | None = None,
    product_id: Sequence[str | None] | None = None,
    category: Sequence[str | None] | None = None,
    channel: Sequence[str | None] | None = None,
    config: LogConfig | None = None,
) -> Both:
    """Both canonical logs of the columns (a column given as None is absent)."""
    optional: dict[str, Any] = {
        "quantity": quantity,
        "discount": discount,
        "order_id": order_id,
        "product_id": product_id,
        "category": category,
        "channel": channel,
    }
    frame = source_frame(customer_id, timestamp_us, amount, optional)
    log = canonicalize(frame, config).log
    arrays = canonical_log_arrays(
        list(customer_id),
        np.asarray(timestamp_us, dtype=np.int64),
        np.asarray(amount, dtype=np.float64),
        quantity=None if quantity is None else np.asarray(quantity, dtype=np.float64),
        discount=None if discount is None else np.asarray(discount, dtype=bool),
        order_id=None if order_id is None else list(order_id),
        product_id=None if product_id is None else list(product_id),
        category=None if category is None else list(category),
        channel=None if channel is None else list(channel),
        config=config,
    )
    return Both(arrays, log)


def assert_partition(codes: np.ndarray, values: list[object], what: str) -> None:
    """``codes`` equal exactly where ``values`` are: adjacent rows, and all pairs if few."""
    assert len(codes) == len(values), what
    for i in range(len(values) - 1):
        assert (codes[i] == codes[i + 1]) == (values[i] == values[i + 1]), (what, i, values)
    if len(values) <= ALL_PAIRS_MAX_ROWS:
        for i, j in itertools.combinations(range(len(values)), 2):
            assert (codes[i] == codes[j]) == (values[i] == values[j]), (what, i, j, values)


def assert_text_codes(codes: np.ndarray, n_codes: int, column: pd.Series, what: str) -> None:
    """-1 exactly where the log's value is missing; otherwise codes partition the values."""
    missing = column.isna().to_numpy()
    assert np.array_equal(codes < 0, missing), (what, codes, column.tolist())
    assert np.all(codes >= -1), what
    assert np.all(codes < n_codes), (what, codes, n_codes)
    present = ~missing
    values = column.to_numpy(dtype=object)[present].tolist()
    assert_partition(codes[present], values, what)


def as_of_points(timestamp_us: np.ndarray) -> list[pd.Timestamp]:
    """Cutoffs before, inside (at a row's instant and between rows) and after the rows."""
    if len(timestamp_us) == 0:
        points = [T0]
    else:
        lo, hi = int(timestamp_us.min()), int(timestamp_us.max())
        middle = int(np.sort(timestamp_us)[len(timestamp_us) // 2])
        points = [lo - DAY, middle, (lo + hi) // 2 + 1, hi + 1, hi + 400 * DAY]
    return [pd.Timestamp(p * 1000, tz="UTC") for p in points]


def assert_same_log(both: Both) -> None:
    """The arrays are the log, row by row, and give the same features at several cutoffs."""
    arrays, log = both.arrays, both.log
    n = len(log)
    assert len(arrays) == n
    for name in ("customer_codes", "timestamp_us", "amount", "quantity", "discount"):
        assert len(getattr(arrays, name)) == n, name
    customers = log["customer_id"].cat.categories.tolist()
    assert arrays.customers.tolist() == customers
    assert (
        arrays.customers[arrays.customer_codes].tolist()
        == log["customer_id"].astype("str").tolist()
    )
    log_us = log["timestamp"].to_numpy(dtype="datetime64[us]").view(np.int64)
    assert arrays.timestamp_us.tolist() == log_us.tolist()
    for name in ("amount", "quantity"):
        got, want = getattr(arrays, name), log[name].to_numpy(dtype=np.float64)
        assert got.dtype == np.float64, name
        # bit for bit: -0.0 and 0.0 differ here
        assert got.view(np.uint64).tolist() == want.view(np.uint64).tolist(), (name, got, want)
    for name in ("discount", "is_return"):
        got, want = getattr(arrays, name), log[name].to_numpy(dtype=bool)
        assert got.dtype == bool, name
        assert got.tolist() == want.tolist(), (name, got, want)
    assert_partition(arrays.order_codes, log["order_id"].to_numpy(dtype=object).tolist(), "order")
    assert_text_codes(arrays.category_codes, arrays.n_categories, log["category"], "category")
    assert_text_codes(arrays.channel_codes, arrays.n_channels, log["channel"], "channel")

    for as_of in as_of_points(arrays.timestamp_us):
        from_arrays = build_feature_block(arrays, as_of)
        from_log = build_feature_block(log, as_of)
        assert from_arrays.names == from_log.names
        assert list(from_arrays.customer_id) == list(from_log.customer_id), as_of
        assert from_arrays.values.shape == from_log.values.shape, as_of
        assert np.array_equal(from_arrays.values, from_log.values, equal_nan=True), (
            as_of,
            from_arrays.values,
            from_log.values,
        )


def check(*args: Any, **kwargs: Any) -> Both:
    """Both logs of the input, asserted equal; returned for case-specific checks."""
    both = both_logs(*args, **kwargs)
    assert_same_log(both)
    return both


def ids_of(both: Both) -> list[str]:
    return both.arrays.customers[both.arrays.customer_codes].tolist()


# --- hand-built cases ---------------------------------------------------------------------


def test_unsorted_rows_are_sorted_by_customer_then_time() -> None:
    # b's rows come first and a's are in reverse time: the log is a, a, a, b, b by time.
    both = check(
        ["b", "a", "b", "a", "a"],
        [T0 + 5 * DAY, T0 + 2 * DAY, T0, T0 + DAY, T0],
        [1.0, 2.0, 3.0, 4.0, 5.0],
    )
    assert ids_of(both) == ["a", "a", "a", "b", "b"]
    assert both.arrays.amount.tolist() == [5.0, 4.0, 2.0, 3.0, 1.0]
    assert both.arrays.timestamp_us.tolist() == [T0, T0 + DAY, T0 + 2 * DAY, T0, T0 + 5 * DAY]


def test_exact_duplicates_are_dropped_first_kept() -> None:
    # Rows 0 and 2 are equal in every column (row 2 dropped); so are 1, 3 and 4 (3, 4
    # dropped). Row 1 has product "p2": it is not a duplicate of row 0.
    both = check(
        ["a", "a", "a", "a", "a"],
        [T0, T0, T0, T0, T0],
        [5.0, 5.0, 5.0, 5.0, 5.0],
        product_id=["p1", "p2", "p1", "p2", "p2"],
        category=["x", "y", "x", "y", "y"],
    )
    assert len(both.log) == 2
    assert both.log["category"].tolist() == ["x", "y"]


def test_near_duplicates_are_kept() -> None:
    # Each row differs from row 0 in exactly one column (product, category None vs "",
    # quantity, discount, raw customer id " a"): none is an exact duplicate, all six stay,
    # though " a" and "a" are one customer after the strip and None/"" are both missing.
    both = check(
        ["a", "a", "a", "a", "a", " a"],
        [T0] * 6,
        [5.0] * 6,
        quantity=[1.0, 1.0, 1.0, 2.0, 1.0, 1.0],
        discount=[False, False, False, False, True, False],
        product_id=["p", "q", "p", "p", "p", "p"],
        category=[None, None, "", None, None, None],
    )
    assert len(both.log) == 6
    assert ids_of(both) == ["a"] * 6
    assert both.arrays.category_codes.tolist() == [-1] * 6


def test_rows_differing_only_in_amount_are_not_duplicates() -> None:
    # One customer, one instant, no other columns: rows 0 and 2 are duplicates (2 dropped),
    # so are 1 and 3 (3 dropped); rows 0 and 1 differ in amount and both stay.
    both = check(["a"] * 4, [T0] * 4, [1.0, 2.0, 1.0, 2.0])
    assert both.arrays.amount.tolist() == [1.0, 2.0]


def test_negative_zero_amount_is_a_duplicate_of_zero() -> None:
    # -0.0 == 0.0 in the duplicate check (as DataFrame.duplicated compares): one row stays,
    # not a return, amount +0.0.
    both = check(["a", "a"], [T0, T0], [0.0, -0.0])
    assert len(both.log) == 1
    assert both.arrays.is_return.tolist() == [False]


def test_whitespace_around_customer_ids_is_one_customer() -> None:
    # " a", "a " and "a" strip to "a"; "\tb\n" to "b": two customers, rows kept in time order.
    both = check(
        [" a", "a ", "a", "\tb\n"],
        [T0 + 2 * DAY, T0, T0 + DAY, T0],
        [1.0, 2.0, 3.0, 4.0],
    )
    assert both.arrays.customers.tolist() == ["a", "b"]
    assert ids_of(both) == ["a", "a", "a", "b"]
    assert both.arrays.amount.tolist() == [2.0, 3.0, 1.0, 4.0]


def test_blank_customer_id_rows_are_dropped() -> None:
    # "" and "  " are blank: only c's row remains.
    both = check(["", "c", "  "], [T0, T0, T0], [1.0, 2.0, 3.0])
    assert ids_of(both) == ["c"]
    assert both.arrays.amount.tolist() == [2.0]


def test_only_blank_customer_ids_give_an_empty_log() -> None:
    both = check([" ", ""], [T0, T0 + 1], [1.0, 2.0])
    assert len(both.log) == 0


def test_returns_by_amount_quantity_and_cancel_prefix() -> None:
    # Returns: negative amount (row 1), negative quantity (row 2), id "C12" (row 3) and
    # " C13" (row 4, "C13" after the strip). Not returns: "c14" (case matters), "XC15".
    both = check(
        ["a"] * 6,
        [T0 + k * US for k in range(6)],
        [10.0, -10.0, 10.0, 10.0, 10.0, 10.0],
        quantity=[1.0, 1.0, -2.0, 1.0, 1.0, 1.0],
        order_id=["o1", "o2", "o3", "C12", " C13", "c14"],
    )
    assert both.arrays.is_return.tolist() == [False, True, True, True, True, False]
    assert both.arrays.amount.tolist() == [10.0] * 6
    assert both.arrays.quantity.tolist() == [1.0, 1.0, 2.0, 1.0, 1.0, 1.0]
    check(["a", "a"], [T0, T0 + US], [1.0, 2.0], order_id=["XC15", None])


def test_cancel_prefix_none_and_duplicates_keep() -> None:
    # Without a prefix "C12" is an ordinary order; with duplicates="keep" both copies stay.
    cols = (["a", "a", "a"], [T0, T0, T0 + DAY], [3.0, 3.0, 4.0])
    ids = ["C12", "C12", "o2"]
    keep = check(*cols, order_id=ids, config=LogConfig(duplicates="keep"))
    assert len(keep.log) == 3
    assert keep.arrays.is_return.tolist() == [True, True, False]
    no_prefix = check(*cols, order_id=ids, config=LogConfig(cancel_prefix=None))
    assert len(no_prefix.log) == 2
    assert no_prefix.arrays.is_return.tolist() == [False, False]
    both = check(*cols, order_id=ids, config=LogConfig(cancel_prefix=None, duplicates="keep"))
    assert both.arrays.is_return.tolist() == [False, False, False]


def test_some_order_ids_missing_whole_seconds() -> None:
    # Missing ids (None, "", "  ") become the row's instant in whole seconds; the given id
    # "2024-03-10T12:00:00Z" then equals the synthetic id of the rows at T0: one order.
    both = check(
        ["a", "a", "a", "a", "a"],
        [T0, T0, T0 + DAY, T0 + DAY, T0],
        [1.0, 2.0, 3.0, 4.0, 5.0],
        order_id=[None, "2024-03-10T12:00:00Z", "", "o9", "  "],
    )
    assert len(set(both.arrays.order_codes[:3].tolist())) == 1
    assert both.log["order_id"].tolist()[:3] == ["2024-03-10T12:00:00Z"] * 3


def test_some_order_ids_missing_with_microsecond_fractions() -> None:
    # One missing row has a fraction: every synthetic id has six decimals, so the given
    # "2024-03-10T12:00:00Z" no longer equals the synthetic id of the row at T0.
    both = check(
        ["a", "a", "a", "b"],
        [T0, T0, T0 + 250_000, T0 + 1],
        [1.0, 2.0, 3.0, 4.0],
        order_id=[None, "2024-03-10T12:00:00Z", None, "o1"],
    )
    order = both.log["order_id"].tolist()
    assert "2024-03-10T12:00:00.000000Z" in order
    assert "2024-03-10T12:00:00.250000Z" in order
    assert len(set(both.arrays.order_codes[:2].tolist())) == 2
    # fractions on rows with given ids only: synthetic ids stay in whole seconds
    check(["a", "a"], [T0 + 7, T0 + DAY], [1.0, 2.0], order_id=["o1", None])


def test_no_order_ids_rows_at_one_instant_are_one_order() -> None:
    # Without an order_id column, a customer's rows at one instant are one order.
    both = check(["a", "a", "a", "b"], [T0, T0 + 1, T0, T0], [1.0, 2.0, 3.0, 4.0])
    codes = both.arrays.order_codes.tolist()
    assert codes[0] == codes[1] != codes[2]
    assert both.arrays.amount.tolist() == [1.0, 3.0, 2.0, 4.0]


def test_ties_at_one_instant_ordered_by_order_id_then_source_order() -> None:
    # Five rows of a at T0: ids ordered as text ("o10" < "o2" < "o3"); the two "o2" rows
    # (amounts 2 then 4) keep their source order; a missing id ("2024-...Z") sorts first.
    both = check(
        ["a"] * 5,
        [T0] * 5,
        [3.0, 2.0, 10.0, 4.0, 7.0],
        order_id=["o3", "o2", "o10", "o2", None],
    )
    assert both.arrays.amount.tolist() == [7.0, 10.0, 2.0, 4.0, 3.0]
    assert both.log["order_id"].tolist() == ["2024-03-10T12:00:00Z", "o10", "o2", "o2", "o3"]


def test_full_ties_without_order_ids_keep_source_order() -> None:
    both = check(["a"] * 4, [T0] * 4, [4.0, 1.0, 3.0, 2.0], product_id=["w", "x", "y", "z"])
    assert both.arrays.amount.tolist() == [4.0, 1.0, 3.0, 2.0]


def test_categories_and_channels_blank_is_missing_space_is_a_value() -> None:
    # "" is missing; " " and "x " are values of their own (text columns are not stripped).
    both = check(
        ["a"] * 5,
        [T0 + k * DAY for k in range(5)],
        [1.0] * 5,
        category=["x", "", None, " ", "x "],
        channel=[None, "web", "web", "", "app"],
    )
    assert (both.arrays.category_codes < 0).tolist() == [False, True, True, False, False]
    assert (both.arrays.channel_codes < 0).tolist() == [True, False, False, True, False]


def test_customer_ids_sort_by_code_point() -> None:
    both = check(["é", "b", "B", "a", " z"], [T0] * 5, [1.0] * 5)
    assert both.arrays.customers.tolist() == ["B", "a", "b", "z", "é"]


def test_nan_quantity_is_one() -> None:
    # NaN means "not given": quantity 1; equal NaNs make rows duplicates.
    both = check(["a", "a", "a"], [T0] * 3, [1.0] * 3, quantity=[np.nan, np.nan, 1.0])
    assert both.arrays.quantity.tolist() == [1.0, 1.0]


def test_empty_input() -> None:
    both = check([], [], [])
    assert len(both.log) == 0
    assert both.arrays.customers.tolist() == []
    check([], [], [], quantity=[], discount=[], order_id=[], category=[], channel=[])


@pytest.mark.parametrize(
    ("column", "amount", "quantity"),
    [
        ("amount", [1.0, np.nan], None),
        ("amount", [np.inf, 1.0], None),
        ("amount", [1.0, -np.inf], [1.0, 1.0]),
        ("quantity", [1.0, 2.0], [1.0, np.inf]),
        ("quantity", [1.0, 2.0], [-np.inf, np.nan]),
    ],
)
def test_non_finite_numbers_are_rejected_naming_the_column(
    column: str, amount: list[float], quantity: list[float] | None
) -> None:
    cols = (["a", "b"], [T0, T0], amount)
    frame = source_frame(*cols, {"quantity": quantity})
    with pytest.raises(PurchaseLogError, match=column):
        canonicalize(frame)
    q = None if quantity is None else np.asarray(quantity)
    with pytest.raises(PurchaseLogError, match=f"'{column}'"):
        canonical_log_arrays(cols[0], np.asarray(cols[1]), np.asarray(amount), quantity=q)


# --- seeded fuzz --------------------------------------------------------------------------

CUSTOMERS = ["a", " a", "a ", "b", "B", "c\t", "é", "", " "]
TIMES = [
    T0,
    T0 + US,
    T0 + 250_000,  # a fraction
    T0 + DAY,
    T0 + DAY + 1,  # a fraction
    T0 - DAY,
    T0 - 30 * DAY,
    T0 - 400 * DAY,
    T0 - 12 * 3600 * US,  # midnight UTC
    T0 - 12 * 3600 * US - 1,  # just before
]
WHOLE_TIMES = [t for t in TIMES if t % US == 0]
AMOUNTS = [10.0, 10.0, 2.5, 0.0, -0.0, -10.0, -3.25, 123.45]
QUANTITIES = [1.0, 1.0, 2.0, 3.0, 0.0, -1.0, -2.0, None, np.nan]
ORDER_IDS = [
    "o1",
    "o2",
    "o10",
    "o1 ",
    " o2",
    "C7",
    " C8",
    "c9",
    "XC1",
    "",
    " ",
    None,
    None,
    "2024-03-10T12:00:00Z",
    "2024-03-10T12:00:00.000000Z",
]
PRODUCTS = ["p1", "p2", "P1", "", None]
CATEGORIES = ["x", "y", "x ", " ", "", None]
CHANNELS = ["web", "app", "", None]
CONFIGS = [
    None,
    LogConfig(duplicates="keep"),
    LogConfig(cancel_prefix=None),
    LogConfig(cancel_prefix=None, duplicates="keep"),
]


def draw(rng: np.random.Generator, pool: Sequence[Any], n: int) -> list[Any]:
    return [pool[k] for k in rng.integers(0, len(pool), n).tolist()]


def random_case(rng: np.random.Generator) -> dict[str, Any]:
    """Columns of a small random log, with optional columns present as the service sends them.

    Mostly an optional column is present only when some row has a value (quantity None is
    then 1.0, discount only if any True); sometimes it is present regardless. A third of
    the cases are *crowded*: every pool narrowed to two values, so rows tie on customer and
    instant and differ in one or two columns only (near-duplicates next to duplicates).
    """
    crowded = rng.random() < 0.35

    def pool(values: Sequence[Any]) -> list[Any]:
        if not crowded or len(values) <= 2:
            return list(values)
        return [values[k] for k in rng.choice(len(values), 2, replace=False).tolist()]

    n = int(rng.integers(0, 13))
    times = TIMES if crowded or rng.random() < 0.5 else WHOLE_TIMES
    customers = CUSTOMERS[: int(rng.integers(1, len(CUSTOMERS) + 1))]
    case: dict[str, Any] = {
        "customer_id": draw(rng, pool(customers), n),
        "timestamp_us": draw(rng, pool(times), n),
        "amount": draw(rng, pool(AMOUNTS), n),
    }
    always = rng.random() < 0.15
    if rng.random() < 0.5:
        quantity = draw(rng, pool(QUANTITIES), n)
        if always or any(q is not None for q in quantity):
            case["quantity"] = [1.0 if q is None else q for q in quantity]
    if rng.random() < 0.5:
        discount = (rng.random(n) < 0.3).tolist()
        if always or any(discount):
            case["discount"] = discount
    for name, values in (
        ("order_id", ORDER_IDS),
        ("product_id", PRODUCTS),
        ("category", CATEGORIES),
        ("channel", CHANNELS),
    ):
        if rng.random() < 0.5:
            drawn = draw(rng, pool(values), n)
            if always or any(v is not None for v in drawn):
                case[name] = drawn
    # duplicate some rows (all columns), at random places
    if n and rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 5))):
            src, dst = (int(k) for k in rng.integers(0, len(case["amount"]) + 1, 2))
            src = min(src, len(case["amount"]) - 1)
            for column in case.values():
                column.insert(dst, column[src])
    case["config"] = CONFIGS[int(rng.integers(0, len(CONFIGS)))]
    return case


@pytest.mark.slow
def test_fuzz_arrays_match_canonicalize() -> None:
    rng = np.random.default_rng(20240310)
    for k in range(300):
        case = random_case(rng)
        try:
            check(**case)
        except AssertionError as error:
            raise AssertionError(f"case {k}: {case!r}") from error


def test_returns_without_order_or_product_ids_match_the_general_matcher() -> None:
    # Without order and product ids an order is a customer's rows at one instant; the
    # matcher for that case must pick what match_returns picks from the instants' ids,
    # on crowded logs: many rows per instant, equal amounts, returns with no line before.
    from features.log.canonical import fill_order_ids
    from features.log.returns import match_returns

    rng = np.random.default_rng(27)
    matched = 0
    for _ in range(400):
        n = int(rng.integers(1, 30))
        customers = [f"c{k}" for k in rng.integers(0, 4, n)]
        stamps = (T0 + rng.integers(0, 5, n) * US).tolist()
        amounts = rng.choice([0.0, 1.0, 2.0, 2.0, -2.0, -5.0, 5.0], n).tolist()
        # equal lines at one instant: rows that differ in category only, or duplicates kept
        category = rng.choice(["toys", "books", "games"], n).tolist()
        keep = LogConfig(duplicates="keep" if rng.random() < 0.5 else "drop")
        arrays = canonical_log_arrays(customers, stamps, amounts, category=category, config=keep)
        if not arrays.is_return.any():
            assert arrays.return_of is None
            continue
        ids = fill_order_ids(None, arrays.timestamp_us, [])
        expected = match_returns(
            arrays.customer_codes, arrays.timestamp_us, arrays.is_return, ids, None, arrays.amount
        )
        assert arrays.return_of is not None
        assert arrays.return_of.tolist() == expected.tolist()
        matched += int((expected >= 0).sum())
    assert matched > 100
