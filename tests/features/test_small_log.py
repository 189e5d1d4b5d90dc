"""``small_log_arrays`` (plain Python, a request's few rows) equals ``canonical_log_arrays``.

Random small logs of a few customers with returns (negative amounts and quantities, the
cancel prefix, orders named with and without it), order and product ids present or not,
blank values, exact and near duplicates and ties on the instant: every field of the two
``LogArrays`` must be equal, including which purchase each return nets against.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from features.log.log_arrays import LogArrays, canonical_log_arrays
from features.log.schema import LogConfig
from features.log.small_log import SMALL_ROWS, small_log_arrays, typed_log_arrays
from tests.features.test_log_arrays import random_case

US = 1_000_000
DAY = 86_400 * US
T0 = 1_710_072_000 * US  # 2024-03-10T12:00:00Z
TIMES = [T0, T0 + US, T0 + 250_000, T0 - DAY, T0 - DAY + 1, T0 - 3 * DAY, T0 - 40 * DAY]
ORDERS = ["1", "2", "C1", "C2", " C3", "3", "C9", "", None]
PRODUCTS = ["p1", "p2", "p3", "", None]
AMOUNTS = [10.0, 10.0, 5.0, 2.5, 0.0, -0.0, -10.0, -5.0, -2.5]
CONFIGS = [LogConfig(), LogConfig(duplicates="keep"), LogConfig(cancel_prefix=None)]


def assert_same(a: LogArrays, b: LogArrays) -> None:
    for f in fields(LogArrays):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray), f.name
            assert x.dtype == y.dtype, (f.name, x.dtype, y.dtype)
            assert x.tolist() == y.tolist(), (f.name, x, y)
        else:
            assert x == y, (f.name, x, y)


def both(**case: Any) -> LogArrays:
    general = canonical_log_arrays(**case)
    small = small_log_arrays(**case)
    assert small is not None
    assert_same(small, general)
    return small


def returns_case(rng: np.random.Generator) -> dict[str, Any]:
    """A few customers' rows where returns meet their orders, products and ties."""
    n = int(rng.integers(1, 25))

    def pick(pool: list[Any]) -> list[Any]:
        return [pool[k] for k in rng.integers(0, len(pool), n).tolist()]

    case: dict[str, Any] = {
        "customer_id": pick(["a", "b", " a", "c"][: int(rng.integers(1, 5))]),
        "timestamp_us": np.array(pick(TIMES[: int(rng.integers(2, len(TIMES) + 1))])),
        "amount": np.array(pick(AMOUNTS)),
        "config": CONFIGS[int(rng.integers(0, len(CONFIGS)))],
    }
    if rng.random() < 0.4:
        case["quantity"] = np.array(pick([1.0, 2.0, -1.0, np.nan]))
    if rng.random() < 0.3:
        case["discount"] = rng.random(n) < 0.5
    if rng.random() < 0.6:
        case["order_id"] = pick(ORDERS)
    if rng.random() < 0.6:
        case["product_id"] = pick(PRODUCTS)
    if rng.random() < 0.5:
        case["category"] = pick(["x", "y", " ", "", None])
    if rng.random() < 0.5:
        case["channel"] = pick(["web", "app", "", None])
    if rng.random() < 0.5:  # exact duplicates of some rows
        for _ in range(int(rng.integers(1, 4))):
            src = int(rng.integers(0, n))
            for name, column in list(case.items()):
                if name == "config":
                    continue
                if isinstance(column, np.ndarray):
                    case[name] = np.append(column, column[src])
                else:
                    case[name] = [*column, column[src]]
    return case


def test_returns_match_the_array_path_on_random_logs() -> None:
    rng = np.random.default_rng(27)
    matched = 0
    for k in range(1500):
        case = returns_case(rng)
        try:
            small = both(**case)
        except AssertionError as error:
            raise AssertionError(f"case {k}: {case!r}") from error
        if small.return_of is not None:
            matched += int((small.return_of >= 0).sum())
    assert matched > 1000  # the cases exercise the matcher, not only its absence


def test_the_log_arrays_fuzz_cases_match() -> None:
    rng = np.random.default_rng(20240310)
    for k in range(400):
        case = random_case(rng)
        if not case["customer_id"]:
            continue
        args = {
            name: np.asarray(v) if name in ("timestamp_us", "amount", "quantity", "discount") else v
            for name, v in case.items()
        }
        try:
            both(**args)
        except AssertionError as error:
            raise AssertionError(f"case {k}: {case!r}") from error


def test_a_return_nets_against_its_named_order_then_product_then_latest_line() -> None:
    ts = np.array([T0 - 3 * DAY, T0 - 2 * DAY, T0 - DAY, T0, T0, T0])
    log = both(
        customer_id=["a"] * 6,
        timestamp_us=ts,
        amount=np.array([50.0, 20.0, 30.0, -5.0, -6.0, -7.0]),
        order_id=["1", "2", "3", "C1", "x", "y"],
        product_id=["p", "q", "r", None, "q", None],
    )
    assert log.return_of is not None
    # by order "1"; by product "q"; the latest line (order "3")
    assert log.return_of.tolist() == [-1, -1, -1, 0, 1, 2]


def test_unusual_input_goes_to_the_array_path() -> None:
    nan_amount = {
        "customer_id": ["a"],
        "timestamp_us": np.array([T0]),
        "amount": np.array([np.nan]),
    }
    assert small_log_arrays(**nan_amount) is None
    with pytest.raises(ValueError, match="amount"):
        typed_log_arrays(**nan_amount)
    many = SMALL_ROWS + 1
    large = typed_log_arrays(
        ["a"] * many, np.arange(many) * US + T0, np.ones(many), category=["x"] * many
    )
    assert_same(
        large,
        canonical_log_arrays(
            ["a"] * many, np.arange(many) * US + T0, np.ones(many), category=["x"] * many
        ),
    )
