"""The RFM summary every baseline works on, and the check of its (x, t_x, T) arrays.

The buy-till-you-die convention: one transaction per customer and UTC calendar day, the first
one is not a repeat purchase. ``check_rfm`` is the one validation of a (frequency, recency,
T) triple: every public method of the baselines calls it, and the models' BTYD features call
it once before the array API of :mod:`training.baselines.bgnbd` and
:mod:`training.baselines.paretonbd`.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from features.log.returns import match_log_returns, net_amounts
from features.utc import to_utc_timestamp

FloatArray = NDArray[np.float64]


RFM_COLUMNS: tuple[str, ...] = ("frequency", "recency", "T", "monetary_value")


def rfm_summary(
    log: pd.DataFrame,
    as_of: str | datetime | pd.Timestamp,
    time_unit_days: float = 7.0,
    calibration_start: str | datetime | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Per-customer frequency / recency / T / monetary_value as of ``as_of``.

    Uses non-return rows with ``calibration_start <= timestamp < as_of``. Orders of one
    customer on one UTC calendar day form one transaction (summed amount); ``frequency`` is
    the number of transactions after the first, ``recency`` the time from the first to the
    last transaction day and ``T`` from the first transaction day to ``as_of``, both in
    units of ``time_unit_days``. ``monetary_value`` is the mean amount of the repeat
    transactions (0 when ``frequency == 0``), the convention the Gamma-Gamma model expects;
    amounts are net of the returns made before ``as_of`` (``features.log.returns``).
    Customers without a purchase in the window are absent; the index keeps the log's
    ``customer_id`` dtype (categorical for a canonical log). Naive ``as_of`` is taken as UTC.
    """
    missing = [c for c in ("customer_id", "timestamp", "amount", "is_return") if c not in log]
    if missing:
        raise ValueError(f"rfm_summary: log lacks column(s) {missing}; has {list(log.columns)}")
    if time_unit_days <= 0:
        raise ValueError(f"rfm_summary: time_unit_days must be > 0, got {time_unit_days}")
    as_of_ts = to_utc_timestamp(as_of)
    ts = log["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError(
            f"rfm_summary: column 'timestamp' must be tz-aware (UTC), got dtype {ts.dtype}"
        )
    keep = (~log["is_return"].astype(bool)) & (ts < as_of_ts)
    if calibration_start is not None:
        keep &= ts >= to_utc_timestamp(calibration_start, "calibration_start")
    rows = log.loc[keep, ["customer_id", "timestamp", "amount"]]
    amount = rows["amount"].astype("float64")
    if (amount < 0).any():
        bad = rows.index[amount < 0][:5].tolist()
        raise ValueError(f"rfm_summary: column 'amount' has negative values at rows {bad}")
    is_return = log["is_return"].to_numpy(dtype=bool)
    if is_return.any():
        # spend net of the returns made before as_of, like the features and labels
        net = net_amounts(
            log["amount"].to_numpy(dtype=np.float64),
            is_return,
            match_log_returns(log),
            (ts < as_of_ts).to_numpy(dtype=bool),
        )
        amount = pd.Series(net[keep.to_numpy(dtype=bool)], index=rows.index)

    day = rows["timestamp"].dt.tz_convert("UTC").dt.floor("D")
    days = (
        pd.DataFrame({"customer_id": rows["customer_id"], "day": day, "amount": amount})
        .groupby(["customer_id", "day"], observed=True, sort=True)["amount"]
        .sum()
        .reset_index()
    )
    per = days.groupby("customer_id", observed=True, sort=True)
    first = per["day"].min()
    last = per["day"].max()
    n_days = per["day"].size()
    total = per["amount"].sum()
    first_amount = per["amount"].first()  # rows are sorted by day within customer

    unit = pd.Timedelta(days=time_unit_days)
    frequency = (n_days - 1).astype("float64")
    repeat_spend = total - first_amount
    monetary = np.where(frequency > 0, repeat_spend / frequency.where(frequency > 0, 1.0), 0.0)
    out = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (last - first) / unit,
            "T": (as_of_ts - first) / unit,
            "monetary_value": monetary,
        }
    )
    out.index.name = "customer_id"
    return out


def check_rfm(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate an (x, t_x, T) triple; the error names the offending argument and position.

    Returns float64 copies. Valid same-shape input (every scoring call) passes one cheap
    combined check; anything else takes the per-argument checks that name the problem.
    """
    x, tx, age = (np.asarray(v, dtype="float64") for v in (frequency, recency, T))
    if x.shape == tx.shape == age.shape:
        if x.size and _valid_triple(x, tx, age):
            return x.astype("float64"), tx.astype("float64"), age.astype("float64")
    else:
        x, tx, age = np.broadcast_arrays(x, tx, age)
    for name, arr in (("frequency", x), ("recency", tx), ("T", age)):
        bad = ~np.isfinite(arr) | (arr < 0)
        if bad.any():
            pos = np.flatnonzero(bad.ravel())[:5].tolist()
            raise ValueError(f"{name} must be finite and >= 0; bad at positions {pos}")
    bad = tx > age * (1 + 1e-12) + 1e-12
    if bad.any():
        pos = np.flatnonzero(bad.ravel())[:5].tolist()
        raise ValueError(f"recency must be <= T; violated at positions {pos}")
    bad = (x == 0) & (tx > 0)
    if bad.any():
        pos = np.flatnonzero(bad.ravel())[:5].tolist()
        raise ValueError(f"recency must be 0 when frequency is 0; violated at positions {pos}")
    return x.astype("float64"), tx.astype("float64"), age.astype("float64")


_FEW = 16
_INF = float("inf")


def _valid_triple(x: FloatArray, tx: FloatArray, age: FloatArray) -> bool:
    """True when ``check_rfm``' checks all pass; False sends it to the detailed ones.

    NaN propagates through minimum/maximum and fails both comparisons, so one lower and one
    upper bound cover "finite and >= 0" for all three arguments (and warn about nothing).
    A request's few customers are checked value by value (the same float comparisons,
    cheaper than a dozen array calls).
    """
    if x.ndim == 1 and x.size <= _FEW:
        for xi, ti, ai in zip(x.tolist(), tx.tolist(), age.tolist(), strict=True):
            if not (0.0 <= xi < _INF and 0.0 <= ti < _INF and 0.0 <= ai < _INF):
                return False
            if ti > ai * (1 + 1e-12) + 1e-12 or (xi == 0 and ti > 0):
                return False
        return True
    lo = np.minimum(np.minimum(x, tx), age)
    hi = np.maximum(np.maximum(x, tx), age)
    if not (lo.min() >= 0.0 and hi.max() < np.inf):
        return False
    if (tx > age * (1 + 1e-12) + 1e-12).any():
        return False
    return not ((x == 0) & (tx > 0)).any()
