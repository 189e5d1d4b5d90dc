"""The micro-batcher of ``/score``: concurrent requests of one worker scored in one call.

One ``score`` call costs a few milliseconds of fixed pandas/LightGBM overhead whatever the
number of customers, so requests that arrive within ``RETAIN_BATCH_WINDOW_MS`` of each
other are gathered and scored in one call per (as_of, campaign) group. When a group fails
on bad input, the requests in it are scored one by one to find the one at fault: that
request alone gets its 400, naming the customer; the others get their scores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pandas as pd

from features.log.schema import PurchaseLogError
from serving.http.responses import score_records, unscored_record
from serving.http.schemas import CustomerIn
from serving.http.score_request import history_log
from serving.http.settings import SERVICE_LOGGER
from serving.offers.inputs import ScoresError

if TYPE_CHECKING:
    from serving.scorer import ScoringModel

MAX_BATCH_CUSTOMERS = 2000
MAX_BATCH_REQUESTS = 256
"""A window-0 batch stops gathering at this many queued requests."""
INLINE_MAX_CUSTOMERS = MAX_BATCH_CUSTOMERS
"""``/score`` batches up to this many customers (every batch the batcher gathers, unless one
request alone is larger) are scored on the event loop itself: scoring does no I/O, and a worker has one core's worth of Python, so a thread buys
no overlap. A hop to a worker thread costs CPU and wall time per batch, and the scoring
thread and the loop then take the GIL from each other every switch interval: on the
100-customer benchmark requests the worker spent about 0.3 ms more CPU per request with
batches over 32 customers in a thread than with every batch inline."""
INPUT_ERRORS: tuple[type[Exception], ...] = (PurchaseLogError, ScoresError)

logger = logging.getLogger(SERVICE_LOGGER)


class RequestError(ValueError):
    """A request that is well-formed JSON but cannot be scored; becomes HTTP 400."""

    def __init__(self, message: str, loc: Sequence[str | int]) -> None:
        super().__init__(message)
        self.loc = tuple(loc)


@dataclass
class ScoreJob:
    """One ``/score`` request waiting in the micro-batcher."""

    customers: list[CustomerIn]
    campaign: str | None
    results: list[dict[str, Any] | None] = field(default_factory=list)
    error: RequestError | None = None


def _score_group(
    model: ScoringModel, customers: list[CustomerIn], as_of: pd.Timestamp, campaign: str | None
) -> dict[str, dict[str, Any]]:
    """One canonical log and one score call for customers sharing as_of and campaign."""
    from serving.scorer import score_log

    log = history_log(customers, model.log_config)
    if len(log) == 0:
        return {}
    return score_records(score_log(model, log, as_of, campaign=campaign))


def _locate_error(model: ScoringModel, job: ScoreJob, now: pd.Timestamp) -> RequestError:
    """Error path only: find the first customer the scorer rejects, and why."""
    for index, customer in enumerate(job.customers):
        where = f"customers[{index}] (customer_id {customer.customer_id!r})"
        try:
            history_log([customer], model.log_config)
        except PurchaseLogError as exc:
            return RequestError(f"{where}.history: {exc}", ("customers", index, "history"))
        try:
            as_of = now if customer.as_of is None else pd.Timestamp(customer.as_of)
            _score_group(model, [customer], as_of, job.campaign)
        except INPUT_ERRORS as exc:
            return RequestError(f"{where}: {exc}", ("customers", index))
    return RequestError("the request could not be scored", ("customers",))


def score_jobs(model: ScoringModel, jobs: Sequence[ScoreJob], now: pd.Timestamp) -> None:
    """Score every customer of every job, one scorer call per (as_of, campaign) group.

    Within a group customer ids must be unique (the offer policy's holdout draw hashes the
    id), so a customer id sent by two requests of one batch goes to a second group. Results
    are written into each job; a job whose history canonicalize rejects gets ``error``.
    """
    groups: dict[tuple[pd.Timestamp, str | None], list[tuple[set[str], list[tuple[int, int]]]]]
    groups = {}
    stamps: dict[datetime | None, pd.Timestamp] = {None: now}  # one Timestamp per as_of
    for j, job in enumerate(jobs):
        job.results = [None] * len(job.customers)
        by_as_of: dict[datetime | None, list[int]] = {}
        for i, customer in enumerate(job.customers):
            by_as_of.setdefault(customer.as_of, []).append(i)
        for given, positions in by_as_of.items():
            as_of = stamps.get(given)
            if as_of is None:
                as_of = stamps[given] = pd.Timestamp(given)
            slots = groups.setdefault((as_of, job.campaign), [])
            for i in positions:
                customer_id = job.customers[i].customer_id
                for slot in slots:  # the first slot without this id
                    if customer_id not in slot[0]:
                        break
                else:
                    slot = (set(), [])
                    slots.append(slot)
                slot[0].add(customer_id)
                slot[1].append((j, i))

    failed: set[int] = set()
    for (as_of, campaign), slots in groups.items():
        for _, members in slots:
            live = [(j, i) for j, i in members if j not in failed]
            try:
                rows = _score_group(model, [jobs[j].customers[i] for j, i in live], as_of, campaign)
            except INPUT_ERRORS:
                if len({j for j, _ in live}) == 1:
                    failed.add(live[0][0])
                    continue
                # Several requests shared the group: score them one by one to blame one.
                for j in sorted({j for j, _ in live}):
                    mine = [i for jj, i in live if jj == j]
                    try:
                        own = _score_group(
                            model, [jobs[j].customers[i] for i in mine], as_of, campaign
                        )
                    except INPUT_ERRORS:
                        failed.add(j)
                        continue
                    for i in mine:
                        cid = jobs[j].customers[i].customer_id
                        jobs[j].results[i] = own.get(cid) or unscored_record(
                            cid, "no_purchases_before_as_of", as_of
                        )
                continue
            for j, i in live:
                cid = jobs[j].customers[i].customer_id
                jobs[j].results[i] = rows.get(cid) or unscored_record(
                    cid, "no_purchases_before_as_of", as_of
                )
    for j in failed:
        jobs[j].error = _locate_error(model, jobs[j], now)
        jobs[j].results = []


QUIET_TURNS = 2
"""Event-loop turns without a new job after which a window-0 batch is scored."""


async def _ready_requests(queue: asyncio.Queue[Any]) -> None:
    """Let the requests the worker has already received join the batch, without idling.

    Each turn of the event loop reads the sockets that have data and runs the handlers that
    can go on; a request whose bytes are here reaches the queue within a turn or two. The
    batch is scored once ``QUIET_TURNS`` turns in a row bring no new job: on an idle worker
    at once (a lone request does not wait), under load after the requests already in.
    """
    quiet = 0
    while quiet < QUIET_TURNS and queue.qsize() < MAX_BATCH_REQUESTS:
        before = queue.qsize()
        await asyncio.sleep(0)
        quiet = quiet + 1 if queue.qsize() == before else 0


Job = TypeVar("Job", bound=ScoreJob)


class MicroBatcher(Generic[Job]):
    """Gathers concurrent ``/score`` jobs of one worker and scores them in one call.

    One batch is scored at a time (a worker has one core's worth of Python), on the event
    loop when it does no I/O (``/score``'s, up to ``INLINE_MAX_CUSTOMERS``), else in a worker
    thread; requests that arrive meanwhile form the next batch, so batches grow with load
    and a lone request only waits ``window`` seconds.

    Why not BentoML's ``@bentoml.api(batchable=True)``: its batched function takes one
    argument (the customers, without the request's ``campaign``), and one bad customer
    fails the whole batch, where here only its own request gets the 400. It is not faster
    either: in ``benchmarks/http.py --service`` runs (2 workers, 2 shared cores, median of
    three runs each), ``/score`` reached 26% of ``/noop``'s rate with 1-customer requests
    at concurrency 8 and 39% at 32 with BentoML's batching, 29% and 46% with this one; with
    100-customer requests 21% and 22% against 21% and 25%.
    """

    def __init__(
        self, run: Callable[[list[Job]], None], window: float, inline_max_customers: int = 0
    ) -> None:
        """``inline_max_customers``: batches up to this size run on the event loop (only for
        a ``run`` that does no I/O); 0 runs every batch in a thread."""
        self._run = run
        self._window = window
        self._inline_max = inline_max_customers
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[None]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, job: Job) -> Job:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop(self._queue))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, done))
        await done
        return job

    async def _loop(self, queue: asyncio.Queue[tuple[Job, asyncio.Future[None]]]) -> None:
        import anyio.to_thread

        while True:
            batch = [await queue.get()]
            if self._window > 0:
                await asyncio.sleep(self._window)
            else:
                await _ready_requests(queue)
            n = len(batch[0][0].customers)
            while not queue.empty() and n < MAX_BATCH_CUSTOMERS:
                item = queue.get_nowait()
                batch.append(item)
                n += len(item[0].customers)
            jobs = [job for job, _ in batch]
            try:
                if n <= self._inline_max:
                    self._run(jobs)  # a few milliseconds: cheaper than a thread hop
                else:
                    await anyio.to_thread.run_sync(self._run, jobs)
            except Exception as exc:  # a bug, not bad input: every waiter gets it
                logger.exception("scoring batch of %d request(s) failed", len(jobs))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
