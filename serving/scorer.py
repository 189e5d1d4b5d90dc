"""The one scoring function behind the HTTP service, batch jobs and the MLflow pyfunc.

Everything that turns a purchase log into a customer's scores, segment, reasons and offer
happens in :func:`score`; callers only load a packaged artifact and hand it logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.builders import build_features, to_utc_timestamp
from features.segments import assign_segments
from serving.offers import OFFER_COLUMNS, OfferPolicy, apply_policy
from serving.reasons import top_reasons
from training.artifact import RetainArtifact, load_artifact

RISK_BANDS: tuple[tuple[str, float], ...] = (("low", 0.3), ("medium", 0.6), ("high", 1.01))
N_REASONS = 3

SCORE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "as_of",
    "churn_probability",
    "risk_band",
    "p_purchase_7d",
    "p_purchase_30d",
    "p_purchase_horizon",
    "expected_next_purchase_date",
    "expected_purchases_horizon",
    "expected_spend_horizon",
    "expected_spend_365d",
    "segment",
    *(f"reason_{i + 1}" for i in range(N_REASONS)),
    *(c for c in OFFER_COLUMNS if c != "customer_id"),
)


@dataclass(frozen=True)
class ScoringModel:
    """A loaded, hash-checked artifact with its offer policy parsed once."""

    artifact: RetainArtifact
    policy: OfferPolicy

    @classmethod
    def from_artifact(cls, artifact: RetainArtifact) -> ScoringModel:
        return cls(artifact=artifact, policy=OfferPolicy.from_yaml(artifact.policy_yaml))

    @classmethod
    def load(cls, path: str | Path) -> ScoringModel:
        return cls.from_artifact(load_artifact(Path(path)))

    @property
    def horizon_days(self) -> int:
        return int(self.artifact.models.horizon_days)


def risk_band(churn_probability: np.ndarray) -> np.ndarray:
    """Bucket churn probabilities into low / medium / high."""
    edges = np.array([upper for _, upper in RISK_BANDS])
    names = np.array([name for name, _ in RISK_BANDS], dtype=object)
    return names[np.searchsorted(edges, churn_probability, side="right").clip(0, len(names) - 1)]


def score_features(
    model: ScoringModel,
    features: pd.DataFrame,
    as_of: object,
    *,
    campaign: str | None = None,
) -> pd.DataFrame:
    """Score customers whose point-in-time features are already built (``/score/ids``)."""
    as_of_ts = to_utc_timestamp(as_of)
    columns = list(SCORE_COLUMNS)
    if features.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    models = model.artifact.models
    preds, contributions = models.predict_with_contributions(features, as_of_ts)
    segments = assign_segments(features, model.artifact.segment_config)
    reasons = top_reasons(contributions, k=N_REASONS)

    scores = preds.copy()
    scores["segment"] = segments.reindex(scores.index).astype("str")
    scores["as_of"] = as_of_ts
    scores["last_purchase_at"] = as_of_ts - pd.to_timedelta(
        features["recency_days"].reindex(scores.index).to_numpy(), unit="D"
    )
    scores["risk_band"] = risk_band(scores["churn_probability"].to_numpy())
    scores = scores.join(reasons)
    scores.index.name = "customer_id"
    scores = scores.reset_index()
    offers = apply_policy(scores, model.policy, campaign=campaign)
    out = pd.concat([scores, offers.drop(columns=scores.columns, errors="ignore")], axis=1)
    return out[columns]


def score(
    model: ScoringModel,
    log: pd.DataFrame,
    as_of: object,
    *,
    campaign: str | None = None,
) -> pd.DataFrame:
    """Score every customer in a canonical purchase log who bought before ``as_of``."""
    as_of_ts = to_utc_timestamp(as_of)
    features = build_features(log, as_of_ts, model.artifact.feature_config)
    return score_features(model, features, as_of_ts, campaign=campaign)
