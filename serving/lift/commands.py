"""``retain lift``: measure each offer of a campaign against its holdout (and update the policy).

Heavy imports happen inside the command so ``retain --help`` stays fast. Bad input (no
holdout, a customer assigned twice, a send day before the scores' as_of, windows past the end
of the log, an unreadable file) ends with one ``error:`` line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from features.cli_options import (
    ConfigOption,
    DataOption,
    ExperimentOption,
    MapOption,
    QueryOption,
    TableOption,
    TrackingUriOption,
    UrlEnvOption,
)
from features.errors import InputError
from features.sources.log_source import log_source

if TYPE_CHECKING:
    import pandas as pd

    from features.sources.database_log import DatabaseLog
    from serving.lift.measure import LiftResult

_AMAP_HELP = (
    "Assignments column mapping CANONICAL=SOURCE, repeatable; canonical names: customer_id, "
    "campaign, offer (or arm), holdout, send_date, and optional rule, segment, as_of, "
    "expected_value."
)
DEFAULT_EXPERIMENT = "retain-lift"


def read_table(path: str | Path, table: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Assignments from a finished ``retain score`` directory (and its summary), a file, or
    a database table (``table``; one ``retain score --out-table`` wrote carries its summary)."""
    import pandas as pd

    from features.sources.database import is_database_url, parse_url
    from serving.report.page import load_scores

    if is_database_url(str(path)):
        from serving.batch.table_output import read_scores_table

        url = parse_url(str(path), option="--assignments")
        if table is None:
            raise InputError(f"--assignments {url} is a database: give --assignments-table NAME")
        return read_scores_table(url, table)
    if table is not None:
        raise InputError(
            f"--assignments-table names a database table, but --assignments {str(path)!r} is "
            "not a database URL"
        )
    path = Path(path)
    if path.is_dir():
        return load_scores(path)
    if not path.exists():
        raise FileNotFoundError(f"assignments not found: {path}")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path), {}
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path, dtype={"customer_id": "str"}), {}
    raise InputError(
        f"cannot read assignments {str(path)!r}: give a `retain score` directory, "
        ".csv, .csv.gz, .parquet or .pq"
    )


def _config_sections(config_file: Path | None) -> tuple[Any, dict[str, str]]:
    """(LogConfig or None, assignments column mapping) from the --config file."""
    if config_file is None:
        return None, {}
    from features.config_file import load_log_config, read_config_file

    log_config = load_log_config(config_file)
    section = read_config_file(config_file).get("assignments") or {}
    columns = section.get("columns", {}) if isinstance(section, dict) else None
    if not isinstance(columns, dict):
        raise InputError(f"config file {config_file}: 'assignments.columns' must be a mapping")
    return log_config, {str(k): str(v) for k, v in columns.items()}


def _fmt(value: Any, spec: str) -> str:  # a lift JSON number, null or text
    import math

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def print_table(result: LiftResult, err: bool) -> None:
    """The results as a terminal table (offers, then their segments indented)."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=err, width=None if sys.stdout.isatty() else 240)
    table = Table(
        title=f"Campaign lift, {result.window_days}-day window, log observed through "
        f"{(result.log_end - pd.Timedelta(days=1)).date()}"
    )
    for name in (
        "campaign",
        "rule / segment",
        "offer",
        "treated",
        "held out",
        "rate T",
        "rate H",
        "lift pts [95% CI]",
        "raw | CUPED",
        "rel. lift",
        "incr. orders [CI]",
        "incr. revenue [CI]",
        "p",
        "MDE pts",
        "verdict",
    ):
        table.add_column(
            name, justify="left" if name in ("campaign", "offer", "verdict") else "right"
        )
    for r in result.table.to_dict(orient="records"):
        is_offer = r["segment"] == "all"
        table.add_row(
            r["campaign"] if is_offer else "",
            r["rule"] if is_offer else f"  {r['segment']}",
            r["offer"] if is_offer else "",
            f"{r['treated']:,}",
            f"{r['holdout']:,}",
            _fmt(r["bought_treated"], ".1%"),
            _fmt(r["bought_holdout"], ".1%"),
            f"{_fmt(r['bought_lift'] * 100, '+.1f')} "
            f"[{_fmt(r['bought_lift_low'] * 100, '+.1f')}, "
            f"{_fmt(r['bought_lift_high'] * 100, '+.1f')}]",
            f"{_fmt(r['bought_lift_raw'] * 100, '+.1f')} | "
            f"{_fmt(r['bought_lift_cuped'] * 100, '+.1f')}" + (" *" if r["bought_cuped"] else ""),
            _fmt(r["relative_lift"], "+.0%"),
            f"{_fmt(r['incremental_orders'], ',.0f')} "
            f"[{_fmt(r['incremental_orders_low'], ',.0f')}, "
            f"{_fmt(r['incremental_orders_high'], ',.0f')}]",
            f"{_fmt(r['incremental_revenue'], ',.0f')} "
            f"[{_fmt(r['incremental_revenue_low'], ',.0f')}, "
            f"{_fmt(r['incremental_revenue_high'], ',.0f')}]",
            _fmt(r["p_value"], ".3f"),
            _fmt(r["mde"] * 100, ".1f"),
            r["verdict"],
        )
    console.print(table)
    notes = [f"{k}: {v:,}" for k, v in result.excluded.items()]
    console.print(
        f"{result.assigned:,} assigned customers ({result.in_log:,} of the measured ones in the "
        "log); not in the experiment: "
        + ("; ".join(notes) if notes else "none")
        + ". '*': the CUPED estimate (pre-period covariate) narrowed the interval and is the "
        "headline."
    )


def log_mlflow_run(result: LiftResult, tracking_uri: str | None, experiment: str) -> str:
    """An MLflow run with the figures: params, one metric per offer and figure, the JSON."""
    import tempfile

    import mlflow

    from serving.report.campaigns import lift_figure
    from training.registry.tracking_store import configure_tracking, ensure_experiment

    configure_tracking(tracking_uri)
    experiment_id = ensure_experiment(experiment)
    offers = result.offers()
    with mlflow.start_run(experiment_id=experiment_id, run_name="lift") as run:
        mlflow.log_params(
            {
                "window_days": result.window_days,
                "log_end": str(result.log_end.date()),
                "assigned": result.assigned,
                "campaigns": ",".join(sorted(set(offers["campaign"]))),
            }
        )
        metrics: dict[str, float] = {}
        for r in offers.to_dict(orient="records"):
            stem = f"{r['campaign']}.{r['rule']}"
            for name in (
                "bought_lift",
                "bought_lift_low",
                "bought_lift_high",
                "p_value",
                "mde",
                "incremental_revenue",
                "incremental_orders",
                "policy_lift",
            ):
                value = r[name]
                if value is not None and value == value:
                    metrics[f"{stem}.{name}"] = float(value)
            metrics[f"{stem}.treated"] = float(r["treated"])
            metrics[f"{stem}.holdout"] = float(r["holdout"])
        if metrics:
            mlflow.log_metrics(metrics)
        mlflow.log_dict(result.to_dict(), "lift/lift.json")
        with tempfile.TemporaryDirectory(prefix="retain-lift-") as tmp:
            png = Path(tmp) / "lift.png"
            fig = lift_figure(offers)
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(fig)
            fig.savefig(png, format="png", metadata={"Software": None})
            mlflow.log_artifact(str(png), artifact_path="lift")
        return run.info.run_id


def lift_command(
    assignments: str | Path,
    data: Path | DatabaseLog,
    *,
    assignments_table: str | None = None,
    window: int | None,
    mapping: list[str] | None,
    assignments_map: list[str] | None,
    config_file: Path | None,
    log_end: str | None,
    exclude_unobserved: bool,
    min_effect: float,
    campaign: str | None,
) -> LiftResult:
    """Read the inputs, check them, measure."""

    from features.config_file import apply_options
    from features.log.purchase_log import read_purchase_log
    from features.log.schema import LogConfig
    from features.utc import to_utc_timestamp
    from serving.lift.assignments import assignment_columns, read_assignments
    from serving.lift.measure import measure_lift

    log_config, columns = _config_sections(config_file)
    config = apply_options(log_config or LogConfig(), mapping)
    columns = assignment_columns(columns)
    if assignments_map:
        columns = {**columns, **assignment_columns(assignments_map)}
    table, summary = read_table(assignments, assignments_table)
    exp = read_assignments(table, columns)
    if campaign is not None:
        campaign = campaign.strip()
        keep = (exp.frame["campaign"] == campaign).to_numpy()
        if not keep.any():
            raise InputError(
                f"campaign {campaign!r} is not in the assignments; there: "
                f"{sorted(set(exp.frame['campaign']))}"
            )
        exp = exp.only(keep, "other campaigns")
    if window is None:
        window = summary.get("horizon_days")
        if window is None:
            raise InputError(
                "give --window DAYS: the assignments carry no horizon (only a `retain score` "
                "directory records the model's)"
            )
    if isinstance(data, Path) and not data.exists():
        raise FileNotFoundError(f"purchase log not found: {data}")
    loaded = read_purchase_log(data, config)
    for warning in loaded.report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    end = None if log_end is None else to_utc_timestamp(log_end, "--log-end").normalize()
    return measure_lift(
        loaded.log,
        exp,
        window_days=int(window),
        log_end=end,
        exclude_unobserved=exclude_unobserved,
        min_effect=min_effect,
    )


def lift(
    assignments: str = typer.Option(
        ...,
        "--assignments",
        "-a",
        help="A `retain score` directory, a CSV/Parquet table of assignments, or a "
        "database (postgresql://user@host:port/db) with --assignments-table.",
    ),
    assignments_table: str | None = typer.Option(
        None, "--assignments-table", help="Table holding the assignments (database only)."
    ),
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    window: int | None = typer.Option(
        None,
        "--window",
        min=1,
        help="Days after each send day; default the model's horizon from the scores.",
    ),
    mapping: MapOption = None,
    assignments_map: list[str] | None = typer.Option(None, "--assignments-map", help=_AMAP_HELP),
    config_file: ConfigOption = None,
    log_end: str | None = typer.Option(
        None,
        "--log-end",
        help="First UTC day the log does not cover (default: the day after its last row).",
    ),
    exclude_unobserved: bool = typer.Option(
        False,
        "--exclude-unobserved",
        help="Leave out (and count) customers whose window runs past the end of the log.",
    ),
    min_effect: float = typer.Option(
        0.01,
        "--min-effect",
        min=0.0,
        help="Repurchase-rate lift that would matter (0.01 = 1 point): wider intervals "
        "are 'too small to tell'.",
    ),
    campaign: str | None = typer.Option(None, "--campaign", help="Measure one campaign."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the results as JSON on stdout (the table to stderr)."
    ),
    mlflow_run: bool = typer.Option(
        True, "--mlflow/--no-mlflow", help="Record an MLflow run with the figures."
    ),
    tracking_uri: TrackingUriOption = None,
    experiment: ExperimentOption = DEFAULT_EXPERIMENT,
    update_policy: Path | None = typer.Option(
        None,
        "--update-policy",
        help="Offer policy whose lifts to update from this measurement (never modified).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where the updated policy goes (with --update-policy)."
    ),
    prior_sd: float = typer.Option(
        0.05,
        "--prior-sd",
        min=1e-6,
        help="How uncertain the policy's old lifts are (normal prior sd) when shrinking.",
    ),
) -> None:
    """Measure each offer's effect on repurchase, orders and spend against its holdout.

    The --config file may also hold an 'assignments:' section with 'columns:'
    (CANONICAL: SOURCE) for the assignments table.
    """
    from serving.lift.policy_update import write_updated_policy

    if (update_policy is None) != (out is None):
        raise InputError("--update-policy and --out go together")
    source = log_source(data, table=table, query=query, url_env=url_env, config_file=config_file)
    result = lift_command(
        assignments,
        source,
        assignments_table=assignments_table,
        window=window,
        mapping=mapping,
        assignments_map=assignments_map,
        config_file=config_file,
        log_end=log_end,
        exclude_unobserved=exclude_unobserved,
        min_effect=min_effect,
        campaign=campaign,
    )
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    updates = None
    if update_policy is not None and out is not None:
        updates = write_updated_policy(
            update_policy,
            out,
            result.offers(),
            window_days=result.window_days,
            prior_sd=prior_sd,
        )
    print_table(result, err=as_json)
    if updates is not None:
        for u in updates:
            typer.echo(f"policy: {u.rule} lift {u.old:g} -> {u.new:g} ({u.note})", err=True)
        typer.echo(f"wrote the updated policy to {out} ({update_policy} untouched)", err=True)
    if mlflow_run:
        run_id = log_mlflow_run(result, tracking_uri, experiment)
        typer.echo(f"mlflow run {run_id} (experiment {experiment})", err=True)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), sort_keys=True, allow_nan=False))


def register(app: typer.Typer) -> None:
    """Add ``lift`` to the root app."""
    app.command("lift")(lift)
