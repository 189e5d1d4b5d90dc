"""The in-process budget of one ``/score`` request, stage by stage.

Each stage is the function the service runs, called here on the same inputs: the guard
(:class:`serving.http.guard.GuardMiddleware` in front of a no-op app), parse (BentoML's input
model of ``/score``, as its JSON serde validates the body), history to arrays
(:func:`serving.http.score_request.history_log`), features
(:func:`features.builders.build_feature_block`), models, reasons and offers (the stages of
:func:`serving.scorer.score_block`), records (:func:`serving.http.responses.score_records`)
and response (:func:`serving.http.responses.score_response`: checked and written). The
median of a few hundred calls per stage is printed in microseconds of CPU time, next to the whole
in-process path (:func:`serving.http.batching.score_jobs` plus the response), so the next
regression shows which stage it is in. ``benchmarks/http.py`` runs it on its artifact and
request bodies (``--budget-only`` runs nothing else).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

STAGES: tuple[str, ...] = (
    "guard",
    "parse",
    "history",
    "features",
    "models",
    "reasons",
    "offers",
    "records",
    "response",
)


def _median_us(
    call: Callable[[], object], calls: int, before: Callable[[], object] | None = None
) -> float:
    """Median CPU time of ``call`` in microseconds over ``calls`` calls (after a warm-up),
    each after an untimed ``before`` when given (the stage that precedes it in a request).

    The calling thread's CPU time, not wall time: on a shared machine other processes
    take the cores between calls, and that is not the stage's cost.
    """
    for _ in range(min(calls, 20)):
        call()
    times = np.empty(calls)
    for i in range(calls):
        if before is not None:
            before()
        t0 = time.thread_time()
        call()
        times[i] = time.thread_time() - t0
    return float(np.median(times) * 1e6)


def _guard_us(body: bytes, calls: int) -> float:
    """The guard's cost per request: headers, body read and replay, in one event loop."""
    from serving.http.guard import GuardMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    guard = GuardMiddleware(app)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/score",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        raise AssertionError(f"the guard refused the benchmark's request: {message}")

    async def run() -> float:
        for _ in range(20):
            await guard(scope, receive, send)
        times = np.empty(calls)
        for i in range(calls):
            t0 = time.thread_time()
            await guard(scope, receive, send)
            times[i] = time.thread_time() - t0
        return float(np.median(times) * 1e6)

    return asyncio.run(run())


def stage_budget(model: Any, info: Any, body: bytes, calls: int = 300) -> dict[str, float]:
    """Median microseconds per stage for one request body, plus ``total`` (the whole path)."""
    import pandas as pd

    from features.builders import build_feature_block
    from serving.http.batching import ScoreJob, score_jobs
    from serving.http.responses import score_records, score_response
    from serving.http.score_request import history_log, request_refusal
    from serving.http.service import RetainService
    from serving.scorer import offers_stage, predict_stage, reasons_stage, score_block

    api = RetainService.apis["score"]
    request = api.input_spec.model_validate_json(body)
    customers = request.customers
    as_of = pd.Timestamp(customers[0].as_of)
    feature_config = model.artifact.feature_config
    log = history_log(customers, model.log_config)
    block = build_feature_block(log, as_of, feature_config)
    x, preds = predict_stage(model, block, as_of)
    scored = score_block(model, block, as_of, campaign=request.campaign)
    records = score_records(scored)
    results = [records[c.customer_id] for c in customers]

    def respond() -> bytes:
        return bytes(score_response(info, model.horizon_days, results).body)

    def whole() -> bytes:
        parsed = api.input_spec.model_validate_json(body)
        assert request_refusal(parsed.customers, 2000) is None
        job = ScoreJob(parsed.customers, parsed.campaign)
        score_jobs(model, [job], pd.Timestamp.now(tz="UTC"))
        return bytes(score_response(info, model.horizon_days, job.results).body)

    budget = {
        "guard": _guard_us(body, calls),
        "parse": _median_us(lambda: api.input_spec.model_validate_json(body), calls),
        "history": _median_us(lambda: history_log(customers, model.log_config), calls),
        "features": _median_us(lambda: build_feature_block(log, as_of, feature_config), calls),
        "models": _median_us(lambda: predict_stage(model, block, as_of), calls),
        # after the models, as in a request: the reasons take the churn leaves they looked up
        "reasons": _median_us(
            lambda: reasons_stage(model, x), calls, lambda: predict_stage(model, block, as_of)
        ),
        "offers": _median_us(
            lambda: offers_stage(model, block, preds, as_of, request.campaign), calls
        ),
        "records": _median_us(lambda: score_records(scored), calls),
        "response": _median_us(respond, calls),
    }
    budget["sum"] = sum(budget[s] for s in STAGES)
    budget["total"] = _guard_us(body, calls) + _median_us(whole, calls)
    return budget


def budgets(
    model_uri: str, payloads: Sequence[tuple[str, bytes]], calls: int
) -> dict[str, dict[str, float]]:
    """``stage_budget`` of each (label, body), on the model as a worker loads it."""
    from serving.http.settings import ServiceSettings
    from serving.http.startup import freeze_startup_heap, resolve_model

    model, info = resolve_model(ServiceSettings.from_env({"RETAIN_MODEL_URI": model_uri}))
    freeze_startup_heap()  # as a worker does once loaded
    return {label: stage_budget(model, info, body, calls) for label, body in payloads}


def print_budgets(result: dict[str, dict[str, float]]) -> None:
    """One column per request size; ``sum`` adds the stages, each timed alone (its code and
    data stay in the CPU's caches), ``total`` is the path as a request runs it."""
    labels = list(result)
    print(f"{'CPU us (median)':<18}" + "".join(f"{label:>16}" for label in labels))
    for stage in (*STAGES, "sum", "total"):
        print(f"{stage:<18}" + "".join(f"{result[label][stage]:>16.0f}" for label in labels))
