"""The HTTP scoring service: a thin BentoML shell around :mod:`serving.scorer`.

``bentoml serve serving.http.service:RetainService`` (or ``retain serve``). Each worker
process loads the model once in ``RetainService.__init__``; requests are validated by the
pydantic models in :mod:`serving.http.schemas` and scored by the one scoring function,
``/score`` through the micro-batcher (:mod:`serving.http.batching`), ``/score/ids`` from the
feature snapshot (:mod:`serving.http.snapshot`) or, with ``RETAIN_HISTORY_URL``, from
histories read from the database per request batch (:mod:`serving.http.history_ids`). The guard (:mod:`serving.http.guard`)
stands in front of every request.

A worker that cannot start stays up: BentoML respawns a worker whose ``__init__`` raises,
forever, with the port open and every request hanging. A worker whose settings, model or
snapshot cannot be loaded logs one line, answers ``/readyz`` with 503 and the reason, and
every API request with 503 at once. ``retain serve`` loads the same things before it starts
BentoML, so there the same fault is an exit with the reason instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import bentoml
import pandas as pd
from starlette.responses import Response

from features.redaction import install_log_redaction, redact
from serving.http.batching import INLINE_MAX_CUSTOMERS, MicroBatcher, ScoreJob, score_jobs
from serving.http.error_log import quiet_client_errors
from serving.http.guard import GuardMiddleware
from serving.http.history_ids import IdsJob, score_history_jobs
from serving.http.history_source import HistoryConfigError, HistorySource, HistoryUnavailable
from serving.http.responses import error_response, score_response
from serving.http.schemas import (
    IdsRequest,
    NoopRequest,
    NoopResponse,
    ScoreRequest,
    ScoreResponse,
    SnapshotInfo,
)
from serving.http.score_request import request_refusal
from serving.http.settings import SERVICE_LOGGER, ServiceSettings, configure_process_env, env_int
from serving.http.snapshot import FeatureSnapshot, score_ids
from serving.http.startup import (
    expected_startup_errors,
    freeze_startup_heap,
    index_warning,
    load_model_and_snapshot,
    open_history,
    startup_failure,
)

logger = logging.getLogger(SERVICE_LOGGER)


@bentoml.service(
    name="retain",
    workers=env_int("RETAIN_WORKERS", 1),
    traffic={"timeout": 60},
    threads=1,
)
class RetainService:
    """Churn / next-purchase scores and offers over HTTP."""

    def __init__(self) -> None:
        configure_process_env()
        quiet_client_errors()
        install_log_redaction()
        self.ready = False
        self.failure: str | None = None
        started = time.perf_counter()
        try:
            self.settings = ServiceSettings.from_env()
            self.model, self.model_info, self.snapshot = load_model_and_snapshot(self.settings)
            self.history = open_history(self.settings, self.model, strict=False)
        except Exception as exc:  # never raise: BentoML would respawn this worker forever
            self.failure = startup_failure(exc)
            if isinstance(exc, expected_startup_errors()):
                logger.error("retain service not ready: %s", self.failure)
            else:
                logger.exception("retain service not ready (a bug): %s", self.failure)
            return
        self.batcher = MicroBatcher(
            self._score_batch, self.settings.batch_window_ms / 1000, INLINE_MAX_CUSTOMERS
        )
        self.ids_batcher = MicroBatcher(self._score_ids_batch, self.settings.batch_window_ms / 1000)
        self._log_history()
        freeze_startup_heap()
        self.ready = True
        logger.info(
            "model %s version %s loaded from %s in %.1fs; snapshot %s of %d customers",
            self.model_info.name,
            self.model_info.version,
            self.model_info.uri,
            time.perf_counter() - started,
            self.snapshot.path or "(none)",
            len(self.snapshot.features),
        )

    def _log_history(self) -> None:
        """Say where ``/score/ids`` reads histories, and warn of a missing index."""
        if self.history is None:
            return
        where = f"{self.history.settings.label} at {redact(self.history.settings.url)}"
        if not self.history.probed:
            logger.warning(
                "history database not reachable at start-up (%s); /score/ids answers 503 "
                "until it is",
                where,
            )
            return
        logger.info("/score/ids reads purchase histories from %s", where)
        try:
            warning = index_warning(self.history)
        except (HistoryUnavailable, HistoryConfigError) as exc:
            warning = f"index not checked: {exc}"
        if warning is not None:
            logger.warning("%s", warning)

    def __is_ready__(self) -> bool:
        return self.ready

    def readiness(self) -> dict[str, Any] | None:
        """What ``/readyz`` reports; None until the model is loaded and hash-checked."""
        if not self.ready:
            return None
        return {
            "model": self.model_info.model_dump(),
            "horizon_days": self.model.horizon_days,
            "snapshot_path": None if self.snapshot.path is None else str(self.snapshot.path),
            "snapshot_customers": len(self.snapshot.features),
            **self.snapshot.state(),
            **history_readiness(self.history, self.snapshot),
        }

    def _score_batch(self, jobs: list[ScoreJob]) -> None:
        score_jobs(self.model, jobs, pd.Timestamp.now(tz="UTC"))

    def _score_ids_batch(self, jobs: list[IdsJob]) -> None:
        ids_jobs = [job for job in jobs if isinstance(job, IdsJob)]
        assert self.history is not None  # /score/ids submits jobs only with a history source
        score_history_jobs(self.model, self.history, ids_jobs)

    @bentoml.api(route="/score", output_spec=ScoreResponse)
    async def score(self, request: ScoreRequest, /) -> Response:
        """Score customers from the purchase histories in the request."""
        refused = request_refusal(request.customers, self.settings.max_customers)
        if refused is not None:
            return error_response(*refused)
        job = await self.batcher.submit(ScoreJob(request.customers, request.campaign))
        if job.error is not None:
            return error_response(400, str(job.error), job.error.loc)
        return score_response(self.model_info, self.model.horizon_days, job.results)

    @bentoml.api(route="/score/ids", output_spec=ScoreResponse)
    async def score_ids(self, request: IdsRequest, /) -> Response:
        """Score customers by id: their histories read from the database at request time
        (``RETAIN_HISTORY_URL``), else their features from the batch job's snapshot."""
        import anyio.to_thread

        if len(request.customer_ids) > self.settings.max_customers:
            return error_response(
                413,
                f"too many customer_ids: {len(request.customer_ids)} > limit "
                f"{self.settings.max_customers} per request (RETAIN_MAX_CUSTOMERS)",
                ("customer_ids",),
            )
        if self.history is not None:
            job = await self.ids_batcher.submit(IdsJob.of(request.customer_ids, request.campaign))
            if job.status is not None:
                return error_response(job.status, job.message)
            return score_response(self.model_info, self.model.horizon_days, job.results)
        self.snapshot = await anyio.to_thread.run_sync(self.snapshot.refreshed)
        results = await anyio.to_thread.run_sync(
            score_ids, self.model, self.snapshot, request.customer_ids, request.campaign
        )
        return score_response(self.model_info, self.model.horizon_days, results)

    @bentoml.api(route="/admin/reload-snapshot", output_spec=SnapshotInfo)
    async def reload_snapshot(self) -> SnapshotInfo | Response:
        """Re-read ``RETAIN_FEATURE_SNAPSHOT`` (the batch job wrote a new one)."""
        import anyio.to_thread

        path = self.settings.feature_snapshot
        if not path:
            return error_response(
                409, "no feature snapshot configured (set RETAIN_FEATURE_SNAPSHOT)"
            )
        self.snapshot = await anyio.to_thread.run_sync(self.snapshot.reloaded)
        if self.snapshot.failure is not None:
            return error_response(
                409, f"snapshot not reloaded: {self.snapshot.failure}; serving the one before"
            )
        return self.snapshot.info(self.model_info)

    @bentoml.api(route="/noop")
    async def noop(self, request: NoopRequest, /) -> NoopResponse:
        """Validates a tiny body and answers at once: the framework's own cost."""
        return NoopResponse(model=self.model_info, customers=len(request.customers))


def history_readiness(history: HistorySource | None, snapshot: FeatureSnapshot) -> dict[str, Any]:
    """What ``/readyz`` says about the source of ``/score/ids``: the database (with its
    redacted URL and table), the snapshot, or none."""
    if history is None:
        return {"features_source": "snapshot" if snapshot.path is not None else "none"}
    return {
        "features_source": "database",
        "history": {
            "url": redact(history.settings.url),
            "table": history.settings.source,
            "checked": history.probed,
        },
    }


# bentoml.service made the class a Service; its stubs keep the class type
RetainService.add_asgi_middleware(GuardMiddleware)  # type: ignore[attr-defined]
