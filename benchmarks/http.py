"""HTTP benchmark of the scoring service against the framework's floor (``/noop``).

Starts ``bentoml serve`` with N workers (2 by default) on an artifact trained here on a
synthetic log (or ``--model-uri``), then drives ``/noop`` and ``/score`` for ``--seconds``
each at several concurrency levels, with single-customer and 100-customer requests (about
10 history rows per customer), alternating the two endpoints in ``--rounds`` slices so
that both see the same machine. The client is our own asyncio/aiohttp loop that times every
request with ``perf_counter`` (wrk's own percentiles were inflated).

The client runs on the same machine: on 2 cores it takes CPU from the server, so absolute
figures are lower bounds; the /score vs /noop ratio is the fairer number.

    python benchmarks/http.py --seconds 20 --json bench.json

``--service module:Class`` serves another service class with the same command line (it
must offer ``/noop`` and ``/score``), to compare a variant, e.g. another way of batching,
by its /score vs /noop ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib ``http`` package: when run as a script its directory
# is sys.path[0] and would shadow ``http`` for aiohttp/urllib, so take it off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
REPO_ROOT = _HERE.parent
sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.request_budget import budgets, print_budgets  # noqa: E402

AS_OF = "2024-07-01T00:00:00Z"
ROWS_PER_CUSTOMER = 10


@dataclass
class LevelResult:
    """Figures of one (endpoint, payload, concurrency) run."""

    endpoint: str
    payload: str
    concurrency: int
    customers_per_request: int
    seconds: float
    requests: int
    rps: float
    customers_per_s: float
    p50_ms: float
    p99_ms: float
    busiest_worker_share: float  # of the requests, averaged over slices (0.5 = even split)
    worker_requests: dict[str, int]  # requests served per worker (id), all slices
    errors_5xx: int
    errors_429: int
    errors_other: int


def train_artifact(directory: Path) -> Path:
    """A model with `retain train`'s defaults on a small synthetic log: the one users serve."""
    from features.builders import FeatureConfig
    from features.log.purchase_log import canonicalize
    from features.retention.segments import SegmentConfig
    from features.synthetic.synth import generate_purchase_log
    from serving.offers.policy import OfferPolicy
    from training.artifact import save_artifact
    from training.models.bundle import RetainModels

    raw = generate_purchase_log(2000, seed=7, start="2022-07-01", end="2024-06-30").log
    log = canonicalize(raw).log
    models = RetainModels(horizon_days=90).fit(log, "2024-07-01")
    return save_artifact(
        directory,
        models,
        feature_config=FeatureConfig(horizon_days=90),
        segment_config=SegmentConfig(),
        policy_yaml=OfferPolicy.default().to_yaml(),
    )


def make_bodies(n_customers: int) -> list[bytes]:
    """Request bodies of ``n_customers`` customers with ~10 history rows each (synthetic)."""
    from features.synthetic.synth import generate_purchase_log

    raw = generate_purchase_log(3000, seed=99, start="2022-07-01", end="2024-06-30").log
    raw = raw.sort_values(["customer_id", "timestamp"], kind="stable")
    tail = raw.groupby("customer_id", sort=False).tail(ROWS_PER_CUSTOMER)
    counts = tail["customer_id"].value_counts()
    ids = counts.index[counts >= ROWS_PER_CUSTOMER // 2].tolist()
    histories: dict[str, list[dict[str, Any]]] = {}
    ts = tail["timestamp"].map(lambda t: t.isoformat()).tolist()
    for cid, stamp, amount, category, channel in zip(
        tail["customer_id"].tolist(),
        ts,
        tail["amount"].tolist(),
        tail["category"].astype("object").tolist(),
        tail["channel"].astype("object").tolist(),
        strict=True,
    ):
        row: dict[str, Any] = {"timestamp": stamp, "amount": amount}
        if isinstance(category, str):
            row["category"] = category
        if isinstance(channel, str):
            row["channel"] = channel
        histories.setdefault(cid, []).append(row)
    bodies = []
    for start in range(0, len(ids) - n_customers + 1, n_customers):
        chunk = ids[start : start + n_customers]
        customers = [
            {"customer_id": cid, "as_of": AS_OF, "history": histories[cid]} for cid in chunk
        ]
        bodies.append(json.dumps({"customers": customers}).encode())
        if len(bodies) >= 200:
            break
    return bodies


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    model_uri: str, workers: int, port: int, log_path: Path, service: str | None = None
) -> subprocess.Popen[bytes]:
    import urllib.request

    from serving.http.serve import SERVICE_TARGET, serve_command

    argv, env = serve_command(model_uri, "127.0.0.1", port, workers)
    if service is not None:  # another service class on the same command line
        argv[argv.index(SERVICE_TARGET)] = service
    env.update({"RETAIN_API_KEY": "", "RETAIN_FEATURE_SNAPSHOT": ""})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"server not ready:\n{log_path.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


async def drive(
    url: str, bodies: Sequence[bytes], concurrency: int, seconds: float, warmup: float
) -> tuple[list[float], dict[str, int], float]:
    """``concurrency`` keep-alive clients in a closed loop; each request timed on its own."""
    import aiohttp

    latencies: list[float] = []
    errors = {"5xx": 0, "429": 0, "other": 0}
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        measure_from = start + warmup
        stop = measure_from + seconds

        async def worker(k: int) -> None:
            i = k
            while True:
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                t1 = time.perf_counter()
                if t0 < measure_from or t1 > stop:
                    continue
                if status == 200:
                    latencies.append(t1 - t0)
                elif status >= 500:
                    errors["5xx"] += 1
                elif status == 429:
                    errors["429"] += 1
                else:
                    errors["other"] += 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, errors, seconds


def figures(
    endpoint: str,
    payload: str,
    n: int,
    c: int,
    latencies: Sequence[float],
    errors: dict[str, int],
    seconds: float,
    busiest_share: float = float("nan"),
    worker_requests: dict[str, int] | None = None,
) -> LevelResult:
    lat_ms = np.asarray(latencies) * 1000 if len(latencies) else np.asarray([np.nan])
    requests = len(latencies)
    return LevelResult(
        endpoint=endpoint,
        payload=payload,
        concurrency=c,
        customers_per_request=n,
        seconds=seconds,
        requests=requests,
        rps=requests / seconds,
        customers_per_s=requests * n / seconds,
        p50_ms=float(np.percentile(lat_ms, 50)),
        p99_ms=float(np.percentile(lat_ms, 99)),
        busiest_worker_share=busiest_share,
        worker_requests=dict(sorted((worker_requests or {}).items())),
        errors_5xx=errors["5xx"],
        errors_429=errors["429"],
        errors_other=errors["other"],
    )


class WorkerSplit:
    """Requests per worker since the last call, read from the server's access log.

    Each slice opens ``c`` new keep-alive connections, and a connection stays with the
    worker that accepted it. With one listening socket shared by the workers, the worker
    that woke first accepted the whole burst and the other idled (busiest share 74-100%);
    ``retain serve`` now gives each worker its own ``SO_REUSEPORT`` socket
    (:mod:`serving.http.worker_sockets`) and the kernel spreads the connections. The split
    is reported per level so that a ratio can be read with it.
    """

    _LINE = re.compile(rb"\[entry_service:[^:\]]+:(\d+)\][^\n]*path=/(?:noop|score),")

    def __init__(self, log_path: Path | None) -> None:
        self._path = log_path
        self._offset = 0

    def requests(self) -> dict[str, int]:
        """Requests per worker id since the last call."""
        if self._path is None or not self._path.exists():
            return {}
        with self._path.open("rb") as log:
            log.seek(self._offset)
            text = log.read()
        self._offset += len(text)
        counts: dict[str, int] = {}
        for worker in self._LINE.findall(text):
            counts[worker.decode()] = counts.get(worker.decode(), 0) + 1
        return counts


def busiest(counts: dict[str, int]) -> float:
    """The busiest worker's share of the requests (nan when none were counted)."""
    total = sum(counts.values())
    return max(counts.values()) / total if total else float("nan")


def interleaved(
    base: str,
    payload: str,
    bodies: Sequence[bytes],
    n: int,
    c: int,
    seconds: float,
    rounds: int,
    split: WorkerSplit | None = None,
) -> list[LevelResult]:
    """/noop and /score at one level for ``seconds`` each, alternating in ``rounds`` slices.

    On a shared 2-core VM the machine's speed drifts by tens of percent over minutes; taking
    the floor and the endpoint in alternating slices exposes both to the same drift, so
    their ratio measures the scorer rather than the neighbours. Latencies of all slices of
    an endpoint are pooled before the percentiles are taken.
    """
    rounds = max(rounds, 1)
    split = split or WorkerSplit(None)
    pooled: dict[str, tuple[list[float], dict[str, int], list[float], list[float]]] = {
        endpoint: ([], {"5xx": 0, "429": 0, "other": 0}, [], []) for endpoint in ("/noop", "/score")
    }
    served: dict[str, dict[str, int]] = {endpoint: {} for endpoint in pooled}
    split.requests()  # skip what came before
    for _ in range(rounds):
        for endpoint, (latencies, errors, spent, shares) in pooled.items():
            lat, err, sec = asyncio.run(
                drive(f"{base}{endpoint}", bodies, c, seconds / rounds, 0.5)
            )
            latencies.extend(lat)
            spent.append(sec)
            counts = split.requests()
            shares.append(busiest(counts))
            for worker, count in counts.items():
                served[endpoint][worker] = served[endpoint].get(worker, 0) + count
            for key in errors:
                errors[key] += err[key]
    return [
        figures(
            endpoint,
            payload,
            n,
            c,
            latencies,
            errors,
            sum(spent),
            float(np.mean(shares)),
            served[endpoint],
        )
        for endpoint, (latencies, errors, spent, shares) in pooled.items()
    ]


def floors(results: list[LevelResult]) -> list[tuple[str, bool, str]]:
    """The issue's floors, each (name, passed, figures)."""

    def get(endpoint: str, payload: str, c: int) -> LevelResult | None:
        return next(
            (
                r
                for r in results
                if r.endpoint == endpoint and r.payload == payload and r.concurrency == c
            ),
            None,
        )

    checks: list[tuple[str, bool, str]] = []
    score8, noop8 = get("/score", "1 customer", 8), get("/noop", "1 customer", 8)
    if score8 and noop8:
        ratio = score8.rps / noop8.rps if noop8.rps else 0.0
        checks.append(
            (
                "/score 1-customer c=8 >= 60% of /noop rps",
                ratio >= 0.6,
                f"{score8.rps:.0f} / {noop8.rps:.0f} = {ratio:.0%}",
            )
        )
        checks.append(
            ("/score 1-customer c=8 p99 <= 25 ms", score8.p99_ms <= 25, f"{score8.p99_ms:.1f} ms")
        )
    score100, noop100 = get("/score", "100 customers", 8), get("/noop", "100 customers", 8)
    if score100 and noop100:
        ratio = score100.customers_per_s / noop100.customers_per_s if noop100.rps else 0.0
        checks.append(
            (
                "/score 100-customer c=8 >= 45% of /noop customers/s",
                ratio >= 0.45,
                f"{score100.customers_per_s:,.0f} / {noop100.customers_per_s:,.0f} = {ratio:.0%}",
            )
        )
    total_5xx = sum(r.errors_5xx for r in results)
    checks.append(("zero 5xx at every level", total_5xx == 0, f"{total_5xx} 5xx"))
    hundred = [r for r in results if r.endpoint == "/score" and r.payload == "100 customers"]
    if hundred:
        best = max(hundred, key=lambda r: r.customers_per_s)
        checks.append(
            (
                "/score 100-customer >= 15,000 customers/s (best level)",
                best.customers_per_s >= 15_000,
                f"{best.customers_per_s:,.0f} customers/s at c={best.concurrency}",
            )
        )
    return checks


def _per_worker(counts: dict[str, int]) -> str:
    """Each worker's share of the requests, e.g. ``52/48`` (percent)."""
    total = sum(counts.values())
    return "/".join(f"{100 * v / total:.0f}" for v in counts.values()) if total else "-"


def print_table(results: list[LevelResult], checks: list[tuple[str, bool, str]]) -> None:
    header = (
        f"{'endpoint':<8} {'payload':<14} {'conc':>4} {'req/s':>8} {'cust/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'busiest':>7} {'per worker':>11} "
        f"{'5xx':>5} {'429':>5} {'other':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.endpoint:<8} {r.payload:<14} {r.concurrency:>4} {r.rps:>8.1f} "
            f"{r.customers_per_s:>9.0f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} "
            f"{r.busiest_worker_share:>7.0%} {_per_worker(r.worker_requests):>11} "
            f"{r.errors_5xx:>5} "
            f"{r.errors_429:>5} {r.errors_other:>5}"
        )
    print()
    for name, passed, figures in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {figures}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", help="artifact dir or models:/...; default: train one")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--payloads", default="1,100", help="customers per request, comma-separated"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating /noop and /score slices per level"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--budget-calls", type=int, default=300, help="calls per stage of the in-process budget"
    )
    parser.add_argument(
        "--budget-only", action="store_true", help="print the in-process budget, start no server"
    )
    parser.add_argument(
        "--service",
        help="module:Class to serve instead of retain's service (a variant to compare, "
        "e.g. another batching); it must offer /noop and /score",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="retain-bench-") as tmp:
        model_uri = args.model_uri or str(train_artifact(Path(tmp) / "artifact"))
        sizes = [int(k) for k in args.payloads.split(",")]
        payloads = [(f"{k} customer{'s' if k > 1 else ''}", k, make_bodies(k)) for k in sizes]
        # before the server starts: the budget has the cores to itself
        budget = budgets(model_uri, [(p, b[0]) for p, _, b in payloads], args.budget_calls)
        print_budgets(budget)
        if args.budget_only:
            if args.json:
                args.json.write_text(json.dumps({"budget_us": budget}, indent=2))
            return 0
        port = args.port or free_port()
        load_before = os.getloadavg()
        log_path = Path(tmp) / "serve.log"
        process = start_server(model_uri, args.workers, port, log_path, args.service)
        split = WorkerSplit(log_path)
        base = f"http://127.0.0.1:{port}"
        results: list[LevelResult] = []
        try:
            for payload, n, bodies in payloads:
                for c in levels:
                    pair = interleaved(
                        base, payload, bodies, n, c, args.seconds, args.rounds, split
                    )
                    results.extend(pair)
                    for result in pair:
                        print(
                            f"  {result.endpoint} {payload} c={c}: {result.rps:.1f} req/s "
                            f"p99 {result.p99_ms:.1f} ms",
                            file=sys.stderr,
                        )
            results.sort(key=lambda r: (r.customers_per_request, r.endpoint, r.concurrency))
        finally:
            stop_server(process)
        load_after = os.getloadavg()
    checks = floors(results)
    print(
        f"\nworkers={args.workers} cores={os.cpu_count()} seconds/level={args.seconds} "
        f"load average before={load_before[0]:.2f} after={load_after[0]:.2f} "
        "(client shares the cores with the server)\n"
    )
    print_table(results, checks)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "workers": args.workers,
                    "cpu_count": os.cpu_count(),
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                    "results": [asdict(r) for r in results],
                    "floors": [{"name": n, "passed": p, "figures": f} for n, p, f in checks],
                    "budget_us": budget,
                },
                indent=2,
            )
        )
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
