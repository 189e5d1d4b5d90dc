"""The serving parts the training lifecycle is handed: pyfunc code, policy, loading, scoring.

:mod:`training.lifecycle` (``retain train / promote``) never imports ``serving``; it takes a
:class:`training.lifecycle.ServingParts`. :data:`SERVING_PARTS` is that object, built from
serving's own pieces, so a model is logged with the code that serves it, its offer policy is
validated by the policy model serving parses, and the promotion smoke test loads and scores
the challenger exactly as the HTTP and batch paths do. The root CLI passes it to the
lifecycle commands; notebooks and tests pass it to the lifecycle functions.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from serving.model_source import ModelResolutionError
from training.artifact import RetainArtifact
from training.lifecycle import ServingParts

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def offer_policy_yaml(policy: str | Path | None) -> str:
    """The offer policy (YAML path or text; None for the default) validated, as YAML."""
    from serving.offers.policy import OfferPolicy

    policy_obj = OfferPolicy.default() if policy is None else OfferPolicy.from_yaml(policy)
    return policy_obj.to_yaml()


def load_registered_version(
    name: str, version: str, tracking_uri: str | None = None
) -> RetainArtifact:
    """Registered ``version`` of ``name``, loaded as serving loads it (digest checked)."""
    from serving.model_source import resolved_artifact
    from training.artifact import load_artifact

    with resolved_artifact(f"models:/{name}/{version}", tracking_uri) as (path, source):
        return load_artifact(path, source.manifest_sha256)


def score_artifact(
    artifact: RetainArtifact, log: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """``log`` scored by the shared scorer with ``artifact``'s models and policy."""
    from serving.scorer import ScoringModel, score

    return score(ScoringModel.from_artifact(artifact), log, as_of)


SERVING_PARTS = ServingParts(
    pyfunc_code=PYFUNC_CODE,
    policy_yaml=offer_policy_yaml,
    load_version=load_registered_version,
    score=score_artifact,
    load_errors=(ModelResolutionError,),
)
