"""Rule-based customer segments on top of the feature table, for reports and offer policies.

Every customer gets exactly one segment. When several rules match, the first in
``SEGMENTS`` wins:

1. ``lapsed``: gone by any reasonable standard (no purchase for ``lapsed_days``, or far
   beyond their own rhythm). Checked first because nothing else about a lapsed customer is
   actionable in the same way: a lapsed loyal customer needs a win-back, not a loyalty perk.
2. ``at_risk``: overdue against their own rhythm (``recency_gap_ratio`` above
   ``at_risk_gap_ratio``), or, for customers with too few purchase days to have a rhythm,
   no purchase for ``at_risk_days``. Before the behavioural segments for the same reason:
   being overdue is the time-critical fact.
3. ``sale_only``: every order discounted (and at least ``sale_only_min_orders`` orders):
   they answer to campaigns, so offering them full price is wasted and offering them
   discounts is cheap; this matters more than how often they bought.
4. ``first_time`` / 5. ``second_time``: one or two purchase days; too little history for a
   rhythm, and the second purchase is the classic conversion point.
6. ``loyal``: at least ``loyal_min_purchase_days`` purchase days at a steady rhythm (gap
   coefficient of variation below ``loyal_max_gap_cv``) and not overdue
   (``recency_gap_ratio`` at most ``loyal_max_gap_ratio``).
7. ``regular``: everyone else.

Input is the ``build_features`` table (see ``features.catalog``); only the columns named in
``REQUIRED_FEATURES`` are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

Segment = Literal[
    "lapsed",
    "at_risk",
    "sale_only",
    "first_time",
    "second_time",
    "loyal",
    "regular",
]
SEGMENTS: tuple[str, ...] = get_args(Segment)  # the one list of segment names, in rule order
REQUIRED_FEATURES: tuple[str, ...] = (
    "recency_days",
    "n_orders",
    "n_purchase_days",
    "gap_mean_days",
    "gap_std_days",
    "recency_gap_ratio",
    "discount_share",
)


class SegmentConfig(BaseModel):
    """Thresholds of the segment rules (days are calendar days, ratios are unitless)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lapsed_days: float = Field(365.0, gt=0, description="recency beyond this: lapsed")
    lapsed_gap_ratio: float = Field(
        4.0, gt=0, description="recency_gap_ratio beyond this (with a rhythm): lapsed"
    )
    at_risk_gap_ratio: float = Field(
        1.5, gt=0, description="recency_gap_ratio beyond this (with a rhythm): at risk"
    )
    at_risk_days: float = Field(
        120.0, gt=0, description="recency beyond this for customers without a rhythm: at risk"
    )
    rhythm_min_purchase_days: int = Field(
        3, ge=2, description="purchase days needed before the customer's own gaps are trusted"
    )
    sale_only_min_orders: int = Field(
        2, ge=1, description="orders needed before 'all discounted' means sale-only"
    )
    loyal_min_purchase_days: int = Field(3, ge=3, description="purchase days needed for loyal")
    loyal_max_gap_cv: float = Field(
        0.75, gt=0, description="gap_std_days / gap_mean_days below this: steady rhythm"
    )
    loyal_max_gap_ratio: float = Field(
        1.0, gt=0, description="recency_gap_ratio at most this: not overdue"
    )

    @model_validator(mode="after")
    def _ordered(self) -> SegmentConfig:
        if self.lapsed_gap_ratio <= self.at_risk_gap_ratio:
            raise ValueError(
                f"lapsed_gap_ratio ({self.lapsed_gap_ratio}) must exceed "
                f"at_risk_gap_ratio ({self.at_risk_gap_ratio})"
            )
        if self.lapsed_days <= self.at_risk_days:
            raise ValueError(
                f"lapsed_days ({self.lapsed_days}) must exceed at_risk_days ({self.at_risk_days})"
            )
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SegmentConfig:
        return cls.model_validate(data or {})


def assign_segments(features: pd.DataFrame, config: SegmentConfig | None = None) -> pd.Series:
    """One segment per row of ``features``; a categorical Series named ``segment``, same index."""
    missing = [c for c in REQUIRED_FEATURES if c not in features.columns]
    if missing:
        raise ValueError(f"feature table lacks column(s) {missing} needed for segments")
    codes = segment_codes({c: features[c].to_numpy(dtype=float) for c in REQUIRED_FEATURES}, config)
    return pd.Series(
        pd.Categorical.from_codes(codes, categories=list(SEGMENTS)),
        index=features.index,
        name="segment",
    )


def segment_codes(
    columns: Mapping[str, np.ndarray], config: SegmentConfig | None = None
) -> np.ndarray:
    """Positions in ``SEGMENTS`` (int8) from the ``REQUIRED_FEATURES`` arrays.

    The array form of :func:`assign_segments` for the scorer (no pandas per request).
    """
    cfg = config or SegmentConfig()
    recency = np.asarray(columns["recency_days"], dtype=float)
    n_orders = np.asarray(columns["n_orders"], dtype=float)
    n_days = np.asarray(columns["n_purchase_days"], dtype=float)
    gap_mean = np.asarray(columns["gap_mean_days"], dtype=float)
    gap_std = np.asarray(columns["gap_std_days"], dtype=float)
    ratio = np.asarray(columns["recency_gap_ratio"], dtype=float)
    discount = np.asarray(columns["discount_share"], dtype=float)

    has_rhythm = n_days >= cfg.rhythm_min_purchase_days
    with np.errstate(divide="ignore", invalid="ignore"):
        gap_cv = np.where(gap_mean > 0, gap_std / gap_mean, np.nan)
    # Comparisons with NaN are False, so missing gaps never trigger a rhythm rule.
    lapsed = (recency > cfg.lapsed_days) | (has_rhythm & (ratio > cfg.lapsed_gap_ratio))
    at_risk = (has_rhythm & (ratio > cfg.at_risk_gap_ratio)) | (
        ~has_rhythm & (recency > cfg.at_risk_days)
    )
    sale_only = (n_orders >= cfg.sale_only_min_orders) & (discount >= 1.0)
    loyal = (
        (n_days >= cfg.loyal_min_purchase_days)
        & (gap_cv < cfg.loyal_max_gap_cv)
        & (ratio <= cfg.loyal_max_gap_ratio)
    )
    conditions = [lapsed, at_risk, sale_only, n_days == 1, n_days == 2, loyal]
    # np.select(conditions, 0..5, default=6) without its per-call set-up: assign the
    # conditions last to first so that the first one that holds wins
    codes = np.full(np.broadcast(*conditions).shape, len(SEGMENTS) - 1, dtype=np.int8)
    for code in range(len(conditions) - 1, -1, -1):
        codes[conditions[code]] = code
    return codes


def summarize_segments(features: pd.DataFrame, segments: pd.Series) -> pd.DataFrame:
    """Size and value per segment: customers, share, total and mean spend, share of spend."""
    if "monetary_total" not in features.columns:
        raise ValueError("feature table lacks column 'monetary_total' needed for segment value")
    spend = features["monetary_total"].astype(float)
    grouped = spend.groupby(segments.reindex(features.index), observed=False)
    table = pd.DataFrame(
        {
            "customers": grouped.size(),
            "spend_total": grouped.sum(),
        }
    ).reindex(list(SEGMENTS), fill_value=0)
    n = max(int(table["customers"].sum()), 1)
    total = float(table["spend_total"].sum())
    table["share"] = table["customers"] / n
    table["spend_mean"] = table["spend_total"] / table["customers"].where(table["customers"] > 0)
    table["spend_share"] = table["spend_total"] / total if total > 0 else 0.0
    table.index.name = "segment"
    return table[["customers", "share", "spend_total", "spend_mean", "spend_share"]]
