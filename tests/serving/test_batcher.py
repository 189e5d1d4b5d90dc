"""The micro-batcher scores small ``/score`` batches on the event loop and larger ones (and
any batcher without ``inline_max_customers``, e.g. ``/score/ids`` that reads a database) in
a worker thread; both gather concurrent jobs into one call and answer every waiter."""

from __future__ import annotations

import asyncio
import threading

from serving.http.batching import QUIET_TURNS, MicroBatcher, ScoreJob
from serving.http.schemas import CustomerIn


def customers(n: int, prefix: str) -> list[CustomerIn]:
    return [CustomerIn(customer_id=f"{prefix}{i}") for i in range(n)]


def run_batches(sizes: list[int], inline_max: int) -> tuple[list[list[int]], list[bool]]:
    """Submit one job per size at once; the batch sizes seen and whether each ran on the
    event loop's thread."""
    seen: list[list[int]] = []
    on_loop: list[bool] = []
    loop_thread: list[threading.Thread] = []

    def run(jobs: list[ScoreJob]) -> None:
        seen.append([len(job.customers) for job in jobs])
        on_loop.append(threading.current_thread() is loop_thread[0])
        for job in jobs:
            job.results = [{"customer_id": c.customer_id} for c in job.customers]

    async def main() -> list[ScoreJob]:
        loop_thread.append(threading.current_thread())
        batcher = MicroBatcher(run, 0.01, inline_max)
        jobs = [ScoreJob(customers(n, f"r{k}-"), None) for k, n in enumerate(sizes)]
        return await asyncio.gather(*(batcher.submit(job) for job in jobs))

    done = asyncio.run(main())
    for job, n in zip(done, sizes, strict=True):
        assert [r["customer_id"] for r in job.results] == [c.customer_id for c in job.customers]
        assert len(job.results) == n
    return seen, on_loop


def test_small_batches_run_on_the_loop_and_large_ones_in_a_thread() -> None:
    seen, on_loop = run_batches([1, 2, 3], inline_max=8)
    assert seen == [[1, 2, 3]] and on_loop == [True]
    seen, on_loop = run_batches([5, 4], inline_max=8)
    assert seen == [[5, 4]] and on_loop == [False]


def test_a_batcher_without_inline_runs_every_batch_in_a_thread() -> None:
    seen, on_loop = run_batches([1], inline_max=0)
    assert seen == [[1]] and on_loop == [False]


def test_window_zero_gathers_the_requests_already_on_their_way_without_waiting() -> None:
    """With no window the batcher yields to the event loop until QUIET_TURNS turns in a row
    bring nothing new: a job that arrives a turn later joins the batch, a lone job is
    scored within a few turns (no timer), and a job after a quiet spell starts a new batch."""
    seen: list[list[str]] = []

    def run(jobs: list[ScoreJob]) -> None:
        seen.append([job.customers[0].customer_id for job in jobs])
        for job in jobs:
            job.results = [{"customer_id": c.customer_id} for c in job.customers]

    async def later(batcher: MicroBatcher[ScoreJob], name: str, turns: int) -> ScoreJob:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await batcher.submit(ScoreJob(customers(1, name), None))

    async def turns_until_done(batcher: MicroBatcher[ScoreJob]) -> int:
        task = asyncio.ensure_future(batcher.submit(ScoreJob(customers(1, "lone"), None)))
        turns = 0
        while not task.done():
            await asyncio.sleep(0)
            turns += 1
        return turns

    async def main() -> int:
        batcher: MicroBatcher[ScoreJob] = MicroBatcher(run, 0, 8)
        await asyncio.gather(
            later(batcher, "a", 0), later(batcher, "b", 1), later(batcher, "c", QUIET_TURNS + 30)
        )
        return await turns_until_done(batcher)

    turns = asyncio.run(main())
    assert seen == [["a0", "b0"], ["c0"], ["lone0"]], seen
    assert turns <= QUIET_TURNS + 4, turns
