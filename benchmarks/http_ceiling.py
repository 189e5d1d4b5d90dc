"""Ceiling services for ``benchmarks/http.py --service``: what ``/score`` could reach at best.

They measure how far any scorer can get with today's request and response format: each
offers ``/noop`` exactly as :class:`serving.http.service.RetainService` does, and a
``/score`` that parses the same typed request (:class:`serving.http.schemas.ScoreRequest`,
in the same BentoML input spec) and answers with the same bytes the real service sends,
but without scoring:

- with ``RETAIN_CEILING=history`` (the default), :class:`Ceiling` checks the request and
  turns its histories into the canonical log (:func:`serving.http.score_request.history_log`),
  then answers a precomputed body;
- with ``RETAIN_CEILING=parse`` it answers the precomputed body right after parsing;
- with ``RETAIN_CEILING=models`` it also builds the feature block
  (:func:`features.builders.build_feature_block`) and runs the models
  (:func:`serving.scorer.predict_stage`) on it, as the real path does, then answers the
  precomputed body: what /score could reach if reasons, offers, records and the response
  cost nothing.

The body is the real service's answer to the same customers: computed by the real path
(micro-batcher excluded) the first time a set of customers is seen, then looked up by their
ids, ``as_of`` and campaign. So a run of the benchmark's request bodies measures parse
(+ history) + response transmission; their /score vs /noop shares at 100 customers bound
what features, models, reasons, offers and batching may cost::

    RETAIN_CEILING=parse python benchmarks/http.py --service benchmarks.http_ceiling:Ceiling \\
        --concurrency 8 --payloads 1,100 --seconds 10

Figures (2 workers, 2 shared cores, 100-customer requests at c=8, /score vs /noop
customers/s; 2026-12-07, load average 2-6): parse only 94%, 99%, 98%; parse + history with
main's ``history_log`` of dff3a27 44% and 53%, with the one of branch hundred27 62% and 62%.
So with today's request and response format, the stages after ``history_log`` (features,
models, reasons, offers, records, response, batching) may cost about 0.6x a ``/noop``
request in all for /score to reach 45% of /noop.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import pandas as pd
from starlette.responses import Response

from features.builders import build_feature_block
from features.log.log_arrays import LogArrays
from serving.http.batching import ScoreJob, score_jobs
from serving.http.guard import GuardMiddleware
from serving.http.responses import JSON_MEDIA_TYPE, error_response, score_response
from serving.http.schemas import NoopRequest, NoopResponse, ScoreRequest, ScoreResponse
from serving.http.score_request import history_log, request_refusal
from serving.http.settings import ServiceSettings, configure_process_env, env_int
from serving.http.startup import freeze_startup_heap, resolve_model
from serving.scorer import predict_stage

Key = tuple[tuple[tuple[str, Any], ...], str | None]


class _Precomputed:
    """The model and the real answers of the request bodies seen so far."""

    def __init__(self) -> None:
        configure_process_env()
        self.settings = ServiceSettings.from_env()
        self.model, self.model_info = resolve_model(self.settings)
        self.bodies: dict[Key, bytes] = {}
        freeze_startup_heap()

    def body(self, request: ScoreRequest) -> bytes:
        key = (tuple((c.customer_id, c.as_of) for c in request.customers), request.campaign)
        body = self.bodies.get(key)
        if body is None:
            job = ScoreJob(request.customers, request.campaign)
            score_jobs(self.model, [job], pd.Timestamp.now(tz="UTC"))
            assert job.error is None, job.error
            response = score_response(self.model_info, self.model.horizon_days, job.results)
            body = self.bodies[key] = bytes(response.body)
        return body

    def models(self, log: LogArrays, request: ScoreRequest) -> None:
        """The feature block and the models' predictions, as the real path computes them."""
        given = request.customers[0].as_of
        as_of = pd.Timestamp.now(tz="UTC") if given is None else pd.Timestamp(given)
        block = build_feature_block(log, as_of, self.model.artifact.feature_config)
        predict_stage(self.model, block, as_of)

    def readiness(self) -> dict[str, Any]:
        return {"model": self.model_info.model_dump()}


CEILINGS = ("history", "parse", "models")


@bentoml.service(
    name="retain-ceiling",
    workers=env_int("RETAIN_WORKERS", 1),
    traffic={"timeout": 60},
    threads=1,
)
class Ceiling:
    """``/score`` = parse (+ request checks + ``history_log`` with ``RETAIN_CEILING=history``,
    the default; + features and models with ``RETAIN_CEILING=models``) + a precomputed body."""

    def __init__(self) -> None:
        self.state = _Precomputed()
        self.ceiling = os.environ.get("RETAIN_CEILING", "history")
        if self.ceiling not in CEILINGS:
            raise SystemExit(f"RETAIN_CEILING must be one of {CEILINGS}, not {self.ceiling!r}")

    def readiness(self) -> dict[str, Any]:
        return self.state.readiness()

    @bentoml.api(route="/score", output_spec=ScoreResponse)
    async def score(self, request: ScoreRequest, /) -> Response:
        """Parsed (and turned into the canonical log), then the real answer, precomputed."""
        if self.ceiling != "parse":
            refused = request_refusal(request.customers, self.state.settings.max_customers)
            if refused is not None:
                return error_response(*refused)
            log = history_log(request.customers, self.state.model.log_config)
            if self.ceiling == "models":
                self.state.models(log, request)
        return Response(self.state.body(request), media_type=JSON_MEDIA_TYPE)

    @bentoml.api(route="/noop")
    async def noop(self, request: NoopRequest, /) -> NoopResponse:
        """As the real service's ``/noop``."""
        return NoopResponse(model=self.state.model_info, customers=len(request.customers))


# bentoml.service made the class a Service; its stubs keep the class type
Ceiling.add_asgi_middleware(GuardMiddleware)  # type: ignore[attr-defined]
