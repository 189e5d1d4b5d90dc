"""``/score`` history rows as the scorer reads them: typed-dict rows, the same log.

History rows are typed dicts (:class:`serving.http.schemas.PurchaseIn`): optional fields a
row does not send are absent, not None. :func:`serving.http.score_request.history_log` must
give the log that the general path gives for the same values written out in full.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import random
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from features.log.log_arrays import LogArrays, canonical_log_arrays
from serving.http.schemas import PURCHASE_FIELDS, ScoreRequest
from serving.http.score_request import history_log
from serving.http.startup import YOUNG_GENERATION_THRESHOLD, freeze_startup_heap

OPTIONAL = ("order_id", "quantity", "product_id", "category", "discount", "channel")


def _random_row(rng: random.Random) -> dict[str, Any]:
    row: dict[str, Any] = {
        "timestamp": f"2024-0{rng.randint(1, 6)}-{rng.randint(10, 28)}T"
        f"{rng.randint(0, 23):02d}:{rng.choice(['00', '30'])}:00"
        + rng.choice(["Z", "+02:00", "", ".250000Z"]),
        "amount": rng.choice([5.0, 12.5, -5.0, 0.0, 99.99]),
    }
    values = {
        "order_id": lambda: rng.choice(["o1", "o2", "C-o1", " o3 "]),
        "quantity": lambda: rng.choice([1.0, 2.0, -1.0, 0.5]),
        "product_id": lambda: rng.choice(["p1", "p2", ""]),
        "category": lambda: rng.choice(["toys", "books", ""]),
        "discount": lambda: rng.choice([True, False]),
        "channel": lambda: rng.choice(["web", "store"]),
    }
    for name in OPTIONAL:
        pick = rng.random()
        if pick < 0.4:
            row[name] = values[name]()
        elif pick < 0.55:
            row[name] = None
    return row


def _general(customers: list[dict[str, Any]]) -> LogArrays:
    """The array path on the same values with every optional field written out."""
    from datetime import UTC, datetime

    rows = [(c["customer_id"], r) for c in customers for r in c["history"]]
    n = len(rows)

    def column(name: str) -> list[Any] | None:
        values = [r.get(name) for _, r in rows]
        return None if values.count(None) == n else values

    stamps = [datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")) for _, r in rows]
    micros = [
        (t if t.tzinfo else t.replace(tzinfo=UTC)) - datetime(1970, 1, 1, tzinfo=UTC)
        for t in stamps
    ]
    quantity = column("quantity")
    discount = column("discount")
    return canonical_log_arrays(
        [cid.strip() for cid, _ in rows],
        np.array([m // np.timedelta64(1, "us").item() for m in micros], dtype=np.int64),
        np.array([r["amount"] for _, r in rows], dtype=np.float64),
        quantity=None
        if quantity is None
        else np.array([1.0 if q is None else q for q in quantity], dtype=np.float64),
        discount=None
        if discount is None or not any(discount)
        else np.array([bool(d) for d in discount], dtype=bool),
        order_id=column("order_id"),
        product_id=column("product_id"),
        category=column("category"),
        channel=column("channel"),
    )


def _assert_same(a: LogArrays, b: LogArrays) -> None:
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), field.name
        else:
            assert x == y, field.name


@pytest.mark.parametrize("seed", range(60))
def test_typed_dict_rows_give_the_general_paths_log(seed: int) -> None:
    rng = random.Random(seed)
    customers = [
        {
            "customer_id": rng.choice(["c1", " c2", "c3 ", "c4"]) + str(k),
            "history": [_random_row(rng) for _ in range(rng.randint(1, 40 if seed % 3 else 400))],
        }
        for k in range(rng.randint(1, 5))
    ]
    request = ScoreRequest.model_validate_json(json.dumps({"customers": customers}))
    rows = [r for c in request.customers for r in c.history]
    assert all(isinstance(r, dict) for r in rows)
    # absent optional fields stay absent (history_log reads them with .get)
    sent = [set(r) for c in customers for r in c["history"]]
    assert [set(r) for r in rows] == sent
    _assert_same(history_log(request.customers), _general(customers))


def test_history_rows_keep_the_json_contract() -> None:
    base = {"timestamp": "2024-01-01T00:00:00Z", "amount": 1.0}
    for row, loc, kind in (
        ({**base, "colour": "red"}, "colour", "extra_forbidden"),
        ({"timestamp": base["timestamp"]}, "amount", "missing"),
        ({**base, "amount": "NaN"}, "amount", "finite_number"),
        ({**base, "quantity": 2e9}, "quantity", "less_than_equal"),
        ({**base, "order_id": ""}, "order_id", "string_too_short"),
        ({**base, "category": "x" * 257}, "category", "string_too_long"),
    ):
        body = {"customers": [{"customer_id": "c1", "history": [base, row]}]}
        with pytest.raises(ValidationError) as caught:
            ScoreRequest.model_validate_json(json.dumps(body))
        errors = caught.value.errors()
        assert errors[0]["loc"][:4] == ("customers", 0, "history", 1), errors
        assert errors[0]["loc"][-1] == loc and errors[0]["type"] == kind, errors
    assert set(PURCHASE_FIELDS) == {"timestamp", "amount", *OPTIONAL}


def test_a_worker_collects_young_garbage_every_hundred_thousand_allocations() -> None:
    """Python's default (700) ran several collections per 100-customer request."""
    threshold = gc.get_threshold()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    try:
        freeze_startup_heap()
        gc.callbacks.append(count)
        kept = [[k] for k in range(YOUNG_GENERATION_THRESHOLD // 2)]  # a few requests' objects
        assert collections == [], collections
        kept += [[k] for k in range(YOUNG_GENERATION_THRESHOLD)]
        assert collections and collections[0] == 0, collections  # the threshold still holds
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
        gc.unfreeze()
    assert len(kept) == YOUNG_GENERATION_THRESHOLD * 3 // 2


def test_startup_heap_is_frozen_out_of_the_collectors_scans() -> None:
    loaded = [[k] for k in range(1000)]  # stands for the model a worker loads
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= before + len(loaded)
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(item) in tracked for item in loaded)
    finally:
        gc.unfreeze()
