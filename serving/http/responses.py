"""Response bodies of the HTTP service, built from the scorer's arrays.

Scores become the JSON of :class:`serving.http.schemas.ScoreResponse`; errors are
``{"error": message}`` with, where one field is at fault, pydantic-style ``detail`` naming
it. The guard answers before BentoML runs, so it writes its JSON straight to the ASGI
``send`` (:func:`send_json`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import date
from math import isfinite
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic_core import to_json
from starlette.responses import Response

from serving.http.schemas import CustomerScore, ModelInfo, ScoreResponse

if TYPE_CHECKING:  # the scorer (LightGBM) is imported by workers, not by the supervisor
    from serving.scorer import ScoredCustomers

JSON_MEDIA_TYPE = "application/json"
_FEW = 16
CLOSE_CONNECTION = ((b"connection", b"close"),)

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


class _Built(dict[str, Any]):
    """A scored record built by :func:`score_records`: its fields and their types are the response schema's by construction, from the scorer's typed arrays,
    so :func:`score_response` does not validate it again record by record."""

    __slots__ = ()


def _floats(values: np.ndarray) -> list[float | None]:
    """Floats, None where not finite (a request's few values checked one by one: cheaper
    than two array calls)."""
    if len(values) <= _FEW:
        return [v if isfinite(v) else None for v in values.tolist()]
    finite = np.isfinite(values)
    if finite.all():
        return values.tolist()
    out = values.astype(object)
    out[~finite] = None
    return out.tolist()


def _days(values: np.ndarray) -> list[str | None]:
    """datetime64 values as ISO dates (UTC), None for NaT (a request's few dates as
    ``date.isoformat`` writes them: the same text for years 1 to 9999)."""
    days = values.astype("datetime64[D]")
    if len(days) <= _FEW:
        dates = days.tolist()  # datetime.date, None for NaT, int outside years 1 to 9999
        if all(d is None or type(d) is date for d in dates):
            return [None if d is None else d.isoformat() for d in dates]
    text = np.datetime_as_string(days).tolist()
    return [None if nat else t for t, nat in zip(text, np.isnat(days).tolist(), strict=True)]


def _texts(labels: list[str]) -> list[str | None]:
    return [v if v else None for v in labels]


def score_records(scored: ScoredCustomers) -> dict[str, dict[str, Any]]:
    """Scorer output -> response dicts keyed by customer id, built from its arrays.

    The first record is validated against :class:`serving.http.schemas.CustomerScore`: the
    others are built by the same code from the same arrays, so a field that no longer fits
    the schema fails every call, not one answer in a hundred.
    """
    if len(scored) == 0:
        return {}
    ids = scored.customer_id.tolist()
    as_of = scored.as_of.isoformat()
    numbers = scored.numbers
    churn = _floats(numbers["churn_probability"])
    p30 = _floats(numbers["p_purchase_30d"])
    p_h = _floats(numbers["p_purchase_horizon"])
    spend_h = _floats(numbers["expected_spend_horizon"])
    spend_y = _floats(numbers["expected_spend_365d"])
    uplift = _floats(numbers["uplift"])
    offers = scored.offers
    value = _floats(offers.expected_value)
    band = scored.risk_band.tolist()
    segment = scored.segment.tolist()
    offer = offers.labels("offer")
    channel = _texts(offers.labels("channel"))
    reason = _texts(offers.labels("reason"))
    rule = _texts(offers.labels("rule"))
    suppressed_reason = _texts(offers.labels("suppressed_reason"))
    reasons = scored.reasons.tolist()
    next_date = _days(scored.next_purchase)
    send_date = _days(offers.send_day)
    holdout = offers.holdout.tolist()
    suppressed = offers.suppressed.tolist()
    out: dict[str, dict[str, Any]] = {}
    for i, customer_id in enumerate(ids):
        out[customer_id] = _Built(
            {
                "customer_id": customer_id,
                "status": "scored",
                "as_of": as_of,
                "churn_probability": churn[i],
                "risk_band": band[i],
                "expected_next_purchase_date": next_date[i],
                "p_purchase_30d": p30[i],
                "p_purchase_horizon": p_h[i],
                "expected_spend_horizon": spend_h[i],
                "expected_spend_365d": spend_y[i],
                "uplift": uplift[i],
                "segment": segment[i],
                "reasons": [r for r in reasons[i] if r],
                "offer": {
                    "code": offer[i],
                    "channel": channel[i],
                    "send_date": send_date[i],
                    "expected_value": value[i],
                    "reason": reason[i],
                    "rule": rule[i],
                    "holdout": holdout[i],
                    "suppressed": suppressed[i],
                    "suppressed_reason": suppressed_reason[i],
                },
            }
        )
    CustomerScore.model_validate(out[ids[0]])
    return out


def unscored_record(customer_id: str, status: str, as_of: pd.Timestamp | None) -> dict[str, Any]:
    """A customer the model did not score: only the id, the status and the time."""
    return {
        "customer_id": customer_id,
        "status": status,
        "as_of": None if as_of is None else as_of.isoformat(),
        "reasons": [],
        "offer": None,
    }


def error_response(status: int, message: str, loc: Sequence[str | int] | None = None) -> Response:
    """``{"error": message}``, plus ``detail`` naming the field at ``loc`` when there is one."""
    body: dict[str, Any] = {"error": message}
    if loc is not None:
        body["detail"] = [{"loc": list(loc), "msg": message}]
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type=JSON_MEDIA_TYPE,
    )


def score_response(model: ModelInfo, horizon_days: int, results: list[Any]) -> Response:
    """The 200 answer of ``/score`` and ``/score/ids``, checked against its schema.

    Records from elsewhere than :func:`score_records` (unscored customers, a caller's own)
    are validated by pydantic's core (a record that does not fit the documented response is
    a server error, not a silent answer); scored records were checked where they were built.
    Then the plain records are written by pydantic's core. The validated model's own JSON
    would be the same bytes (the records hold only the fields that are set, in the schema's
    order, and ``as_of`` as ``isoformat`` writes it), but its serializer runs a Python
    function per customer: five times the cost for 100 customers.
    ``tests/serving/test_responses.py`` compares the two.
    """
    payload = {"model": model.model_dump(), "horizon_days": horizon_days, "results": results}
    unchecked = [r for r in results if r.__class__ is not _Built]
    if unchecked:  # the model info and horizon are typed already
        ScoreResponse.model_validate({**payload, "results": unchecked})
    return Response(to_json(payload), media_type=JSON_MEDIA_TYPE)


async def send_json(
    send: Send, status: int, payload: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer at the ASGI level, before (or instead of) the application."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
