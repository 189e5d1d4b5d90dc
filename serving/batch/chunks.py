"""Customer chunks: the unit of batch scoring, and the runner that scores them in this process.

The canonical log is sorted by ``customer_id``, so a range of customer codes is a contiguous
block of rows (:func:`customer_chunks`, :func:`chunk_frame`). Features of one customer only
depend on that customer's rows, so scoring chunk by chunk with :func:`score_chunk` (the shared
scorer) gives the same rows as one whole-log call, as long as the offer policy does not rank
customers against each other (:func:`chunk_dependent_rules`). A runner
(:data:`ChunkRunner`) scores chunks: :func:`pandas_runner` here, on threads, or
:func:`serving.batch.dask.dask_runner` on a cluster.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.builders import build_feature_block
from features.errors import UserError
from serving.offers.policy import OfferPolicy
from serving.scorer import ScoringModel, score, score_block

DEFAULT_CHUNK_CUSTOMERS = 100_000
PART_TEMPLATE = "part-{:05d}.parquet"


class BatchError(UserError, RuntimeError):
    """A batch run cannot start or continue; the message says what to do."""


@dataclass(frozen=True)
class Chunk:
    """Customers with codes ``[code_start, code_stop)``, i.e. log rows ``[row_start, row_stop)``."""

    index: int
    code_start: int
    code_stop: int
    row_start: int
    row_stop: int

    @property
    def part_name(self) -> str:
        return PART_TEMPLATE.format(self.index)


def customer_chunks(log: pd.DataFrame, chunk_customers: int) -> list[Chunk]:
    """Split a canonical log into blocks of ``chunk_customers`` customer codes.

    Relies on the canonical sort (codes non-decreasing); checked here because a wrong order
    would silently split one customer over two chunks.
    """
    if chunk_customers < 1:
        raise BatchError(f"chunk size must be at least 1 customer, got {chunk_customers}")
    column = log["customer_id"]
    if not isinstance(column.dtype, pd.CategoricalDtype):
        raise BatchError(
            f"column customer_id must be categorical (the canonical log), got {column.dtype}"
        )
    codes = np.asarray(column.array.codes)
    if codes.size and (codes[0] < 0 or np.any(np.diff(codes) < 0)):
        raise BatchError(
            "the log is not sorted by customer_id (or has empty ids); load it with "
            "features.log.purchase_log.read_purchase_log"
        )
    n_codes = len(column.cat.categories)
    starts = np.arange(0, n_codes, chunk_customers, dtype=np.int64)
    stops = np.minimum(starts + chunk_customers, n_codes)
    row_starts = np.searchsorted(codes, starts, side="left")
    row_stops = np.searchsorted(codes, stops, side="left")
    return [
        Chunk(i, int(a), int(b), int(ra), int(rb))
        for i, (a, b, ra, rb) in enumerate(zip(starts, stops, row_starts, row_stops, strict=True))
    ]


def chunk_frame(log: pd.DataFrame, chunk: Chunk) -> pd.DataFrame:
    """The chunk's rows as a canonical log whose categories are only its own customers.

    Slicing keeps all (say 1M) categories, which every Dask transfer would then carry; the
    chunk's customers are a contiguous block of the sorted categories, so rebasing the codes
    is exact and costs nothing.
    """
    part = log.iloc[chunk.row_start : chunk.row_stop]
    column = part["customer_id"]
    codes = np.asarray(column.array.codes) - chunk.code_start
    categories = column.cat.categories[chunk.code_start : chunk.code_stop]
    customer = pd.Categorical.from_codes(codes, categories=categories)
    out = part.assign(customer_id=customer)
    out.index = pd.RangeIndex(len(out))
    return out


def score_chunk(
    model: ScoringModel,
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    campaign: str | None,
    with_features: bool,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Scores (and the feature snapshot if asked) of one chunk via the shared scorer.

    Without a snapshot this is exactly :func:`serving.scorer.score`; with one, the feature
    block is built once, scored with :func:`serving.scorer.score_block` (what ``score``
    does internally) and kept as the snapshot frame.
    """
    if not with_features:
        return score(model, log, as_of, campaign=campaign), None
    block = build_feature_block(log, as_of, model.artifact.feature_config)
    return score_block(model, block, as_of, campaign=campaign).frame(), block.to_frame()


def chunk_dependent_rules(policy: OfferPolicy) -> list[str]:
    """Rules whose match depends on the other customers of the call (value quantiles)."""
    return [r.name for r in policy.rules if r.match.min_value_quantile is not None]


@dataclass(frozen=True)
class ChunkResult:
    """One scored chunk, as produced by a runner (pandas here, Dask in :mod:`serving.batch.dask`)."""

    chunk: Chunk
    scores: pd.DataFrame
    features: pd.DataFrame | None


@dataclass(frozen=True)
class StagedChunk:
    """A chunk whose parts a task already wrote into staging: only its manifest entry."""

    chunk: Chunk
    entry: dict[str, Any]


ChunkRunner = Callable[[Sequence[Chunk]], Iterator[ChunkResult | StagedChunk]]
"""Scores the given chunks and yields their results or staged entries (any order)."""


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def pandas_runner(
    model: ScoringModel,
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    campaign: str | None,
    with_features: bool,
    threads: int = 1,
) -> ChunkRunner:
    """Chunks scored in this process, on up to ``threads`` threads, yielded in chunk order.

    Why threads: the heavy steps (numpy, Arrow, scipy's hyp2f1, LightGBM, the compiled
    boosters) run in C without the GIL, so two chunks in flight keep two cores busy. At most ``threads`` chunks are scored at once plus the one being
    written, so memory stays a few chunks. Results do not depend on ``threads``.
    """

    def work(chunk: Chunk) -> ChunkResult:
        scores, features = score_chunk(
            model,
            chunk_frame(log, chunk),
            as_of,
            campaign=campaign,
            with_features=with_features,
        )
        return ChunkResult(chunk, scores, features)

    def run(chunks: Sequence[Chunk]) -> Iterator[ChunkResult]:
        if threads <= 1:
            for chunk in chunks:
                yield work(chunk)
            return
        pending = iter(chunks)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="retain-score") as pool:
            in_flight: deque[Future[ChunkResult]] = deque(
                pool.submit(work, chunk) for chunk in itertools.islice(pending, threads)
            )
            try:
                while in_flight:
                    result = in_flight.popleft().result()
                    following = next(pending, None)
                    if following is not None:
                        in_flight.append(pool.submit(work, following))
                    yield result
            finally:
                for future in in_flight:
                    future.cancel()

    return run
