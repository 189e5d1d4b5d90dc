"""The data fingerprint is retain's own definition: checked against a plain re-implementation
of the documented bytes, and invariant to row order but not to any value."""

from __future__ import annotations

import hashlib
import struct

import pandas as pd
import pytest

from features.log.fingerprint import log_fingerprint
from features.log.schema import CANONICAL_COLUMNS
from tests.features.conftest import random_log

_TEXT = ("customer_id", "order_id", "product_id", "category", "channel")
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def reference_fingerprint(log: pd.DataFrame) -> str:
    """The module docstring's definition, written row by row with struct (no numpy/arrow)."""
    rows = []
    for record in log[list(CANONICAL_COLUMNS)].astype("object").itertuples(index=False):
        row = []
        for name, value in zip(CANONICAL_COLUMNS, record, strict=True):
            if name in _TEXT:
                row.append(None if pd.isna(value) else str(value))
            elif name == "timestamp":
                row.append((pd.Timestamp(value) - _EPOCH) // pd.Timedelta(microseconds=1))
            elif name in ("amount", "quantity"):
                row.append(float(value) + 0.0)
            else:
                row.append(bool(value))
        rows.append(tuple(row))

    def key(row: tuple[object, ...]) -> tuple[object, ...]:
        # missing text first; text by code points (Python's str order)
        return tuple(
            (v is not None, v or "") if n in _TEXT else v
            for n, v in zip(CANONICAL_COLUMNS, row, strict=True)
        )

    rows.sort(key=key)
    digest = hashlib.sha256(b"retain-log-fingerprint/1\n" + struct.pack("<q", len(rows)))
    for j, name in enumerate(CANONICAL_COLUMNS):
        digest.update(name.encode() + b"\n")
        values = [row[j] for row in rows]
        if name in _TEXT:
            data = [b"" if v is None else v.encode() for v in values]
            digest.update(bytes(v is not None for v in values))
            digest.update(b"".join(struct.pack("<q", len(d)) for d in data))
            digest.update(b"".join(data))
        elif name == "timestamp":
            digest.update(b"".join(struct.pack("<q", v) for v in values))
        elif name in ("amount", "quantity"):
            digest.update(b"".join(struct.pack("<d", v) for v in values))
        else:
            digest.update(bytes(int(v) for v in values))
    return digest.hexdigest()[:32]


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return random_log(3, pd.Timestamp("2023-01-01", tz="UTC"), n_customers=25, n_rows=300)


def test_matches_the_documented_definition(log: pd.DataFrame) -> None:
    with_text = log.copy()
    with_text.loc[3, "category"] = "überraschung"  # non-ASCII text
    with_text.loc[4, "category"] = ""  # empty text is not missing
    for frame in (log, with_text, log.iloc[:1], log.iloc[:0]):
        assert log_fingerprint(frame) == reference_fingerprint(frame)


def test_same_rows_in_any_order_same_fingerprint(log: pd.DataFrame) -> None:
    base = log_fingerprint(log)
    assert len(base) == 32
    shuffled = log.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert log_fingerprint(shuffled) == base
    codes = log.assign(
        customer_id=log["customer_id"].cat.reorder_categories(
            list(log["customer_id"].cat.categories[::-1])
        )
    )
    assert log_fingerprint(codes) == base
    negative_zero = log.assign(amount=log["amount"].where(log.index != 0, -0.0))
    positive_zero = log.assign(amount=log["amount"].where(log.index != 0, 0.0))
    assert log_fingerprint(negative_zero) == log_fingerprint(positive_zero)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("amount", 0.01),
        ("quantity", 1.0),
        ("timestamp", pd.Timedelta(microseconds=1)),
        ("order_id", "x"),
        ("category", None),
        ("discount", None),
        ("is_return", None),
    ],
)
def test_any_changed_value_changes_it(log: pd.DataFrame, column: str, value: object) -> None:
    changed = log.copy()
    if column in ("amount", "quantity", "timestamp") or column == "order_id":
        changed.loc[7, column] = changed.loc[7, column] + value
    elif column == "category":
        changed.loc[7, column] = "books" if pd.isna(changed.loc[7, column]) else None
    else:
        changed.loc[7, column] = not changed.loc[7, column]
    assert log_fingerprint(changed) != log_fingerprint(log)


def test_a_repeated_row_counts(log: pd.DataFrame) -> None:
    doubled = pd.concat([log, log.iloc[[5]]], ignore_index=True)
    assert log_fingerprint(doubled) != log_fingerprint(log)


def test_refuses_a_log_without_canonical_columns(log: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"canonical column\(s\) \['channel'\]"):
        log_fingerprint(log.drop(columns=["channel"]))
