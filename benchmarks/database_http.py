"""``/score/ids`` with histories read from PostgreSQL per request batch, against the snapshot.

Trains an artifact on a synthetic log (as ``benchmarks/http.py`` does), writes the same log
to a PostgreSQL table with an index on ``customer_id`` and its features at one ``as_of`` to
a Parquet snapshot, then serves each source in turn (``bentoml serve``, N workers) and
drives ``/score/ids`` with 1-id and 100-id requests at concurrency 8, alternating with
``/noop`` in ``--rounds`` slices on the same server, so each figure is a share of
``/noop`` measured on the same machine at the same time.

PostgreSQL: ``--db-url`` (or ``RETAIN_TEST_POSTGRES_URL``), else a throwaway cluster
started from the machine's binaries (``tests/postgres_server.py``).

    python benchmarks/database_http.py --seconds 12 --json bench-db-http.json

``--sources snapshot`` measures the snapshot path alone (e.g. on the code before the
database source existed, with PYTHONPATH at that tree).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # see http.py
REPO_ROOT = _HERE.parent
sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from dataclasses import asdict  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

AS_OF = "2024-07-01"
TABLE = "bench_orders"


def _module(path: Path, name: str) -> ModuleType:
    """A sibling script or test helper loaded by path (neither is an importable package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench_http = _module(_HERE / "http.py", "retain_bench_http")


def synthetic_log() -> pd.DataFrame:
    """The log the benchmark artifact is trained on (benchmarks/http.py's)."""
    from features.synthetic.synth import generate_purchase_log

    return generate_purchase_log(2000, seed=7, start="2022-07-01", end="2024-06-30").log


def write_table(url: str, log: pd.DataFrame) -> None:
    """The log as a PostgreSQL table, amounts NUMERIC, indexed on the customer column."""
    import pyarrow as pa

    from features.sources.database import connect

    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{TABLE}"')
        cur.adbc_ingest(TABLE, pa.Table.from_pandas(log, preserve_index=False), mode="create")
        cur.execute(f'ALTER TABLE "{TABLE}" ALTER COLUMN amount TYPE numeric USING amount::numeric')
        cur.execute(f'CREATE INDEX ON "{TABLE}" (customer_id)')
        cur.execute(f'ANALYZE "{TABLE}"')
        conn.commit()


def write_snapshot(path: Path, log: pd.DataFrame, artifact: Path) -> None:
    """Every customer's features at ``AS_OF``, as ``retain score --features-out`` writes."""
    from features.builders import build_features
    from features.log.purchase_log import canonicalize
    from serving.scorer import ScoringModel

    config = ScoringModel.load(artifact).artifact.feature_config
    features = build_features(canonicalize(log).log, AS_OF, config)
    frame = features.reset_index().assign(as_of=pd.Timestamp(AS_OF, tz="UTC"))
    frame.to_parquet(path)


def bodies(ids: Sequence[str], n: int, count: int = 200) -> tuple[list[bytes], list[bytes]]:
    """``count`` ``/score/ids`` bodies of ``n`` ids, and ``/noop`` bodies naming as many."""
    rng = np.random.default_rng(n)
    ids_bodies, noop_bodies = [], []
    for _ in range(count):
        chosen = [str(c) for c in rng.choice(ids, size=n, replace=False)]
        ids_bodies.append(json.dumps({"customer_ids": chosen}).encode())
        customers = [{"customer_id": c} for c in chosen]
        noop_bodies.append(json.dumps({"customers": customers}).encode())
    return ids_bodies, noop_bodies


def start(artifact: Path, workers: int, env_extra: dict[str, str], log: Path) -> tuple[Any, str]:
    from serving.http.serve import serve_command

    port = bench_http.free_port()
    argv, env = serve_command(str(artifact), "127.0.0.1", port, workers)
    env.update({"RETAIN_API_KEY": "", "RETAIN_FEATURE_SNAPSHOT": "", **env_extra})
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            pass
        time.sleep(0.5)
    bench_http.stop_server(process)
    raise RuntimeError(f"server not ready:\n{log.read_text()[-3000:]}")


def measure(
    url: str, source: str, n: int, c: int, seconds: float, rounds: int, ids: Sequence[str]
) -> list[Any]:
    """/noop and /score/ids alternating in ``rounds`` slices; pooled figures of each."""
    ids_bodies, noop_bodies = bodies(ids, n)
    pooled: dict[str, tuple[list[float], dict[str, int], list[float]]] = {
        "/noop": ([], {"5xx": 0, "429": 0, "other": 0}, []),
        "/score/ids": ([], {"5xx": 0, "429": 0, "other": 0}, []),
    }
    for _ in range(max(rounds, 1)):
        for endpoint, (latencies, errors, spent) in pooled.items():
            body = noop_bodies if endpoint == "/noop" else ids_bodies
            lat, err, sec = asyncio.run(
                bench_http.drive(f"{url}{endpoint}", body, c, seconds / rounds, 0.5)
            )
            latencies.extend(lat)
            spent.append(sec)
            for key in errors:
                errors[key] += err[key]
    payload = f"{source} {n} id{'s' if n > 1 else ''}"
    return [
        bench_http.figures(endpoint, payload, n, c, latencies, errors, sum(spent))
        for endpoint, (latencies, errors, spent) in pooled.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", default=os.environ.get("RETAIN_TEST_POSTGRES_URL"))
    parser.add_argument("--seconds", type=float, default=12.0, help="per endpoint per level")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--payloads", default="1,100", help="ids per request, comma-separated")
    parser.add_argument("--sources", default="database,snapshot")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    sizes = [int(k) for k in args.payloads.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="retain-bench-db-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        log = synthetic_log()
        artifact = bench_http.train_artifact(root / "artifact")
        ids = sorted(log["customer_id"].unique())
        envs: dict[str, dict[str, str]] = {}
        if "database" in sources:
            url = args.db_url
            if not url:
                server_module = _module(REPO_ROOT / "tests" / "postgres_server.py", "retain_pg")
                url = stack.enter_context(server_module.PostgresServer()).url
            write_table(url, log)
            envs["database"] = {"RETAIN_HISTORY_URL": url, "RETAIN_HISTORY_TABLE": TABLE}
        if "snapshot" in sources:
            write_snapshot(root / "snapshot.parquet", log, artifact)
            envs["snapshot"] = {"RETAIN_FEATURE_SNAPSHOT": str(root / "snapshot.parquet")}
        load_before = os.getloadavg()
        for source in sources:
            process, base = start(artifact, args.workers, envs[source], root / f"{source}.log")
            try:
                for n in sizes:
                    noop, scored = measure(
                        base, source, n, args.concurrency, args.seconds, args.rounds, ids
                    )
                    share = scored.rps / noop.rps if noop.rps else 0.0
                    rows.append({"source": source, "ids": n, "share_of_noop": share,
                                 "noop": asdict(noop), "score_ids": asdict(scored)})  # fmt: skip
                    print(
                        f"  {source} {n} ids c={args.concurrency}: /score/ids {scored.rps:.0f} "
                        f"req/s vs /noop {noop.rps:.0f} = {share:.0%}",
                        file=sys.stderr,
                    )
            finally:
                bench_http.stop_server(process)
        load_after = os.getloadavg()
    print(
        f"\nworkers={args.workers} cores={os.cpu_count()} c={args.concurrency} "
        f"seconds/endpoint={args.seconds} load before={load_before[0]:.2f} "
        f"after={load_after[0]:.2f}\n"
    )
    header = (
        f"{'source':<9} {'ids':>4} {'ids/s':>8} {'req/s':>7} {'noop req/s':>10} "
        f"{'share':>6} {'p50 ms':>7} {'p99 ms':>7} {'5xx':>4}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row["score_ids"]
        print(
            f"{row['source']:<9} {row['ids']:>4} {s['customers_per_s']:>8.0f} {s['rps']:>7.0f} "
            f"{row['noop']['rps']:>10.0f} {row['share_of_noop']:>6.0%} {s['p50_ms']:>7.1f} "
            f"{s['p99_ms']:>7.1f} {s['errors_5xx']:>4}"
        )
    one = next((r for r in rows if r["source"] == "database" and r["ids"] == 1), None)
    if one is not None:
        passed = one["share_of_noop"] >= 0.4
        print(
            f"\n{'PASS' if passed else 'FAIL'}  /score/ids from the database, 1 id, "
            f"c={args.concurrency} >= 40% of /noop: {one['share_of_noop']:.0%}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "workers": args.workers,
                    "cpu_count": os.cpu_count(),
                    "concurrency": args.concurrency,
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                    "results": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
