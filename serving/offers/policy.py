"""The offer policy: the YAML rules and their validation.

The policy is data, not code: an ordered list of rules in YAML (``serving/offer_policy.yaml`` is
the default), validated with pydantic on load so a typo fails at start-up with the path of the
bad field (``rules[2].send.days_after_last_purchase``) instead of silently sending nothing.
How the rules turn scores into decisions is :mod:`serving.offers.decide`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

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
from features.retention.segments import Segment

CHANNELS: tuple[str, ...] = ("email", "sms", "push", "in_app", "direct_mail")
NO_OFFER = "none"

Channel = Literal["email", "sms", "push", "in_app", "direct_mail"]
Code = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegativeDays = Annotated[int, Field(ge=0, le=3650)]
T = TypeVar("T")


class OfferPolicyError(InputError):
    """The policy YAML is unreadable or invalid; the message names each bad field path."""


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
    def _now_shorthand(cls, value: Any) -> Any:  # raw YAML value, before validation
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

    _derived: tuple[Callable[[Sequence[Rule]], Any], tuple[Rule, ...], Any] | None = PrivateAttr(
        default=None
    )

    def derived(self, build: Callable[[Sequence[Rule]], T]) -> T:
        """``build(rules)``, computed once per policy and reused by every scoring call.

        The decision keeps its array form of the rules here (:class:`serving.offers.decide.PolicyPlan`).
        Rebuilt when the rule objects differ from those it was built from (a copy with other
        rules, a list edited in place); it holds them, so their identities stay unique.
        """
        rules = tuple(self.rules)
        cached = self._derived
        if (
            cached is None
            or cached[0] is not build
            or len(cached[1]) != len(rules)
            or not all(map(operator.is_, cached[1], rules))
        ):
            cached = self._derived = (build, rules, build(rules))
        return cached[2]

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
        from features.config_file import ConfigSyntaxError, parse_config_text

        text, origin = _read_source(path_or_text)
        try:
            data = parse_config_text(text, "yaml")
        except ConfigSyntaxError as exc:
            raise OfferPolicyError(f"offer policy {origin} is {exc}") from None
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


def uplift_rules(rules: Sequence[Rule]) -> list[str]:
    """Paths of the rules that match on ``min_uplift`` (they need an uplift per customer)."""
    return [
        f"rules[{i}].match.min_uplift"
        for i, rule in enumerate(rules)
        if rule.match.min_uplift is not None
    ]
