"""``retain train / promote / rollback / models``: the MLflow model lifecycle from the shell.

The commands run :mod:`training.lifecycle` with the :class:`training.lifecycle.ServingParts`
the root CLI puts in the command's context (training never imports serving): ``train`` and
``promote`` read them with :func:`serving_parts`.
A store that is missing or unreachable, a refused registry operation or a model that
cannot be resolved is a user error: one line on stderr, exit 2, URI passwords masked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from features.cli_options import (
    DEFAULT_REGISTERED_MODEL,
    AsOfOption,
    ConfigOption,
    DaskLocalOption,
    DaskOption,
    DataOption,
    ExperimentOption,
    MapOption,
    OldNameOption,
    QueryOption,
    RegisteredModelOption,
    TableOption,
    ThreadsOption,
    TrackingUriOption,
    UrlEnvOption,
    with_old_spelling,
)
from features.sources.log_source import log_source

if TYPE_CHECKING:  # pandas and MLflow load when a command runs, not for ``retain --help``
    from training.lifecycle import ServingParts

_TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("model.churn_auc", "AUC"),
    ("bgnbd.churn_auc", "BG/NBD"),
    ("paretonbd.churn_auc", "Pareto"),
    ("model.count_mae", "cnt MAE"),
    ("model.brier", "Brier"),
)

SERVING_PARTS_KEY = "retain.serving_parts"
"""``typer.Context.meta`` key of the :class:`ServingParts` (or a function returning them)."""


def serving_parts(ctx: typer.Context) -> ServingParts:
    """The serving parts the root CLI put in the context; a function is called here, so the
    parts (and pandas, MLflow) load when ``train`` or ``promote`` runs, not for ``--help``."""
    parts: ServingParts | Callable[[], ServingParts] | None = ctx.meta.get(SERVING_PARTS_KEY)
    if parts is None:
        raise RuntimeError(f"the root app sets ctx.meta[{SERVING_PARTS_KEY!r}]")
    return parts() if callable(parts) else parts


def _model_name(registered_model: str, old_name: str | None) -> str:
    """``--registered-model``, or the value of its old spelling ``--name``."""
    name = with_old_spelling(
        registered_model, old_name, "--registered-model", "--name", DEFAULT_REGISTERED_MODEL
    )
    assert name is not None  # registered_model has a default
    return name


def alias_report(name: str, version: str) -> str:
    """What the aliases hold *now*, read back from the store after this run set them.

    Another ``retain train`` or ``retain promote`` may have moved ``challenger`` since this
    run set it; the message says so rather than claim an alias this run no longer holds.
    """
    from training.registry import versions as registry

    challenger = registry.alias_version(registry.CHALLENGER, name=name)
    champion = registry.alias_version(registry.CHAMPION, name=name)
    holders = ", ".join(
        f"{alias} -> {'v' + held if held else 'none'}"
        for alias, held in (("challenger", challenger), ("champion", champion))
    )
    if challenger == version:
        return f"registered {name!r} version {version} as challenger ({holders})"
    if champion == version:
        return f"registered {name!r} version {version}; it is already champion ({holders})"
    return (
        f"registered {name!r} version {version}, but another run has moved the aliases "
        f"since: {holders}"
    )


@contextmanager
def _snapshot_builder(address: str | None, local_workers: int | None) -> Iterator[Any]:
    """None (snapshots built here), or a cluster's builder while its client is open."""
    if address is None and local_workers is None:
        yield None
        return
    from features.dask_cluster import dask_client
    from training.dataset.cluster_snapshots import ClusterSnapshots

    with dask_client(address, local_workers) as client:
        yield ClusterSnapshots(client)


def train(
    ctx: typer.Context,
    *,
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    as_of: AsOfOption,
    horizon: int = typer.Option(90, "--horizon", min=1, help="Horizon in days."),
    mapping: MapOption = None,
    config_file: ConfigOption = None,
    tracking_uri: TrackingUriOption = None,
    experiment: ExperimentOption = "retain",
    registered_model: RegisteredModelOption = DEFAULT_REGISTERED_MODEL,
    old_name: OldNameOption = None,
    policy: Path | None = typer.Option(None, "--policy", help="Offer policy YAML."),
    register_version: bool = typer.Option(
        True, "--register/--no-register", help="Register the model as challenger."
    ),
    artifact_out: Path | None = typer.Option(
        None, "--artifact-out", help="Also keep the packaged artifact directory here."
    ),
    threads: ThreadsOption = None,
    dask_address: DaskOption = None,
    dask_local: DaskLocalOption = None,
) -> None:
    """Backtest at --as-of, fit on all data, log to MLflow and register a challenger.

    --as-of is the backtest's cut-off: as_of + horizon must lie inside the log. The
    --config file is saved with the model, so serving applies its counting rules. With
    --dask or --dask-local the training snapshots are built on the Dask workers and the
    boosters fit here: the same models as a local run.
    """
    from features.config_file import log_config_from_options
    from features.redaction import redact
    from features.utc import to_utc_timestamp
    from training.lifecycle import train_and_register

    name = _model_name(registered_model, old_name)
    cutoff = to_utc_timestamp(as_of, "--as-of")
    console = Console(stderr=True)
    source = log_source(data, table=table, query=query, url_env=url_env, config_file=config_file)
    with _snapshot_builder(dask_address, dask_local) as snapshots:
        outcome = train_and_register(
            source,
            cutoff,
            horizon,
            serving=serving_parts(ctx),
            log_config=log_config_from_options(config_file, mapping),
            tracking_uri=tracking_uri,
            experiment=experiment,
            registered_model=name,
            policy=policy,
            register=register_version,
            artifact_out=artifact_out,
            console=console,
            models_params=None if threads is None else {"num_threads": threads},
            snapshots=snapshots,
        )
    model = outcome.backtest["metrics"].get("model", {})
    out = Console()
    out.print(f"run {outcome.run_id} logged to {redact(outcome.tracking_uri)}")
    out.print(
        "backtest: "
        + ", ".join(
            f"{k}={v:.4f}"
            for k, v in model.items()
            if k in ("churn_auc", "count_mae", "brier") and v is not None
        )
    )
    for key, total in outcome.backtest.get("totals", {}).items():
        out.print(
            f"backtest total {key}: forecast {total['forecast']:,.0f} (90% interval "
            f"{total['low']:,.0f} - {total['high']:,.0f}), actual {total['actual']:,.0f}"
        )
    if outcome.champion_rescored is not None:
        out.print(
            f"champion v{outcome.champion_rescored}'s configuration re-fitted on this backtest "
            "(recorded for the promotion gate)"
        )
    if outcome.rescore_problem is not None:
        out.print(f"warning: {outcome.rescore_problem}", markup=False, highlight=False)
    if outcome.version is not None:
        out.print(alias_report(name, outcome.version), markup=False, highlight=False)


def promote(
    ctx: typer.Context,
    tolerance: float = typer.Option(
        0.0, "--tolerance", min=0.0, help="Allowed churn_auc drop vs the champion."
    ),
    skip_check: list[str] = typer.Option(
        [],
        "--skip-check",
        metavar="NAME",
        help="Skip one named gate check (repeatable; recorded on the version): "
        "baselines, same_backtest, churn_auc, count_mae. The load-and-score check "
        "cannot be skipped.",
    ),
    force: bool = typer.Option(False, "--force", hidden=True),
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    mapping: MapOption = None,
    config_file: ConfigOption = None,
    tracking_uri: TrackingUriOption = None,
    registered_model: RegisteredModelOption = DEFAULT_REGISTERED_MODEL,
    old_name: OldNameOption = None,
) -> None:
    """Load and smoke-score the challenger, then promote it if it passes the gate.

    Exit 1 if refused. --data is the challenger's purchase log: with it the champion's
    configuration is re-fitted on the challenger's backtest if `retain train` did not
    record that; read it with the --map and --config `retain train` was given.
    """
    from features.config_file import log_config_from_options
    from training.lifecycle import promote_challenger
    from training.registry.gate import CHECKS

    if force:
        raise typer.BadParameter(
            "--force is gone: it switched every check off. Name the one check to skip "
            f"with --skip-check NAME (one of {', '.join(CHECKS)}); it is recorded on "
            "the version.",
            param_hint="--force",
        )
    name = _model_name(registered_model, old_name)
    decision = promote_challenger(
        serving=serving_parts(ctx),
        name=name,
        tolerance=tolerance,
        skip=tuple(skip_check),
        data=None
        if data is None and url_env is None
        else log_source(data, table=table, query=query, url_env=url_env, config_file=config_file),
        log_config=log_config_from_options(config_file, mapping),
        tracking_uri=tracking_uri,
    )
    out = Console()
    head = "[green]PROMOTED[/green]" if decision.promoted else "[red]REFUSED[/red]"
    out.print(
        f"{head} challenger v{decision.challenger_version or '-'} "
        f"(champion was v{decision.champion_version or '-'})"
    )
    for reason in decision.reasons:
        out.print(f"  - {reason}", markup=False, highlight=False)
    if not decision.promoted:
        raise typer.Exit(code=1)


def rollback(
    tracking_uri: TrackingUriOption = None,
    registered_model: RegisteredModelOption = DEFAULT_REGISTERED_MODEL,
    old_name: OldNameOption = None,
) -> None:
    """Point champion back at the previous champion version."""
    from training.registry import tracking_store
    from training.registry import versions as registry

    name = _model_name(registered_model, old_name)
    tracking_store.configure_tracking(tracking_uri, create=False)
    try:
        version = registry.rollback(name=name)
    except registry.RegistryError as exc:
        Console(stderr=True).print(f"[red]rollback failed:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    Console().print(f"champion of {name!r} is now version {version}")


def models(
    tracking_uri: TrackingUriOption = None,
    registered_model: RegisteredModelOption = DEFAULT_REGISTERED_MODEL,
    old_name: OldNameOption = None,
) -> None:
    """List registered versions with their aliases and key backtest metrics."""
    from training.registry import tracking_store
    from training.registry import versions as registry

    name = _model_name(registered_model, old_name)
    tracking_store.configure_tracking(tracking_uri, create=False)
    rows = registry.list_versions(name=name)
    table = Table(
        title=f"registered model {name!r} (backtest metrics)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
        padding=(0, 1),
    )
    for column in ("ver", "aliases", "as_of", "H"):
        table.add_column(column, no_wrap=True)
    for _, label in _TABLE_METRICS:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column("run", no_wrap=True)
    for row in rows:
        table.add_row(
            row.version,
            ",".join(row.aliases),
            row.backtest.get("backtest.as_of", "")[:10],
            row.backtest.get("backtest.horizon_days", ""),
            *(
                f"{row.metrics[key]:.3f}" if key in row.metrics else "-"
                for key, _ in _TABLE_METRICS
            ),
            (row.run_id or "")[:8],
        )
    Console().print(table if rows else f"no versions registered under {name!r}")


def register(app: typer.Typer) -> None:
    """Add the MLflow lifecycle commands to the root ``retain`` app; its callback puts the
    serving parts under :data:`SERVING_PARTS_KEY`."""
    app.command("train")(train)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("models")(models)
