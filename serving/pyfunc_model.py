"""The MLflow pyfunc wrapper around a retain artifact (MLflow "models from code").

MLflow executes this file to rebuild the model, so nothing is pickled: the model's state is
the hash-checked artifact directory logged as ``artifacts={"retain": ...}``. ``predict``
returns exactly what :func:`serving.scorer.score` returns, so a model loaded with
``mlflow.pyfunc.load_model("models:/retain@champion")`` and the HTTP/batch scorers agree.

Inputs:
- a purchase log (the model signature): canonical columns in *wire form*
  (``training.registry.tracking.wire_frame``: string ids, tz-naive UTC timestamps, ``None`` for
  missing strings) because MLflow's schema enforcement rejects categoricals and tz-aware
  datetimes; canonical dtypes are restored here with the artifact's counting rules
  (cancellation prefix, duplicates), so the scorer sees the log the way training counted
  it. ``params={"as_of": "2024-06-01"}`` sets the scoring date; without it the date is the
  UTC day after the last timestamp in the log (a data-derived date, never the wall clock).
- a feature frame (index or column ``customer_id``, columns of ``build_features``): only
  through ``model.unwrap_python_model().predict(None, features, {"as_of": ...})``, because
  the logged signature describes purchase logs; ``as_of`` is then required.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from features.log.purchase_log import canonicalize
from features.log.schema import LogConfig
from features.utc import day_after_last_row, to_utc_timestamp

_LOG_MARKERS: frozenset[str] = frozenset({"timestamp", "amount"})


def to_canonical(frame: pd.DataFrame, config: LogConfig | None = None) -> pd.DataFrame:
    """A log that went through MLflow's schema enforcement, read by retain's own loader.

    The same validation as every other entry point, with the model's counting rules
    (``config.counting_rules()``: cancellation prefix, duplicates); the wire form has
    canonical column names and naive UTC timestamps, so the training file's column map and
    time zone do not apply. A log that was canonical under those rules comes back unchanged.
    """
    rules = (config or LogConfig()).counting_rules()
    return canonicalize(frame, rules).log


class RetainPyfunc(PythonModel):
    """Scores purchase logs with a packaged retain artifact."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the artifact only if it is what the tracking store recorded for this model.

        ``mlflow.pyfunc.load_model`` checks nothing of retain's, so the digest check that
        ``score``, ``serve`` and ``promote`` make (:mod:`serving.model_source`) is made here.
        """
        from pathlib import Path

        from serving.model_source import logged_model_digest
        from serving.scorer import ScoringModel
        from training.artifact import load_artifact

        path = Path(context.artifacts["retain"])
        artifact = load_artifact(path, expected_manifest_sha256=logged_model_digest(path))
        self._model = ScoringModel.from_artifact(artifact)

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        from serving.scorer import score, score_features

        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"retain expects a pandas DataFrame, got {type(model_input).__name__}")
        as_of_param = (params or {}).get("as_of") or None
        if set(model_input.columns) >= _LOG_MARKERS and "customer_id" in model_input.columns:
            log = to_canonical(model_input, self._model.log_config)
            as_of = to_utc_timestamp(as_of_param) if as_of_param else day_after_last_row(log)
            return score(self._model, log, as_of)
        if as_of_param is None:
            raise ValueError("scoring a feature frame needs params={'as_of': <ISO timestamp>}")
        features = model_input
        if "customer_id" in features.columns:
            features = features.set_index("customer_id")
        return score_features(self._model, features, to_utc_timestamp(as_of_param))


mlflow.models.set_model(RetainPyfunc())
