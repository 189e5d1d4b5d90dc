"""Train -> track -> package -> register: the ``retain train`` workflow.

Two model fits, on purpose:

1. **Backtest at ``as_of``** (:func:`training.evaluation.backtest.evaluate`): the models train on
   snapshots whose label windows end by ``as_of``, score the customers known at ``as_of``
   and are judged on what those customers did in ``[as_of, as_of + H)``. So ``as_of + H``
   must be inside the log. These metrics (model and baselines) are what the registry's
   promotion gate compares, and they are only comparable between runs with the same
   cutoff, horizon and data fingerprint.
2. **Production fit on all the data**: :class:`training.models.bundle.RetainModels` is fitted with
   ``as_of`` = the UTC day after the log's last timestamp, so it learns from every snapshot
   whose label window ends by the end of the log (the most recent behaviour). That fitted
   object is what gets packaged, logged and registered; the backtest fit is discarded.

The registered version becomes ``challenger``; only ``retain promote`` changes ``champion``.
When a champion exists and was backtested differently, its configuration is re-fitted on
this run's backtest (same data, same cutoff; :mod:`training.registry.gate` says why not its
registered model) and the figures, with what they are, are recorded on the new version, so
the promotion gate compares like with like. ``retain promote`` (:func:`promote_challenger`)
first loads the challenger from the registry (manifest digest checked) and scores a tiny
synthetic log with it: a version that cannot serve never becomes champion.

``training`` never imports ``serving``: what the lifecycle needs from it (the pyfunc model
code, the offer policy check, loading a registered version, the scorer) comes in as one
:class:`ServingParts`, built by :mod:`serving.lifecycle_wiring` and passed by the root CLI,
the notebooks and the tests.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from features.log.schema import LogConfig
from features.redaction import redact
from features.sources.database_log import DatabaseLog
from features.utc import day_after_last_row, to_utc_timestamp
from training.artifact import RetainArtifact

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from features.retention.segments import SegmentConfig
    from training.dataset.snapshot_builder import SnapshotBuilder
    from training.models.bundle import RetainModels

SMOKE_CUSTOMERS = 12


@dataclass(frozen=True)
class ServingParts:
    """What the lifecycle takes from ``serving``, handed in so imports stay one-way.

    - ``pyfunc_code``: the MLflow "models from code" file logged with every model.
    - ``policy_yaml(policy)``: the offer policy (a YAML path or text; None for the default)
      validated and written back as YAML; it raises on a bad policy, before any training.
    - ``load_version(name, version, tracking_uri)``: a registered version loaded as serving
      loads it (download checked against the manifest digest the registry recorded).
    - ``score(artifact, log, as_of)``: the scorer's frame for ``log`` (one row a customer).
    - ``load_errors``: what ``load_version`` raises when a version cannot be resolved.
    """

    pyfunc_code: Path
    policy_yaml: Callable[[str | Path | None], str]
    load_version: Callable[[str, str, str | None], RetainArtifact]
    score: Callable[[RetainArtifact, pd.DataFrame, pd.Timestamp], pd.DataFrame]
    load_errors: tuple[type[Exception], ...] = ()


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
    champion_rescored: str | None = None  # champion whose configuration was re-fitted here
    rescore_problem: str | None = None  # why the champion's configuration was not re-fitted


def production_totals(
    models: RetainModels, log: pd.DataFrame, fit_as_of: pd.Timestamp
) -> dict[str, dict[str, float]]:
    """The production model's planner totals for the next horizon, with 90 % intervals."""
    scores = models.predict(log, fit_as_of)
    return dict(
        models.combination_.total_interval(
            scores["expected_purchases_horizon"].to_numpy(dtype=float),
            scores["expected_spend_horizon"].to_numpy(dtype=float),
        )
    )


def _feature_importance(models: RetainModels) -> dict[str, float] | None:
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
    log_source: str | Path | pd.DataFrame | DatabaseLog,
    as_of: object,
    horizon_days: int = 90,
    *,
    serving: ServingParts,
    log_config: LogConfig | None = None,
    tracking_uri: str | None = None,
    experiment: str = "retain",
    registered_model: str = "retain",
    policy: str | Path | None = None,
    register: bool = True,
    models_params: Mapping[str, Any] | None = None,
    segment_config: SegmentConfig | None = None,
    artifact_out: Path | None = None,
    seed: int = 0,
    console: Console | None = None,
    snapshots: SnapshotBuilder | None = None,
) -> TrainOutcome:
    """Backtest at ``as_of``, fit on everything, package, log to MLflow, register challenger.

    ``tracking_uri`` is resolved once here (explicit > env > ``./mlflow.db``); ``policy`` is a
    YAML path or text (default: serving's default policy), validated by
    ``serving.policy_yaml`` before any training.
    ``log_config`` reads the log and is packaged with the model, so HTTP, batch and the
    pyfunc count rows (cancellations, duplicates) the way this training run did.
    ``snapshots`` builds the training snapshots of both fits (default: in this process;
    ``training.dataset.cluster_snapshots.ClusterSnapshots`` on a Dask cluster): the boosters, the
    artifact, the run and the registry entry are the ones a local run makes.
    """
    from features.log.purchase_log import read_purchase_log
    from features.retention.segments import SegmentConfig
    from training.artifact import save_artifact
    from training.dataset.snapshots import describe_snapshots
    from training.evaluation.backtest import check_coverage, evaluate
    from training.evaluation.plots import write_backtest_plots
    from training.models.bundle import RetainModels
    from training.registry import tracking, tracking_store
    from training.registry import versions as registry

    cutoff = to_utc_timestamp(as_of)
    policy_yaml = serving.policy_yaml(policy)
    segment_config = segment_config or SegmentConfig()
    # an unreachable server is said before any work; the store itself is opened (and a new
    # sqlite file created) only once the log has been read and checked
    tracking_store.check_reachable(tracking_store.resolve_tracking_uri(tracking_uri))

    with _stages(console) as stage, tempfile.TemporaryDirectory(prefix="retain-train-") as tmp:
        with stage("read purchase log"):
            log = read_purchase_log(log_source, log_config).log
            check_coverage(log, cutoff, horizon_days)  # evaluate's check, before any work
            fingerprint = tracking.data_fingerprint(log)
        # after the input is checked (a bad log leaves no store behind), before any training
        resolved_uri = tracking_store.configure_tracking(tracking_uri)
        with stage(f"backtest at {cutoff.date()} (horizon {horizon_days} d)"):
            result = evaluate(
                log,
                cutoff,
                horizon_days,
                models_params=models_params,
                seed=seed,
                snapshots=snapshots,
            )
            backtest = result.to_dict()
            plots = write_backtest_plots(result, Path(tmp) / "plots")
        fit_as_of = day_after_last_row(log)  # the production models see every row
        with stage(f"fit production models on all data (as_of {fit_as_of.date()})"):
            params = dict(models_params or {})
            params.setdefault("horizon_days", horizon_days)
            models = RetainModels(**params).fit(log, fit_as_of, snapshots=snapshots)
            forecast = production_totals(models, log, fit_as_of)
        if console is not None:
            for line in [*result.notes(), *describe_snapshots(models.snapshots_)]:
                console.print(line, markup=False, highlight=False)
            for name, total in forecast.items():
                console.print(
                    f"forecast from {fit_as_of.date()} over {horizon_days} d: total {name} "
                    f"{total['forecast']:,.0f} (90 % interval {total['low']:,.0f} - "
                    f"{total['high']:,.0f})",
                    markup=False,
                    highlight=False,
                )
        with stage("package artifact"):
            artifact_dir = save_artifact(
                artifact_out or Path(tmp) / "artifact",
                models,
                segment_config=segment_config,
                policy_yaml=policy_yaml,
                metrics=backtest["metrics"],
                log_config=log_config,
            )
        with stage(f"log run to {redact(resolved_uri)}"):
            run = tracking.log_training_run(
                experiment=experiment,
                python_model=serving.pyfunc_code,
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
                data_source=None if isinstance(log_source, pd.DataFrame) else log_source,
                summary={
                    **backtest,
                    "production_snapshots": models.snapshots_,
                    "production_combination": models.combination_.to_dict(),
                    "production_totals": forecast,
                },
            )
        version = rescored = problem = None
        if register:
            with stage(f"register {registered_model!r} version as challenger"):
                version = registry.register_challenger(run.run_id, name=registered_model)
            with stage("re-fit the champion's configuration on this backtest"):
                rescored, problem = _record_champion_rescore(
                    log, cutoff, horizon_days, registered_model, version
                )
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
        champion_rescored=rescored,
        rescore_problem=problem,
    )


def champion_on_backtest(
    log: pd.DataFrame,
    cutoff: pd.Timestamp,
    horizon_days: int,
    name: str,
    challenger_version: str,
    champion_version: str,
) -> tuple[dict[str, float | None], str]:
    """The champion's figures on the challenger's backtest, and one sentence saying what
    they are (recorded on the challenger as :data:`training.registry.versions.RESCORED_BASIS_TAG`).

    The champion's *configuration* (its run's models parameters and seed) is re-fitted at
    ``cutoff`` on ``log`` and scored like the challenger's backtest; its registered model is
    not used, because it was fitted on data past ``cutoff`` (:mod:`training.registry.gate`). When the
    configuration is the challenger's own, that re-fit *is* the challenger's backtest, whose
    figures are on the challenger already. Keyed like a version's tags (``model.churn_auc``).
    """
    from mlflow.tracking import MlflowClient

    from training.evaluation.backtest import evaluate
    from training.registry import gate, tracking

    c = MlflowClient()
    champion = c.get_model_version(name, champion_version)
    challenger = c.get_model_version(name, challenger_version)
    if not champion.run_id:
        raise ValueError(f"champion v{champion_version} names no run, so no configuration")
    champion_params = c.get_run(champion.run_id).data.params
    config, seed = gate.recorded_config(champion_params)
    mine = (
        gate.recorded_config(c.get_run(challenger.run_id).data.params)
        if challenger.run_id
        else None
    )
    same = mine == (config, seed)
    where = (
        f"at v{challenger_version}'s cutoff {cutoff.isoformat()} on its data "
        f"({horizon_days}-day horizon)"
    )
    if same:
        own = gate.version_metrics(challenger)
        metrics: dict[str, float | None] = {k: v for k, v in own.items() if k.startswith("model.")}
        return metrics, (
            f"v{champion_version}'s configuration re-fitted {where}: the same models parameters "
            f"and seed as v{challenger_version}, so the figures are v{challenger_version}'s own "
            "backtest"
        )
    result = evaluate(
        log, cutoff, horizon_days, models_params=config, methods=("model",), seed=seed
    )
    metrics = dict(tracking.flatten_metrics({"model": result.to_dict()["metrics"]["model"]}))
    fitted_to = champion_params.get("fit_as_of", "the end of its log")
    return metrics, (
        f"v{champion_version}'s configuration (models parameters and seed of run "
        f"{champion.run_id}) re-fitted {where}; its registered model, fitted on data up to "
        f"{fitted_to}, is not scored"
    )


def _record_champion_rescore(
    log: pd.DataFrame,
    cutoff: pd.Timestamp,
    horizon_days: int,
    name: str,
    version: str,
) -> tuple[str | None, str | None]:
    """Re-fit the current champion's configuration on this run's backtest; tag ``version``.

    Returns (champion version, None) or (None, why not). A champion that cannot be
    re-fitted does not fail the training run: the gate then reports it at promotion.
    """
    from mlflow.exceptions import MlflowException

    from features.errors import UserError
    from training.registry import versions as registry

    champion = registry.alias_version(registry.CHAMPION, name=name)
    if champion is None or champion == version:
        return None, None
    try:
        metrics, basis = champion_on_backtest(log, cutoff, horizon_days, name, version, champion)
    except (MlflowException, UserError, ValueError) as exc:
        return None, (
            f"champion v{champion}'s configuration could not be re-fitted on this backtest: "
            f"{redact(exc)}"
        )
    registry.record_champion_rescore(version, champion, metrics, basis, name=name)
    return champion, None


def smoke_log() -> pd.DataFrame:
    """A tiny, fixed synthetic purchase log (canonical) that any retain model can score."""
    from features.log.purchase_log import canonicalize
    from features.synthetic.synth import generate_purchase_log

    raw = generate_purchase_log(SMOKE_CUSTOMERS, seed=0, start="2023-01-01", end="2023-12-31")
    return canonicalize(raw.log).log


def smoke_test_version(
    serving: ServingParts, name: str, version: str, tracking_uri: str | None = None
) -> None:
    """Load registered ``version`` as serving would and score :func:`smoke_log`; raise if not.

    This is what ``retain promote`` runs before it moves an alias: the download must match
    the manifest digest recorded at registration, every file its manifest hash, and the
    models must produce a finite score for every customer of the log.
    """
    import numpy as np

    artifact = serving.load_version(name, version, tracking_uri)
    log = smoke_log()
    scored = serving.score(artifact, log, day_after_last_row(log))
    expected = int(log["customer_id"].nunique())
    churn = scored["churn_probability"].to_numpy(dtype=np.float64)
    if len(scored) != expected or not np.all((churn >= 0) & (churn <= 1)):
        raise ValueError(
            f"scored {len(scored)} of {expected} customers of the smoke-test log, churn "
            f"probabilities in [{np.nanmin(churn, initial=np.nan):.3f}, "
            f"{np.nanmax(churn, initial=np.nan):.3f}]"
        )


def promote_challenger(
    *,
    serving: ServingParts,
    name: str = "retain",
    tolerance: float = 0.0,
    skip: tuple[str, ...] = (),
    data: str | Path | DatabaseLog | None = None,
    log_config: LogConfig | None = None,
    tracking_uri: str | None = None,
) -> Any:
    """``retain promote``: smoke-test the challenger, compare like with like, move aliases.

    ``data`` is the challenger's purchase log: with it, a champion whose configuration was
    not yet re-fitted on the challenger's backtest is re-fitted now (the log must have the
    fingerprint the challenger was backtested on). Returns the :class:`training.registry.versions.PromotionDecision`.
    """
    from features.log.purchase_log import read_purchase_log
    from training.registry import tracking, tracking_store
    from training.registry import versions as registry

    resolved = tracking_store.configure_tracking(tracking_uri, create=False)

    def rescore(
        challenger: ModelVersion, champion: ModelVersion
    ) -> tuple[dict[str, float | None], str]:
        log = read_purchase_log(data, log_config).log
        expected = challenger.tags.get("data.fingerprint")
        actual = tracking.data_fingerprint(log).fingerprint
        if actual != expected:
            raise registry.RegistryError(
                f"--data {data} is not challenger v{challenger.version}'s purchase log "
                f"(fingerprint {actual[:12]}..., the challenger was backtested on "
                f"{str(expected)[:12]}...); pass the log it was trained on, with the same --map"
            )
        cutoff = to_utc_timestamp(challenger.tags["backtest.as_of"])
        horizon = int(challenger.tags["backtest.horizon_days"])
        return champion_on_backtest(
            log, cutoff, horizon, name, str(challenger.version), str(champion.version)
        )

    return registry.promote(
        smoke_test=lambda version: smoke_test_version(serving, name, version, resolved),
        name=name,
        tolerance=tolerance,
        skip=skip,
        rescore=rescore if data is not None else None,
    )
