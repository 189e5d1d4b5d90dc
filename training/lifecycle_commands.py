"""``retain train / promote / rollback / models``: the MLflow model lifecycle from the shell.

The commands run :mod:`training.lifecycle` with the :class:`training.lifecycle.ServingParts`
the root CLI hands to :func:`register` (training never imports serving).
A store that is missing or unreachable, a refused registry operation or a model that
cannot be resolved is a user error: one line on stderr, exit 2, URI passwords masked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from features.log_source import QUERY_OPTION, TABLE_OPTION, URL_ENV_OPTION, data_option, log_source
from training.cli import config_option, map_option, threads_option

if TYPE_CHECKING:  # pandas and MLflow load when a command runs, not for ``retain --help``
    from training.lifecycle import ServingParts

_TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("model.churn_auc", "AUC"),
    ("bgnbd.churn_auc", "BG/NBD"),
    ("paretonbd.churn_auc", "Pareto"),
    ("model.count_mae", "cnt MAE"),
    ("model.brier", "Brier"),
)

_TRACKING = typer.Option(
    None,
    "--tracking-uri",
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db).",
)
_MODEL_NAME = typer.Option("retain", "--name", help="Registered model name.")


def alias_report(name: str, version: str) -> str:
    """What the aliases hold *now*, read back from the store after this run set them.

    Another ``retain train`` or ``retain promote`` may have moved ``challenger`` since this
    run set it; the message says so rather than claim an alias this run no longer holds.
    """
    from training import registry

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
    from training.cluster_snapshots import ClusterSnapshots

    with dask_client(address, local_workers) as client:
        yield ClusterSnapshots(client)


def register(app: typer.Typer, serving: ServingParts | Callable[[], ServingParts]) -> None:
    """Add the MLflow lifecycle commands to the root ``retain`` app, run with ``serving``.

    ``serving`` may be a function that returns the parts: the root CLI passes one, so the
    parts (and pandas, MLflow) load when ``train`` or ``promote`` runs, not for ``--help``.
    """

    def parts() -> ServingParts:
        return serving() if callable(serving) else serving

    @app.command("train")
    def train(
        data: str | None = data_option(short=False),
        table: str | None = TABLE_OPTION,
        query: str | None = QUERY_OPTION,
        url_env: str | None = URL_ENV_OPTION,
        as_of: datetime = typer.Option(
            ..., "--as-of", help="Backtest cutoff; as_of + horizon must be inside the log."
        ),
        horizon: int = typer.Option(90, "--horizon", min=1, help="Horizon in days."),
        mapping: list[str] = map_option(
            "Column mapping CANONICAL=SOURCE (repeatable); overrides --config."
        ),
        config_file: Path | None = config_option(
            ". Saved with the model: serving applies its counting rules."
        ),
        tracking_uri: str | None = _TRACKING,
        experiment: str = typer.Option("retain", "--experiment", help="MLflow experiment."),
        name: str = _MODEL_NAME,
        policy: Path | None = typer.Option(None, "--policy", help="Offer policy YAML."),
        register_version: bool = typer.Option(
            True, "--register/--no-register", help="Register the model as challenger."
        ),
        artifact_out: Path | None = typer.Option(
            None, "--artifact-out", help="Also keep the packaged artifact directory here."
        ),
        threads: int | None = threads_option(),
        dask_address: str | None = typer.Option(
            None,
            "--dask",
            help="Build the training snapshots on this Dask scheduler, e.g. tcp://host:8786 "
            "(the boosters fit here; the same models as a local run).",
        ),
        dask_local: int | None = typer.Option(
            None, "--dask-local", help="Build them on a local Dask cluster of N worker processes."
        ),
    ) -> None:
        """Backtest at --as-of, fit on all data, log to MLflow and register a challenger."""
        from features.config_file import log_config_from_options
        from features.redaction import redact
        from training.lifecycle import train_and_register

        console = Console(stderr=True)
        source = log_source(
            data, table=table, query=query, url_env=url_env, config_file=config_file
        )
        with _snapshot_builder(dask_address, dask_local) as snapshots:
            outcome = train_and_register(
                source,
                as_of,
                horizon,
                serving=parts(),
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

    @app.command("promote")
    def promote(
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
        data: str | None = data_option(
            "The challenger's purchase log (a file, or a database URL with --table/--query): "
            "re-fit the champion's configuration on the challenger's backtest if `retain "
            "train` did not record it.",
            short=False,
        ),
        table: str | None = TABLE_OPTION,
        query: str | None = QUERY_OPTION,
        url_env: str | None = URL_ENV_OPTION,
        mapping: list[str] = map_option(
            "Column mapping CANONICAL=SOURCE for --data (as in train)."
        ),
        tracking_uri: str | None = _TRACKING,
        name: str = _MODEL_NAME,
    ) -> None:
        """Load and smoke-score the challenger, then promote it if it passes the gate
        (exit 1 if refused)."""
        from features.reading import parse_mapping
        from features.schema import LogConfig
        from training.gate import CHECKS
        from training.lifecycle import promote_challenger

        if force:
            raise typer.BadParameter(
                "--force is gone: it switched every check off. Name the one check to skip "
                f"with --skip-check NAME (one of {', '.join(CHECKS)}); it is recorded on "
                "the version.",
                param_hint="--force",
            )
        decision = promote_challenger(
            serving=parts(),
            name=name,
            tolerance=tolerance,
            skip=tuple(skip_check),
            data=None
            if data is None and url_env is None
            else log_source(data, table=table, query=query, url_env=url_env),
            log_config=LogConfig(columns=parse_mapping(mapping)),
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

    @app.command("rollback")
    def rollback(tracking_uri: str | None = _TRACKING, name: str = _MODEL_NAME) -> None:
        """Point champion back at the previous champion version."""
        from training import registry, tracking_store

        tracking_store.configure_tracking(tracking_uri, create=False)
        try:
            version = registry.rollback(name=name)
        except registry.RegistryError as exc:
            Console(stderr=True).print(f"[red]rollback failed:[/red] {exc}")
            raise typer.Exit(code=1) from exc
        Console().print(f"champion of {name!r} is now version {version}")

    @app.command("models")
    def models(tracking_uri: str | None = _TRACKING, name: str = _MODEL_NAME) -> None:
        """List registered versions with their aliases and key backtest metrics."""
        from training import registry, tracking_store

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
