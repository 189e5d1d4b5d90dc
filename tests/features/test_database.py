"""Database URLs, connections and errors (features.database) against a real PostgreSQL."""

from __future__ import annotations

import pytest

from features.database import (
    DatabaseError,
    connect,
    database_error,
    parse_url,
    quote_identifier,
    quote_table,
    resolve_url,
)
from features.redaction import redact


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
