"""The one scoring function behind the HTTP service, batch jobs and the MLflow pyfunc.

Everything that turns customers' features into scores, segment, reasons and offer happens
in :func:`score_block`; it works on arrays (``FeatureBlock`` in, :class:`ScoredCustomers`
out) so that an HTTP request of one customer costs no pandas bookkeeping. :func:`score` and
:func:`score_features` are the same function with frames at the edges (batch, notebooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.builders import FeatureBlock, build_feature_block
from features.log.log_arrays import LogArrays
from features.log.schema import LogConfig
from features.retention.segments import REQUIRED_FEATURES, SEGMENTS, segment_codes
from features.utc import US_PER_DAY, to_utc_timestamp
from serving.offers.decide import OFFER_COLUMNS, OfferDecisions, decide_offers
from serving.offers.inputs import OfferInputs
from serving.offers.policy import OfferPolicy, OfferPolicyError, uplift_rules
from serving.reasons import reason_texts
from training.artifact import RetainArtifact, load_artifact
from training.models.boosters import ModelInput

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
    "uplift",
    "segment",
    *(f"reason_{i + 1}" for i in range(N_REASONS)),
    *(c for c in OFFER_COLUMNS if c != "customer_id"),
)
NUMBER_COLUMNS: tuple[str, ...] = (
    "churn_probability",
    "p_purchase_7d",
    "p_purchase_30d",
    "p_purchase_horizon",
    "expected_purchases_horizon",
    "expected_spend_horizon",
    "expected_spend_365d",
    "uplift",
)
_SEGMENT_NAMES = np.array(SEGMENTS, dtype=object)
_BAND_NAMES = np.array([name for name, _ in RISK_BANDS], dtype=object)
_BAND_EDGES = np.array([upper for _, upper in RISK_BANDS])


@dataclass(frozen=True)
class ScoringModel:
    """A loaded, hash-checked artifact with its offer policy parsed once."""

    artifact: RetainArtifact
    policy: OfferPolicy

    @classmethod
    def from_artifact(cls, artifact: RetainArtifact) -> ScoringModel:
        """Parse the policy and compile the boosters (every scoring path runs compiled, or
        every one on LightGBM's predictor when lleaves cannot compile: see
        ``RetainModels.compile``).

        A policy matching on ``min_uplift`` needs the artifact's uplift model: refused here,
        at start-up, rather than on the first request.
        """
        policy = OfferPolicy.from_yaml(artifact.policy_yaml)
        if artifact.uplift is None:
            using = uplift_rules(policy.rules)
            if using:
                raise OfferPolicyError(
                    f"the artifact's offer policy uses {', '.join(using)} but the artifact "
                    "has no uplift model; add one with `retain uplift-train`"
                )
        artifact.models.compile()
        if artifact.uplift is not None:
            artifact.uplift.compile()
        return cls(artifact=artifact, policy=policy)

    @classmethod
    def load(cls, path: str | Path) -> ScoringModel:
        return cls.from_artifact(load_artifact(Path(path)))

    @property
    def horizon_days(self) -> int:
        return int(self.artifact.models.horizon_days)

    @property
    def log_config(self) -> LogConfig:
        """The log config the model's training data was read with (from its manifest)."""
        return self.artifact.log_config


def risk_band(churn_probability: np.ndarray) -> np.ndarray:
    """Bucket churn probabilities into low / medium / high."""
    codes = np.searchsorted(_BAND_EDGES, churn_probability, side="right")  # never below 0
    return _BAND_NAMES[np.minimum(codes, len(_BAND_NAMES) - 1)]


@dataclass(frozen=True)
class ScoredCustomers:
    """The scorer's output as arrays, one row per customer (sorted by ``customer_id``).

    ``numbers`` holds ``NUMBER_COLUMNS`` (``uplift`` is NaN when the artifact has no uplift
    model: null in frames' Parquet and HTTP); dates are naive UTC ``datetime64``. :meth:`frame`
    gives the documented ``SCORE_COLUMNS`` frame; the HTTP service reads the arrays.
    """

    customer_id: np.ndarray
    as_of: pd.Timestamp
    numbers: dict[str, np.ndarray]
    next_purchase: np.ndarray  # datetime64[ns], NaT when no purchase is expected in H
    segment: np.ndarray  # object array of segment names
    risk_band: np.ndarray  # object array of band names
    reasons: np.ndarray  # (n, N_REASONS) object array, "" where fewer reasons
    offers: OfferDecisions

    def __len__(self) -> int:
        return len(self.customer_id)

    def frame(self) -> pd.DataFrame:
        """``SCORE_COLUMNS`` with the dtypes batch Parquet and notebooks rely on."""
        if len(self) == 0:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in SCORE_COLUMNS})
        data: dict[str, Any] = {
            "customer_id": pd.array(self.customer_id, dtype="str"),
            "as_of": pd.DatetimeIndex(
                np.full(len(self), self.as_of.value // 1000).view("datetime64[us]")
            ).tz_localize("UTC"),
            "expected_next_purchase_date": pd.DatetimeIndex(self.next_purchase).tz_localize("UTC"),
            "risk_band": pd.array(self.risk_band, dtype="str"),
            "segment": pd.array(self.segment, dtype="str"),
            **{
                f"reason_{i + 1}": pd.array(self.reasons[:, i], dtype="str")
                for i in range(N_REASONS)
            },
            **self.offers.columns(),
            **self.numbers,
        }
        return pd.DataFrame({c: data[c] for c in SCORE_COLUMNS})


def score_block(
    model: ScoringModel,
    block: FeatureBlock,
    as_of: object,
    *,
    campaign: str | None = None,
) -> ScoredCustomers:
    """Scores, segment, reasons and offer for every customer of a feature block.

    The stages are separate functions so that ``benchmarks/request_budget.py`` times each
    of them as the service runs it.
    """
    as_of_ts = to_utc_timestamp(as_of)
    x, preds = predict_stage(model, block, as_of_ts)
    reasons = reasons_stage(model, x)
    seg, uplift, offers = offers_stage(model, block, preds, as_of_ts, campaign)
    return ScoredCustomers(
        customer_id=block.customer_id,
        as_of=as_of_ts,
        numbers={
            **{c: preds[c] for c in NUMBER_COLUMNS if c != "uplift"},
            "uplift": np.full(len(block), np.nan) if uplift is None else uplift,
        },
        next_purchase=preds["expected_next_purchase_date"],
        segment=_SEGMENT_NAMES[seg],
        risk_band=risk_band(preds["churn_probability"]),
        reasons=reasons,
        offers=offers,
    )


def predict_stage(
    model: ScoringModel, block: FeatureBlock, as_of_ts: pd.Timestamp
) -> tuple[ModelInput, dict[str, np.ndarray]]:
    """The boosters' input and the models' predictions (``PREDICTION_COLUMNS``)."""
    models = model.artifact.models
    x = models.model_input(block.values, block.names)
    return x, models.predict_arrays(x, as_of_ts, median=False)


def reasons_stage(model: ScoringModel, x: ModelInput) -> np.ndarray:
    """The top ``N_REASONS`` churn reasons per customer, as phrases."""
    models = model.artifact.models
    return reason_texts(models.reason_contributions(x), x.names, N_REASONS)


def offers_stage(
    model: ScoringModel,
    block: FeatureBlock,
    preds: dict[str, np.ndarray],
    as_of_ts: pd.Timestamp,
    campaign: str | None,
) -> tuple[np.ndarray, np.ndarray | None, OfferDecisions]:
    """Segment codes, uplift (None without an uplift model) and the offer decisions."""
    seg = segment_codes(
        {c: block.column(c) for c in REQUIRED_FEATURES}, model.artifact.segment_config
    )
    uplift_model = model.artifact.uplift
    uplift = (
        None if uplift_model is None else uplift_model.predict_values(block.values, block.names)
    )
    as_of_day = np.datetime64(as_of_ts.value, "ns").astype("datetime64[D]")
    as_of_us = as_of_ts.value // 1000  # Timestamp.value is in ns whatever the unit
    recency_us = np.rint(block.column("recency_days") * US_PER_DAY).astype(np.int64)  # np.round
    last_purchase = (as_of_us - recency_us).view("datetime64[us]")
    inputs = OfferInputs(
        block.customer_id,
        segment_codes=seg,
        churn=preds["churn_probability"],
        spend_365d=preds["expected_spend_365d"],
        spend_horizon=preds["expected_spend_horizon"],
        as_of_day=np.full(len(block), as_of_day),
        last_day=last_purchase.astype("datetime64[D]"),
        next_day=preds["expected_next_purchase_date"].astype("datetime64[D]"),
        uplift=uplift,
    )
    return seg, uplift, decide_offers(inputs, model.policy, campaign)


def score_features(
    model: ScoringModel,
    features: pd.DataFrame,
    as_of: object,
    *,
    campaign: str | None = None,
) -> pd.DataFrame:
    """Score customers whose point-in-time features are already built (``/score/ids``)."""
    block = FeatureBlock.from_frame(features)
    return score_block(model, block, as_of, campaign=campaign).frame()


def score(
    model: ScoringModel,
    log: pd.DataFrame,
    as_of: object,
    *,
    campaign: str | None = None,
) -> pd.DataFrame:
    """Score every customer in a canonical purchase log who bought before ``as_of``."""
    return score_log(model, log, as_of, campaign=campaign).frame()


def score_log(
    model: ScoringModel,
    log: pd.DataFrame | LogArrays,
    as_of: object,
    *,
    campaign: str | None = None,
) -> ScoredCustomers:
    """:func:`score` without the frame at the end; the HTTP service passes ``LogArrays``."""
    as_of_ts = to_utc_timestamp(as_of)
    block = build_feature_block(log, as_of_ts, model.artifact.feature_config)
    return score_block(model, block, as_of_ts, campaign=campaign)
