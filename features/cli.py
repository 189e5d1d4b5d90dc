"""Feature-side sub-commands of ``retain``: synth, kpis, features, segments.

Heavy imports (pandas, the loader, the builders) happen inside the commands so that
``retain --help`` stays fast. Every file is written atomically (:mod:`features.atomic`), so a
crash never leaves a half-written output behind. Bad input raises a ``UserError``, which the
root app prints as one ``error:`` line on stderr with exit code 2 (:mod:`serving.cli_errors`).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from features.atomic import write_atomic, write_text_atomic
from features.cli_options import (
    AsOfOption,
    ConfigOption,
    DataOption,
    MapOption,
    OptionalAsOfOption,
    QueryOption,
    StrictOption,
    TableOption,
    UrlEnvOption,
)
from features.errors import UserError
from features.sources.log_source import log_source

if TYPE_CHECKING:
    import pandas as pd

    from features.log.purchase_log import LoadResult
    from features.log.schema import LogConfig
    from features.retention.segments import SegmentConfig
    from features.sources.database_log import DatabaseLog

_TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


class _UsageError(UserError):
    """Bad command-line input (unsupported suffix, unreadable config)."""


def _run(action: Callable[[], None]) -> None:
    """Run a command body; its user errors are mapped by the root app (serving.cli_errors)."""
    action()


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _TABLE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    """CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) by suffix, atomically."""
    suffix = _suffix(path)
    if suffix not in _TABLE_SUFFIXES:
        raise _UsageError(
            f"cannot write {str(path)!r}: unsupported suffix {suffix!r}; "
            f"use one of {', '.join(_TABLE_SUFFIXES)}"
        )

    def write(tmp: Path) -> None:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        with warnings.catch_warnings():
            # pyarrow reads tz-aware columns through Series.values, deprecated in pandas 3.1;
            # the values it gets are still the right UTC instants.
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
            table = pa.Table.from_pandas(frame, preserve_index=False)
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif suffix == ".csv.gz":
            with pa.CompressedOutputStream(str(tmp), "gzip") as stream:
                pa_csv.write_csv(table, stream)
        else:
            pa_csv.write_csv(table, tmp)

    write_atomic(path, write)


def _log_config(
    config_file: Path | None, mapping: list[str] | None, strict: bool = False
) -> LogConfig:
    from features.config_file import log_config_from_options

    return log_config_from_options(config_file, mapping, strict=strict)


def _segment_config(config_file: Path | None) -> SegmentConfig:
    from features.config_file import load_segment_config

    return load_segment_config(config_file)


def _load(
    data: Path | DatabaseLog,
    config_file: Path | None,
    mapping: list[str] | None,
    strict: bool,
    *,
    since: str | None = None,
    until: str | None = None,
    until_option: str = "--as-of",
) -> LoadResult:
    """Load the log and print its load report to stderr: rows read, kept, dropped, and the
    kept rows the command will not use (before ``since``, at or after ``until``)."""
    from features.log.purchase_log import read_purchase_log
    from features.utc import to_utc_timestamp

    result = read_purchase_log(data, _log_config(config_file, mapping, strict))
    stamps = result.log["timestamp"]
    not_used: dict[str, int] = {}
    if since is not None:
        not_used[f"before {since}"] = int((stamps < to_utc_timestamp(since, "--from")).sum())
    if until is not None:
        not_used[f"at or after {until}"] = int(
            (stamps >= to_utc_timestamp(until, until_option)).sum()
        )
    typer.echo(result.report.summary(not_used), err=True)
    return result


def _console() -> Any:
    from rich.console import Console

    # Wide enough that tables do not wrap when output is captured or piped.
    return Console(width=None if sys.stdout.isatty() else 160)


def synth(
    customers: int = typer.Option(..., "--customers", "-n", min=1, help="Number of customers."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output log file: .csv, .csv.gz, .parquet or .pq."
    ),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed; same seed, same file."),
    truth: Path | None = typer.Option(
        None, "--truth", help="Also write the per-customer ground truth (same formats)."
    ),
    start: str = typer.Option("2022-01-01", "--start", help="First calendar day (UTC)."),
    end: str = typer.Option("2024-12-31", "--end", help="Last calendar day (UTC), inclusive."),
    purchases_per_year: float = typer.Option(
        6.0,
        "--purchases-per-year",
        min=0.0,
        help="Mean base purchase rate; the defaults give about 10 rows per customer.",
    ),
    campaign_scores: Path | None = typer.Option(
        None,
        "--campaign-scores",
        help=(
            "Simulate the campaign these scores decided (a `retain score` directory, or a "
            "table with customer_id, offer_rule, offer_send_date, holdout) on the log: each "
            "assigned customer's --window days after the send day are appended, and the "
            "truth gets their true uplift. Send days must come after --end."
        ),
    ),
    window: int = typer.Option(
        90, "--window", min=1, help="Outcome window of the campaign, days after each send day."
    ),
    effect_scale: float = typer.Option(
        1.0,
        "--effect-scale",
        min=0.0,
        help="Multiply every true campaign effect (0: a campaign that changes nothing).",
    ),
) -> None:
    """Write a seeded synthetic purchase log (retain's demo dataset) with known truth.

    Customers are acquired over the whole period, buy at heterogeneous rates with a Q4 peak and
    campaign lifts, drop out after a purchase with a personal probability, and return a few
    percent of lines. Some customers only buy in campaigns. See features/synthetic/synth.py. With
    --campaign-scores, the same log (same seed) continues with the outcome window of that
    campaign, where some customers respond, some buy anyway and some are put off
    (features/synthetic/campaigns.py).
    """

    def action() -> None:
        from features.synthetic.synth import generate_purchase_log

        for path in (out, truth):
            if path is not None and _suffix(path) not in _TABLE_SUFFIXES:
                raise _UsageError(
                    f"cannot write {str(path)!r}: use one of {', '.join(_TABLE_SUFFIXES)}"
                )
        result = generate_purchase_log(
            customers, seed=seed, start=start, end=end, mean_purchases_per_year=purchases_per_year
        )
        log, truth_frame, note = result.log, result.truth, ""
        if campaign_scores is not None:
            log, truth_frame, note = _with_campaign(
                result.log, result.truth, campaign_scores, end, window, seed, effect_scale
            )
        _write_table(log, out)
        message = f"wrote {len(log):,} rows for {customers:,} customers to {out}{note}"
        if truth is not None:
            _write_table(truth_frame, truth)
            message += f"; truth to {truth}"
        typer.echo(message, err=True)

    _run(action)


def _read_assignments(path: Path) -> pd.DataFrame:
    """A ``retain score`` directory (only a finished one) or a CSV/Parquet table."""
    import pandas as pd

    if path.is_dir():
        if not (path / "_SUCCESS").is_file():
            raise _UsageError(f"{path} has no _SUCCESS: not a finished `retain score` output")
        parts = sorted(path.glob("part-*.parquet"))
        if not parts:
            raise _UsageError(f"{path} holds no part-*.parquet files")
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    suffix = _suffix(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".csv.gz"):
        return pd.read_csv(path)
    raise _UsageError(f"cannot read {str(path)!r}: use a directory or {', '.join(_TABLE_SUFFIXES)}")


def _with_campaign(
    log: pd.DataFrame,
    truth: pd.DataFrame,
    scores_path: Path,
    end: str,
    window: int,
    seed: int,
    effect_scale: float,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The log with the campaign's outcome window appended, truth with the true uplift."""
    import pandas as pd

    from features.retention.assignments import assignments_from_scores
    from features.synthetic.campaigns import CampaignEffects, simulate_campaign_outcomes

    assignments = assignments_from_scores(_read_assignments(scores_path), suppressed=True)
    log_end = pd.Timestamp(end, tz="UTC").normalize() + pd.Timedelta(days=1)
    outcome = simulate_campaign_outcomes(
        log,
        truth,
        assignments,
        log_end=log_end,
        window_days=window,
        seed=seed,
        effects=CampaignEffects(scale=effect_scale),
    )
    extra = outcome.truth.copy()
    flags = extra.select_dtypes("bool").columns
    extra[flags] = extra[flags].astype("boolean")  # unassigned customers: missing, not False
    merged = truth.merge(extra, on="customer_id", how="left")
    last = outcome.truth["window_end"].max()
    note = (
        f" ({len(outcome.outcomes):,} outcome rows for {len(outcome.truth):,} assigned "
        f"customers; every window complete before {last.date()})"
    )
    return outcome.log, merged, note


def kpis(
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    mapping: MapOption = None,
    config_file: ConfigOption = None,
    strict: StrictOption = False,
    date_from: str | None = typer.Option(
        None, "--from", help="Period start (inclusive, UTC); default: the log's first day."
    ),
    date_to: str | None = typer.Option(
        None, "--to", help="Period end (exclusive, UTC); default: the day after the last row."
    ),
    fmt: str = typer.Option(
        "table",
        "--format",
        "-f",
        help="table (readable), csv (metric,value,description) or json (everything).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write csv/json here instead of stdout (format from suffix)."
    ),
    cohort_months: int = typer.Option(
        12, "--cohort-months", min=0, help="Months after first purchase shown in tables."
    ),
) -> None:
    """Business KPIs over a period: repeat rate, frequency, order value, gaps, cohorts.

    Orders are counted per order id (lines of one order are one order), purchase days per
    customer and UTC day; returns never count as orders. Monthly repeat buyers are given two
    ways: 2+ orders in the month, and buyers who had bought before the month.
    """

    def action() -> None:
        import json

        from features.retention.kpis import compute_kpis
        from features.utc import day_after_last_row

        chosen = fmt.lower()
        if chosen not in ("table", "csv", "json"):
            raise _UsageError(f"--format must be table, csv or json, got {fmt!r}")
        if out is not None and chosen == "table":
            chosen = {".json": "json", ".csv": "csv"}.get(out.suffix.lower(), "")
            if not chosen:
                raise _UsageError(f"--out {out}: give --format csv|json or a .csv/.json suffix")
        source = log_source(
            data, table=table, query=query, url_env=url_env, config_file=config_file
        )
        log = _load(
            source,
            config_file,
            mapping,
            strict,
            since=date_from,
            until=date_to,
            until_option="--to",
        ).log
        if log.empty:
            raise _UsageError(f"{source}: no usable rows")
        first = log["timestamp"].min().floor("D")
        last = day_after_last_row(log)
        result = compute_kpis(
            log,
            date_from if date_from is not None else first,
            date_to if date_to is not None else last,
            max_cohort_months=None if chosen == "json" else cohort_months,
        )
        if chosen == "table":
            console = _console()
            for rendered in result.render(max_cohort_months=cohort_months):
                console.print(rendered)
            return
        if chosen == "json":
            text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
        else:
            text = result.summary().to_csv(index=False)
        if out is None:
            typer.echo(text, nl=False)
        else:
            write_text_atomic(out, text)
            typer.echo(f"wrote {chosen} KPIs to {out}", err=True)

    _run(action)


def features(
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    as_of: OptionalAsOfOption = None,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Feature table: .parquet, .pq, .csv or .csv.gz."
    ),
    mapping: MapOption = None,
    config_file: ConfigOption = None,
    strict: StrictOption = False,
    describe: bool = typer.Option(
        False, "--describe", help="Print every feature column with its unit and meaning."
    ),
) -> None:
    """Build the per-customer feature table as of a date (one row per customer).

    With --describe alone, only prints the feature catalogue.
    """

    def action() -> None:
        if describe:
            from features.catalog import describe as describe_features

            typer.echo(describe_features())
            if data is None and url_env is None and as_of is None and out is None:
                return
        missing = [
            name
            for name, value in (("--data", data or url_env), ("--as-of", as_of), ("--out", out))
            if value is None
        ]
        if missing:
            raise _UsageError(f"missing option(s) {', '.join(missing)}")
        assert as_of is not None and out is not None
        if _suffix(out) not in _TABLE_SUFFIXES:
            raise _UsageError(f"cannot write {str(out)!r}: use one of {', '.join(_TABLE_SUFFIXES)}")
        from features.builders import build_features

        source = log_source(
            data, table=table, query=query, url_env=url_env, config_file=config_file
        )
        log = _load(source, config_file, mapping, strict, until=as_of).log
        frame = build_features(log, as_of)
        _write_table(frame.reset_index(), out)
        typer.echo(f"wrote {len(frame):,} customers x {frame.shape[1]} features to {out}", err=True)

    _run(action)


def segments(
    *,
    data: DataOption = None,
    table: TableOption = None,
    query: QueryOption = None,
    url_env: UrlEnvOption = None,
    as_of: AsOfOption,
    mapping: MapOption = None,
    config_file: ConfigOption = None,
    strict: StrictOption = False,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Also write customer_id,segment (.csv, .parquet, ...)."
    ),
) -> None:
    """Segment sizes and value as of a date (lapsed, at_risk, sale_only, first_time, ...).

    Rules and their precedence are documented in features/retention/segments.py; thresholds come from
    the 'segments:' section of --config.
    """

    def action() -> None:
        from rich.table import Table

        from features.builders import build_features
        from features.retention.segments import assign_segments, summarize_segments

        seg_config = _segment_config(config_file)
        if out is not None and _suffix(out) not in _TABLE_SUFFIXES:
            raise _UsageError(f"cannot write {str(out)!r}: use one of {', '.join(_TABLE_SUFFIXES)}")
        source = log_source(
            data, table=table, query=query, url_env=url_env, config_file=config_file
        )
        log = _load(source, config_file, mapping, strict, until=as_of).log
        frame = build_features(log, as_of)
        labels = assign_segments(frame, seg_config)
        summary = summarize_segments(frame, labels)
        view = Table(title=f"Segments as of {as_of} ({len(frame):,} customers)")
        for column in ("segment", "customers", "share", "spend total", "spend mean", "spend share"):
            view.add_column(column, justify="left" if column == "segment" else "right")
        for name, row in summary.iterrows():
            mean = row["spend_mean"]
            view.add_row(
                str(name),
                f"{int(row['customers']):,}",
                f"{row['share']:.1%}",
                f"{row['spend_total']:,.2f}",
                "-" if mean != mean else f"{mean:,.2f}",
                f"{row['spend_share']:.1%}",
            )
        _console().print(view)
        if out is not None:
            frame = labels.astype("str").rename("segment").rename_axis("customer_id").reset_index()
            _write_table(frame, out)
            typer.echo(f"wrote {len(frame):,} segments to {out}", err=True)

    _run(action)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
    app.command("synth")(synth)
    app.command("kpis")(kpis)
    app.command("features")(features)
    app.command("segments")(segments)
