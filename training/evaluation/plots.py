"""Backtest plots: calibration, cumulative gains, predicted vs actual purchases by frequency.

Each plot draws every method on one set of axes so the comparison is one glance. The Agg
backend is selected inside :func:`write_backtest_plots` (never at import, so importing this
module does not change the backend of a notebook or another tool). Files are written
atomically (:func:`features.atomic.write_atomic`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from features.atomic import write_atomic
from training.evaluation.backtest_result import METHOD_LABELS, BacktestResult
from training.evaluation.metrics import calibration_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_REPEAT = 7  # the last frequency group is "7 or more repeat purchase days"
PLOT_FILES: dict[str, str] = {
    "calibration": "calibration.png",
    "gains": "cumulative_gains.png",
    "purchases_by_frequency": "purchases_by_frequency.png",
}


def gains_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of positives captured when targeting the top x share by score (starts at 0, 0).

    Ties are broken by original order after a stable descending sort.
    """
    y = np.asarray(y_true, dtype=np.float64)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    captured = np.concatenate([[0.0], np.cumsum(y[order])])
    total = captured[-1]
    share = np.arange(len(y) + 1, dtype=np.float64) / max(len(y), 1)
    return share, captured / total if total > 0 else captured


def purchases_by_frequency(
    past_purchase_days: np.ndarray,
    actual: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    max_repeat: int = MAX_REPEAT,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Mean actual and predicted purchase days per number of past repeat purchase days.

    Group ``k`` holds customers with ``k`` repeat days before the cutoff; the last group is
    ``max_repeat`` and more (the Fader-Hardie-Lee conditional-expectation plot).
    """
    repeat = np.minimum(np.asarray(past_purchase_days, dtype=np.int64) - 1, max_repeat)
    repeat = np.maximum(repeat, 0)
    n = np.bincount(repeat, minlength=max_repeat + 1).astype(np.float64)
    keep = n > 0
    groups = np.arange(max_repeat + 1)[keep]

    def mean(values: np.ndarray) -> np.ndarray:
        sums = np.bincount(
            repeat, weights=np.asarray(values, dtype=np.float64), minlength=max_repeat + 1
        )
        return sums[keep] / n[keep]

    return groups, mean(actual), {name: mean(values) for name, values in predicted.items()}


def _save(fig: Figure, path: Path) -> Path:
    return write_atomic(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    )


def write_backtest_plots(result: BacktestResult, directory: str | os.PathLike[str]) -> list[Path]:
    """Write the three comparison PNGs for ``result`` into ``directory``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(directory)
    labels = result.labels
    churn = labels["churn"].to_numpy(dtype=np.float64)
    subtitle = f"cutoff {result.as_of.date()}, H = {result.horizon_days} d, {result.n_customers:,} customers"
    written: list[Path] = []

    def churn_methods() -> dict[str, np.ndarray]:
        return {
            m: f["churn_probability"].to_numpy(dtype=np.float64)
            for m, f in result.predictions.items()
            if "churn_probability" in f and f["churn_probability"].notna().any()
        }

    fig, ax = plt.subplots(figsize=(6, 6))
    try:
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
        for method, prob in churn_methods().items():
            curve = calibration_curve(churn, np.clip(prob, 0.0, 1.0), n_bins=10)
            ax.plot(
                curve["mean_predicted"],
                curve["fraction_positive"],
                marker="o",
                label=METHOD_LABELS.get(method, method),
            )
        ax.set_xlabel("predicted churn probability")
        ax.set_ylabel("observed churn rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"Churn calibration\n{subtitle}")
        ax.legend(loc="upper left")
        written.append(_save(fig, out_dir / PLOT_FILES["calibration"]))
    finally:
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 6))
    try:
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
        base = float(churn.mean()) if len(churn) else 1.0
        ax.plot([0, base, 1], [0, 1, 1], color="black", linestyle=":", label="perfect")
        for method, prob in churn_methods().items():
            share, captured = gains_curve(churn, prob)
            ax.plot(share, captured, label=METHOD_LABELS.get(method, method))
        ax.set_xlabel("share of customers targeted (highest churn score first)")
        ax.set_ylabel("share of churners captured")
        ax.set_title(f"Cumulative gains (churn)\n{subtitle}")
        ax.legend(loc="lower right")
        written.append(_save(fig, out_dir / PLOT_FILES["gains"]))
    finally:
        plt.close(fig)

    predicted = {
        m: f["expected_purchases_horizon"].to_numpy(dtype=np.float64)
        for m, f in result.predictions.items()
        if "expected_purchases_horizon" in f and f["expected_purchases_horizon"].notna().any()
    }
    groups, actual, means = purchases_by_frequency(
        labels["past_purchase_days"].to_numpy(), labels["n_purchase_days_h"].to_numpy(), predicted
    )
    fig, ax = plt.subplots(figsize=(7, 5))
    try:
        ax.plot(groups, actual, color="black", marker="s", linewidth=2, label="actual")
        for method, values in means.items():
            ax.plot(
                groups, values, marker="o", linestyle="--", label=METHOD_LABELS.get(method, method)
            )
        ticks = [str(g) for g in groups]
        if len(ticks):
            ticks[-1] = f"{groups[-1]}+" if groups[-1] == MAX_REPEAT else ticks[-1]
        ax.set_xticks(groups, ticks)
        ax.set_xlabel("repeat purchase days before the cutoff")
        ax.set_ylabel(f"mean purchase days in the next {result.horizon_days} d")
        ax.set_title(f"Predicted vs actual purchases by past frequency\n{subtitle}")
        ax.legend(loc="upper left")
        written.append(_save(fig, out_dir / PLOT_FILES["purchases_by_frequency"]))
    finally:
        plt.close(fig)
    return written
