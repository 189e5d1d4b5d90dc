"""The offer decision: per-customer scores and segments in, one offer decision per customer out.

The rules come from :mod:`serving.offers.policy`, the checked input arrays from
:mod:`serving.offers.inputs`, the holdout draw from :mod:`serving.offers.holdout`.

Decision for each customer (all steps are vectorised over the whole frame):

1. **Rule**: the first rule whose ``match`` holds wins (segment, churn-probability range,
   recency, value, ``min_uplift`` when the model has an uplift model). No match -> ``offer="none"``, ``offer_rule=""``.
2. **Send date**: ``days_after_last_purchase: N``, ``now`` or
   ``days_before_expected_next_purchase: N``, computed on UTC calendar days and never before
   the ``as_of`` day (a date in the past cannot be sent). Without an expected next purchase
   (NaT) the ``days_before_expected_next_purchase`` rule sends on the ``as_of`` day.
3. **Expected value**: ``spend_at_stake * churn_probability * lift - cost``, where spend at
   stake is ``expected_spend_365d`` (or ``expected_spend_horizon`` when the rule says
   ``spend_at_stake: horizon``). The lift is the assumed share of the at-risk spend that the
   offer keeps; the cost is what one offer costs (message plus incentive). When the scores
   carry an ``uplift`` (the artifact has an uplift model, ``training.models.uplift``), the measured
   response replaces the assumption: ``spend_at_stake * uplift - cost``, so an offer to a
   customer who buys anyway (uplift 0) or is put off by it (uplift < 0) has negative value.
4. **Holdout**: a deterministic ``holdout_share`` of customers, chosen by hashing
   ``"{campaign}:{customer_id}"``, gets no offer so the campaign's lift can be measured.
5. **Suppression**: holdout customers (reason ``holdout``) and offers with negative expected
   value (reason ``negative_expected_value``) get ``offer="none"`` and ``suppressed=True``.
   Their ``offer_rule``, ``offer_channel``, ``offer_send_date``, ``offer_reason`` and
   ``offer_expected_value`` still say what would have been sent: the audit trail, and the
   window over which the holdout is compared with the treated group. Only rows with
   ``offer != "none"`` are to be sent. Every row carries its ``campaign`` (the holdout's
   seed), so ``retain lift`` can tell campaigns apart in the assignments it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.retention.segments import SEGMENTS
from serving.offers.holdout import holdout_draw
from serving.offers.inputs import OfferInputs, ScoresError
from serving.offers.policy import NO_OFFER, OfferPolicy, Rule

OFFER_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "campaign",
    "offer",
    "offer_channel",
    "offer_send_date",
    "offer_expected_value",
    "offer_reason",
    "offer_rule",
    "holdout",
    "suppressed",
    "suppressed_reason",
)
SUPPRESSED_HOLDOUT = "holdout"
SUPPRESSED_NEGATIVE_EV = "negative_expected_value"


def apply_policy(
    scores: pd.DataFrame, policy: OfferPolicy, campaign: str | None = None
) -> pd.DataFrame:
    """One offer decision per scores row, on the same index (columns: ``OFFER_COLUMNS``).

    ``campaign`` (default ``policy.campaign``) seeds the holdout draw, so each campaign has
    its own control group and the same customer in the same campaign is always drawn alike.
    """
    decisions = decide_offers(OfferInputs.from_scores(scores, policy), policy, campaign)
    out = pd.DataFrame(
        {"customer_id": scores["customer_id"].reset_index(drop=True), **decisions.columns()}
    )
    out.index = scores.index
    return out[list(OFFER_COLUMNS)]


class OfferDecisions:
    """The policy's decisions as arrays: label codes into small per-policy tables.

    Why codes: a million customers share a handful of labels, so frames take them with one
    Arrow ``take`` and HTTP responses index a tuple; nobody builds a million strings twice.
    """

    def __init__(
        self,
        rules: list[Rule],
        rule_idx: np.ndarray,
        expected_value: np.ndarray,
        send_day: np.ndarray,
        holdout: np.ndarray,
        negative: np.ndarray,
        tables: dict[str, tuple[str, ...]] | None = None,
        campaign: str = "default",
    ) -> None:
        self.campaign = campaign
        self.matched = rule_idx >= 0
        self.holdout = holdout
        self.negative = negative
        self.suppressed = holdout | negative
        self.sent = self.matched & ~self.suppressed
        self.expected_value = expected_value.astype(np.float64)
        self.send_day = send_day
        none_idx = len(rules)
        self._rule_idx = rule_idx
        self._audit = np.where(self.matched, rule_idx, none_idx)
        self._tables = _label_tables(rules) if tables is None else tables

    def table(self, name: str) -> tuple[str, ...]:
        return self._tables[name]

    def code(self, name: str) -> np.ndarray:
        """Positions into :meth:`table` ``(name)`` per customer."""
        if name == "offer":
            return np.where(self.sent, self._rule_idx, len(self._tables["offer"]) - 1)
        if name == "suppressed_reason":
            return np.where(self.holdout, 1, np.where(self.negative, 2, 0))
        return self._audit

    def labels(self, name: str) -> list[str]:
        """Labels as a list (what HTTP responses write): one lookup per customer in the
        label table, no object array."""
        table = self._tables[name]
        return [table[c] for c in self.code(name).tolist()]

    def texts(self, name: str) -> np.ndarray:
        """Labels as an object array (for HTTP responses)."""
        return np.asarray(self._tables[name], dtype=object)[self.code(name)]

    def columns(self) -> dict[str, Any]:
        """``OFFER_COLUMNS`` but ``customer_id``, with the dtypes frames and Parquet use."""
        return {
            "campaign": pd.array(
                pa.array([self.campaign], type=pa.string()).take(
                    pa.array(np.zeros(len(self.holdout), dtype=np.int64))
                ),
                dtype="str",
            ),
            "offer": self._labels("offer"),
            "offer_channel": self._labels("channel"),
            "offer_send_date": pd.DatetimeIndex(self.send_day.astype("datetime64[us]"))
            .tz_localize("UTC")
            .array,
            "offer_expected_value": self.expected_value,
            "offer_reason": self._labels("reason"),
            "offer_rule": self._labels("rule"),
            "holdout": self.holdout,
            "suppressed": self.suppressed,
            "suppressed_reason": self._labels("suppressed_reason"),
        }

    def _labels(self, name: str) -> pd.api.extensions.ExtensionArray:
        """One Arrow ``take`` from the label table: a few strings, not 1M Python objects."""
        table = pa.array(list(self._tables[name]), type=pa.string())
        return pd.array(table.take(pa.array(self.code(name))), dtype="str")


def decide_offers(
    inputs: OfferInputs, policy: OfferPolicy, campaign: str | None = None
) -> OfferDecisions:
    """First matching rule, send day, expected value, holdout draw and suppression."""
    campaign = policy.campaign if campaign is None else campaign
    if not isinstance(campaign, str) or not campaign.strip():
        raise ScoresError(f"campaign must be a non-empty string, got {campaign!r}")
    campaign = campaign.strip()  # " spring " is "spring": one holdout draw, as lift reads it
    ctx = inputs
    n = len(ctx.churn)
    rules = policy.rules
    plan = policy.derived(PolicyPlan)

    if plan.by_rule:
        rule_idx = np.full(n, -1, dtype=np.int64)
        for i, rule in enumerate(rules):
            free = rule_idx < 0
            if not free.any():
                break
            rule_idx[free & ctx.matches(rule.match)] = i
    else:
        hits = plan.match_all(ctx)  # (rules, customers): the first rule that holds wins
        rule_idx = np.where(hits.any(axis=0), hits.argmax(axis=0), -1)
    matched = rule_idx >= 0
    safe_idx = np.where(matched, rule_idx, 0)

    lift = plan.lift[safe_idx]
    cost = plan.cost[safe_idx]
    use_horizon = plan.use_horizon[safe_idx]
    spend = np.where(use_horizon, ctx.spend_horizon, ctx.spend_365d)
    # measured response when there is one, else the policy's assumed lift of the churn risk
    response = ctx.churn * lift if ctx.uplift is None else ctx.uplift
    expected_value = np.where(matched, spend * response - cost, 0.0)

    send_day = _send_days(plan, safe_idx, ctx)
    send_day = np.where(matched, send_day, np.datetime64("NaT", "D"))

    holdout = holdout_draw(ctx.customer_id, campaign) < policy.holdout_share
    negative = matched & (expected_value < 0.0) & ~holdout
    return OfferDecisions(
        rules,
        rule_idx,
        expected_value,
        send_day,
        holdout,
        negative,
        tables=plan.labels,
        campaign=campaign,
    )


class PolicyPlan:
    """A policy's rules as arrays, built once per policy (scoring a request reuses them).

    ``match_all`` evaluates every rule's ``match`` for every customer in a few array
    operations (the same comparisons as :meth:`OfferInputs.matches`); policies matching on
    ``value_bands`` (a pandas column) keep the rule-by-rule loop (``by_rule``).
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.lift = np.array([r.lift for r in rules])
        self.cost = np.array([r.cost for r in rules])
        self.use_horizon = np.array([r.spend_at_stake == "horizon" for r in rules])
        self.send_kind = np.array(
            [
                0 if r.send.now else 1 if r.send.days_after_last_purchase is not None else 2
                for r in rules
            ]
        )
        self.send_offset = np.array(
            [
                r.send.days_after_last_purchase
                if r.send.days_after_last_purchase is not None
                else -(r.send.days_before_expected_next_purchase or 0)
                for r in rules
            ],
            dtype=np.int64,
        ).astype("timedelta64[D]")
        self.labels = _label_tables(rules)
        matches = [r.match for r in rules]
        self.by_rule = any(m.value_bands is not None for m in matches)
        self.churn_min = np.array([[m.churn_probability.min] for m in matches])
        self.churn_max = np.array([[m.churn_probability.max] for m in matches])
        self.segments = np.ones((len(matches), len(SEGMENTS)), dtype=bool)
        for row, m in zip(self.segments, matches, strict=True):
            if m.segments is not None:
                row[:] = False
                row[[SEGMENTS.index(s) for s in m.segments]] = True
        low, high = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        days = [m.days_since_last_purchase for m in matches]
        self.days_min = np.array(
            [[low if d is None or d.min is None else d.min] for d in days], dtype=np.int64
        )
        self.days_max = np.array(
            [[high if d is None or d.max is None else d.max] for d in days], dtype=np.int64
        )
        self.check_days = any(d is not None for d in days)
        self.spend_min = np.array(
            [
                [-np.inf if m.min_expected_spend_365d is None else m.min_expected_spend_365d]
                for m in matches
            ]
        )
        self.uplift_min = np.array(
            [[-np.inf if m.min_uplift is None else m.min_uplift] for m in matches]
        )
        self.check_uplift = any(m.min_uplift is not None for m in matches)
        self.quantiles = [
            (i, m.min_value_quantile)
            for i, m in enumerate(matches)
            if m.min_value_quantile is not None
        ]

    def match_all(self, ctx: OfferInputs) -> np.ndarray:
        """(rules, customers) bool: where each rule's ``match`` holds."""
        churn = ctx.churn
        hits = (churn >= self.churn_min) & (churn <= self.churn_max)
        hits &= self.segments[:, ctx.segment_codes]
        if self.check_days:
            hits &= (ctx.days_since_last >= self.days_min) & (ctx.days_since_last <= self.days_max)
        floor = self.spend_min
        if self.quantiles:  # spend >= a and spend >= b is spend >= max(a, b)
            floor = floor.copy()
            for i, q in self.quantiles:
                floor[i, 0] = max(floor[i, 0], ctx.value_threshold(q))
        hits &= ctx.spend_365d >= floor
        if self.check_uplift:
            if ctx.uplift is None:
                raise ScoresError("the policy matches on min_uplift but no uplift was given")
            hits &= ctx.uplift >= self.uplift_min
        return hits


def _label_tables(rules: Sequence[Rule]) -> dict[str, tuple[str, ...]]:
    """Label tables by rule position; the last entry is the "nothing" label."""
    return {
        "offer": (*(r.offer for r in rules), NO_OFFER),
        "channel": (*(r.channel for r in rules), ""),
        "reason": (*(r.reason for r in rules), "no rule matched"),
        "rule": (*(r.name for r in rules), ""),
        "suppressed_reason": ("", SUPPRESSED_HOLDOUT, SUPPRESSED_NEGATIVE_EV),
    }


def _send_days(plan: PolicyPlan, safe_idx: np.ndarray, ctx: OfferInputs) -> np.ndarray:
    """Send day per row under its rule, clipped to the ``as_of`` day (never in the past)."""
    kind = plan.send_kind[safe_idx]
    offset = plan.send_offset[safe_idx]
    after_last = ctx.last_day + offset
    before_next = np.where(np.isnat(ctx.next_day), ctx.as_of_day, ctx.next_day + offset)
    day = np.where(kind == 1, after_last, np.where(kind == 2, before_next, ctx.as_of_day))
    return np.maximum(day, ctx.as_of_day)
