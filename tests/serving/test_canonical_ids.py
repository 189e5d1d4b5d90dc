"""The service's canonical customer id is the loader's: the same characters are stripped."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from features.log.purchase_log import canonicalize
from serving.http.schemas import IdsRequest, ScoreRequest, canonical_customer_id


def test_canonical_id_strips_what_the_loader_strips() -> None:
    """Every code point that either side treats as whitespace, through ``canonicalize``."""
    points = [chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000]
    padded = pa.array([f"{c}x{c}" for c in points])
    trimmed = pc.utf8_trim_whitespace(padded).to_pylist()
    candidates = [
        c for c, t in zip(points, trimmed, strict=True) if t == "x" or f"{c}x{c}".strip() == "x"
    ]
    assert " " in candidates and "\u3000" in candidates and "a" not in candidates
    raw = pd.DataFrame(
        {
            "customer_id": [f"{c}id{i}{c}" for i, c in enumerate(candidates)],
            "timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
            "amount": 1.0,
        }
    )
    loaded = sorted(canonicalize(raw).log["customer_id"].astype("str").unique())
    ours = sorted(canonical_customer_id(v) for v in raw["customer_id"])
    assert ours == loaded


def test_requests_carry_canonical_ids_and_refuse_blank_ones() -> None:
    request = ScoreRequest.model_validate(
        {"customers": [{"customer_id": " c1 "}, {"customer_id": "c2\u3000"}]}
    )
    assert [c.customer_id for c in request.customers] == ["c1", "c2"]
    assert IdsRequest.model_validate({"customer_ids": ["\tc1", "c1"]}).customer_ids == ["c1", "c1"]
    # U+001C is whitespace to str.strip and the loader, not to the id pattern's \s
    with pytest.raises(ValidationError, match="non-whitespace"):
        IdsRequest.model_validate({"customer_ids": ["\x1c"]})
