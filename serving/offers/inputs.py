"""The scores contract of the offer policy: the columns the rules read, checked into arrays.

:class:`OfferInputs` is built once per call, from a scores frame (:meth:`OfferInputs.from_scores`,
batch and notebooks) or from the scorer's arrays (HTTP); every check that names a bad row or
column happens here, so the decision itself (:mod:`serving.offers.decide`) only computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isfinite

import numpy as np
import pandas as pd

from features.errors import InputError
from features.retention.segments import SEGMENTS
from serving.offers.policy import Match, OfferPolicy, Rule, uplift_rules

REQUIRED_SCORE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "as_of",
    "segment",
    "churn_probability",
    "expected_next_purchase_date",
    "expected_spend_horizon",
    "expected_spend_365d",
    "last_purchase_at",
)
_FEW = 16


class ScoresError(InputError):
    """The scores frame handed to ``apply_policy`` breaks the input contract."""


class OfferInputs:
    """The numpy-typed columns the rules read, checked once on construction.

    ``customer_id`` names offending rows in errors and seeds the holdout draw; segment codes
    index ``features.retention.segments.SEGMENTS``.
    """

    def __init__(
        self,
        customer_id: np.ndarray | pd.Series,
        segment_codes: np.ndarray,
        churn: np.ndarray,
        spend_365d: np.ndarray,
        spend_horizon: np.ndarray,
        as_of_day: np.ndarray,
        last_day: np.ndarray,
        next_day: np.ndarray,
        value_band: pd.Series | None = None,
        uplift: np.ndarray | None = None,
    ) -> None:
        for name, values in (
            ("churn_probability", churn),
            ("expected_spend_365d", spend_365d),
            ("expected_spend_horizon", spend_horizon),
        ):
            if not _all_finite(values):
                bad = ~np.isfinite(values)
                raise ScoresError(
                    f"{name} is missing or not finite in {int(bad.sum())} row(s), "
                    f"e.g. customer_id {_examples(customer_id, bad)}"
                )
        if not _all_within(churn, 0.0, 1.0):
            outside = (churn < 0.0) | (churn > 1.0)
            raise ScoresError(
                f"churn_probability must lie in [0, 1]; {int(outside.sum())} row(s) outside, "
                f"e.g. customer_id {_examples(customer_id, outside)}"
            )
        for name, days in (("as_of", as_of_day), ("last_purchase_at", last_day)):
            if np.isnat(days).any():
                bad = np.isnat(days)
                raise ScoresError(
                    f"{name} is missing in {int(bad.sum())} row(s), "
                    f"e.g. customer_id {_examples(customer_id, bad)}"
                )
        self.customer_id = customer_id
        self.segment_codes = segment_codes
        self.churn = churn
        self.spend_365d = spend_365d
        self.spend_horizon = spend_horizon
        self.as_of_day = as_of_day
        self.last_day = last_day
        self.next_day = next_day
        self.value_band = value_band
        if uplift is not None and not _all_within(uplift, -1.0, 1.0):
            bad = ~((uplift >= -1.0) & (uplift <= 1.0))  # NaN fails too
            raise ScoresError(
                f"uplift must lie in [-1, 1]; {int(bad.sum())} row(s) do not, "
                f"e.g. customer_id {_examples(customer_id, bad)}"
            )
        self.uplift = uplift
        self.days_since_last = (as_of_day - last_day).astype(np.int64)
        self._quantiles: dict[float, float] = {}

    @classmethod
    def from_scores(cls, scores: pd.DataFrame, policy: OfferPolicy) -> OfferInputs:
        if not isinstance(scores, pd.DataFrame):
            raise ScoresError(f"scores must be a pandas DataFrame, got {type(scores).__name__}")
        missing = [c for c in REQUIRED_SCORE_COLUMNS if c not in scores.columns]
        if missing:
            raise ScoresError(
                f"scores frame is missing required column(s) {missing}; "
                f"required: {list(REQUIRED_SCORE_COLUMNS)}"
            )
        ids = scores["customer_id"]
        if ids.isna().any():
            raise ScoresError(f"customer_id is empty in {int(ids.isna().sum())} row(s)")

        unknown = ~scores["segment"].isin(SEGMENTS).to_numpy(dtype=bool)
        if unknown.any():
            bad = pd.unique(scores["segment"].to_numpy()[unknown])[:5]
            raise ScoresError(
                f"segment has {int(unknown.sum())} row(s) with unknown value(s) {list(bad)} "
                f"(e.g. customer_id {_examples(ids, unknown)}); known: {list(SEGMENTS)}"
            )
        segment = pd.Categorical(scores["segment"], categories=list(SEGMENTS))
        value_band = None
        if any(rule.match.value_bands is not None for rule in policy.rules):
            if "value_band" not in scores.columns:
                raise ScoresError(
                    "the policy matches on value_bands but the scores frame has no "
                    "'value_band' column"
                )
            value_band = scores["value_band"]
        uplift = None
        if "uplift" in scores.columns and scores["uplift"].notna().any():
            uplift = _float_column(scores, "uplift")
        check_uplift_rules(policy.rules, uplift is not None, "the scores have no 'uplift'")
        return cls(
            ids,
            segment_codes=segment.codes,
            churn=_float_column(scores, "churn_probability"),
            spend_365d=_float_column(scores, "expected_spend_365d"),
            spend_horizon=_float_column(scores, "expected_spend_horizon"),
            as_of_day=_utc_days(scores, "as_of"),
            last_day=_utc_days(scores, "last_purchase_at"),
            next_day=_utc_days(scores, "expected_next_purchase_date"),
            value_band=value_band,
            uplift=uplift,
        )

    def value_threshold(self, quantile: float) -> float:
        """``expected_spend_365d`` at ``quantile`` of this frame (cached per quantile)."""
        if quantile not in self._quantiles:
            self._quantiles[quantile] = (
                float(np.quantile(self.spend_365d, quantile)) if len(self.spend_365d) else 0.0
            )
        return self._quantiles[quantile]

    def matches(self, match: Match) -> np.ndarray:
        mask = (self.churn >= match.churn_probability.min) & (
            self.churn <= match.churn_probability.max
        )
        if match.segments is not None:
            allowed = np.zeros(len(SEGMENTS), dtype=bool)
            allowed[[SEGMENTS.index(s) for s in match.segments]] = True
            mask &= allowed[self.segment_codes]
        if match.days_since_last_purchase is not None:
            days = match.days_since_last_purchase
            if days.min is not None:
                mask &= self.days_since_last >= days.min
            if days.max is not None:
                mask &= self.days_since_last <= days.max
        if match.min_expected_spend_365d is not None:
            mask &= self.spend_365d >= match.min_expected_spend_365d
        if match.min_value_quantile is not None:
            mask &= self.spend_365d >= self.value_threshold(match.min_value_quantile)
        if match.value_bands is not None:
            if self.value_band is None:
                raise ScoresError(
                    "the policy matches on value_bands but no 'value_band' column was given"
                )
            mask &= self.value_band.isin(match.value_bands).to_numpy(dtype=bool)
        if match.min_uplift is not None:
            if self.uplift is None:
                raise ScoresError("the policy matches on min_uplift but no uplift was given")
            mask &= self.uplift >= match.min_uplift
        return mask


def check_uplift_rules(rules: Sequence[Rule], have_uplift: bool, why: str) -> None:
    """A rule on ``min_uplift`` without uplift scores would match nobody: refuse it instead."""
    using = [] if have_uplift else uplift_rules(rules)
    if using:
        raise ScoresError(f"{', '.join(using)} needs an uplift per customer, but {why}")


def _all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite (a request's few values checked one by one: cheaper
    than two array calls)."""
    if len(values) <= _FEW:
        return all(map(isfinite, values.tolist()))
    return bool(np.isfinite(values).all())


def _all_within(values: np.ndarray, low: float, high: float) -> bool:
    """Whether every value lies in [low, high] (NaN does not), as :func:`_all_finite`."""
    if len(values) <= _FEW:
        return all(low <= v <= high for v in values.tolist())
    return bool(((values >= low) & (values <= high)).all())


def _examples(ids: pd.Series | np.ndarray, mask: np.ndarray) -> list[str]:
    return [str(x) for x in np.asarray(ids)[mask][:5]]


def _float_column(scores: pd.DataFrame, name: str) -> np.ndarray:
    try:
        return pd.to_numeric(scores[name], errors="raise").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    except (ValueError, TypeError) as exc:
        raise ScoresError(f"{name} must be numeric: {exc}") from exc


def _utc_days(scores: pd.DataFrame, name: str) -> np.ndarray:
    """A timestamp column as UTC calendar days (``datetime64[D]``); naive input is UTC."""
    column = scores[name]
    try:
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            stamps = column.dt.tz_convert("UTC").dt.tz_localize(None)
        elif pd.api.types.is_datetime64_dtype(column.dtype):
            stamps = column
        else:
            stamps = pd.to_datetime(column, utc=True).dt.tz_localize(None)
    except (ValueError, TypeError) as exc:
        raise ScoresError(f"{name} must hold timestamps: {exc}") from exc
    return stamps.to_numpy().astype("datetime64[D]")
