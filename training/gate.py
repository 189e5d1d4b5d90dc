"""The promotion gate's named checks, read from registered versions' tags.

A registered version carries its backtest metrics (:data:`KEY_METRICS`) and backtest
identity (:data:`BACKTEST_KEYS`) as tags. :func:`failed_checks` compares a challenger's with
the champion's metrics on the same backtest and names every check (:data:`CHECKS`) that
fails; :func:`rescored_source` says where re-scored champion figures come from. Moving
aliases, history and skips is the registry's part (:func:`training.registry.promote`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

KEY_METRICS: tuple[str, ...] = (
    "model.churn_auc",
    "model.count_mae",
    "model.brier",
    "model.timing_cindex",
    "model.spend_mae",
    "bgnbd.churn_auc",
    "paretonbd.churn_auc",
    "recency.churn_auc",
)
BACKTEST_KEYS: tuple[str, ...] = ("backtest.as_of", "backtest.horizon_days", "data.fingerprint")
CHECKS: dict[str, str] = {
    "baselines": "challenger churn_auc beats the best BTYD baseline (BG/NBD, Pareto/NBD)",
    "same_backtest": "the champion's metrics come from the challenger's backtest "
    "(same data, cutoff and horizon)",
    "churn_auc": "challenger churn_auc is not below the champion's minus --tolerance",
    "count_mae": "challenger count_mae is not above the champion's",
}


def float_tags(
    tags: Mapping[str, str], keys: Collection[str], prefix: str = ""
) -> dict[str, float]:
    """The ``prefix + key`` tags that parse as floats, keyed without the prefix."""
    out: dict[str, float] = {}
    for key in keys:
        raw = tags.get(prefix + key)
        if raw is None:
            continue
        try:
            out[key] = float(raw)
        except ValueError:
            continue
    return out


def version_metrics(mv: Any) -> dict[str, float]:
    """A registered version's own backtest metrics (:data:`KEY_METRICS`) from its tags."""
    return float_tags(mv.tags, KEY_METRICS)


def version_backtest(mv: Any) -> dict[str, str]:
    """A registered version's backtest identity (:data:`BACKTEST_KEYS`) from its tags."""
    return {k: mv.tags[k] for k in BACKTEST_KEYS if k in mv.tags}


def failed_checks(
    challenger: Any,
    champion: Any | None,
    champion_metrics: Mapping[str, float] | None,
    tolerance: float,
) -> dict[str, str]:
    """Failed checks (name -> reason); empty when the challenger passes every check."""
    failures: dict[str, str] = {}
    cm = version_metrics(challenger)
    auc = cm.get("model.churn_auc", math.nan)
    baselines = {k: cm[k] for k in ("bgnbd.churn_auc", "paretonbd.churn_auc") if k in cm}
    if not math.isfinite(auc):
        failures["baselines"] = f"challenger v{challenger.version} has no finite model.churn_auc"
    elif not baselines:
        failures["baselines"] = (
            f"challenger v{challenger.version} has no baseline churn_auc recorded"
        )
    else:
        best_name, best = max(baselines.items(), key=lambda kv: kv[1])
        if not auc > best:
            failures["baselines"] = (
                f"challenger churn_auc {auc:.4f} does not beat baseline {best_name} {best:.4f}"
            )
    if champion is None or champion_metrics is None:
        return failures
    champ_auc = champion_metrics.get("model.churn_auc", math.nan)
    if not (math.isfinite(auc) and math.isfinite(champ_auc)) or auc - champ_auc < -tolerance:
        failures["churn_auc"] = (
            f"challenger churn_auc {auc:.4f} is worse than champion v{champion.version} "
            f"{champ_auc:.4f} (tolerance {tolerance})"
        )
    mae = cm.get("model.count_mae", math.nan)
    champ_mae = champion_metrics.get("model.count_mae", math.nan)
    if not (mae <= champ_mae):
        failures["count_mae"] = (
            f"challenger count_mae {mae:.4f} is worse than champion v{champion.version} "
            f"{champ_mae:.4f}"
        )
    return failures


def rescored_source(challenger: Any, champion: Any, c: MlflowClient) -> str:
    """How the champion's metrics were obtained, with a caveat when they are optimistic.

    The champion is the production fit of its own run: if that fit used data past the
    challenger's cutoff, it has seen part of the outcomes it is judged on.
    """
    source = "the challenger's backtest (re-scored)"
    try:
        fit_as_of = (
            c.get_run(champion.run_id).data.params.get("fit_as_of") if champion.run_id else None
        )
    except MlflowException:
        fit_as_of = None
    cutoff = challenger.tags.get("backtest.as_of")
    try:
        optimistic = bool(
            fit_as_of
            and cutoff
            and datetime.fromisoformat(fit_as_of) > datetime.fromisoformat(cutoff)
        )
    except (TypeError, ValueError):  # unparsable or naive vs aware: no caveat to state
        optimistic = False
    if optimistic:
        source += (
            f"; it was fitted on data up to {fit_as_of}, after the cutoff {cutoff}, so its "
            "figures are optimistic"
        )
    return source
