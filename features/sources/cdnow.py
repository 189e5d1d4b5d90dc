"""Load the CDNOW benchmark logs (the buy-till-you-die reference data) as canonical logs.

Two layouts exist, both whitespace separated with dates as YYYYMMDD:

- ``CDNOW_master.txt``: header ``customer_id date number_of_cds dollar_value``;
- ``CDNOW_sample.txt``: no header; original customer id, sample customer id, date,
  number_of_cds, dollar_value. The original id is used, so sample customers keep the ids
  they have in the master file.

Both go through :func:`features.log.purchase_log.canonicalize`. Two CDNOW-specific choices:
exact duplicate rows are kept (the published row counts include them: a customer can buy
the same number of CDs for the same value twice on one day), and there is no cancel prefix.
Zero-dollar rows stay purchases: only negative values mark returns.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.log.purchase_log import LoadResult, canonicalize
from features.log.schema import LogConfig, PurchaseLogError

__all__ = ["CDNOW_CONFIG", "read_cdnow"]

CDNOW_CONFIG = LogConfig(
    columns={"timestamp": "date", "quantity": "number_of_cds", "amount": "dollar_value"},
    date_format="%Y%m%d",
    cancel_prefix=None,
    duplicates="keep",
)
_MASTER_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")
_SAMPLE_COLUMNS = ("customer_id", "sample_customer_id", "date", "number_of_cds", "dollar_value")


def read_cdnow(path: str | Path) -> LoadResult:
    """Read ``CDNOW_master.txt`` or ``CDNOW_sample.txt``; the layout is detected from line 1."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CDNOW file not found: {path}")
    with path.open(encoding="ascii") as handle:
        first = handle.readline().split()
    has_header = bool(first) and not first[0].isdigit()
    if has_header:
        if tuple(first) != _MASTER_COLUMNS:
            raise PurchaseLogError(
                f"{path}: unexpected CDNOW header {first}; expected {list(_MASTER_COLUMNS)}"
            )
        names: tuple[str, ...] = _MASTER_COLUMNS
    elif len(first) == len(_SAMPLE_COLUMNS):
        names = _SAMPLE_COLUMNS
    elif len(first) == len(_MASTER_COLUMNS):
        names = _MASTER_COLUMNS
    else:
        raise PurchaseLogError(
            f"{path}: line 1 has {len(first)} fields {first}; a CDNOW file has 4 "
            f"(master: {', '.join(_MASTER_COLUMNS)}) or 5 (sample: {', '.join(_SAMPLE_COLUMNS)})"
        )
    # All text: customer ids have leading zeros ("00001") that are part of the id.
    frame = pd.read_csv(
        path,
        sep=r"\s+",
        header=0 if has_header else None,
        names=list(names),
        dtype="str",
        keep_default_na=False,
        na_values=[""],
    )
    return canonicalize(frame, CDNOW_CONFIG, source=str(path))
