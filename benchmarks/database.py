"""Benchmark the database paths against the Parquet ones, side by side in one run.

Usage: ``python benchmarks/database.py [--rows 1000000] [--score-customers 20000]
[--big-rows 10000000] [--dask-rows 1000000] [--skip read,score,memory,dask] [--json PATH]``

Uses ``$RETAIN_TEST_POSTGRES_URL`` if set, else starts a throwaway PostgreSQL cluster
(``tests/postgres_server.py``; Debian's PostgreSQL on loopback, fsync off).

Figures:

1. **log read**: ``read_purchase_log`` (read + the loader's rules) of the same synthetic log
   from a PostgreSQL table and from a Parquet file, both ending at the canonical log: rows
   per second, wall and CPU (client, and the server's backends); also the raw frame alone
   (``read_database_log`` vs the Parquet reader). Goal: PostgreSQL within 2x of Parquet;
   the verdict is printed for wall and CPU separately. A table this size is read in two
   parts over two connections (:mod:`features.sources.database_parts`), which shortens the wall
   time when two cores are free and adds a little CPU. Best of ``--repeat`` runs.
2. **retain score**: customers per minute of ``retain score`` (its summary's total: read,
   score, publish) reading the table and publishing into a table, vs reading Parquet and
   publishing a directory. Goal: within 1.5x.
3. **memory**: peak RSS of a fresh process reading a ``--big-rows`` table (generated in the
   server with ``generate_series``) into the canonical log, next to the same rows from
   Parquet and the log's own size in memory: rows come as record batches, so the peak
   stays a small multiple of the result, as for a file.
4. **dask**: ``retain score`` from a ``--dask-rows`` table (the log of ``benchmarks/batch.py``)
   on threads (the driver reads the table) and with ``--dask ADDRESS`` against a scheduler
   and two single-threaded ``dask worker`` processes started here (each task reads its own
   customer range, :mod:`serving.batch.database_ranges`), cold and warm: customers/min over
   the job, the driver's peak RSS (the ``retain score`` process alone: the workers are not
   its children), the workers' peak RSS, and whether the parts are byte-identical to
   threads from the table and to threads from the Parquet file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# benchmarks/http.py would shadow the standard library's http (distributed imports it)
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from features.log.purchase_log import read_purchase_log  # noqa: E402
from features.log.reading import read_source  # noqa: E402
from features.log.schema import LogConfig  # noqa: E402
from features.sources.database import connect, parse_url  # noqa: E402
from features.sources.database_log import DatabaseLog, read_database_log  # noqa: E402
from features.synthetic.synth import customers_for_rows, generate_purchase_log  # noqa: E402
from tests.postgres_server import ENV_URL, PostgresServer, execute, load_frame  # noqa: E402

_MEMORY_PROGRAM = """
import json, resource, sys
sys.path.insert(0, {repo!r})
from features.log.purchase_log import read_purchase_log
from features.sources.database import parse_url
from features.sources.database_log import DatabaseLog
source = {source!r}
if source.startswith("postgresql://"):
    source = DatabaseLog(parse_url(source), table="big")
log = read_purchase_log(source).log
print(json.dumps({{"rows": len(log), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "log_bytes": int(log.memory_usage(deep=True).sum())}}))
"""


class ServerCpu:
    """CPU seconds the server spent: its postmaster's reaped children (backends that ended).

    On a shared machine wall time mostly measures the other tenants; CPU seconds of the
    client plus the server are the fair figure. A read's backend ends with its connection,
    so its CPU is counted once the postmaster reaps it.
    """

    def __init__(self, url: str) -> None:
        import psutil

        connection = connect(url)
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT pg_backend_pid()")
            backend = int(cursor.fetchone()[0])
            self._postmaster = psutil.Process(psutil.Process(backend).ppid())  # while it lives
        finally:
            connection.close()

    def seconds(self) -> float:
        time.sleep(0.3)  # let the postmaster reap the backend that just ended
        times = self._postmaster.cpu_times()
        return float(times.children_user + times.children_system)


@contextlib.contextmanager
def server_url() -> Iterator[str]:
    given = os.environ.get(ENV_URL)
    if given:
        yield given
        return
    with PostgresServer() as server:
        yield server.url


def timed(action: Any, repeat: int, server: ServerCpu) -> tuple[float, float, float]:
    """Best wall, client CPU and server CPU seconds over ``repeat`` runs."""
    best_wall = best_cpu = best_server = float("inf")
    for _ in range(repeat):
        server0 = server.seconds()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        action()
        best_wall = min(best_wall, time.perf_counter() - wall0)
        best_cpu = min(best_cpu, time.process_time() - cpu0)
        best_server = min(best_server, server.seconds() - server0)
    return best_wall, best_cpu, best_server


def log_read(url: str, rows: int, repeat: int, work: Path) -> dict[str, Any]:
    raw = generate_purchase_log(customers_for_rows(rows), seed=5).log
    path = work / "log.parquet"
    raw.to_parquet(path)
    load_frame(url, "orders", raw)
    execute(url, "VACUUM ANALYZE orders")
    n = len(raw)
    del raw
    source = DatabaseLog(parse_url(url), table="orders")
    out: dict[str, Any] = {"rows": n}
    cases = {
        "postgresql": lambda: read_purchase_log(source).log,
        "parquet": lambda: read_purchase_log(path).log,
        "postgresql_fetch_only": lambda: read_database_log(source, LogConfig()),
        "parquet_fetch_only": lambda: read_source(path, LogConfig()),  # the raw frame
    }
    server = ServerCpu(url)
    for name, action in cases.items():
        wall, cpu, server_cpu = timed(action, repeat, server)
        total = cpu + server_cpu
        out[name] = {
            "wall_s": round(wall, 3),
            "client_cpu_s": round(cpu, 3),
            "server_cpu_s": round(server_cpu, 3),
            "rows_per_s": round(n / wall),
            "rows_per_cpu_s": round(n / total) if total > 0 else None,
        }

    def cpu(name: str) -> float:
        return float(out[name]["client_cpu_s"] + out[name]["server_cpu_s"])

    for key, db, file in (
        ("ratio", "postgresql", "parquet"),
        ("ratio_fetch_only", "postgresql_fetch_only", "parquet_fetch_only"),
    ):
        out[key] = {
            "wall": round(out[db]["wall_s"] / out[file]["wall_s"], 2),
            "cpu": round(cpu(db) / cpu(file), 2),
        }
    return out


def score_runs(url: str, customers: int, work: Path) -> dict[str, Any]:
    """``retain score`` both ways on the same log and model (a small trained artifact)."""
    from tests.serving.test_batch import make_artifact

    raw = generate_purchase_log(customers, seed=9, start="2023-01-01", end="2024-06-30").log
    path = work / "score_log.parquet"
    raw.to_parquet(path)
    load_frame(url, "score_orders", raw)
    artifact = make_artifact(
        work / "artifact", read_purchase_log(raw.head(min(len(raw), 200_000))).log
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENTOML_DO_NOT_TRACK": "true"}
    common = ["--as-of", "2024-06-01", "--model-uri", str(artifact)]
    runs = {
        "table": ["--data", url, "--table", "score_orders", "--out", url, "--out-table", "scores"],
        "parquet": ["--data", str(path), "--out", str(work / "scores")],
    }
    out: dict[str, Any] = {"customers": customers}
    server = ServerCpu(url)
    for name, args in runs.items():
        best: dict[str, Any] | None = None
        for _ in range(2):  # the second run also replaces the first's output
            server0 = server.seconds()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(
                [sys.executable, "-m", "serving.cli", "score", *args, *common],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            summary["cpu_s"] = round(client + server.seconds() - server0, 2)
            if best is None or summary["seconds"]["total"] < best["seconds"]["total"]:
                best = summary
        assert best is not None
        total = best["seconds"]["total"]
        out[name] = {
            "customers_scored": best["customers_scored"],
            "seconds": best["seconds"],
            "customers_per_min": round(best["customers_scored"] / total * 60),
            "cpu_s_whole_command": best["cpu_s"],
            "customers_per_cpu_min": round(best["customers_scored"] / best["cpu_s"] * 60),
        }
    table, parquet = out["table"], out["parquet"]
    out["ratio"] = {
        "wall": round(parquet["customers_per_min"] / table["customers_per_min"], 2),
        "cpu": round(parquet["customers_per_cpu_min"] / table["customers_per_cpu_min"], 2),
    }
    return out


def memory(url: str, big_rows: int, work: Path) -> dict[str, Any]:
    execute(
        url,
        "DROP TABLE IF EXISTS big",
        "CREATE UNLOGGED TABLE big AS SELECT (i % 1000003)::text AS customer_id, "
        "timestamptz '2022-01-01' + i * interval '7 seconds' AS timestamp, "
        "((i % 9973) / 100.0)::numeric(12,2) AS amount, (i / 3)::text AS order_id "
        f"FROM generate_series(1, {int(big_rows)}) AS i",
        "VACUUM ANALYZE big",
    )
    path = work / "big.parquet"
    connection = connect(url)  # the Parquet copy, written batch by batch
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT customer_id, timestamp, amount::float8 AS amount, order_id FROM big")
        reader = cursor.fetch_record_batch()
        with pq.ParquetWriter(path, reader.schema) as writer:
            for batch in reader:
                writer.write_table(pa.Table.from_batches([batch]))
    finally:
        connection.close()
    out: dict[str, Any] = {"rows": big_rows}
    for name, source in (("postgresql", url), ("parquet", str(path))):
        program = _MEMORY_PROGRAM.format(repo=str(REPO), source=source)
        wall0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, check=True
        )
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures["wall_s"] = round(time.perf_counter() - wall0, 1)
        figures["peak_rss_gib"] = round(figures["peak_rss"] / 2**30, 2)
        figures["log_gib"] = round(figures["log_bytes"] / 2**30, 2)
        figures["peak_over_log"] = round(figures["peak_rss"] / figures["log_bytes"], 2)
        out[name] = figures
    execute(url, "DROP TABLE big")
    return out


def dask_runs(url: str, rows: int, chunk: int, work: Path) -> dict[str, Any]:
    """Threads from the table vs ``--dask`` from the table (separate-process cluster)."""
    import hashlib
    import importlib.util

    from tests.dask_cluster import DaskCluster

    spec = importlib.util.spec_from_file_location("bench_batch", REPO / "benchmarks" / "batch.py")
    assert spec is not None and spec.loader is not None
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    customers = customers_for_rows(rows)
    data, artifact = batch.prepare(work, rows, customers, 20_000, None)
    table = pq.read_table(data)
    plain = [
        f.cast(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in table.columns
    ]
    load_frame(url, "dask_orders", pa.Table.from_arrays(plain, names=table.column_names))
    execute(url, "VACUUM ANALYZE dask_orders")
    del table, plain

    def digest(out: Path) -> str:
        sha = hashlib.sha256()
        for part in sorted(out.glob("part-*.parquet")):
            sha.update(part.name.encode() + hashlib.sha256(part.read_bytes()).digest())
        return sha.hexdigest()[:16]

    def run(label: str, source: str, extra: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = batch.score_run(label, source, artifact, work / "o", chunk, extra)
        result["parts_sha"] = digest(work / "o")
        result["driver_peak_rss_gib"] = result.pop("peak_rss_gib")
        return result

    table_args = ["--table", "dask_orders"]
    runs = [
        run("threads, Parquet file", str(data), []),
        run("threads, table", url, table_args),
    ]
    with DaskCluster(workers=2, memory_limit="4GiB") as cluster:
        for state in ("cold", "warm"):  # fresh workers import retain and compile the model
            samplers = [batch.TreePeakRss(w.pid) for w in cluster.workers]
            try:
                result = run(
                    f"dask 2 workers, table, {state}", url, [*table_args, "--dask", cluster.address]
                )
            finally:
                peaks = [sampler.stop() for sampler in samplers]
            result["worker_peak_rss_gib"] = [round(p / 2**30, 2) for p in peaks]
            for key in ("cpu_s", "customers_per_cpu_min"):  # workers are not children here
                result.pop(key, None)
            runs.append(result)
    execute(url, "DROP TABLE dask_orders")
    return {
        "rows": rows,
        "customers": customers,
        "chunk_customers": chunk,
        "identical_parts": len({r["parts_sha"] for r in runs}) == 1,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the read benchmark")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--score-customers", type=int, default=20_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="rows of the memory run")
    parser.add_argument("--dask-rows", type=int, default=1_000_000, help="rows of the dask run")
    parser.add_argument("--dask-chunk-customers", type=int, default=10_000)
    parser.add_argument("--skip", default="", help="comma list of read,score,memory,dask to skip")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"load_average": os.getloadavg(), "cpus": os.cpu_count()}
    with server_url() as url, tempfile.TemporaryDirectory(prefix="retain-bench-db-") as tmp:
        work = Path(tmp)
        if "read" not in skip:
            r = results["log_read"] = log_read(url, args.rows, args.repeat, work)
            print(f"log read, {r['rows']:,} rows (read_purchase_log, best of {args.repeat}):")
            for name in ("postgresql", "parquet", "postgresql_fetch_only", "parquet_fetch_only"):
                f = r[name]
                print(f"  {name:<22} {f['rows_per_s']:>11,} rows/s wall {f['wall_s']:.2f}s | "
                      f"{f['rows_per_cpu_s'] or 0:>11,} rows/cpu-s (client {f['client_cpu_s']:.2f}s"
                      f" + server {f['server_cpu_s']:.2f}s)")  # fmt: skip
            print(f"  PostgreSQL vs Parquet (goal <= 2x): wall {r['ratio']['wall']}x, "
                  f"cpu {r['ratio']['cpu']}x; fetch only: wall {r['ratio_fetch_only']['wall']}x, "
                  f"cpu {r['ratio_fetch_only']['cpu']}x")  # fmt: skip
            for measure in ("wall", "cpu"):
                verdict = "met" if r["ratio"][measure] <= 2 else "MISSED"
                print(f"  goal (canonical log within 2x of Parquet) by {measure}: {verdict}")
        if "score" not in skip:
            s = results["score"] = score_runs(url, args.score_customers, work)
            print(f"retain score, {s['customers']:,} customers (summary total, best of 2):")
            for name in ("table", "parquet"):
                f = s[name]
                print(f"  {name:<8} {f['customers_per_min']:>10,} customers/min {f['seconds']} | "
                      f"{f['customers_per_cpu_min']:>10,} customers/cpu-min "
                      f"(command + server {f['cpu_s_whole_command']}s)")  # fmt: skip
            print(f"  table vs Parquet (goal <= 1.5x): wall {s['ratio']['wall']}x, "
                  f"cpu {s['ratio']['cpu']}x")  # fmt: skip
        if "memory" not in skip:
            m = results["memory"] = memory(url, args.big_rows, work)
            print(f"memory, {m['rows']:,}-row table -> canonical log (fresh process):")
            for name in ("postgresql", "parquet"):
                f = m[name]
                print(f"  {name:<10} peak RSS {f['peak_rss_gib']:.2f} GiB, log {f['log_gib']:.2f} "
                      f"GiB ({f['peak_over_log']}x), wall {f['wall_s']}s")  # fmt: skip
        if "dask" not in skip:
            d = results["dask"] = dask_runs(url, args.dask_rows, args.dask_chunk_customers, work)
            print(f"retain score from a {d['rows']:,}-row table, {d['customers']:,} customers, "
                  f"chunks of {d['chunk_customers']:,}:")  # fmt: skip
            for f in d["runs"]:
                workers = f.get("worker_peak_rss_gib")
                print(f"  {f['run']:<28} {f['customers_per_min_job']:>10,} customers/min "
                      f"(job {f['job_s']}s, read {f['read_s']}s), driver peak RSS "
                      f"{f['driver_peak_rss_gib']:.2f} GiB"
                      + (f", workers {workers} GiB" if workers else ""))  # fmt: skip
            print(f"  parts byte-identical across all runs: {d['identical_parts']}")
    results["load_average_after"] = os.getloadavg()
    print(f"load average before/after: {results['load_average']} / {results['load_average_after']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
