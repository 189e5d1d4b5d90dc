"""A large table read in parts over two connections (features/sources/database_parts.py), on a real
PostgreSQL server: the parts add up to exactly the rows, in the order, of one read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import features.sources.database_parts as database_parts
from features.log.purchase_log import read_purchase_log
from features.log.schema import LogConfig
from features.sources.database import connect, parse_url
from features.sources.database_log import DatabaseLog, read_database_log
from features.synthetic.synth import generate_purchase_log
from tests.postgres_server import execute, load_frame


@pytest.fixture(scope="module")
def big_orders(postgres_db: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Table ``orders`` of a synthetic log (several hundred blocks), and the same rows in
    Parquet; an extra column the loader does not use."""
    raw = generate_purchase_log(800, seed=11).log
    path = tmp_path_factory.mktemp("parts") / "orders.parquet"
    raw.to_parquet(path)
    load_frame(postgres_db, "orders", raw)
    execute(postgres_db, "ALTER TABLE orders ADD COLUMN note text DEFAULT 'unused'")
    return postgres_db, path


@pytest.fixture
def split_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database_parts, "MIN_SPLIT_BYTES", 0)


def test_block_ranges_split_plain_tables_only(
    big_orders: tuple[str, Path], split_everything: None
) -> None:
    url, _ = big_orders
    execute(url, "CREATE OR REPLACE VIEW orders_view AS SELECT * FROM orders")
    connection = connect(url)
    try:
        cursor = connection.cursor()
        ranges = database_parts.block_ranges(cursor, '"orders"')
        assert len(ranges) == 2 and ranges[0].startswith("ctid <")
        assert database_parts.block_ranges(cursor, '"orders_view"') == []
        counts = []
        for condition in ranges:
            cursor.execute(f'SELECT count(*) FROM "orders" WHERE {condition}')
            counts.append(cursor.fetchone()[0])
        cursor.execute('SELECT count(*) FROM "orders"')
        total = cursor.fetchone()[0]
    finally:
        connection.close()
    assert min(counts) > 0 and sum(counts) == total  # each row in exactly one part


def test_a_table_read_in_parts_equals_one_read_and_the_parquet_file(
    big_orders: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, path = big_orders
    source = DatabaseLog(parse_url(url), table="orders")
    one = read_database_log(source, LogConfig())
    monkeypatch.setattr(database_parts, "MIN_SPLIT_BYTES", 0)
    parts = read_database_log(source, LogConfig())
    pd.testing.assert_frame_equal(parts, one)  # same rows, same order (row numbers in errors)
    assert "note" not in parts.columns  # only the loader's columns cross the wire
    raw = pd.read_parquet(path)
    assert parts["order_id"].tolist() == raw["order_id"].tolist()
    from_parts = read_purchase_log(source)
    from_file = read_purchase_log(path)
    pd.testing.assert_frame_equal(from_parts.log, from_file.log)
    assert from_parts.report.rows_read == len(raw)


def test_every_part_reads_the_snapshot_of_the_first(
    big_orders: tuple[str, Path], split_everything: None
) -> None:
    """A row committed after the read began is seen by no part (nor is one deleted missed)."""
    url, _ = big_orders
    before = execute(url, 'SELECT count(*) FROM "orders"')[0][0]
    connection = connect(url)
    try:
        cursor = connection.cursor()
        database_parts.begin_snapshot(cursor)
        cursor.execute('SELECT count(*) FROM "orders"')  # the snapshot is taken here
        assert cursor.fetchone()[0] == before
        execute(url, "INSERT INTO orders (customer_id, amount) VALUES ('late', 1)")

        def count(each: object, statement: str) -> int:
            each.execute(statement)  # type: ignore[attr-defined]
            return int(each.fetchone()[0])  # type: ignore[attr-defined]

        statements = ['SELECT count(*) FROM "orders"'] * 2
        counts = database_parts.read_in_parts(
            parse_url(url), cursor, statements, count, context="test"
        )
    finally:
        connection.close()
        execute(url, "DELETE FROM orders WHERE customer_id = 'late'")
    assert counts == [before, before]
