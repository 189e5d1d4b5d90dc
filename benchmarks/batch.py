"""Benchmark ``retain score`` end to end: Parquet in, features, all models, offers, Parquet out.

Usage: ``python benchmarks/batch.py [--rows 10000000] [--customers 1000000] [--json PATH]``

Steps:
1. a canonical synthetic log (the generator of ``benchmarks/features.py``) is written to
   Parquet: that file is the job's input;
2. a model is trained on the first ``--train-customers`` customers and packaged with
   ``training.artifact.save_artifact`` (a chunk-independent offer policy: the default one
   with value quantiles replaced by an absolute spend floor);
3. ``retain score`` runs in a fresh subprocess, single-machine and with ``--dask-local 2``;
   a sampler thread here reads the RSS of the subprocess and all its descendants (Dask
   workers included) every 50 ms, so the peak is that of the whole job.

Reported per run: the loader's read time separately (it is being optimised by its owner),
score + write time, customers per minute over score + write and over the whole job, and the
peak RSS of the process tree, and the CPU seconds of the tree (``getrusage`` of reaped
children): on a shared, overloaded machine wall-clock rates understate what 2 idle cores do,
customers per CPU-minute does not. Floors (2 cores): 1,000,000 customers/min single-machine,
peak under 6 GiB.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GIB = 1 << 30
FLOOR_CUSTOMERS_PER_MIN = 1_000_000
FLOOR_PEAK_GIB = 6.0
AS_OF = "2024-10-01"
FIT_AS_OF = "2024-09-01"
SCORE_APP = (
    "import sys, typer\n"
    "from serving.batch.commands import register\n"
    "app = typer.Typer()\n"
    # a callback makes the app a group, so that `score` is taken as the command's name
    "app.callback()(lambda: None)\n"
    "register(app)\n"
    "app(sys.argv[1:])\n"
)


def _load_generator() -> Any:
    """``generate_canonical_log`` from benchmarks/features.py (not an importable package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_features", REPO / "benchmarks" / "features.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_canonical_log


class TreePeakRss:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        total = 0
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def prepare(
    workdir: Path, rows: int, customers: int, train_customers: int, artifact: Path | None
) -> tuple[Path, Path]:
    """Write the input Parquet and (unless given) the packaged model; return both paths."""
    import pandas as pd

    from features.builders import FeatureConfig
    from features.retention.segments import SegmentConfig
    from serving.batch.chunks import Chunk, chunk_frame
    from serving.offers.policy import OfferPolicy
    from training.artifact import save_artifact
    from training.models.bundle import RetainModels

    t0 = time.perf_counter()
    log = _load_generator()(rows, customers, seed=0)
    data = workdir / "log.parquet"
    log.to_parquet(data)
    print(f"generated {len(log):,} rows in {time.perf_counter() - t0:.1f}s -> {data}", flush=True)
    if artifact is not None:
        return data, artifact

    t0 = time.perf_counter()
    n = min(train_customers, customers)
    codes = log["customer_id"].array.codes
    stop = int(codes.searchsorted(n))
    train = chunk_frame(log, Chunk(0, 0, n, 0, stop))
    del log
    # the defaults `retain train` uses: the model scored here is the one a user would ship
    models = RetainModels(horizon_days=90).fit(train, FIT_AS_OF)
    policy = OfferPolicy.default().model_dump(mode="json", exclude_none=True)
    for rule in policy["rules"]:
        if rule["match"].pop("min_value_quantile", None) is not None:
            rule["match"]["min_expected_spend_365d"] = 100.0
    artifact = save_artifact(
        workdir / "artifact",
        models,
        feature_config=FeatureConfig(horizon_days=90),
        segment_config=SegmentConfig(),
        policy_yaml=OfferPolicy.model_validate(policy).to_yaml(),
        created_at=pd.Timestamp("2024-09-01", tz="UTC").to_pydatetime(),
    )
    print(f"trained on {n:,} customers in {time.perf_counter() - t0:.1f}s", flush=True)
    return data, artifact


def score_run(
    label: str, data: Path, artifact: Path, out: Path, chunk: int, extra: list[str]
) -> dict[str, Any]:
    """One ``retain score`` subprocess; its summary plus wall time and tree peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-c",
        SCORE_APP,
        "score",
        "--data",
        str(data),
        "--as-of",
        AS_OF,
        "--out",
        str(out),
        "--model-uri",
        str(artifact),
        "--chunk-customers",
        str(chunk),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    sampler = TreePeakRss(proc.pid)
    try:
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:  # interrupted: do not leave the job running
            proc.terminate()
            proc.wait(timeout=30)
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed ({proc.returncode}):\n{stderr.decode()[-3000:]}")
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    s = summary["seconds"]
    customers = summary["customers_scored"]
    result = {
        "run": label,
        "rows": summary["rows_in"],
        "customers": customers,
        "chunks": summary["chunks"],
        "read_s": s["read"],
        "score_write_s": round(s["score"] + s["publish"], 2),
        "job_s": s["total"],
        "process_wall_s": round(wall, 2),
        "customers_per_min_score_write": round(customers / (s["score"] + s["publish"]) * 60),
        "customers_per_min_job": round(customers / s["total"] * 60),
        "customers_per_min_process_wall": round(customers / wall * 60),
        "peak_rss_gib": round(peak / GIB, 2),
        "cpu_s": round(cpu, 1),
        # load-independent: what 2 idle cores would do if the job kept both busy
        "customers_per_cpu_min": round(customers / cpu * 60),
    }
    print(json.dumps(result), flush=True)
    return result


def stage_profile(data: Path, artifact: Path, n_customers: int) -> dict[str, Any]:
    """Where one chunk's time goes: CPU seconds of each step inside ``serving.scorer.score``.

    Measurement only (the batch job calls ``score`` as a whole); CPU time of this process,
    so the figures hold on a busy machine too.
    """
    import pandas as pd

    from features.builders import build_feature_block
    from features.log.purchase_log import canonicalize
    from serving.batch.chunks import Chunk, chunk_frame
    from serving.scorer import ScoringModel, score, score_block

    log = pd.read_parquet(data)
    stop = int(log["customer_id"].array.codes.searchsorted(n_customers))
    # through the loader, as in the job (it also re-chunks the Arrow-backed columns)
    part = canonicalize(chunk_frame(log, Chunk(0, 0, n_customers, 0, stop))).log
    del log
    model = ScoringModel.load(artifact)
    models = model.artifact.models
    score(model, part.iloc[:1000], AS_OF)  # warm-up
    steps: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t0 = time.process_time()
        out = fn()
        steps[name] = round(time.process_time() - t0, 3)
        return out

    block = timed(
        "build_features", lambda: build_feature_block(part, AS_OF, model.artifact.feature_config)
    )
    x = timed("model input (+ BTYD)", lambda: models.model_input(block.values, block.names))
    timed("5 models (compiled)", lambda: models.predict_arrays(x, pd.Timestamp(AS_OF)))
    timed("reasons (path contributions)", lambda: models.reason_contributions(x))
    timed("score_block (whole, arrays)", lambda: score_block(model, block, AS_OF))
    timed("score (whole, frame out)", lambda: score(model, part, AS_OF))
    result = {
        "customers": n_customers,
        "cpu_s": steps,
        "customers_per_cpu_s": {k: round(n_customers / max(v, 1e-9)) for k, v in steps.items()},
    }
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--chunk-customers", type=int, default=100_000)
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument(
        "--profile-customers", type=int, default=2000, help="customers in the stage profile"
    )
    parser.add_argument(
        "--artifact", type=Path, default=None, help="reuse a packaged model instead of training"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs/outputs here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="retain-bench-batch-")
    workdir = args.workdir or Path(tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        data, artifact = prepare(
            workdir, args.rows, args.customers, args.train_customers, args.artifact
        )
        profile = stage_profile(data, artifact, min(args.profile_customers, args.customers))
        runs = [
            score_run("pandas", data, artifact, workdir / "out_pandas", args.chunk_customers, [])
        ]
        if not args.skip_dask:
            runs.append(
                score_run(
                    "dask-local-2",
                    data,
                    artifact,
                    workdir / "out_dask",
                    args.chunk_customers,
                    ["--dask-local", "2"],
                )
            )
    finally:
        if tmp is not None:
            tmp.cleanup()
    single = runs[0]
    report = {
        "rows": args.rows,
        "customers": args.customers,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "runs": runs,
        "stage_profile": profile,
        "floors": {
            "customers_per_min": FLOOR_CUSTOMERS_PER_MIN,
            "peak_rss_gib": FLOOR_PEAK_GIB,
            "single_machine_rate_ok": single["customers_per_min_job"] >= FLOOR_CUSTOMERS_PER_MIN,
            "single_machine_peak_ok": single["peak_rss_gib"] < FLOOR_PEAK_GIB,
        },
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
