"""The one place where every feature column and model input is named and documented.

``build_features`` returns exactly these columns, in this order, indexed by ``customer_id``.
"Order" and "purchase day" follow the counting rules in ``features.log.schema``. All windows end
at ``as_of`` (exclusive) and only rows strictly before ``as_of`` are used. Returns never
count as orders or purchase days. Money columns (``monetary_*``, ``last_order_value``,
``spend_*``) are net of the returns made before ``as_of``, each matched to the purchase it
takes money back from (``features.log.returns``); ``return_rate`` reads the returned value.
"""

from __future__ import annotations

from typing import NamedTuple


class FeatureDoc(NamedTuple):
    unit: str
    description: str


WINDOWS_DAYS: tuple[int, ...] = (30, 90, 180, 365)

_BASE: dict[str, FeatureDoc] = {
    "recency_days": FeatureDoc("days", "time from the last purchase to as_of"),
    "tenure_days": FeatureDoc("days", "time from the first purchase to as_of"),
    "active_span_days": FeatureDoc(
        "days", "time from the first to the last purchase (BTYD 'recency')"
    ),
    "n_orders": FeatureDoc("orders", "number of orders"),
    "n_purchase_days": FeatureDoc("days", "number of distinct purchase days"),
    "n_repeat_days": FeatureDoc("days", "purchase days after the first one (BTYD 'frequency')"),
    "n_items": FeatureDoc("units", "total quantity bought"),
    "monetary_total": FeatureDoc("currency", "total spend on orders"),
    "monetary_mean": FeatureDoc("currency", "mean order value"),
    "monetary_max": FeatureDoc("currency", "largest order value"),
    "last_order_value": FeatureDoc("currency", "value of the most recent order"),
    "items_per_order": FeatureDoc("units/order", "mean quantity per order"),
    "gap_mean_days": FeatureDoc(
        "days", "mean gap between consecutive purchase days; NaN with one purchase day"
    ),
    "gap_std_days": FeatureDoc(
        "days", "standard deviation (ddof=0) of gaps between purchase days; NaN with < 2 gaps"
    ),
    "gap_last_days": FeatureDoc("days", "gap between the last two purchase days; NaN with one"),
    "recency_gap_ratio": FeatureDoc(
        "ratio", "recency_days / gap_mean_days: > 1 means overdue against their own rhythm"
    ),
    "purchase_rate_30d": FeatureDoc(
        "purchase days per 30 days", "n_purchase_days / max(tenure_days, 1) * 30"
    ),
}

_WINDOWED: dict[str, FeatureDoc] = {}
for _w in WINDOWS_DAYS:
    _WINDOWED[f"orders_{_w}d"] = FeatureDoc("orders", f"orders in the last {_w} days")
    _WINDOWED[f"spend_{_w}d"] = FeatureDoc("currency", f"order spend in the last {_w} days")

_BEHAVIOUR: dict[str, FeatureDoc] = {
    "spend_trend": FeatureDoc(
        "log ratio",
        "log1p(spend in the last 180 days) - log1p(spend in the 180 days before that)",
    ),
    "orders_same_season_last_year": FeatureDoc(
        "orders",
        "orders in [as_of - 365 days, as_of - 365 days + horizon): last year's activity in the "
        "window matching the coming horizon",
    ),
    "season_share": FeatureDoc(
        "share",
        "share of purchase days that fell, in an earlier year, within the calendar window of "
        "the coming horizon (seasonal affinity); NaN when the history does not reach back to "
        "such a window",
    ),
    "calendar_sin": FeatureDoc(
        "unitless",
        "sine of as_of's position in the (365.25-day) year, the same for every customer: "
        "with calendar_cos it tells a model trained on cutoffs across the year which season "
        "the horizon covers",
    ),
    "calendar_cos": FeatureDoc("unitless", "cosine of as_of's position in the year"),
    "discount_share": FeatureDoc(
        "share", "share of orders with at least one discounted or campaign line"
    ),
    "n_returns": FeatureDoc("returns", "number of return or cancellation rows"),
    "return_rate": FeatureDoc(
        "share", "returned value / (order spend + returned value); 0 without returns"
    ),
    "n_categories": FeatureDoc("categories", "distinct product categories bought (0 if unknown)"),
    "weekday_concentration": FeatureDoc(
        "share", "share of orders on the customer's most frequent weekday (1 = always the same)"
    ),
    "n_channels": FeatureDoc("channels", "distinct channels used (0 if unknown)"),
}

FEATURES: dict[str, FeatureDoc] = {**_BASE, **_WINDOWED, **_BEHAVIOUR}
FEATURE_COLUMNS: tuple[str, ...] = tuple(FEATURES)

# Model inputs that are not built from the log directly but by the fitted buy-till-you-die
# baselines (``training.models.btyd_features``, ``use_baselines=True``, the default) from the features
# above. Documented here so that every column a model can be explained by has a meaning.
BTYD_FEATURES: dict[str, FeatureDoc] = {
    "bgnbd_p_alive": FeatureDoc("probability", "BG/NBD probability the customer is still active"),
    "bgnbd_expected_purchases_h": FeatureDoc(
        "purchase days", "BG/NBD expected repeat purchase days in the coming horizon"
    ),
    "bgnbd_p_no_purchase_h": FeatureDoc(
        "probability", "BG/NBD probability of no purchase in the coming horizon"
    ),
    "pnbd_p_alive": FeatureDoc(
        "probability", "Pareto/NBD probability the customer is still active"
    ),
}
MODEL_INPUTS: dict[str, FeatureDoc] = {**FEATURES, **BTYD_FEATURES}


def describe() -> str:
    """A plain-text table of the feature columns, for ``retain features --describe``."""
    width = max(len(name) for name in MODEL_INPUTS)
    lines = [f"{name:<{width}}  [{doc.unit}]  {doc.description}" for name, doc in FEATURES.items()]
    lines.append("")
    lines.append("model inputs added by the fitted BTYD baselines (not in the feature table):")
    lines.extend(
        f"{name:<{width}}  [{doc.unit}]  {doc.description}" for name, doc in BTYD_FEATURES.items()
    )
    return "\n".join(lines)
