"""The promotion gate's named checks, read from registered versions' tags.

A registered version carries its backtest metrics (:data:`KEY_METRICS`) and backtest
identity (:data:`BACKTEST_KEYS`) as tags. :func:`failed_checks` compares a challenger's with
the champion's metrics on the same backtest and names every check (:data:`CHECKS`) that
fails. Moving aliases, history and skips is the registry's part
(:func:`training.registry.versions.promote`).

When the two were backtested differently (a retrain on more data, at a later cutoff), the
champion's figure is its *configuration* (:func:`recorded_config`: models parameters and
seed of its run) re-fitted at the challenger's cutoff on the challenger's data, never its
registered model re-scored there: that model was fitted on everything up to the end of its
own log, so it has already seen outcomes inside the challenger's evaluation window and would
be graded on its training labels. Scoring both only on customers and windows neither saw
is no option for a monthly retrain: the champion's fit ends one month before the
challenger's data does, which is shorter than any horizon worth backtesting.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

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
MODELS_PARAM_PREFIX = "models."
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


def version_metrics(mv: ModelVersion) -> dict[str, float]:
    """A registered version's own backtest metrics (:data:`KEY_METRICS`) from its tags."""
    return float_tags(mv.tags, KEY_METRICS)


def version_backtest(mv: ModelVersion) -> dict[str, str]:
    """A registered version's backtest identity (:data:`BACKTEST_KEYS`) from its tags."""
    return {k: mv.tags[k] for k in BACKTEST_KEYS if k in mv.tags}


def failed_checks(
    challenger: ModelVersion,
    champion: ModelVersion | None,
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


def recorded_config(params: Mapping[str, str]) -> tuple[dict[str, Any], int]:
    """(``RetainModels`` parameters, seed) a run recorded, read back from its MLflow params.

    ``retain train`` logs each models parameter as ``models.<name>`` = ``str(value)`` and
    the seed as ``seed``; the values are read back as Python literals (numbers, booleans,
    dicts of them), a value that is not one stays a string. ``horizon_days`` is left out:
    it belongs to the backtest the configuration is fitted for, not to the configuration.
    """
    config: dict[str, Any] = {}
    for key, raw in params.items():
        if not key.startswith(MODELS_PARAM_PREFIX):
            continue
        field = key.removeprefix(MODELS_PARAM_PREFIX)
        if field == "horizon_days":
            continue
        try:
            config[field] = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            config[field] = raw
    seed_raw = params.get("seed", "0")
    try:
        seed = int(seed_raw)
    except ValueError:
        raise ValueError(f"the run's seed param {seed_raw!r} is not an integer") from None
    return config, seed
