"""Shared steps of the ``/score/ids``-from-PostgreSQL tests: the orders table, a purchase
written while the service runs, and the in-process scores a response must equal.

Both ``retain serve`` from the checkout (test_serve_history.py) and the deployed bento
(test_bento.py) are held to the same comparison, so it lives here once.
"""

from __future__ import annotations

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from features.log.purchase_log import canonicalize
from features.sources.database import connect, quote_identifier
from serving.scorer import ScoringModel, score

COMPARED = (
    "churn_probability",
    "p_purchase_30d",
    "expected_spend_365d",
    "expected_next_purchase_date",
    "segment",
    "offer",
)


def write_orders(url: str, name: str, frame: pd.DataFrame, *, index: bool) -> None:
    """``frame`` as table ``name`` (amount NUMERIC, as order tables keep money)."""
    q = quote_identifier(name)
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {q}")
        cur.adbc_ingest(name, pa.Table.from_pandas(frame, preserve_index=False), mode="create")
        cur.execute(f"ALTER TABLE {q} ALTER COLUMN amount TYPE numeric USING amount::numeric")
        if index:
            cur.execute(f"CREATE INDEX ON {q} (customer_id)")
        conn.commit()


def insert_purchase(url: str, name: str, row: dict[str, object]) -> None:
    columns = ", ".join(quote_identifier(c) for c in row)
    marks = ", ".join(f"${i + 1}" for i in range(len(row)))
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {quote_identifier(name)} ({columns}) VALUES ({marks})",
            tuple(row.values()),
        )
        conn.commit()


def score_ids(url: str, ids: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/score/ids", json={"customer_ids": ids}, timeout=60)


def expected_record(model: ScoringModel, raw: pd.DataFrame, cid: str, as_of: str) -> pd.Series:
    """What in-process scoring of the customer's full history gives at ``as_of``."""
    scored = score(model, canonicalize(raw).log, pd.Timestamp(as_of))
    return scored.set_index("customer_id").loc[cid]


def assert_matches(got: dict[str, object], row: pd.Series) -> None:
    assert got["status"] == "scored"
    day = pd.Timestamp(row["expected_next_purchase_date"]).date().isoformat()
    assert got["expected_next_purchase_date"] == day
    assert got["churn_probability"] == pytest.approx(float(row["churn_probability"]), rel=1e-12)
    assert got["p_purchase_30d"] == pytest.approx(float(row["p_purchase_30d"]), rel=1e-12)
    assert got["expected_spend_365d"] == pytest.approx(float(row["expected_spend_365d"]))
    assert got["segment"] == row["segment"]
    assert got["offer"]["code"] == row["offer"]  # type: ignore[index]


def assert_fresh_after_purchase(
    url: str, db_url: str, table: str, model: ScoringModel, raw: pd.DataFrame, cid: str
) -> dict[str, object]:
    """Insert a purchase of ``cid`` and check the next ``/score/ids`` scores the full history
    (and differs from the stale one); the new record."""
    bought = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=5)
    row = {"customer_id": cid, "timestamp": bought.to_pydatetime(), "amount": 80.0}
    insert_purchase(db_url, table, row)
    after = score_ids(url, [cid])
    assert after.status_code == 200, after.text
    (got,) = after.json()["results"]
    full = pd.concat([raw, pd.DataFrame([row])], ignore_index=True)
    want = expected_record(model, full, cid, str(got["as_of"]))
    assert_matches(got, want)
    stale = expected_record(model, raw, cid, str(got["as_of"]))
    changed = [c for c in COMPARED if str(want[c]) != str(stale[c])]
    assert changed, "the new purchase changed none of the scores"
    return dict(got)
