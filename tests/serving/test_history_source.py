"""The database history source of ``/score/ids``, against a real PostgreSQL server.

The rows one query returns must become the features ``retain score`` builds from the same
rows read as a file (``canonicalize``), whatever the column types: NUMERIC amounts,
``timestamptz`` or naive ``timestamp`` (in the log config's time zone), integer customer
ids, text discount flags, and the log config's column names.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.builders import FeatureConfig, build_feature_block
from features.log.purchase_log import canonicalize
from features.log.schema import LogConfig
from features.sources.database import connect, quote_identifier
from features.synthetic.synth import generate_purchase_log
from serving.http.history_source import (
    HistoryConfigError,
    HistorySettings,
    HistorySource,
    HistoryUnavailable,
)
from serving.http.startup import index_warning
from tests.serving.conftest import free_port

pytestmark = [pytest.mark.server]

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return generate_purchase_log(120, seed=11, start="2023-01-01", end="2024-06-30").log


def load_table(url: str, name: str, frame: pd.DataFrame, types: dict[str, str]) -> None:
    """``frame`` into a new table ``name`` with these SQL column types (cast from a staging
    table the driver creates from Arrow), no index."""
    staging = f"{name}_staging"
    with connect(url) as conn, conn.cursor() as cur:
        for table in (name, staging):
            cur.execute(f"DROP TABLE IF EXISTS {quote_identifier(table)}")
        cur.adbc_ingest(staging, pa.Table.from_pandas(frame, preserve_index=False), mode="create")
        columns = ", ".join(f"{quote_identifier(c)} {t}" for c, t in types.items())
        cur.execute(f"CREATE TABLE {quote_identifier(name)} ({columns})")
        cast = ", ".join(f"{quote_identifier(c)}::{t}" for c, t in types.items())
        cur.execute(
            f"INSERT INTO {quote_identifier(name)} SELECT {cast} FROM {quote_identifier(staging)}"
        )
        cur.execute(f"DROP TABLE {quote_identifier(staging)}")
        conn.commit()


def execute(url: str, sql: str) -> None:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        conn.commit()


def assert_same_features(fetched: object, expected_log: pd.DataFrame) -> None:
    got = build_feature_block(fetched, AS_OF, FeatureConfig())  # type: ignore[arg-type]
    want = build_feature_block(expected_log, AS_OF, FeatureConfig())
    assert list(got.customer_id) == list(want.customer_id)
    assert got.names == want.names
    np.testing.assert_array_equal(got.values, want.values)


@pytest.fixture()
def source_of(postgres_url: str) -> Iterator[object]:
    opened: list[HistorySource] = []

    def make(table: str | None, config: LogConfig, query: str | None = None) -> HistorySource:
        source = HistorySource(HistorySettings(postgres_url, table, query), config)
        opened.append(source)
        return source

    yield make
    for source in opened:
        source.close()


def test_rows_read_by_id_give_the_features_of_the_same_rows_read_as_a_file(
    postgres_url: str, raw_log: pd.DataFrame, source_of: object
) -> None:
    types = {
        "customer_id": "text",
        "timestamp": "timestamptz",
        "amount": "numeric",
        "order_id": "text",
        "quantity": "double precision",
        "product_id": "text",
        "category": "text",
        "discount": "boolean",
        "channel": "text",
    }
    load_table(postgres_url, "hs_orders", raw_log, types)
    source = source_of("hs_orders", LogConfig())  # type: ignore[operator]
    source.probe()
    assert index_warning(source) is not None
    wanted = [*sorted(raw_log["customer_id"].unique())[:7], "nobody"]
    fetched = source.fetch(wanted)
    expected = canonicalize(raw_log[raw_log["customer_id"].isin(wanted)]).log
    assert_same_features(fetched, expected)
    assert sorted(fetched.customers) == wanted[:7]

    # a purchase committed now is in the next fetch
    execute(
        postgres_url,
        "INSERT INTO hs_orders (customer_id, timestamp, amount) "
        f"VALUES ('{wanted[0]}', '2024-06-30 12:00:00+00', 99.5)",
    )
    again = source.fetch(wanted[:1])
    assert len(again) == int((raw_log["customer_id"] == wanted[0]).sum()) + 1

    execute(postgres_url, 'CREATE INDEX ON hs_orders ("customer_id")')
    assert index_warning(source) is None


def test_integer_ids_naive_times_text_flags_and_mapped_names(
    postgres_url: str, raw_log: pd.DataFrame, source_of: object
) -> None:
    """Naive times are wall times of the log config's zone; names come from its mapping."""
    frame = pd.DataFrame(
        {
            "CustNo": raw_log["customer_id"].str.slice(4).astype("int64"),
            "Bought": raw_log["timestamp"].dt.tz_convert("Europe/Berlin").dt.tz_localize(None),
            "Price": raw_log["amount"],
            "Promo": np.where(raw_log["discount"], "Yes", "no"),
            "category": raw_log["category"],
        }
    )
    types = {
        "CustNo": "bigint",
        "Bought": "timestamp",
        "Price": "numeric(14,4)",
        "Promo": "text",
        "category": "text",
    }
    load_table(postgres_url, "hs_typed", frame, types)
    config = LogConfig(
        columns={
            "customer_id": "CustNo",
            "timestamp": "Bought",
            "amount": "Price",
            "discount": "Promo",
        },
        timezone="Europe/Berlin",
    )
    source = source_of("hs_typed", config)  # type: ignore[operator]
    ids = sorted(frame["CustNo"].unique())[:5]
    fetched = source.fetch([str(i) for i in ids] + ["007", "x"])
    expected = canonicalize(frame[frame["CustNo"].isin(ids)], config).log
    assert_same_features(fetched, expected)

    query = source_of(None, config, query='SELECT * FROM hs_typed WHERE "Price" IS NOT NULL')  # type: ignore[operator]
    assert_same_features(query.fetch([str(i) for i in ids]), expected)
    assert index_warning(query) is None  # a query's plan is not checked


def test_unknown_table_or_column_names_it(
    postgres_url: str, raw_log: pd.DataFrame, source_of: object
) -> None:
    with pytest.raises(
        HistoryConfigError, match=r"RETAIN_HISTORY_TABLE='no_such_orders'.*table not found"
    ):
        source_of("no_such_orders", LogConfig()).probe()  # type: ignore[operator]
    load_table(postgres_url, "hs_bare", raw_log[["customer_id", "timestamp"]], {
        "customer_id": "text", "timestamp": "timestamptz"
    })  # fmt: skip
    with pytest.raises(HistoryConfigError, match=r"missing required column\(s\): 'amount'"):
        source_of("hs_bare", LogConfig()).probe()  # type: ignore[operator]
    wrong = raw_log[["customer_id", "timestamp"]].assign(amount=raw_log["amount"] > 20)
    load_table(postgres_url, "hs_wrong", wrong, {
        "customer_id": "text", "timestamp": "timestamptz", "amount": "boolean"
    })  # fmt: skip
    with pytest.raises(HistoryConfigError, match=r"column 'amount' \(amount\) is of type bool"):
        source_of("hs_wrong", LogConfig()).probe()  # type: ignore[operator]
    config = LogConfig(columns={"customer_id": "Client"})
    with pytest.raises(HistoryConfigError, match=r"'customer_id' \(mapped to 'Client'\)"):
        source_of("hs_bare", config).probe()  # type: ignore[operator]


def test_a_dead_server_is_unavailable_with_the_password_masked(source_of: object) -> None:
    url = f"postgresql://retain:pw-XYZZY@127.0.0.1:{free_port()}/postgres"
    source = HistorySource(HistorySettings(url, "orders"), LogConfig())
    with pytest.raises(HistoryUnavailable) as caught:
        source.fetch(["a"])
    assert "pw-XYZZY" not in str(caught.value)
    assert "retain:***@127.0.0.1" in str(caught.value)
