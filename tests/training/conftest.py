"""Small canonical purchase logs for the training tests, built by hand or simulated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_log(
    rows: list[tuple[str, str, float]], returns: frozenset[int] = frozenset()
) -> pd.DataFrame:
    """A canonical log from (customer_id, timestamp, amount); row positions in ``returns`` are returns."""
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    df["timestamp"] = (
        pd.to_datetime(df["timestamp"], format="mixed").dt.tz_localize("UTC").dt.as_unit("us")
    )
    df["amount"] = df["amount"].astype("float64")
    df["quantity"] = 1.0
    df["order_id"] = [f"o{i}" for i in range(len(df))]
    df["product_id"] = pd.Series([pd.NA] * len(df), dtype="str")
    df["category"] = pd.Series([pd.NA] * len(df), dtype="str")
    df["discount"] = False
    df["channel"] = pd.Series([pd.NA] * len(df), dtype="str")
    df["is_return"] = [i in returns for i in range(len(df))]
    df["customer_id"] = df["customer_id"].astype("category")
    return df.sort_values(["customer_id", "timestamp", "order_id"]).reset_index(drop=True)


def simulate_log(
    n_customers: int, seed: int, start: str = "2023-01-01", days: int = 720
) -> pd.DataFrame:
    """A BG/NBD-like canonical log: heterogeneous Poisson buyers who drop out geometrically.

    Vectorised and deterministic; used when the real generator is not needed.
    """
    rng = np.random.default_rng(seed)
    first = rng.integers(0, days // 2, n_customers)
    rate = rng.gamma(0.8, 1 / 25.0, n_customers)  # purchases per day
    lifetime = rng.exponential(rng.gamma(1.0, 300.0, n_customers))
    value = rng.gamma(3.0, 15.0, n_customers)
    max_n = 60
    gaps = rng.exponential(1.0, (n_customers, max_n)) / np.maximum(rate, 1e-4)[:, None]
    times = first[:, None] + np.concatenate(
        [np.zeros((n_customers, 1)), np.cumsum(gaps, axis=1)[:, :-1]], axis=1
    )
    alive = (times - first[:, None] <= lifetime[:, None]) & (times < days)
    alive[:, 0] = True
    cust, k = np.nonzero(alive)
    t = times[cust, k]
    amount = np.round(value[cust] * rng.gamma(4.0, 0.25, len(cust)), 2)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.floor(t * 24) / 24, unit="D")
    df = pd.DataFrame(
        {
            "customer_id": pd.Categorical([f"c{c:06d}" for c in cust]),
            "timestamp": pd.DatetimeIndex(ts).as_unit("us"),
            "amount": amount.astype("float64"),
            "quantity": 1.0,
            "order_id": [f"o{i}" for i in range(len(cust))],
        }
    )
    df["product_id"] = pd.Series([pd.NA] * len(df), dtype="str")
    df["category"] = pd.Series([pd.NA] * len(df), dtype="str")
    df["discount"] = False
    df["channel"] = pd.Series([pd.NA] * len(df), dtype="str")
    df["is_return"] = False
    return df.sort_values(["customer_id", "timestamp", "order_id"]).reset_index(drop=True)


@pytest.fixture(scope="session")
def sim_log() -> pd.DataFrame:
    return simulate_log(3000, seed=7)


def no_dropout_log(
    n_customers: int, seed: int, start: str = "2023-01-01", days: int = 456
) -> pd.DataFrame:
    """Poisson buyers who never drop out, all starting in the first month.

    BG/NBD and Pareto/NBD fitted on it collapse to the no-dropout fit (their dropout shapes
    a and s go to ~3e-4): the case ``training.baselines.degenerate.degenerate_fit`` detects.
    """
    rng = np.random.default_rng(seed)
    rate = rng.gamma(2.0, 1 / 40.0, n_customers)  # purchases per day
    first = rng.uniform(0.0, 30.0, n_customers)
    max_n = int(days * rate.max() * 1.5) + 10
    gaps = rng.exponential(1.0, (n_customers, max_n)) / rate[:, None]
    times = first[:, None] + np.concatenate(
        [np.zeros((n_customers, 1)), np.cumsum(gaps, axis=1)[:, :-1]], axis=1
    )
    cust, k = np.nonzero(times < days)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(times[cust, k], unit="D")
    df = pd.DataFrame(
        {
            "customer_id": pd.Categorical([f"c{c:05d}" for c in cust]),
            "timestamp": pd.DatetimeIndex(ts).as_unit("us"),
            "amount": np.round(rng.gamma(4.0, 5.0, len(cust)), 2),
            "quantity": 1.0,
            "order_id": [f"o{i}" for i in range(len(cust))],
        }
    )
    for column in ("product_id", "category", "channel"):
        df[column] = pd.Series([pd.NA] * len(df), dtype="str")
    df["discount"] = False
    df["is_return"] = False
    return df.sort_values(["customer_id", "timestamp", "order_id"]).reset_index(drop=True)
