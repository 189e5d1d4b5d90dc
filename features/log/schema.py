"""The purchase-log contract: canonical column names, dtypes and the loader's configuration.

Every part of retain (feature builders, labels, the HTTP service, batch jobs) works on the
*canonical log* described here, so a log only has to be understood once, at the edge.

Canonical log (a pandas DataFrame), sorted by ``customer_id`` then ``timestamp`` then
``order_id``, with a fresh RangeIndex:

=============  ========================  ==============================================
column         dtype                     meaning
=============  ========================  ==============================================
customer_id    category (str categories) who bought; never empty
timestamp      datetime64[us, UTC]       when; naive inputs are read in ``LogConfig.timezone``
amount         float64, >= 0             money value of the row, always non-negative;
                                         returns keep their refunded value here
quantity       float64, >= 0             units (1.0 where the source has no quantity)
order_id       str                       order identifier; where the source has none, rows of
                                         one customer at one timestamp form one order
product_id     str or NA                 optional
category       str or NA                 optional
discount       bool                      bought with a discount or in a campaign
channel        str or NA                 optional (web, store, app, ...)
is_return      bool                      a return or cancellation, not a purchase
=============  ========================  ==============================================

Bounds (the same for files, data frames and HTTP requests): timestamps and ``as_of`` lie in
``[EARLIEST_TIME, LATEST_TIME)`` = [1900-01-01, 2200-01-01) UTC, so day arithmetic in pandas'
nanoseconds (which end in 2262) cannot overflow; ``|amount| <= MAX_ABS_AMOUNT`` (1e12) and
finite, so sums over millions of rows stay finite and exact to the cent. The loader rejects
values outside them naming the rows.

Counting rules (the convention of the buy-till-you-die literature):
- the lines of one order are one purchase (an *order*);
- all orders of one customer on one calendar day (UTC) are one *purchase day*.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.errors import InputError

EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)
"""Timestamps and as_of lie in [EARLIEST_TIME, LATEST_TIME) (UTC); see the module doc."""
MAX_ABS_AMOUNT = 1e12
"""Largest accepted ``|amount|`` (and ``|quantity|`` is bounded by MAX_ABS_QUANTITY)."""
MAX_ABS_QUANTITY = 1e9

REQUIRED_COLUMNS: tuple[str, ...] = ("customer_id", "timestamp", "amount")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "order_id",
    "quantity",
    "product_id",
    "category",
    "discount",
    "channel",
    "is_return",
)
CANONICAL_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "timestamp",
    "amount",
    "quantity",
    "order_id",
    "product_id",
    "category",
    "discount",
    "channel",
    "is_return",
)
TIMESTAMP_DTYPE = "datetime64[us, UTC]"
# LogConfig fields that decide what the rows *mean* (which are returns, which repeat): a
# model learned from rows counted this way, so it must score rows counted the same way.
# The other fields only say how one file is written (column names, time zone, date format,
# discount spellings, whether to reject rows without a customer id).
COUNTING_RULES: tuple[str, ...] = ("cancel_prefix", "duplicates")


class PurchaseLogError(InputError):
    """Bad purchase-log input; the message names the column, rows and offending values."""


class LogConfig(BaseModel):
    """How to read a source purchase log into the canonical log.

    ``columns`` maps canonical names to source names, e.g. ``{"customer_id": "CustomerID"}``;
    unmapped canonical names are looked up under their own name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, str] = Field(default_factory=dict)
    timezone: str = "UTC"
    cancel_prefix: str | None = "C"
    strict: bool = False
    date_format: str | None = None
    discount_true_values: tuple[str, ...] = ("1", "true", "t", "yes", "y")
    # A text flag is one of these or of the true values (or empty): anything else ("maybe",
    # "10.0") is refused, since reading it as False would silently drop a discount.
    discount_false_values: tuple[str, ...] = ("0", "false", "f", "no", "n")
    duplicates: Literal["drop", "keep"] = "drop"

    @field_validator("columns")
    @classmethod
    def _known_targets(cls, value: dict[str, str]) -> dict[str, str]:
        known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) in mapping: {unknown}; known: {sorted(known)}"
            )
        return value

    def counting_rules(self) -> LogConfig:
        """Only the counting rules (``COUNTING_RULES``); file-format fields at their defaults.

        What typed, canonical-named input (an HTTP request, the MLflow pyfunc's frame) is read
        with: it has no source column names, and its naive timestamps are UTC by contract.
        """
        return LogConfig(**{name: getattr(self, name) for name in COUNTING_RULES})


def scoring_log_config(trained: LogConfig, given: LogConfig | None = None) -> LogConfig:
    """The config to read a log to score with a model trained under ``trained``.

    The model's config is the base, so a file laid out like the training data needs no
    options. Fields the user set in ``given`` (``model_fields_set``: the fields a ``--config``
    file writes) override the file-format fields; a counting rule set to a different value
    than the model was trained with is refused, naming the field, because the model would
    then score rows counted differently from the rows it learned from.
    """
    if given is None:
        return trained
    conflicts = [
        f"{name}: the model was trained with {getattr(trained, name)!r}, "
        f"--config says {getattr(given, name)!r}"
        for name in COUNTING_RULES
        if name in given.model_fields_set and getattr(given, name) != getattr(trained, name)
    ]
    if conflicts:
        raise InputError(
            "the log config conflicts with the model's counting rules ("
            + "; ".join(conflicts)
            + "); drop the field from --config or train a model with it"
        )
    update = {
        name: getattr(given, name) for name in given.model_fields_set if name not in COUNTING_RULES
    }
    return trained.model_copy(update=update) if update else trained
