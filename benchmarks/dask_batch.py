"""Benchmark ``retain score`` on a real Dask cluster where the workers read their own data.

Usage: ``python benchmarks/dask_batch.py [--rows 10000000] [--big-rows 30000000] [--json PATH]``

Steps (inputs and model from ``benchmarks/batch.py``'s ``prepare``):
1. the ``--rows`` log is written to Parquet and rewritten once by ``retain partition`` into
   ``--parts`` customer-range files (timed: a one-off cost, paid again only for a new log);
2. ``retain score`` runs in a fresh subprocess three ways: threads on the whole file (the
   single-machine path), threads on the partitions, and ``--dask ADDRESS`` on the
   partitions against a scheduler and two single-threaded ``dask worker`` processes started
   here as separate OS processes (``tests/dask_cluster.py``), a fresh cluster per run;
3. the same Dask run on a ``--big-rows`` log (generated, partitioned, scored), to show the
   driver's peak RSS does not grow with the log.

Reported per run: customers/min over the job, the driver's peak RSS (the ``retain score``
process; with ``--dask`` it has no children, the workers are the cluster's), the workers'
peak RSS, CPU seconds, and whether the parts are byte-identical to the single-machine run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# benchmarks/http.py would shadow the standard library's http (distributed imports it)
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]

from features.atomic import write_text_atomic  # noqa: E402
from tests.dask_cluster import DaskCluster  # noqa: E402

GIB = 1 << 30


def _batch_benchmark() -> Any:
    """benchmarks/batch.py (inputs, model, measured runs); benchmarks/ is not a package."""
    spec = importlib.util.spec_from_file_location("bench_batch", REPO / "benchmarks" / "batch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


batch_bench = _batch_benchmark()


def part_digests(directory: Path) -> str:
    sha = hashlib.sha256()
    for part in sorted(directory.glob("part-*.parquet")):
        sha.update(part.name.encode() + hashlib.sha256(part.read_bytes()).digest())
    return sha.hexdigest()[:16]


def partition(data: Path, out: Path, parts: int) -> float:
    """``retain partition`` in a subprocess; its wall seconds."""
    app = batch_bench.SCORE_APP
    command = [sys.executable, "-c", app, "partition", "--data", str(data)]
    command += ["--out", str(out), "--parts", str(parts)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    print(f"partitioned {data.name} into {parts} files in {seconds:.1f}s", flush=True)
    return round(seconds, 1)


def scaled_parts(parts: Path, out: Path, copies: int) -> int:
    """``copies`` times the partitioned log: the files, then copies under new customer ids.

    Copy ``j`` prefixes every id with ``~j`` (after any generated id), so each copy is a
    customer range of its own and the files stay disjoint: ``copies`` times the rows and the
    customers in minutes, where generating and partitioning a log that size takes most of
    an hour on a loaded 2-core machine. Returns the row count.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for path in sorted(parts.glob("part-*.parquet")):
        table = pq.read_table(path)
        rows += table.num_rows * copies
        (out / f"a-{path.name}").hardlink_to(path)
        ids = table.column("customer_id").cast(pa.string())
        for j in range(1, copies):
            prefixed = pc.binary_join_element_wise(f"~{j}", ids, "")
            column = table.schema.get_field_index("customer_id")
            copy = table.set_column(column, "customer_id", prefixed)
            pq.write_table(copy, out / f"b{j}-{path.name}", compression="zstd")
    print(f"{copies}x the partitioned log: {rows:,} rows in {out}", flush=True)
    return rows


def dask_run(
    cluster: DaskCluster, label: str, data: Path, artifact: Path, out: Path, chunk: int
) -> dict[str, Any]:
    """One ``retain score --dask`` against ``cluster`` (separate processes)."""
    samplers = [batch_bench.TreePeakRss(w.pid) for w in cluster.workers]
    try:
        result = batch_bench.score_run(
            label, data, artifact, out, chunk, ["--dask", cluster.address]
        )
    finally:
        peaks = [s.stop() for s in samplers]
    result["driver_peak_rss_gib"] = result.pop("peak_rss_gib")
    result["worker_peak_rss_gib"] = [round(p / GIB, 2) for p in peaks]
    result.pop("cpu_s", None)  # workers are not children of this process: not comparable
    result.pop("customers_per_cpu_min", None)
    return result


def driver_memory(args: argparse.Namespace) -> dict[str, Any]:
    """The driver's peak RSS on a partitioned log and on ``--copies`` times it."""
    if args.artifact is None:
        raise SystemExit("--scale-from needs --artifact")
    with tempfile.TemporaryDirectory(prefix="retain-bench-dask-scale-") as tmp:
        big = Path(tmp) / "parts"
        rows = scaled_parts(args.scale_from, big, args.copies)
        runs = []
        with DaskCluster(workers=2, memory_limit=args.worker_memory) as cluster:
            for label, data in (
                (f"{rows // args.copies:,} rows", args.scale_from),
                (f"{rows:,} rows", big),
            ):
                run = dask_run(
                    cluster,
                    f"dask 2 workers, {label}",
                    data,
                    args.artifact,
                    Path(tmp) / "o",
                    args.chunk_customers,
                )
                runs.append(run)
                shutil.rmtree(Path(tmp) / "o")
    report = {"load_average_1m_end": round(os.getloadavg()[0], 1), "runs": runs}
    print(json.dumps(report, indent=2))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=30_000_000)
    parser.add_argument("--parts", type=int, default=10, help="partition files per 10M rows")
    parser.add_argument("--chunk-customers", type=int, default=100_000)
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--worker-memory", default="6GiB")
    parser.add_argument("--skip-threads-partitions", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs/outputs here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--scale-from",
        type=Path,
        default=None,
        help="only the driver-memory runs: this partitioned log (with --artifact), 1x and "
        "--copies times",
    )
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--artifact", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.scale_from is not None:
        return driver_memory(args)

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="retain-bench-dask-")
    workdir = args.workdir or Path(tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    chunk = args.chunk_customers
    runs: list[dict[str, Any]] = []
    setup: dict[str, Any] = {"load_average_1m_start": round(os.getloadavg()[0], 1)}
    try:
        data, artifact = batch_bench.prepare(
            workdir, args.rows, args.customers, args.train_customers, None
        )
        parts = workdir / "parts"
        setup["partition_s"] = partition(data, parts, max(1, args.parts * args.rows // 10**7))
        threads = batch_bench.score_run("threads, file", data, artifact, workdir / "o1", chunk, [])
        threads["parts_sha"] = part_digests(workdir / "o1")
        runs.append(threads)
        if not args.skip_threads_partitions:
            on_parts = batch_bench.score_run(
                "threads, partitions", parts, artifact, workdir / "o2", chunk, []
            )
            on_parts["parts_sha"] = part_digests(workdir / "o2")
            runs.append(on_parts)
        with DaskCluster(workers=2, memory_limit=args.worker_memory) as cluster:
            # a fresh cluster first (workers import retain and compile the model), then the
            # same run again on the now warm workers, as a long-lived cluster runs jobs
            for state in ("cold", "warm"):
                out = workdir / f"o3{state}"
                label = f"dask 2 workers, partitions, {state}"
                run = dask_run(cluster, label, parts, artifact, out, chunk)
                run["parts_sha"] = part_digests(out)
                runs.append(run)
                subprocess.run(["rm", "-rf", str(out)], check=True)
            for item in (workdir / "o1", workdir / "o2", parts):
                subprocess.run(["rm", "-rf", str(item)], check=True)
            if args.big_rows:
                big_dir = workdir / "big"
                big_dir.mkdir(exist_ok=True)
                big_customers = args.customers * args.big_rows // args.rows
                big, _ = batch_bench.prepare(big_dir, args.big_rows, big_customers, 0, artifact)
                big_parts = big_dir / "parts"
                setup["big_partition_s"] = partition(
                    big, big_parts, max(1, args.parts * args.big_rows // 10**7)
                )
                big.unlink()
                label = f"dask 2 workers, partitions, warm, {args.big_rows:,} rows"
                runs.append(dask_run(cluster, label, big_parts, artifact, big_dir / "o", chunk))
    finally:
        if tmp is not None:
            tmp.cleanup()
    report = {
        "rows": args.rows,
        "customers": args.customers,
        "big_rows": args.big_rows,
        "cpu_count": os.cpu_count(),
        "load_average_1m_end": round(os.getloadavg()[0], 1),
        **setup,
        "identical_parts": len({r["parts_sha"] for r in runs if "parts_sha" in r}) == 1,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
