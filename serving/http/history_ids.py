"""``/score/ids`` from the database: a batch of requests, one query, one score per campaign.

The micro-batcher of ``/score`` (:class:`serving.http.batching.MicroBatcher`) gathers the
concurrent ``/score/ids`` requests of a worker; their ids go to the database in one query
(:meth:`serving.http.history_source.HistorySource.fetch`) and the rows are scored at one
``as_of`` (the time the batch runs) by :func:`serving.scorer.score_log`, the function
``/score`` uses, once per campaign in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from serving.http.batching import INPUT_ERRORS, ScoreJob
from serving.http.history_source import HistoryConfigError, HistorySource, HistoryUnavailable
from serving.http.responses import score_records, unscored_record
from serving.http.schemas import CustomerIn

if TYPE_CHECKING:
    from serving.scorer import ScoringModel

UNAVAILABLE = 503
BAD_ROWS = 502


@dataclass
class IdsJob(ScoreJob):
    """One ``/score/ids`` request in the batcher; ``customers`` carry only the ids.

    ``status`` and ``message`` say why it got no scores (503: the database did not
    answer; 502: its rows for these customers cannot be scored).
    """

    status: int | None = None
    message: str = ""

    @classmethod
    def of(cls, customer_ids: Sequence[str], campaign: str | None) -> IdsJob:
        # model_construct: the ids were validated by IdsRequest already
        customers = [
            CustomerIn.model_construct(customer_id=cid, history=[]) for cid in customer_ids
        ]
        return cls(customers, campaign)

    @property
    def ids(self) -> list[str]:
        return [c.customer_id for c in self.customers]


def _fail(jobs: Sequence[IdsJob], status: int, message: str) -> None:
    for job in jobs:
        job.status, job.message, job.results = status, message, []


def _score(
    model: ScoringModel, source: HistorySource, jobs: Sequence[IdsJob], as_of: pd.Timestamp
) -> None:
    """Fetch the jobs' customers in one query and write each job's results."""
    from serving.scorer import score_log

    wanted = list(dict.fromkeys(cid for job in jobs for cid in job.ids))
    log = source.fetch(wanted)
    known = set(log.customers.tolist())
    by_campaign: dict[str | None, dict[str, dict[str, Any]]] = {}
    for campaign in dict.fromkeys(job.campaign for job in jobs):
        scored = score_log(model, log, as_of, campaign=campaign) if len(log) else None
        by_campaign[campaign] = {} if scored is None else score_records(scored)
    for job in jobs:
        rows = by_campaign[job.campaign]
        job.results = [
            rows.get(cid)
            or unscored_record(
                cid,
                "no_purchases_before_as_of" if cid in known else "unknown_customer_id",
                as_of if cid in known else None,
            )
            for cid in job.ids
        ]


def score_history_jobs(model: ScoringModel, source: HistorySource, jobs: Sequence[IdsJob]) -> None:
    """Score a batch of ``/score/ids`` requests from the database, at the current time.

    The database down (or the table gone) fails every job of the batch with 503 and the
    reason; the source reconnects on the next batch. Rows the scorer rejects fail the
    batch, then each job is scored alone, so only the jobs asking for those customers get
    502 naming the fault.
    """
    try:
        _score(model, source, jobs, pd.Timestamp.now(tz="UTC"))
    except (HistoryUnavailable, HistoryConfigError) as exc:
        _fail(jobs, UNAVAILABLE, str(exc))
    except INPUT_ERRORS as exc:
        if len(jobs) == 1:
            message = f"the database's rows for these customers cannot be scored: {exc}"
            _fail(jobs, BAD_ROWS, message)
            return
        for job in jobs:  # error path only: one query per job to find the one at fault
            score_history_jobs(model, source, [job])
