"""The offer policy: per-customer scores and segments in, one offer decision per customer out.

The policy is data, not code: an ordered list of rules in YAML (``serving/offer_policy.yaml`` is
the default), validated with pydantic on load so a typo fails at start-up with the path of the
bad field (``rules[2].send.days_after_last_purchase``) instead of silently sending nothing.

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
   carry an ``uplift`` (the artifact has an uplift model, ``training.uplift``), the measured
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

import hashlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from features.errors import InputError

SEGMENTS: tuple[str, ...] = (
    "first_time",
    "second_time",
    "sale_only",
    "loyal",
    "at_risk",
    "lapsed",
    "regular",
)
CHANNELS: tuple[str, ...] = ("email", "sms", "push", "in_app", "direct_mail")
NO_OFFER = "none"
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
# up to this many ids _holdout_draw hashes each one instead of the distinct ones
_HASH_EACH_MAX = 64
SUPPRESSED_HOLDOUT = "holdout"
SUPPRESSED_NEGATIVE_EV = "negative_expected_value"

Segment = Literal["first_time", "second_time", "sale_only", "loyal", "at_risk", "lapsed", "regular"]
Channel = Literal["email", "sms", "push", "in_app", "direct_mail"]
Code = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegativeDays = Annotated[int, Field(ge=0, le=3650)]


class OfferPolicyError(InputError):
    """The policy YAML is unreadable or invalid; the message names each bad field path."""


class ScoresError(InputError):
    """The scores frame handed to ``apply_policy`` breaks the input contract."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbabilityRange(_Strict):
    """Inclusive churn-probability band ``min <= p <= max``."""

    min: Probability = 0.0
    max: Probability = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class DaysRange(_Strict):
    """Inclusive range of whole UTC calendar days; a missing bound is open."""

    min: NonNegativeDays | None = None
    max: NonNegativeDays | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class Match(_Strict):
    """Which customers a rule takes; every condition given must hold, an empty match takes all.

    ``min_value_quantile`` is relative to the frame passed to ``apply_policy`` (``0.5`` = the
    upper half by ``expected_spend_365d``): score the whole population in one call, or use the
    absolute ``min_expected_spend_365d``, when the result must not depend on batch chunking.
    ``min_uplift`` takes customers whose predicted uplift (incremental probability of buying
    in the window if sent) is at least this; it needs scores with an ``uplift``.
    """

    segments: Annotated[list[Segment], Field(min_length=1)] | None = None
    churn_probability: ProbabilityRange = ProbabilityRange()
    days_since_last_purchase: DaysRange | None = None
    min_expected_spend_365d: Annotated[float, Field(ge=0.0)] | None = None
    min_value_quantile: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    value_bands: Annotated[list[str], Field(min_length=1)] | None = None
    min_uplift: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None


class SendRule(_Strict):
    """When to send; exactly one of the three forms (YAML ``send: now`` is accepted)."""

    days_after_last_purchase: NonNegativeDays | None = None
    days_before_expected_next_purchase: NonNegativeDays | None = None
    now: Literal[True] | None = None

    @model_validator(mode="before")
    @classmethod
    def _now_shorthand(cls, value: Any) -> Any:
        return {"now": True} if value == "now" else value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [
            name
            for name in ("days_after_last_purchase", "days_before_expected_next_purchase", "now")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'now', 'days_after_last_purchase: N', "
                f"'days_before_expected_next_purchase: N' (got {given or 'none'})"
            )
        return self


class Rule(_Strict):
    """One line of the policy: who (``match``) gets what (``offer``), how, when and at what value."""

    name: Code
    reason: Annotated[str, Field(min_length=1, max_length=200)]
    match: Match = Match()
    offer: Code
    channel: Channel
    send: SendRule
    lift: Probability
    cost: Annotated[float, Field(ge=0.0)]
    spend_at_stake: Literal["365d", "horizon"] = "365d"

    @field_validator("offer")
    @classmethod
    def _not_none(cls, value: str) -> str:
        if value == NO_OFFER:
            raise ValueError(f"'{NO_OFFER}' is reserved for customers who get no offer")
        return value


class OfferPolicy(_Strict):
    """The whole policy: ordered rules (first match wins), holdout share and campaign name."""

    version: Literal[1] = 1
    campaign: Annotated[str, Field(min_length=1, max_length=100)] = "default"
    holdout_share: Probability = 0.1
    currency: Annotated[str, Field(min_length=1, max_length=10)] = "USD"
    rules: Annotated[list[Rule], Field(min_length=1)]

    _plan_cache: tuple[tuple[Rule, ...], _PolicyPlan] | None = PrivateAttr(default=None)

    def _plan(self) -> _PolicyPlan:
        """The rules as arrays, built once per policy and reused by every scoring call.

        Rebuilt when the rule objects differ from those it was built from (a copy with other
        rules, a list edited in place); it holds them, so their identities stay unique.
        """
        rules = tuple(self.rules)
        cached = self._plan_cache
        if (
            cached is None
            or len(cached[0]) != len(rules)
            or any(a is not b for a, b in zip(cached[0], rules, strict=True))
        ):
            cached = self._plan_cache = (rules, _PolicyPlan(rules))
        return cached[1]

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        names = [rule.name for rule in rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique; repeated: {repeated}")
        return rules

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> OfferPolicy:
        """Load and validate a policy from a file path or from YAML text."""
        text, origin = _read_source(path_or_text)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise OfferPolicyError(f"offer policy {origin} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            hint = " (if this was meant as a path, no such file exists)" if origin == "text" else ""
            raise OfferPolicyError(
                f"offer policy {origin} must be a YAML mapping, got {type(data).__name__}{hint}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise OfferPolicyError(_format_errors(exc, origin)) from exc

    @classmethod
    def default(cls) -> OfferPolicy:
        """The shipped policy (``serving/offer_policy.yaml``), read as package data."""
        text = resources.files("serving").joinpath("offer_policy.yaml").read_text("utf-8")
        return cls.from_yaml(text)

    def to_yaml(self) -> str:
        """YAML that ``from_yaml`` reads back to an equal policy (comments are not kept)."""
        return yaml.safe_dump(
            self.model_dump(mode="json", exclude_none=True),
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )


def _read_source(path_or_text: str | Path) -> tuple[str, str]:
    if isinstance(path_or_text, Path):
        if not path_or_text.is_file():
            raise OfferPolicyError(f"offer policy file not found: {path_or_text}")
        return path_or_text.read_text("utf-8"), f"file {path_or_text}"
    if "\n" not in path_or_text and len(path_or_text) < 4096:
        candidate = Path(path_or_text)
        try:
            is_file = candidate.is_file()
        except OSError:  # e.g. a one-line YAML text longer than a file name may be
            is_file = False
        if is_file:
            return candidate.read_text("utf-8"), f"file {candidate}"
    return path_or_text, "text"


def _field_path(loc: tuple[int | str, ...]) -> str:
    """Pydantic location -> ``rules[2].send.days_after_last_purchase``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<policy>"


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid offer policy ({origin}):"]
    for error in exc.errors():
        value = error.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        lines.append(f"  {_field_path(error['loc'])}: {error['msg']}{shown}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- apply


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
    if not isinstance(campaign, str) or not campaign:
        raise ScoresError(f"campaign must be a non-empty string, got {campaign!r}")
    ctx = inputs
    n = len(ctx.churn)
    rules = policy.rules
    plan = policy._plan()

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

    holdout = _holdout_draw(ctx.customer_id, campaign) < policy.holdout_share
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


class _PolicyPlan:
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


class OfferInputs:
    """The numpy-typed columns the rules read, checked once on construction.

    ``customer_id`` names offending rows in errors and seeds the holdout draw; segment codes
    index this module's ``SEGMENTS``.
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
            if not np.isfinite(values).all():
                bad = ~np.isfinite(values)
                raise ScoresError(
                    f"{name} is missing or not finite in {int(bad.sum())} row(s), "
                    f"e.g. customer_id {_examples(customer_id, bad)}"
                )
        outside = (churn < 0.0) | (churn > 1.0)
        if outside.any():
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
        if uplift is not None:
            bad = ~((uplift >= -1.0) & (uplift <= 1.0))  # NaN fails too
            if bad.any():
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
        _check_uplift_rules(policy.rules, uplift is not None, "the scores have no 'uplift'")
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


def uplift_rules(rules: Sequence[Rule]) -> list[str]:
    """Paths of the rules that match on ``min_uplift`` (they need an uplift per customer)."""
    return [
        f"rules[{i}].match.min_uplift"
        for i, rule in enumerate(rules)
        if rule.match.min_uplift is not None
    ]


def _check_uplift_rules(rules: Sequence[Rule], have_uplift: bool, why: str) -> None:
    """A rule on ``min_uplift`` without uplift scores would match nobody: refuse it instead."""
    using = [] if have_uplift else uplift_rules(rules)
    if using:
        raise ScoresError(f"{', '.join(using)} needs an uplift per customer, but {why}")


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


def _send_days(plan: _PolicyPlan, safe_idx: np.ndarray, ctx: OfferInputs) -> np.ndarray:
    """Send day per row under its rule, clipped to the ``as_of`` day (never in the past)."""
    kind = plan.send_kind[safe_idx]
    offset = plan.send_offset[safe_idx]
    after_last = ctx.last_day + offset
    before_next = np.where(np.isnat(ctx.next_day), ctx.as_of_day, ctx.next_day + offset)
    day = np.where(kind == 1, after_last, np.where(kind == 2, before_next, ctx.as_of_day))
    return np.maximum(day, ctx.as_of_day)


def _holdout_draw(customer_id: pd.Series | np.ndarray, campaign: str) -> np.ndarray:
    """Uniform [0, 1) per customer from blake2b("{campaign}:{customer_id}").

    blake2b is a fixed, published function of the bytes, so the draw is the same on every
    run, machine, Python and pandas version (unlike ``hash()`` or ``hash_pandas_object``,
    whose algorithms are implementation details). Draw = (big-endian 8-byte digest >> 11) / 2**53,
    an exact float in [0, 1).
    Beyond a request's few ids, only distinct ids are hashed (categorical codes or
    ``factorize``).
    """
    prefix = f"{campaign}:".encode()
    if isinstance(customer_id, pd.Series) and isinstance(customer_id.dtype, pd.CategoricalDtype):
        codes = customer_id.cat.codes.to_numpy()
        uniques = customer_id.cat.categories
    else:
        ids = np.asarray(customer_id, dtype=object)
        values = ids.tolist()
        if len(values) <= _HASH_EACH_MAX and all(type(u) is str for u in values):
            # a request's few ids: hashing each (repeats give equal draws) is cheaper
            # than factorize; missing ids keep factorize's handling below
            return _draws(prefix, values)
        codes, uniques = pd.factorize(ids)
    return _draws(prefix, [str(u) for u in uniques.tolist()])[codes]


def _draws(prefix: bytes, ids: list[str]) -> np.ndarray:
    """(big-endian 8-byte blake2b of prefix + id >> 11) / 2**53 for each id."""
    packed = b"".join(hashlib.blake2b(prefix + u.encode(), digest_size=8).digest() for u in ids)
    top53 = np.frombuffer(packed, dtype=">u8") >> np.uint64(11)
    return top53.astype(np.float64) / float(1 << 53)
