"""Benchmark ``read_purchase_log`` on a large synthetic source log, as Parquet and as CSV.

Usage: ``python benchmarks/loader.py [--rows 10000000] [--data PATH] [--json PATH]
[--formats parquet,csv]``

The log is drawn once with :func:`features.synthetic.synth.generate_purchase_log` (the raw source
contract: negative return amounts, ``C``-prefixed return order ids, multi-line orders) and
written to ``PATH.parquet`` and ``PATH.csv``; an existing pair is reused, so repeated runs
time the loader only. ``--data`` defaults to ``/tmp/retain_loader_<rows>``.

Figures per format: wall and CPU seconds of the load (CPU counts every thread of this
process, so it is the fair figure on a shared machine), rows per wall and per CPU second,
and the peak RSS during the load (a background thread samples it with psutil every 5 ms)
next to the RSS just before it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.log.purchase_log import read_purchase_log
from features.synthetic.synth import customers_for_rows, generate_purchase_log

GIB = 2**30


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak`` is the largest seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = self._process.memory_info().rss
        self.peak = self.start

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def write_data(rows: int, base: Path, seed: int = 0) -> dict[str, Path]:
    """Write (or reuse) ``base.parquet`` and ``base.csv`` holding about ``rows`` source rows."""
    paths = {"parquet": base.with_suffix(".parquet"), "csv": base.with_suffix(".csv")}
    if all(path.exists() for path in paths.values()):
        return paths
    base.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log = generate_purchase_log(customers_for_rows(rows, seed=seed), seed=seed).log
    print(f"generated {len(log):,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    log.to_parquet(paths["parquet"], index=False)
    pacsv.write_csv(pa.Table.from_pandas(log, preserve_index=False), paths["csv"])
    return paths


def time_load(path: Path) -> dict[str, Any]:
    """Load once; wall, CPU, rows/s and peak RSS."""
    with PeakRss() as memory:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = read_purchase_log(path)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rows = result.report.rows_read
    return {
        "path": str(path),
        "rows": rows,
        "rows_kept": result.report.rows_kept,
        "customers": result.report.n_customers,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rows_per_wall_s": round(rows / wall),
        "rows_per_cpu_s": round(rows / cpu),
        "rss_before_gib": round(memory.start / GIB, 3),
        "peak_rss_gib": round(memory.peak / GIB, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--data", type=Path, default=None, help="base path, no suffix")
    parser.add_argument("--formats", default="parquet,csv")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    base = args.data or Path(f"/tmp/retain_loader_{args.rows}")
    if base.suffix in (".parquet", ".csv"):
        base = base.with_suffix("")
    paths = write_data(args.rows, base)
    results = []
    for fmt in args.formats.split(","):
        figures = {"format": fmt, **time_load(paths[fmt])}
        results.append(figures)
        print(
            f"{fmt:8s} {figures['rows']:>11,} rows  wall {figures['wall_s']:7.2f} s "
            f"({figures['rows_per_wall_s']:>10,} rows/s)  cpu {figures['cpu_s']:7.2f} s "
            f"({figures['rows_per_cpu_s']:>10,} rows/s)  peak RSS "
            f"{figures['peak_rss_gib']:.2f} GiB (before {figures['rss_before_gib']:.2f})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=2))


if __name__ == "__main__":
    main()
