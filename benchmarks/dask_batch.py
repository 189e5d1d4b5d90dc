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


def remove_output(path: Path) -> None:
    """Delete a published output: its link and the versions store beside it."""
    store = path.parent / f".{path.name}.retain"
    if path.is_symlink():
        path.unlink()
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)


def part_digests(directory: Path) -> str:
    sha = hashlib.sha256()
    for part in sorted(directory.glob("part-*.parquet")):
        sha.update(part.name.encode() + hashlib.sha256(part.read_bytes()).digest())
    return sha.hexdigest()[:16]


def partition(data: Path, out: Path, parts: int, chunk: int | None = None) -> float:
    """``retain partition`` in a subprocess; its wall seconds.

    ``chunk``: the files' alignment (``--chunk-customers``); 1 cuts at equal customer
    counts, i.e. unaligned to any scoring chunk.
    """
    app = batch_bench.SCORE_APP
    command = [sys.executable, "-c", app, "partition", "--data", str(data)]
    command += ["--out", str(out), "--parts", str(parts)]
    if chunk is not None:
        command += ["--chunk-customers", str(chunk)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    how = "" if chunk is None else f" (--chunk-customers {chunk})"
    print(f"partitioned {data.name} into {parts} files{how} in {seconds:.1f}s", flush=True)
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
    workers_cpu, scheduler_cpu = _cpu_seconds(cluster)
    try:
        result = batch_bench.score_run(
            label, data, artifact, out, chunk, ["--dask", cluster.address]
        )
    finally:
        peaks = [s.stop() for s in samplers]
    result["driver_peak_rss_gib"] = result.pop("peak_rss_gib")
    result["worker_peak_rss_gib"] = [round(p / GIB, 2) for p in peaks]
    workers_after, scheduler_after = _cpu_seconds(cluster)
    # the driver's CPU (children of this process) plus the cluster's own processes'
    result["driver_cpu_s"] = result.pop("cpu_s")
    result["workers_cpu_s"] = round(workers_after - workers_cpu, 1)
    result["scheduler_cpu_s"] = round(scheduler_after - scheduler_cpu, 1)
    total = result["driver_cpu_s"] + result["workers_cpu_s"] + result["scheduler_cpu_s"]
    result["cpu_s"] = round(total, 1)
    result["customers_per_cpu_min"] = round(result["customers"] / total * 60)
    return result


def _cpu_seconds(cluster: DaskCluster) -> tuple[float, float]:
    """User + system CPU seconds so far of the cluster's workers (summed) and scheduler."""
    import psutil

    def used(pid: int) -> float:
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)

    scheduler = cluster.scheduler.pid if cluster.scheduler is not None else None
    return sum(used(w.pid) for w in cluster.workers), used(scheduler) if scheduler else 0.0


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
                remove_output(Path(tmp) / "o")
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
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --workdir: reuse its log.parquet and artifact (the same inputs as a "
        "previous run with the same --rows/--customers), skipping generation and training",
    )
    parser.add_argument("--repeat", type=int, default=1, help="warm Dask runs per partition layout")
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
        data, artifact = workdir / "log.parquet", workdir / "artifact"
        if not (args.reuse and data.is_file() and artifact.is_dir()):
            data, artifact = batch_bench.prepare(
                workdir, args.rows, args.customers, args.train_customers, None
            )
        n_parts = max(1, args.parts * args.rows // 10**7)
        parts, unaligned = workdir / "parts", workdir / "parts_unaligned"
        setup["partition_s"] = partition(data, parts, n_parts, chunk)
        setup["partition_unaligned_s"] = partition(data, unaligned, n_parts, 1)
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
            # files aligned to the chunks (`retain partition`'s default: each chunk reads
            # one file) and unaligned (equal customer counts: most files read by two tasks)
            layouts = [("partitions", parts), ("unaligned partitions", unaligned)]
            plan = [(layouts[0], "cold")] + [
                (lay, "warm") for _ in range(args.repeat) for lay in layouts
            ]
            for (name, directory), state in plan:
                out = workdir / "o3"
                label = f"dask 2 workers, {name}, {state}"
                run = dask_run(cluster, label, directory, artifact, out, chunk)
                run["parts_sha"] = part_digests(out)
                runs.append(run)
                remove_output(out)
            for item in (workdir / "o1", workdir / "o2", parts, unaligned):
                remove_output(item)
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
    threads_rate = runs[0]["customers_per_min_job"]
    warm = [r for r in runs if r["run"] == "dask 2 workers, partitions, warm"]
    setup["dask_warm_over_threads"] = [
        round(r["customers_per_min_job"] / threads_rate, 2) for r in warm
    ]
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
