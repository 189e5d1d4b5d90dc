"""Shared fixtures for feature tests: canonical logs built straight from row dicts.

``make_log`` builds the canonical frame directly (dtypes and sort from ``features.log.schema``)
so tests of the feature code do not depend on the loader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.log.schema import CANONICAL_COLUMNS, TIMESTAMP_DTYPE

_DEFAULTS: dict[str, Any] = {
    "quantity": 1.0,
    "product_id": None,
    "category": None,
    "discount": False,
    "channel": None,
    "is_return": False,
}


def make_log(rows: Iterable[Mapping[str, Any]], *, sort: bool = True) -> pd.DataFrame:
    """A canonical purchase log from dicts with at least customer_id, timestamp and amount.

    Missing fields get the canonical defaults; a row without ``order_id`` gets
    ``"<customer_id>@<timestamp>"`` (rows of one customer at one timestamp form one order).
    Naive timestamps are UTC. ``sort=False`` keeps the given row order, for tests of
    input validation.
    """
    records = []
    for row in rows:
        record = {**_DEFAULTS, **row}
        record["customer_id"] = str(record["customer_id"])
        ts = pd.Timestamp(record["timestamp"])
        record["timestamp"] = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        record.setdefault("order_id", f"{record['customer_id']}@{record['timestamp'].isoformat()}")
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=list(CANONICAL_COLUMNS))
    return canonical_frame(frame, sort=sort)


def canonical_frame(frame: pd.DataFrame, *, sort: bool = True) -> pd.DataFrame:
    """Coerce a frame with the canonical columns to canonical dtypes (and order)."""
    out = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].astype("str"),
            "timestamp": pd.to_datetime(frame["timestamp"], utc=True).astype(TIMESTAMP_DTYPE),
            "amount": frame["amount"].astype(np.float64),
            "quantity": frame["quantity"].astype(np.float64),
            "order_id": frame["order_id"].astype("str"),
            "product_id": frame["product_id"].astype("str"),
            "category": frame["category"].astype("str"),
            "discount": frame["discount"].astype(bool),
            "channel": frame["channel"].astype("str"),
            "is_return": frame["is_return"].astype(bool),
        }
    )
    if sort:
        out = out.sort_values(["customer_id", "timestamp", "order_id"], kind="stable")
    categories = sorted(out["customer_id"].unique())
    out["customer_id"] = pd.Categorical(out["customer_id"], categories=categories)
    return out.reset_index(drop=True)


def random_log(
    seed: int, start: pd.Timestamp, n_customers: int = 30, n_rows: int = 400
) -> pd.DataFrame:
    """A seeded canonical log over 700 days from ``start``: multi-line orders, ~8% returns,
    missing categories and channels, discounts. Orders are one per customer and second."""
    rng = np.random.default_rng(seed)
    customers = rng.integers(0, n_customers, n_rows)
    seconds = rng.integers(0, 700 * 86_400, n_rows)
    # about a third of the rows repeat the previous row's order (same customer and time)
    repeat = np.r_[False, rng.random(n_rows - 1) < 0.3]
    for i in np.flatnonzero(repeat):
        customers[i], seconds[i] = customers[i - 1], seconds[i - 1]
    rows = []
    for i in range(n_rows):
        is_return = bool(rng.random() < 0.08)
        rows.append(
            {
                "customer_id": f"cust{customers[i]:03d}",
                "timestamp": start + pd.Timedelta(seconds=int(seconds[i])),
                "order_id": f"{'R' if is_return else 'o'}{customers[i]}-{seconds[i]}",
                "amount": round(float(rng.gamma(2.0, 20.0)), 2),
                "quantity": float(rng.integers(1, 4)),
                "category": rng.choice(["books", "toys", "home", None]),
                "channel": rng.choice(["web", "store", None]),
                "discount": bool(rng.random() < 0.25),
                "is_return": is_return,
            }
        )
    return make_log(rows)


@pytest.fixture
def log_factory() -> Callable[..., pd.DataFrame]:
    """``make_log`` as a fixture, for tests that prefer injection over imports."""
    return make_log
