"""Labels for the churn, timing, count and spend models, and leak-free training snapshots.

A label describes what a customer does in the *label window* ``[as_of, as_of + horizon)``:
a row at exactly ``as_of`` is inside, a row at ``as_of + horizon`` is not. Only orders
(rows with ``is_return == False``) count, following the counting rules of
``features.log.schema``. The population is every customer with at least one order strictly
before ``as_of``, the same population ``features.builders.build_features`` describes.

Spend is net of returns and cancellations: a window's spend is the value of its orders minus
the returns matched to them (``features.log.returns``) made before the window ends, never below
0 per line; returns of orders placed before the window do not touch it.

``days_to_next`` is *fractional*: ``(timestamp of the first order in the window - as_of)``
in days, so a purchase on the cutoff day itself is ``0.0 <= days < 1``. Customers without an
order in the window are censored: ``event == 0`` and ``days_to_next == horizon_days``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.builders import FeatureConfig, build_features
from features.log.returns import match_log_returns, net_amounts
from features.log.schema import PurchaseLogError
from features.utc import US_PER_DAY, to_utc_timestamp

LABEL_COLUMNS: tuple[str, ...] = (
    "churn",
    "event",
    "days_to_next",
    "n_purchase_days_h",
    "spend_h",
)
LABEL_COLUMNS_365D: tuple[str, ...] = ("n_purchase_days_365d", "spend_365d")


def _check_log(log: pd.DataFrame) -> None:
    missing = [c for c in ("customer_id", "timestamp", "amount", "is_return") if c not in log]
    if missing:
        raise PurchaseLogError(
            f"canonical log is missing column(s) {missing}; build it with "
            "features.log.purchase_log.canonicalize"
        )


def _customer_codes(log: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    """Integer customer codes and their labels (categorical fast path, any dtype otherwise)."""
    ids = log["customer_id"]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        return ids.cat.codes.to_numpy(dtype=np.int64), pd.Index(ids.cat.categories)
    codes, uniques = pd.factorize(ids, sort=True)
    return codes.astype(np.int64), pd.Index(uniques)


def _micros(log: pd.DataFrame) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC)."""
    ts = log["timestamp"]
    if getattr(ts.dtype, "tz", None) is None:
        raise PurchaseLogError(
            f"column 'timestamp' must be tz-aware UTC ({ts.dtype} found); use canonicalize"
        )
    return np.asarray(ts.dt.as_unit("us").array.asi8, dtype=np.int64)


def _window_counts(
    codes: np.ndarray,
    micros: np.ndarray,
    amount: np.ndarray,
    start: int,
    end: int,
    n_codes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code: purchase days, spend and first timestamp (int64 us, -1 if none) in [start, end)."""
    mask = (micros >= start) & (micros < end)
    c, t, a = codes[mask], micros[mask], amount[mask]
    spend = np.bincount(c, weights=a, minlength=n_codes).astype(np.float64)
    day = t // US_PER_DAY
    pairs = np.unique(c * np.int64(1 << 32) + day)
    days = np.bincount(pairs >> 32, minlength=n_codes).astype(np.int64)
    first = np.full(n_codes, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, c, t)
    first[first == np.iinfo(np.int64).max] = -1
    return days, spend, first


def build_labels(
    log: pd.DataFrame,
    as_of: pd.Timestamp | str,
    horizon_days: int = 90,
    include_365d: bool = False,
) -> pd.DataFrame:
    """What each customer known at ``as_of`` does in the next ``horizon_days`` days.

    Columns: ``churn`` (1 = no order in the window), ``event`` (1 - churn), ``days_to_next``
    (fractional days, censored at ``horizon_days``), ``n_purchase_days_h``, ``spend_h`` (net of returns); with
    ``include_365d`` also ``n_purchase_days_365d`` and ``spend_365d`` over ``[as_of, +365 d)``.
    The caller is responsible for the log covering the whole window (see ``snapshot_cutoffs``).
    """
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    _check_log(log)
    cutoff = to_utc_timestamp(as_of)
    returns = log["is_return"].to_numpy(dtype=bool)
    orders = log.loc[~returns]
    codes, labels = _customer_codes(orders)
    micros = _micros(orders)
    start = int(cutoff.as_unit("us").asm8.astype(np.int64))
    n_codes = len(labels)
    has_returns = bool(returns.any())
    if has_returns:
        matched = match_log_returns(log)
        all_micros = _micros(log)
        all_amount = log["amount"].to_numpy(dtype=np.float64)

    def net_spend(end: int) -> np.ndarray:
        """Order amounts net of the returns made before ``end``."""
        if not has_returns:
            return orders["amount"].to_numpy(dtype=np.float64)
        return net_amounts(all_amount, returns, matched, all_micros < end)[~returns]

    before = np.zeros(n_codes, dtype=bool)
    before[codes[micros < start]] = True
    end_h = start + int(horizon_days) * US_PER_DAY
    days_h, spend_h, first = _window_counts(codes, micros, net_spend(end_h), start, end_h, n_codes)
    event = days_h > 0
    days_to_next = np.where(event, (first - start) / US_PER_DAY, float(horizon_days))

    out = pd.DataFrame(
        {
            "churn": (~event).astype(np.int8),
            "event": event.astype(np.int8),
            "days_to_next": days_to_next,
            "n_purchase_days_h": days_h,
            "spend_h": spend_h,
        },
        index=pd.Index(labels.astype(str), name="customer_id", dtype="str"),
    )
    if include_365d:
        end_y = start + 365 * US_PER_DAY
        days_y, spend_y, _ = _window_counts(codes, micros, net_spend(end_y), start, end_y, n_codes)
        out["n_purchase_days_365d"] = days_y
        out["spend_365d"] = spend_y
    return out.loc[before]


def snapshot_cutoffs(
    eval_cutoff: pd.Timestamp | str,
    horizon_days: int,
    n_snapshots: int,
    step_days: int = 30,
    earliest: pd.Timestamp | str | None = None,
) -> list[pd.Timestamp]:
    """Training cutoffs, oldest first, whose label windows all end at or before ``eval_cutoff``.

    The latest cutoff is ``eval_cutoff - horizon_days``; the others step back by ``step_days``.
    Cutoffs before ``earliest`` (e.g. the first order + some history) are dropped; an empty
    result is an error because nothing could be trained.
    """
    if n_snapshots < 1 or step_days < 1:
        raise ValueError(f"n_snapshots and step_days must be >= 1 ({n_snapshots}, {step_days})")
    last = to_utc_timestamp(eval_cutoff) - pd.Timedelta(days=horizon_days)
    cutoffs = [last - pd.Timedelta(days=step_days * k) for k in range(n_snapshots)]
    if earliest is not None:
        first_ok = to_utc_timestamp(earliest)
        cutoffs = [c for c in cutoffs if c >= first_ok]
    if not cutoffs:
        raise ValueError(
            f"no training cutoff fits: eval_cutoff {to_utc_timestamp(eval_cutoff)} - "
            f"{horizon_days} days is before earliest {earliest}; use more history or a shorter horizon"
        )
    return sorted(cutoffs)


def build_training_set(
    log: pd.DataFrame,
    cutoffs: Sequence[pd.Timestamp | str],
    horizon_days: int = 90,
    feature_config: FeatureConfig | None = None,
    include_365d: bool = False,
) -> pd.DataFrame:
    """Features and labels stacked over cutoffs, with a ``cutoff`` column (index customer_id).

    Features at cutoff ``c`` use rows before ``c``; labels use ``[c, c + horizon)``. Rows are
    the customers present in the features (the labels' population is the same by contract).
    """
    if feature_config is None:
        feature_config = FeatureConfig.for_horizon(horizon_days)
    frames = []
    for raw in cutoffs:
        cutoff = to_utc_timestamp(raw)
        feats = build_features(log, cutoff, feature_config)
        labels = build_labels(log, cutoff, horizon_days, include_365d=include_365d)
        frames.append(join_labels(feats, labels, cutoff))
    if not frames:
        raise ValueError("build_training_set needs at least one cutoff")
    return pd.concat(frames)


def join_labels(features: pd.DataFrame, labels: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Features with their labels and the ``cutoff`` column; errors on population mismatch."""
    feat_ids = features.index.astype(str)
    lab = labels.reindex(pd.Index(feat_ids, name="customer_id"))
    missing = lab["churn"].isna()
    if missing.any():
        example = list(feat_ids[missing.to_numpy()][:5])
        raise ValueError(
            f"{int(missing.sum())} customer(s) have features but no labels at {cutoff}, "
            f"e.g. {example}: features and labels disagree on the population"
        )
    out = features.copy()
    out.index = pd.Index(feat_ids, name="customer_id")
    for col in lab.columns:
        out[col] = lab[col].to_numpy()
    out["cutoff"] = cutoff
    return out
