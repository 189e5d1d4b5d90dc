"""Database URLs, connections and errors (features.sources.database) against a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner, Result

from features.log.purchase_log import read_purchase_log
from features.log.schema import LogConfig
from features.redaction import redact
from features.sources.database import (
    DatabaseError,
    connect,
    database_error,
    parse_url,
    quote_identifier,
    quote_table,
    resolve_url,
)
from features.sources.database_log import DatabaseLog
from tests.postgres_server import execute, load_frame

pytestmark = [pytest.mark.server]  # a real PostgreSQL server


@pytest.mark.parametrize(
    ("text", "dialect"),
    [
        ("postgresql://alice@db.internal:5432/shop", "postgresql"),
        ("postgres://alice@db/shop?sslmode=require", "postgresql"),
        ("postgresql:///shop?service=orders", "postgresql"),
        ("sqlite:///orders.db", "sqlite"),
        ("sqlite:////tmp/orders.db", "sqlite"),
    ],
)
def test_parse_url_accepts_the_documented_forms(text: str, dialect: str) -> None:
    assert parse_url(text).dialect == dialect


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("mysql://alice@db/shop", "unsupported database URL"),
        ("postgresql://alice@db:99999/shop", "Port out of range"),
        ("postgresql:///shop", "names no host"),
        ("sqlite://orders.db", "malformed SQLite URL"),
    ],
)
def test_parse_url_rejects_bad_urls_naming_them(text: str, named: str) -> None:
    with pytest.raises(DatabaseError, match=named):
        parse_url(text)


@pytest.mark.parametrize(
    "text", ["postgresql://alice:s3cret@db/shop", "postgresql://alice@db/shop?password=s3cret"]
)
def test_a_password_on_the_command_line_is_refused_and_never_shown(text: str) -> None:
    with pytest.raises(DatabaseError) as caught:
        parse_url(text)
    assert "s3cret" not in str(caught.value)
    assert "PGPASSWORD" in str(caught.value)


def test_url_env_holds_the_whole_url_password_included(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_DB", "postgresql://alice:s3cret@db/shop")
    url = resolve_url(None, "ORDERS_DB")
    assert url is not None and url.url == "postgresql://alice:s3cret@db/shop"
    assert "s3cret" not in f"{url} {url!r} {url.redacted}"
    monkeypatch.delenv("ORDERS_DB")
    with pytest.raises(DatabaseError, match="'ORDERS_DB' is not set"):
        resolve_url(None, "ORDERS_DB")


def test_a_file_path_is_not_a_database() -> None:
    assert resolve_url("orders.parquet", None) is None


def test_redaction_masks_libpq_password_parameters_and_keeps_database_users() -> None:
    assert (
        redact("postgresql://db/x?a=1&password=pw&b=2") == "postgresql://db/x?a=1&password=***&b=2"
    )
    assert redact("host=db password='p w' user=x") == "host=db password=*** user=x"
    assert redact("postgresql://alice@db/x") == "postgresql://alice@db/x"
    assert redact("https://ghp_token@host/x") == "https://***@host/x"


def test_identifiers_are_quoted_never_pasted() -> None:
    assert quote_identifier('we"ird; DROP TABLE x') == '"we""ird; DROP TABLE x"'
    assert quote_table("sales.orders") == '"sales"."orders"'
    assert quote_table("orders") == '"orders"'
    with pytest.raises(DatabaseError):
        quote_identifier("")


def test_connect_and_errors_name_the_problem(postgres_url: str) -> None:
    connection = connect(postgres_url)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT 1 AS one")
        assert cursor.fetchone() == (1,)
        with pytest.raises(Exception) as caught:
            cursor.execute(f"SELECT * FROM {quote_table('no_such_table')}")
        error = database_error(caught.value, "reading the log")
        assert str(error) == (
            'reading the log: table not found: relation "no_such_table" does not exist'
        )
    finally:
        connection.close()


def test_connection_refused_is_one_line_with_the_password_masked() -> None:
    with pytest.raises(DatabaseError) as caught:
        connect(parse_url("postgresql://alice:s3cret@127.0.0.1:1/shop", password_ok=True))
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert message.startswith("cannot connect to postgresql://alice:***@127.0.0.1:1/shop")


# ---- purchase logs read from PostgreSQL ---------------------------------------------------

ROWS = 40


def _raw_orders() -> pd.DataFrame:
    """A small raw log with the awkward types: NUMERIC money, timestamptz, text ids."""
    rng = np.random.default_rng(3)
    stamps = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 200 * 24 * 3600, ROWS), unit="s"
    )
    return pd.DataFrame(
        {
            "customer_id": [f"00{i % 7}" for i in range(ROWS)],  # leading zeros kept
            "timestamp": stamps.as_unit("us"),
            "amount": np.round(rng.uniform(1, 200, ROWS), 2),
            "order_id": [f"O{i // 2}" if i % 9 else f"C{i}" for i in range(ROWS)],  # C: returns
            "quantity": rng.integers(1, 4, ROWS).astype("float64"),
            "channel": ["web" if i % 3 else "store" for i in range(ROWS)],
        }
    )


@pytest.fixture(scope="module")
def orders(postgres_db: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Table ``orders`` (amount NUMERIC(12,2), timestamp timestamptz) and the same rows as a
    Parquet file."""
    raw = _raw_orders()
    path = tmp_path_factory.mktemp("orders") / "orders.parquet"
    raw.to_parquet(path)
    load_frame(postgres_db, "staged_orders", raw)
    execute(
        postgres_db,
        'CREATE TABLE orders ("customer_id" text, "timestamp" timestamptz, '
        '"amount" numeric(12,2), "order_id" text, "quantity" integer, "channel" text)',
        "INSERT INTO orders SELECT customer_id, timestamp, amount, order_id, quantity, channel "
        "FROM staged_orders",
        "DROP TABLE staged_orders",
    )
    return postgres_db, path


def test_a_table_loads_to_the_same_canonical_log_as_the_parquet_file(
    orders: tuple[str, Path],
) -> None:
    url, path = orders
    from_db = read_purchase_log(DatabaseLog(parse_url(url), table="orders"))
    from_file = read_purchase_log(path)
    pd.testing.assert_frame_equal(from_db.log, from_file.log)
    assert from_db.report.rows_read == ROWS
    assert from_db.report.n_returns == from_file.report.n_returns > 0
    assert from_db.report.source == f"{url} (table 'orders')"


def test_a_query_with_a_column_map_reads_like_a_mapped_file(orders: tuple[str, Path]) -> None:
    url, path = orders
    query = (
        'SELECT customer_id AS "Customer", "timestamp" AS "When", amount AS "Total" '
        "FROM orders WHERE channel = 'web'"
    )
    config = LogConfig(columns={"customer_id": "Customer", "timestamp": "When", "amount": "Total"})
    from_db = read_purchase_log(DatabaseLog(parse_url(url), query=query), config)
    raw = pd.read_parquet(path)
    web = raw.loc[raw["channel"] == "web", ["customer_id", "timestamp", "amount"]]
    from_file = read_purchase_log(web.reset_index(drop=True))
    pd.testing.assert_frame_equal(from_db.log, from_file.log)


def test_naive_timestamps_and_dates_follow_the_timezone_rule(postgres_db: str) -> None:
    """timestamp (naive) and date columns are wall times in LogConfig.timezone, as in files."""
    execute(
        postgres_db,
        "CREATE TABLE wall (customer_id text, ts timestamp, day date, amount numeric)",
        "INSERT INTO wall VALUES ('a', '2024-03-01 10:00', '2024-03-01', 10.5), "
        "('b', '2024-07-01 23:30', '2024-07-01', 3)",
    )
    url = parse_url(postgres_db)
    berlin = LogConfig(columns={"timestamp": "ts"}, timezone="Europe/Berlin")
    log = read_purchase_log(DatabaseLog(url, table="wall"), berlin).log
    csv_like = pd.DataFrame(
        {"customer_id": ["a", "b"], "ts": ["2024-03-01 10:00", "2024-07-01 23:30"],
         "amount": ["10.5", "3"]}
    )  # fmt: skip
    pd.testing.assert_frame_equal(log, read_purchase_log(csv_like, berlin).log)
    assert list(log["timestamp"].astype(str)) == [
        "2024-03-01 09:00:00+00:00",
        "2024-07-01 21:30:00+00:00",
    ]
    by_day = read_purchase_log(
        DatabaseLog(url, table="wall"),
        LogConfig(columns={"timestamp": "day"}, timezone="Asia/Tokyo"),
    ).log
    assert list(by_day["timestamp"].astype(str)) == [
        "2024-02-29 15:00:00+00:00",
        "2024-06-30 15:00:00+00:00",
    ]
    assert log["amount"].tolist() == [10.5, 3.0]


# ---- the CLI: every log-reading command, bad input as one error line ---------------------


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    from serving.cli import app

    return app


def test_kpis_from_a_table_equal_kpis_from_the_file(
    cli: typer.Typer, orders: tuple[str, Path]
) -> None:
    url, path = orders
    from_db = CliRunner().invoke(cli, ["kpis", "--data", url, "--table", "orders", "-f", "json"])
    from_file = CliRunner().invoke(cli, ["kpis", "--data", str(path), "-f", "json"])
    assert from_db.exit_code == 0, from_db.output
    assert json.loads(from_db.stdout) == json.loads(from_file.stdout)
    assert "purchase log postgresql://" in from_db.stderr


def test_the_config_file_names_the_table(
    cli: typer.Typer, orders: tuple[str, Path], tmp_path: Path
) -> None:
    url, path = orders
    config = tmp_path / "retain.yaml"
    config.write_text("log:\n  table: orders\n  cancel_prefix: C\n")
    args = ["segments", "--data", url, "--config", str(config), "--as-of", "2024-08-01"]
    from_db = CliRunner().invoke(cli, args)
    from_file = CliRunner().invoke(cli, ["segments", "--data", str(path), "--as-of", "2024-08-01"])
    assert from_db.exit_code == 0, from_db.output
    assert from_db.stdout == from_file.stdout


def _error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def no_select_role(orders: tuple[str, Path]) -> str:
    """A login role that may connect but not read ``orders``."""
    url, _ = orders
    execute(url, "DROP ROLE IF EXISTS retain_no_select", "CREATE ROLE retain_no_select LOGIN")
    host = url.partition("@")[2]
    return f"postgresql://retain_no_select@{host}"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--table", "no_such_orders"], 'table not found: relation "no_such_orders" does not'),
        (["--table", "orders", "--map", "amount=total"], "'amount' (mapped to 'total')"),
        (
            [
                "--query",
                "SELECT customer_id, amount, quantity AS units FROM orders",
                "--map",
                "timestamp=units",
            ],
            "column 'units' (timestamp)",
        ),
        (["--query", "SELECT * FROM orders WHERE false"], "no rows"),
        (["--query", "  ; "], "--query: empty query"),
        (["--query", "SELECT * FROM orders WHERE nope > 0"], 'column "nope" does not exist'),
        ([], "give --table NAME or --query SQL"),
        (["--table", "a", "--query", "SELECT 1"], "not both"),
    ],
)
def test_bad_database_input_is_one_error_line_naming_it(
    cli: typer.Typer, orders: tuple[str, Path], args: list[str], named: str
) -> None:
    url, _ = orders
    line = _error(CliRunner().invoke(cli, ["kpis", "--data", url, *args]))
    assert named in line


def test_wrong_column_type_names_table_column_and_type(
    cli: typer.Typer, orders: tuple[str, Path]
) -> None:
    url, _ = orders
    # a query's column: a table's own columns named like canonical ones cannot be mapped away
    query = "SELECT customer_id, amount, quantity AS units FROM orders"
    line = _error(
        CliRunner().invoke(
            cli, ["kpis", "--data", url, "--query", query, "--map", "timestamp=units"]
        )
    )
    assert line.startswith(f"error: {url} ")
    assert line.endswith(
        "column 'units' (timestamp) is of type integer; expected one of timestamp, date, string"
    )


def test_permission_error_names_the_table(cli: typer.Typer, no_select_role: str) -> None:
    line = _error(CliRunner().invoke(cli, ["kpis", "--data", no_select_role, "--table", "orders"]))
    assert "permission denied: permission denied for table orders" in line


@pytest.mark.parametrize(
    "url", ["mysql://alice@db/shop", "postgresql://alice@127.0.0.1:1/shop", "sqlite://x.db"]
)
def test_wrong_url_is_one_error_line(cli: typer.Typer, url: str) -> None:
    line = _error(CliRunner().invoke(cli, ["kpis", "--data", url, "--table", "orders"]))
    assert url.split("//")[0] in line


def test_the_password_never_reaches_the_output(
    cli: typer.Typer, orders: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = orders
    secret = "hunter2-Secret"
    with_password = url.replace("://postgres@", f"://postgres:{secret}@")
    assert secret in with_password
    typed = CliRunner().invoke(cli, ["kpis", "--data", with_password, "--table", "orders"])
    assert "must not be on a command line" in _error(typed)
    monkeypatch.setenv("ORDERS_DB", with_password)
    runner = CliRunner()
    bad = runner.invoke(cli, ["kpis", "--url-env", "ORDERS_DB", "--table", "nope"])
    assert "postgres:***@" in _error(bad)
    good = runner.invoke(cli, ["kpis", "--url-env", "ORDERS_DB", "--table", "orders"])
    assert good.exit_code == 0, good.output
    for result in (typed, bad, good):
        assert secret not in result.output


def test_every_log_reading_command_takes_the_database_options(cli: typer.Typer) -> None:
    for command in ("kpis", "features", "segments", "evaluate", "train", "score", "report",
                    "lift", "uplift-train", "promote"):  # fmt: skip
        help_text = CliRunner().invoke(cli, [command, "--help"], env={"COLUMNS": "200"}).stdout
        for option in ("--data", "--table", "--query", "--url-env"):
            assert option in help_text, (command, option)


def test_sqlite_is_the_embedded_default(
    cli: typer.Typer, orders: tuple[str, Path], tmp_path: Path
) -> None:
    """The same rows in a SQLite file (timestamps as ISO text) read like the Parquet file."""
    import sqlite3

    _, path = orders
    raw = pd.read_parquet(path)
    raw["timestamp"] = raw["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        raw.to_sql("orders", connection, index=False)
    url = f"sqlite:///{database}"
    from_db = read_purchase_log(DatabaseLog(parse_url(url), table="orders"))
    pd.testing.assert_frame_equal(from_db.log, read_purchase_log(path).log)
    result = CliRunner().invoke(cli, ["kpis", "--data", url, "--table", "orders", "-f", "json"])
    expected = CliRunner().invoke(cli, ["kpis", "--data", str(path), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(expected.stdout)
    missing = CliRunner().invoke(cli, ["kpis", "--data", "sqlite:///nope.db", "--table", "t"])
    assert "SQLite database not found: 'nope.db'" in _error(missing)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two real trainings with MLflow: minutes on a busy machine
def test_train_from_postgresql_gives_the_artifact_of_the_same_rows_in_parquet(
    postgres_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`retain train` end to end: the packaged model (every file's sha256 in its manifest)
    is the same whether the rows came from a table or a Parquet file."""
    from features.synthetic.synth import generate_purchase_log
    from serving.cli import app

    raw = generate_purchase_log(300, seed=11, start="2023-01-01", end="2024-06-30").log
    path = tmp_path / "log.parquet"
    raw.to_parquet(path)
    load_frame(postgres_db, "train_orders", raw)
    monkeypatch.chdir(tmp_path)
    manifests = []
    for name, source in (
        ("db", ["--data", postgres_db, "--table", "train_orders"]),
        ("file", ["--data", str(path)]),
    ):
        args = ["train", *source, "--as-of", "2024-04-01", "--horizon", "30", "--no-register"]
        args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
        result = CliRunner().invoke(app, [*args, "--artifact-out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        manifest = json.loads((tmp_path / name / "retain_artifact.json").read_text())
        manifest.pop("created_at")
        manifests.append(manifest)
    assert manifests[0] == manifests[1]  # every model file's sha256, metrics, configs
    assert "models/churn.lgb.txt" in manifests[0]["files"]
