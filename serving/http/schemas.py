"""Request and response models of the HTTP scoring service (the public API contract).

Validation happens here, once, in pydantic's compiled core: anything that gets past these
models is shaped so that :func:`features.log.purchase_log.canonicalize` accepts it (finite
numbers, non-empty ids, timestamps normalised to UTC). Customer ids are made canonical here
(surrounding whitespace stripped, as the loader does), so everything after validation, and
every response, uses the one id the model scores. Limits on sizes live here too, so a
client learns them from the OpenAPI document.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from typing_extensions import TypedDict

from features.log.schema import EARLIEST_TIME, LATEST_TIME, MAX_ABS_AMOUNT, MAX_ABS_QUANTITY

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 256
MAX_HISTORY_ROWS = 50_000
MAX_IDS = 10_000


EARLIEST = EARLIEST_TIME  # the purchase-log contract's bounds (features.log.schema)
LATEST = LATEST_TIME


def _to_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC (the canonical log's rule); aware ones are converted to UTC.

    Times are bounded so day arithmetic in nanoseconds (pandas) cannot overflow.
    """
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is out of range") from exc
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()} (UTC)")
    return utc


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
Identifier = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^\s*\S[^\x00]*$")
]
Text = Annotated[str, Field(max_length=MAX_TEXT_LENGTH)]


def canonical_customer_id(value: str) -> str:
    """The id the loader keys a customer by: surrounding whitespace stripped.

    Why: :func:`features.log.purchase_log.canonicalize` strips customer ids, so ``" c1"`` and
    ``"c1"`` are one customer there. Checking duplicates, grouping the micro-batcher and
    looking results up by the raw id let one request be answered from another's rows.
    ``str.strip`` removes exactly the characters Arrow's ``utf8_trim_whitespace`` (the
    loader's) removes; ``tests/serving/test_canonical_ids.py`` checks every code point.
    """
    canonical = value.strip()
    if not canonical:
        raise ValueError("must contain a non-whitespace character")
    return canonical


CustomerId = Annotated[Identifier, AfterValidator(canonical_customer_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_OPTIONAL = {"default": None}  # documented as the model fields' ``= None`` were


class PurchaseIn(TypedDict):
    """One row of a customer's purchase history (the canonical log's source contract)."""

    # A typed dict, not a model (the docstring above is the API's description): pydantic's
    # core builds a plain dict per row, which costs a third less of a hundred-customer parse
    # than a model instance per row; the JSON contract (fields, bounds, unknown keys
    # refused, the OpenAPI schema) is the same. Optional fields absent from the body are
    # absent from the dict: read them with ``.get``.

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    # Not ``UtcDatetime``: a Python validator per history row cost about a quarter of the
    # parse. The service converts every row to UTC microseconds in one pass and rejects
    # times outside [EARLIEST, LATEST) there, naming the customer and row.
    timestamp: Annotated[
        datetime,
        Field(
            description="When; naive times are taken as UTC. Must lie in 1900-01-01..2200-01-01."
        ),
    ]
    amount: Annotated[
        float,
        Field(
            allow_inf_nan=False,
            ge=-MAX_ABS_AMOUNT,
            le=MAX_ABS_AMOUNT,
            description="Money value; a negative amount is a return.",
        ),
    ]
    order_id: NotRequired[Annotated[Identifier | None, Field(json_schema_extra=_OPTIONAL)]]
    quantity: NotRequired[
        Annotated[
            float | None,
            Field(
                allow_inf_nan=False,
                ge=-MAX_ABS_QUANTITY,
                le=MAX_ABS_QUANTITY,
                json_schema_extra=_OPTIONAL,
            ),
        ]
    ]
    product_id: NotRequired[Annotated[Text | None, Field(json_schema_extra=_OPTIONAL)]]
    category: NotRequired[Annotated[Text | None, Field(json_schema_extra=_OPTIONAL)]]
    discount: NotRequired[Annotated[bool | None, Field(json_schema_extra=_OPTIONAL)]]
    channel: NotRequired[Annotated[Text | None, Field(json_schema_extra=_OPTIONAL)]]


PURCHASE_FIELDS: tuple[str, ...] = tuple(PurchaseIn.__annotations__)


class CustomerIn(_Strict):
    """A customer to score from the history sent with the request."""

    customer_id: CustomerId = Field(
        description="Surrounding whitespace is stripped, as the loader does; the response "
        "carries this canonical id."
    )
    as_of: UtcDatetime | None = Field(
        default=None, description="Score as of this time (default: when the server scores)."
    )
    history: list[PurchaseIn] = Field(default_factory=list, max_length=MAX_HISTORY_ROWS)


class ScoreRequest(_Strict):
    """``POST /score``: customers with their purchase histories."""

    customers: list[CustomerIn] = Field(min_length=1)
    campaign: Identifier | None = Field(
        default=None, description="Campaign name: seeds the holdout draw of the offer policy."
    )


class IdsRequest(_Strict):
    """``POST /score/ids``: customers scored from the batch job's feature snapshot."""

    customer_ids: list[CustomerId] = Field(
        min_length=1,
        max_length=MAX_IDS,
        description="Surrounding whitespace is stripped; responses carry the canonical ids.",
    )
    campaign: Identifier | None = None


class NoopRequest(_Strict):
    """``POST /noop``: validated like ``/score``, then answered at once: the framework's floor."""

    customers: list[CustomerIn] = Field(default_factory=list)
    campaign: Identifier | None = None


class ModelInfo(BaseModel):
    """Which model answered: registered name and version ("local" for a directory)."""

    name: str
    version: str
    uri: str


class Offer(BaseModel):
    """The offer the policy picked for a customer (``code`` "none" when nothing fits)."""

    code: str
    channel: str | None
    send_date: date | None
    expected_value: float | None
    reason: str | None
    rule: str | None
    holdout: bool
    suppressed: bool
    suppressed_reason: str | None


ScoreStatus = Literal["scored", "no_purchases_before_as_of", "unknown_customer_id"]


class CustomerScore(BaseModel):
    """One customer's scores; only ``status`` and ids are set unless status is "scored"."""

    customer_id: str
    status: ScoreStatus
    as_of: datetime | None = None
    churn_probability: float | None = None
    risk_band: str | None = None
    expected_next_purchase_date: date | None = None
    p_purchase_30d: float | None = None
    p_purchase_horizon: float | None = None
    expected_spend_horizon: float | None = None
    expected_spend_365d: float | None = None
    uplift: float | None = Field(
        default=None,
        description=(
            "Incremental probability of buying in the window if sent the offer (the "
            "artifact's uplift model); null when the model has none."
        ),
    )
    segment: str | None = None
    reasons: list[str] = Field(default_factory=list)
    offer: Offer | None = None

    @model_serializer(mode="wrap")
    def _as_sent(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):  # type: ignore[no-untyped-def]
        """Only the fields that were set (an unscored customer has no score fields, not
        nulls), and ``as_of`` in JSON as ``isoformat`` writes it (``+00:00``, not ``Z``).

        No return annotation: with one, pydantic would document the serializer's return
        type in the OpenAPI schema instead of these fields.
        """
        data = handler(self)
        data = {name: value for name, value in data.items() if name in self.model_fields_set}
        if info.mode_is_json() and self.as_of is not None:
            data["as_of"] = self.as_of.isoformat()
        return data


class ScoreResponse(BaseModel):
    """Scores in request order, plus the model that produced them."""

    model: ModelInfo
    horizon_days: int
    results: list[CustomerScore]


class NoopResponse(BaseModel):
    model: ModelInfo
    customers: int


class SnapshotInfo(BaseModel):
    """What ``/score/ids`` is currently scoring from."""

    model: ModelInfo
    path: str | None
    customers: int
    as_of_min: datetime | None
    as_of_max: datetime | None
