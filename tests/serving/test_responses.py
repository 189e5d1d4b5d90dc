"""``/score``'s body is the JSON of the checked response model, byte for byte.

:func:`serving.http.responses.score_response` validates the records against
:class:`serving.http.schemas.ScoreResponse` and writes the plain records with pydantic's
core; the model's own serializer (what BentoML wrote before) must give the same bytes for
every kind of record the service returns: scored, unscored, numbers pydantic writes in
exponent form, ids outside ASCII, and a campaign that puts customers in the holdout.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.builders import FeatureConfig
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from features.synthetic.synth import generate_purchase_log
from serving.http.responses import score_records, score_response, unscored_record
from serving.http.schemas import ModelInfo, ScoreResponse
from serving.offers.policy import OfferPolicy
from serving.scorer import ScoringModel, score_log
from training.artifact import save_artifact
from training.models.bundle import RetainModels

AS_OF = pd.Timestamp("2024-07-01T00:00:00.250000Z")
INFO = ModelInfo(name="retain", version="3", uri="models:/retain/3")


@pytest.fixture(scope="module")
def model_and_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScoringModel, pd.DataFrame]:
    raw = generate_purchase_log(150, seed=3, start="2023-01-01", end="2024-06-30").log
    raw["customer_id"] = [f"kund-ä{c}\u00e9\t\x01" for c in raw["customer_id"]]
    log = canonicalize(raw).log
    models = RetainModels(
        horizon_days=30,
        n_snapshots=2,
        num_boost_round=8,
        early_stopping_rounds=4,
        num_threads=1,
        use_baselines=False,
    ).fit(log, "2024-06-01")
    path = save_artifact(
        tmp_path_factory.mktemp("artifact") / "retain-artifact",
        models,
        feature_config=FeatureConfig(horizon_days=30),
        segment_config=SegmentConfig(),
        policy_yaml=OfferPolicy.default().to_yaml(),
    )
    return ScoringModel.load(path), log


@pytest.fixture(scope="module")
def records(model_and_log: tuple[ScoringModel, pd.DataFrame]) -> list[dict[str, Any]]:
    model, log = model_and_log
    scored = score_records(score_log(model, log, AS_OF, campaign="spring"))
    return [
        *scored.values(),
        unscored_record("nobody", "no_purchases_before_as_of", AS_OF),
        unscored_record("ghost", "unknown_customer_id", None),
    ]


def test_body_is_the_models_json(records: list[dict[str, Any]]) -> None:
    statuses = {r["status"] for r in records}
    assert statuses == {"scored", "no_purchases_before_as_of", "unknown_customer_id"}
    assert any(r["offer"] and r["offer"]["holdout"] for r in records if r["status"] == "scored")
    # a tiny probability pydantic writes as 1e-7, Python's repr as 1e-07
    records[0]["p_purchase_30d"] = 1e-7
    records[1]["expected_spend_365d"] = 1e16
    body = bytes(score_response(INFO, 30, records).body)
    model = ScoreResponse.model_validate({"model": INFO, "horizon_days": 30, "results": records})
    assert body == model.model_dump_json().encode()
    assert b"1e-7" in body and "kund-ä".encode() in body


def test_a_record_outside_the_schema_is_refused(records: list[dict[str, Any]]) -> None:
    bad = {**records[0], "risk_band": 3}
    with pytest.raises(ValidationError, match="risk_band"):
        score_response(INFO, 30, [bad])


def test_a_few_customers_get_the_records_of_a_large_batch(
    model_and_log: tuple[ScoringModel, pd.DataFrame],
) -> None:
    """Records of one to a few customers (built value by value) equal the same customers'
    records in a batch of all of them (built by array calls), on random picks."""
    model, log = model_and_log
    every = score_records(score_log(model, log, AS_OF, campaign="spring"))
    assert len(every) > 16  # the batch takes the array path
    ids = log["customer_id"].cat.categories.tolist()
    rng = np.random.default_rng(11)
    for size in (1, 1, 2, 3, 5, 16):
        picked = rng.choice(ids, size=size, replace=False).tolist()
        few = score_records(
            score_log(model, log[log["customer_id"].isin(picked)], AS_OF, campaign="spring")
        )
        assert set(few) <= set(picked) and few
        for customer_id, record in few.items():
            assert record == every[customer_id]
            assert json.dumps(record) == json.dumps(every[customer_id])  # NaN != NaN in ==
