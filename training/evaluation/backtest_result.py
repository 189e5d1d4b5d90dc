"""What a backtest returns: per-method metrics, the table a reader sees, JSON for the registry.

The method and metric names and each metric's direction (higher, lower or closer to zero is
better) live here, beside :class:`BacktestResult`, so that plots, notebooks and the CLI read
them without importing the backtest itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.table import Table

from features.atomic import write_text_atomic
from training.dataset.snapshots import describe_snapshots

if TYPE_CHECKING:
    from training.models.bundle import RetainModels

METHODS: tuple[str, ...] = ("model", "bgnbd", "paretonbd", "recency")
METHOD_LABELS: dict[str, str] = {
    "model": "retain (LightGBM)",
    "bgnbd": "BG/NBD",
    "paretonbd": "Pareto/NBD",
    "recency": "recency rule",
}
METRIC_KEYS: tuple[str, ...] = (
    "churn_auc",
    "churn_pr_auc",
    "brier",
    "ece",
    "top_decile_lift",
    "timing_cindex",
    "timing_mae_days",
    "count_mae",
    "aggregate_error",
    "spend_mae",
    "spend_aggregate_error",
    "spend_gini",
)
# +1: higher is better, -1: lower is better, 0: closer to zero is better
METRIC_DIRECTION: dict[str, int] = {
    "churn_auc": 1,
    "churn_pr_auc": 1,
    "brier": -1,
    "ece": -1,
    "top_decile_lift": 1,
    "timing_cindex": 1,
    "timing_mae_days": -1,
    "count_mae": -1,
    "aggregate_error": 0,
    "spend_mae": -1,
    "spend_aggregate_error": 0,
    "spend_gini": 1,
}


@dataclass
class BacktestResult:
    """Per-method metrics plus the per-customer predictions and labels behind them.

    ``predictions[method]`` and ``labels`` share one index (``customer_id``, the customers
    known at the cutoff); ``labels`` holds the window outcomes and ``past_purchase_days``
    (purchase days before the cutoff), which the plots group by.
    """

    as_of: pd.Timestamp
    horizon_days: int
    metrics: dict[str, dict[str, float | None]]
    predictions: dict[str, pd.DataFrame]
    labels: pd.DataFrame
    training_seconds: float | None = None
    baseline_params: dict[str, dict[str, float]] = field(default_factory=dict)
    # BG/NBD or Pareto/NBD fits at the cutoff that collapsed (``baselines.degenerate_fit``)
    degenerate_fits: dict[str, str] = field(default_factory=dict)
    # the model's training snapshots, used and dropped (``RetainModels.snapshots_``)
    training_snapshots: list[dict[str, Any]] = field(default_factory=list)
    # the model's blend with BG/NBD per output and where it was fitted (``training.models.combine``)
    combination: dict[str, Any] = field(default_factory=dict)
    # the planner's totals: forecast, 90 % interval, actual, past cutoffs covered
    totals: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the fitted RetainModels behind the ``model`` row (not serialised; None when built
    # from given predictions)
    fitted: RetainModels | None = None

    @property
    def n_customers(self) -> int:
        return len(self.labels)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (no per-customer rows); ``None`` marks a metric a method lacks."""
        return {
            "as_of": self.as_of.isoformat(),
            "horizon_days": int(self.horizon_days),
            "n_customers": self.n_customers,
            "churn_rate": clean_metric(float(self.labels["churn"].mean()))
            if len(self.labels)
            else None,
            "training_seconds": clean_metric(self.training_seconds),
            "methods": list(self.metrics),
            "metrics": {
                method: {key: clean_metric(values.get(key)) for key in METRIC_KEYS}
                for method, values in self.metrics.items()
            },
            "baseline_params": {
                name: {k: clean_metric(v) for k, v in params.items()}
                for name, params in self.baseline_params.items()
            },
            "degenerate_fits": dict(self.degenerate_fits),
            "training_snapshots": list(self.training_snapshots),
            "combination": dict(self.combination),
            "totals": dict(self.totals),
        }

    def notes(self) -> list[str]:
        """What a reader must know besides the table: snapshots dropped, degenerate fits."""
        lines = describe_snapshots(self.training_snapshots)
        for name, why in self.degenerate_fits.items():
            lines.append(f"degenerate {METHOD_LABELS.get(name, name)} fit at the cutoff: {why}")
        lines += combination_lines(self.combination, self.metrics.get("model", {}).get("ece"))
        for name, t in self.totals.items():
            lines.append(
                f"total {name}: forecast {t['forecast']:,.0f} (90 % interval {t['low']:,.0f} - "
                f"{t['high']:,.0f}), actual {t['actual']:,.0f}; past cutoffs' intervals "
                f"covered {t['past_covered']} of {t['past_n']}"
            )
        return lines

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically (temp file in the same directory, then rename)."""
        return write_text_atomic(Path(path), self.to_json() + "\n")

    def table(self, title: str | None = None) -> Table:
        """A rich Table, metrics as rows and methods side by side; the best value is bold."""
        heading = title or (
            f"backtest at {self.as_of.date()} (H = {self.horizon_days} d, "
            f"{self.n_customers:,} customers)"
        )
        table = Table(title=heading)
        table.add_column("metric", style="cyan")
        for method in self.metrics:
            table.add_column(METHOD_LABELS.get(method, method), justify="right")
        best = best_methods(self.metrics)
        for key in METRIC_KEYS:
            cells = []
            for method, values in self.metrics.items():
                text = format_metric(values.get(key))
                cells.append(f"[bold green]{text}[/]" if method in best.get(key, ()) else text)
            table.add_row(key, *cells)
        return table

    def text_table(self) -> str:
        """The same table as plain text (logs, reports, tests)."""
        methods = list(self.metrics)
        header = ["metric", *methods]
        rows = [
            [key, *(format_metric(self.metrics[m].get(key)) for m in methods)]
            for key in METRIC_KEYS
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in [header, *rows]
        ]
        return "\n".join(lines)


def combination_lines(combination: Mapping[str, Any], test_ece: float | None) -> list[str]:
    """Where each output came from: its weight on the model (the rest is BG/NBD), the windows."""
    if not combination or combination.get("identity"):
        return []
    source = combination.get("weights_from", {})
    if source.get("out_of_time"):
        where = (
            f"a shadow fit on {len(source['trained_on'])} snapshot(s) forecasting "
            f"{source['scored_at'][:10]} out of time"
        )
        if source.get("another_season"):
            gap = source.get("season_gap_days", 0.0)
            where += f", another season ({gap:.0f} d apart): the model kept"
    else:
        where = "held-out customers at " + ", ".join(
            c[:10] for c in source.get("held_out_cutoffs", [])
        )
    fit_ece = combination.get("calibration_ece_latest_window")
    ece = "" if fit_ece is None else f"; churn calibrator ECE on its window {fit_ece:.4f}"
    if fit_ece is not None and test_ece is not None:
        ece += f" (test {test_ece:.4f})"
    ece += _churn_average_note(combination)
    return [
        f"outputs combined with BG/NBD, model weight: churn {combination['churn_weight']:.2f}, "
        f"count {combination['count_weight']:.2f}, spend {combination['spend_weight']:.2f} "
        f"(chosen on {where}; evidence shrink "
        f"{combination.get('evidence_shrink', 1.0):.2f}){ece}",
        *level_lines(combination),
    ]


def level_lines(combination: Mapping[str, Any]) -> list[str]:
    """Whose total the count forecast takes (``training.models.level``), and why."""
    choice = combination.get("count_level_choice")
    if not choice:
        return []
    if choice.get("source") == "btyd" and "factor" in choice:
        return [
            f"count level: the classic {choice.get('classic', 'bgnbd')} total "
            f"{choice['classic_total']:,.0f} (the model's {choice['model_total']:,.0f}, "
            f"factor {choice['factor']:.4f}): {choice['why']}"
        ]
    return [f"count level: the model's ({choice.get('why', '')})"]


def _churn_average_note(combination: Mapping[str, Any]) -> str:
    """Whether the churn probability is averaged with BG/NBD's, and the evidence."""
    chosen = combination.get("churn_average_chosen_on")
    if chosen is None:  # saved before the choice
        return ""
    share = float(combination.get("churn_average", 1.0))
    what = "the model alone" if share == 1.0 else f"averaged with BG/NBD (model {share:.2f})"
    why = chosen.get("why", "")
    if "ece_model" in chosen:
        why += f": model {chosen['ece_model']:.4f}, average {chosen['ece_average']:.4f}"
    return f"; churn probability {what} ({why})"


def clean_metric(value: Any) -> float | None:  # a metric read back from JSON
    """A JSON-safe float: None stays None, NaN/inf become None."""
    if value is None:
        return None
    out = float(value)
    return out if np.isfinite(out) else None


def format_metric(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def best_methods(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, set[str]]:
    """For each metric, the method(s) with the best value (ties share it)."""
    out: dict[str, set[str]] = {}
    for key in METRIC_KEYS:
        direction = METRIC_DIRECTION[key]
        scored = {
            m: (abs(v) if direction == 0 else -direction * v)
            for m, vals in table.items()
            if (v := vals.get(key)) is not None and np.isfinite(v)
        }
        if scored:
            low = min(scored.values())
            out[key] = {m for m, s in scored.items() if np.isclose(s, low, rtol=0, atol=1e-12)}
    return out
