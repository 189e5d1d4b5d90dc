"""The small packaged model the real-server tests start `retain serve` / `bentoml serve` on.

One recipe for every server test: a few trees, no BTYD inputs, the default offer policy, so a
server starts in seconds and each test file does not carry its own copy of the training call.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.builders import FeatureConfig
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from serving.offers.policy import OfferPolicy
from training.artifact import save_artifact
from training.models.bundle import RetainModels

FIT_AS_OF = "2024-07-01"
HORIZON_DAYS = 30


def server_artifact(directory: Path, raw_log: pd.DataFrame) -> Path:
    """Fit the small model on ``raw_log`` (a raw purchase log) and package it in ``directory``."""
    models = RetainModels(
        horizon_days=HORIZON_DAYS,
        n_snapshots=2,
        num_boost_round=8,
        early_stopping_rounds=4,
        num_threads=1,
        use_baselines=False,
    ).fit(canonicalize(raw_log).log, FIT_AS_OF)
    return save_artifact(
        directory,
        models,
        feature_config=FeatureConfig(horizon_days=HORIZON_DAYS),
        segment_config=SegmentConfig(),
        policy_yaml=OfferPolicy.default().to_yaml(),
    )
