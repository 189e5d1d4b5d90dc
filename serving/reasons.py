"""Top reasons behind a churn score, in words a marketer understands.

The churn model's per-feature contributions (path contributions) are ranked per customer;
the largest positive ones (pushing churn up) become short phrases. Every model input in
``features.catalog.MODEL_INPUTS`` has a phrase, fixed per feature, so ranking and wording
are vectorised over any number of customers. Contributions that lower the risk are never
worded: each phrase names a reason for risk.
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

_STOPPED = "the purchase pattern of customers who have stopped buying"
# the BTYD inputs (features.catalog.BTYD_FEATURES) say one thing in different units: one
# phrase, so a customer's reasons do not repeat it
for _name in ("bgnbd_p_alive", "bgnbd_expected_purchases_h", "bgnbd_p_no_purchase_h"):
    RISK_PHRASES[_name] = _STOPPED
RISK_PHRASES["pnbd_p_alive"] = _STOPPED


def phrase_for(feature: str, contribution: float = 1.0) -> str:
    """The phrase of a feature's contribution to churn risk.

    Every phrase names something that raises the risk, so only a positive contribution has
    one; a contribution that lowers the risk (or is zero) gets ``""``, never a phrase that
    would claim the opposite direction. A name outside the catalog reads as itself.
    """
    if not contribution > 0:
        return ""
    return RISK_PHRASES.get(feature, feature.replace("_", " "))


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
    """The array form of :func:`top_reasons`: an (n, k) object array of phrases.

    Per customer: the phrases of the positive contributions in rank order, each phrase once,
    at most ``k``. Phrases are handled as integer codes and the rule is a fixed number of
    array operations (no loop over ranks), so a request of four customers costs little more
    than the argsort and a million customers never compare Python strings.
    """
    k = max(int(k), 0)
    n = values.shape[0]
    if n == 0 or k == 0 or values.shape[1] == 0:
        return np.full((n, k), "", dtype=object)
    table, codes = _phrase_codes(tuple(names))
    # rank more columns than needed so that duplicate phrases can be skipped
    depth = min(values.shape[1], 2 * k + 2)
    order = np.argsort(-values, axis=1, kind="stable")[:, :depth]
    ranked = values[np.arange(n)[:, None], order]
    candidate = np.where(ranked > 0, codes[order], -1)  # -1: no reason at this rank
    # a phrase already offered at a better rank is skipped
    repeated = ((candidate[:, :, None] == candidate[:, None, :]) & _earlier(depth)).any(axis=2)
    usable = (candidate >= 0) & ~repeated
    slot = np.cumsum(usable, axis=1) - 1
    rows, ranks = np.nonzero(usable & (slot < k))
    chosen = np.full((n, k), -1, dtype=np.int64)  # -1 picks table's trailing ""
    chosen[rows, slot[rows, ranks]] = candidate[rows, ranks]
    return table[chosen]


@lru_cache(maxsize=16)
def _earlier(depth: int) -> np.ndarray:
    """(depth, depth) mask: entry [j, i] is True when rank i comes before rank j."""
    return np.tri(depth, depth, -1, dtype=bool)


@lru_cache(maxsize=16)
def _phrase_codes(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct phrases (then ``""``) and each column's code into them; -1 for no phrase."""
    distinct: dict[str, int] = {}
    codes = np.array(
        [
            -1 if (p := phrase_for(c)) == "" else distinct.setdefault(p, len(distinct))
            for c in names
        ],
        dtype=np.int64,
    )
    return np.array([*distinct, ""], dtype=object), codes
