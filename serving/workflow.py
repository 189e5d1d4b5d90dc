"""Train -> track -> package -> register: the ``retain train`` workflow.

Two model fits, on purpose:

1. **Backtest at ``as_of``** (:func:`training.backtest.evaluate`): the models train on
   snapshots whose label windows end by ``as_of``, score the customers known at ``as_of``
   and are judged on what those customers did in ``[as_of, as_of + H)``. So ``as_of + H``
   must be inside the log. These metrics (model and baselines) are what the registry's
   promotion gate compares, and they are only comparable between runs with the same
   cutoff, horizon and data fingerprint.
2. **Production fit on all the data**: :class:`training.models.RetainModels` is fitted with
   ``as_of`` = the UTC day after the log's last timestamp, so it learns from every snapshot
   whose label window ends by the end of the log (the most recent behaviour). That fitted
   object is what gets packaged, logged and registered; the backtest fit is discarded.

The registered version becomes ``challenger``; only ``retain promote`` changes ``champion``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from features.builders import to_utc_timestamp
from features.schema import LogConfig

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


@dataclass(frozen=True)
class TrainOutcome:
    """What one ``retain train`` produced."""

    run_id: str
    experiment_id: str
    model_uri: str
    version: str | None
    registered_model: str
    tracking_uri: str
    backtest: dict[str, Any]
    fit_as_of: pd.Timestamp
    artifact_dir: Path | None


def production_as_of(log: pd.DataFrame) -> pd.Timestamp:
    """The UTC day after the last row: the cutoff the production models are fitted at."""
    return pd.Timestamp(log["timestamp"].max()).tz_convert("UTC").floor("D") + pd.Timedelta(days=1)


def _feature_importance(models: Any) -> dict[str, float] | None:
    """Gain importance of the churn booster as shares of the total (None if it has none)."""
    booster = getattr(getattr(models, "churn_", None), "booster_", None)
    if booster is None:
        return None
    gains = booster.feature_importance(importance_type="gain")
    total = float(gains.sum())
    if total <= 0:
        return None
    return {str(n): float(g) / total for n, g in zip(booster.feature_name(), gains, strict=True)}


@contextmanager
def _stages(console: Console | None) -> Iterator[Any]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
    ) as progress:

        @contextmanager
        def stage(description: str) -> Iterator[None]:
            task = progress.add_task(description, total=1)
            yield
            progress.update(task, completed=1, description=f"[green]✓[/green] {description}")

        yield stage


def train_and_register(
    log_source: str | Path | pd.DataFrame,
    as_of: object,
    horizon_days: int = 90,
    *,
    log_config: LogConfig | None = None,
    tracking_uri: str | None = None,
    experiment: str = "retain",
    registered_model: str = "retain",
    policy: str | Path | None = None,
    register: bool = True,
    models_params: Mapping[str, Any] | None = None,
    feature_config: Any = None,
    segment_config: Any = None,
    artifact_out: Path | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> TrainOutcome:
    """Backtest at ``as_of``, fit on everything, package, log to MLflow, register challenger.

    ``tracking_uri`` is resolved once here (explicit > env > ``./mlflow.db``); ``policy`` is a
    YAML path or text (default: ``OfferPolicy.default()``), validated before any training.
    """
    from features.builders import FeatureConfig
    from features.purchase_log import read_purchase_log
    from features.segments import SegmentConfig
    from serving.offers import OfferPolicy
    from training import registry, tracking
    from training.artifact import save_artifact
    from training.backtest import evaluate
    from training.models import RetainModels, describe_snapshots
    from training.plots import write_backtest_plots

    cutoff = to_utc_timestamp(as_of)
    policy_obj = OfferPolicy.default() if policy is None else OfferPolicy.from_yaml(policy)
    policy_yaml = policy_obj.to_yaml()
    feature_config = feature_config or FeatureConfig(horizon_days=min(horizon_days, 365))
    segment_config = segment_config or SegmentConfig()
    resolved_uri = tracking.configure_tracking(tracking_uri)

    with _stages(console) as stage, tempfile.TemporaryDirectory(prefix="retain-train-") as tmp:
        with stage("read purchase log"):
            log = read_purchase_log(log_source, log_config).log
            fingerprint = tracking.data_fingerprint(log)
        with stage(f"backtest at {cutoff.date()} (horizon {horizon_days} d)"):
            result = evaluate(log, cutoff, horizon_days, models_params=models_params, seed=seed)
            backtest = result.to_dict()
            plots = write_backtest_plots(result, Path(tmp) / "plots")
        fit_as_of = production_as_of(log)
        with stage(f"fit production models on all data (as_of {fit_as_of.date()})"):
            params = dict(models_params or {})
            params.setdefault("horizon_days", horizon_days)
            models = RetainModels(**params).fit(log, fit_as_of)
        if console is not None:
            for line in [*result.notes(), *describe_snapshots(models.snapshots_)]:
                console.print(line, markup=False, highlight=False)
        with stage("package artifact"):
            artifact_dir = save_artifact(
                artifact_out or Path(tmp) / "artifact",
                models,
                feature_config=feature_config,
                segment_config=segment_config,
                policy_yaml=policy_yaml,
                metrics=backtest["metrics"],
            )
        with stage(f"log run to {resolved_uri}"):
            run = tracking.log_training_run(
                experiment=experiment,
                python_model=PYFUNC_CODE,
                artifact_dir=artifact_dir,
                log=log,
                as_of=cutoff,
                horizon_days=horizon_days,
                backtest=backtest["metrics"],
                params={
                    "fit_as_of": fit_as_of.isoformat(),
                    "seed": seed,
                    **{f"models.{k}": v for k, v in params.items()},
                },
                plots={p.stem: p for p in plots},
                feature_importance=_feature_importance(models),
                fingerprint=fingerprint,
                summary={**backtest, "production_snapshots": models.snapshots_},
            )
        version = None
        if register:
            with stage(f"register {registered_model!r} version as challenger"):
                version = registry.register_challenger(run.run_id, name=registered_model)
    return TrainOutcome(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        model_uri=run.model_uri,
        version=version,
        registered_model=registered_model,
        tracking_uri=resolved_uri,
        backtest=backtest,
        fit_as_of=fit_as_of,
        artifact_dir=artifact_dir if artifact_out is not None else None,
    )
