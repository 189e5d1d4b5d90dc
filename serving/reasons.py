"""Top reasons behind a churn score, in words a marketer understands.

The churn model's per-feature contributions (LightGBM ``pred_contrib``) are ranked per
customer; the largest positive ones (pushing churn up) become short phrases. Phrases are
fixed per feature, so ranking and wording are vectorised over any number of customers.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

# feature -> phrase used when the feature pushes churn risk up
RISK_PHRASES: dict[str, str] = {
    "recency_days": "a long time since the last purchase",
    "tenure_days": "a short history with the shop",
    "active_span_days": "bought only over a short stretch of time",
    "n_orders": "few orders so far",
    "n_purchase_days": "few purchase days so far",
    "n_repeat_days": "few repeat purchases",
    "n_items": "few items bought",
    "monetary_total": "low total spend",
    "monetary_mean": "low average order value",
    "monetary_max": "no large order yet",
    "last_order_value": "a small last order",
    "items_per_order": "small baskets",
    "gap_mean_days": "long gaps between purchases",
    "gap_std_days": "an irregular buying rhythm",
    "gap_last_days": "a long gap before the last purchase",
    "recency_gap_ratio": "overdue against their own buying rhythm",
    "purchase_rate_30d": "a low buying rate",
    "spend_trend": "spending is falling",
    "orders_same_season_last_year": "did not buy in this season last year",
    "discount_share": "buys mostly on discount",
    "n_returns": "returned items",
    "return_rate": "a high share of returns",
    "n_categories": "buys from few categories",
    "weekday_concentration": "no settled shopping day",
    "n_channels": "uses few channels",
    "season_share": "rarely buys at this time of year",
    "calendar_sin": "a quiet time of year for purchases",
    "calendar_cos": "a quiet time of year for purchases",
}
for _w in (30, 90, 180, 365):
    RISK_PHRASES[f"orders_{_w}d"] = f"few orders in the last {_w} days"
    RISK_PHRASES[f"spend_{_w}d"] = f"low spend in the last {_w} days"

_PREFIX_PHRASES: dict[str, str] = {
    "bgnbd_": "the purchase pattern of customers who have stopped buying",
    "paretonbd_": "the purchase pattern of customers who have stopped buying",
    "btyd_": "the purchase pattern of customers who have stopped buying",
}


def phrase_for(feature: str) -> str:
    """The risk phrase of a feature; a readable fallback for features without one."""
    if feature in RISK_PHRASES:
        return RISK_PHRASES[feature]
    for prefix, text in _PREFIX_PHRASES.items():
        if feature.startswith(prefix):
            return text
    return feature.replace("_", " ")


def top_reasons(contributions: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """The ``k`` features pushing each customer's churn risk up the most, as phrases.

    ``contributions`` holds one column per feature (no bias column), indexed by customer.
    Returns columns ``reason_1`` .. ``reason_k``; an empty string where fewer than ``k``
    features push risk up. Duplicate phrases within a row are kept once.
    """
    k = max(int(k), 0)
    columns = [f"reason_{i + 1}" for i in range(k)]
    if contributions.empty or k == 0:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in columns}, index=contributions.index)
    out = reason_texts(contributions.to_numpy(dtype=np.float64), contributions.columns, k)
    return pd.DataFrame(out, index=contributions.index, columns=columns).astype("str")


def reason_texts(values: np.ndarray, names: Sequence[str], k: int = 3) -> np.ndarray:
    """The array form of :func:`top_reasons`: an (n, k) object array of phrases."""
    k = max(int(k), 0)
    n = values.shape[0]
    out = np.full((n, k), "", dtype=object)
    if n == 0 or k == 0 or values.shape[1] == 0:
        return out
    phrases = _phrases(tuple(names))
    # rank more columns than needed so that duplicate phrases can be skipped
    depth = min(values.shape[1], 2 * k + 2)
    order = np.argsort(-values, axis=1, kind="stable")[:, :depth]
    ranked = np.take_along_axis(values, order, axis=1)
    texts = np.where(ranked > 0, phrases[order], "")
    filled = np.zeros(n, dtype=np.int64)
    for j in range(depth):  # loop over ranks (a handful), vectorised over customers
        candidate = texts[:, j]
        duplicate = np.zeros(n, dtype=bool)
        for i in range(k):
            duplicate |= out[:, i] == candidate
        take = (candidate != "") & ~duplicate & (filled < k)
        rows = np.flatnonzero(take)
        out[rows, filled[rows]] = candidate[rows]
        filled[rows] += 1
    return out


@lru_cache(maxsize=16)
def _phrases(names: tuple[str, ...]) -> np.ndarray:
    return np.array([phrase_for(c) for c in names], dtype=object)
