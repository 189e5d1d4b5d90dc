"""LightGBM plumbing every model class shares: the input matrix, training, prediction.

Models call ``lightgbm.train`` / ``lgb.Booster`` directly, not the scikit-learn wrapper:
``Booster.predict`` on a numpy array is much faster for the few rows of an HTTP request.
``ModelInput`` and ``predict_booster`` run on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias, cast

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.exceptions import NotFittedError

from training.threads import available_cores, booster_threads

FloatArray = NDArray[np.float64]

# Small, strongly regularised trees: on CDNOW (23.6k customers) 31 leaves / min 100 rows
# overfitted the BG/NBD correction (churn AUC 0.795 at 1998-01-01); 7 leaves, min 300 rows
# and lambda_l2 10 gave 0.803.
DEFAULT_LGB_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 7,
    "min_data_in_leaf": 300,
    "max_bin": 63,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 10.0,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
}


class ModelInput:
    """The model matrix (float64, one row per customer) and its column names.

    Why not a DataFrame: per-request scoring of a handful of customers spent most of its time
    in pandas bookkeeping. Boosters read ``values`` directly when its columns are already in
    training order (the scorer builds it so); named columns are looked up by position.
    """

    __slots__ = ("_positions", "names", "values")

    def __init__(self, values: FloatArray, names: Sequence[str]) -> None:
        if values.ndim != 2 or values.shape[1] != len(names):
            raise ValueError(
                f"ModelInput: values of shape {values.shape} do not match {len(names)} names"
            )
        self.values = values
        self.names = tuple(names)
        self._positions = _name_positions(self.names)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __contains__(self, name: object) -> bool:
        return name in self._positions

    def column(self, name: str) -> FloatArray:
        return self.values[:, self._positions[name]]

    def select(self, names: Sequence[str], owner: str) -> FloatArray:
        if tuple(names) == self.names:
            return self.values
        missing = [c for c in names if c not in self._positions]
        if missing:
            raise KeyError(
                f"{owner}: input lacks feature column(s) {missing} seen at fit time "
                f"(has {len(self.names)} columns)"
            )
        return self.values[:, [self._positions[c] for c in names]]

    def to_frame(self, index: pd.Index | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=index, columns=list(self.names))


@lru_cache(maxsize=64)
def _name_positions(names: tuple[str, ...]) -> dict[str, int]:
    """Column positions by name, shared by every input with these names (read-only)."""
    return {name: i for i, name in enumerate(names)}


Table: TypeAlias = pd.DataFrame | ModelInput


def input_column(X: Table, name: str) -> FloatArray:
    """One named input column as float64, from a DataFrame or a ModelInput."""
    if isinstance(X, ModelInput):
        return X.column(name)
    return X[name].to_numpy(dtype=np.float64)


def input_matrix(X: Table, names: Sequence[str], owner: str) -> FloatArray:
    """``X`` reordered to the training column order as float64; names missing columns."""
    if isinstance(X, ModelInput):
        return X.select(names, owner)
    missing = [c for c in names if c not in X.columns]
    if missing:
        raise KeyError(
            f"{owner}: input lacks feature column(s) {missing} seen at fit time "
            f"(has {len(X.columns)} columns)"
        )
    if X.columns.equals(pd.Index(names)):  # the common case: no reindexing copy
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    return X.loc[:, list(names)].to_numpy(dtype=np.float64, na_value=np.nan)


def check_fitted(model: object, attr: str) -> None:
    if not hasattr(model, attr):
        raise NotFittedError(
            f"{type(model).__name__} is not fitted yet: call fit(...) or load(...) first"
        )


@dataclass(frozen=True)
class BoostConfig:
    """How every booster is trained; one object so all models share seed and threads.

    ``num_threads`` None: the cores this process may use (``training.threads``).
    """

    lgb_params: dict[str, Any]
    num_boost_round: int = 400
    early_stopping_rounds: int = 25
    seed: int = 0
    num_threads: int | None = None

    def params(self, objective: str, **extra: Any) -> dict[str, Any]:  # LightGBM params
        out = {**DEFAULT_LGB_PARAMS, **self.lgb_params, **extra}
        threads = booster_threads(self.num_threads)
        out.update(objective=objective, seed=self.seed, num_threads=threads)
        return out


def train_booster(
    config: BoostConfig,
    objective: str,
    X: FloatArray,
    y: FloatArray,
    names: Sequence[str],
    valid: tuple[FloatArray, FloatArray] | None,
    weight: FloatArray | None = None,
    valid_weight: FloatArray | None = None,
    init_score: tuple[FloatArray, FloatArray] | None = None,
    **extra: Any,  # more LightGBM parameters
) -> lgb.Booster:
    """Train with early stopping on ``valid``; return a booster truncated at the best round.

    The booster is rebuilt from its own text so the in-memory model and a saved/loaded one
    predict bit-for-bit the same.
    """
    params = config.params(objective, **extra)
    init_t, init_v = init_score if init_score is not None else (None, None)
    train = lgb.Dataset(
        X, y, weight=weight, init_score=init_t, feature_name=list(names), free_raw_data=True
    )
    callbacks: list[Any] = []
    valid_sets: list[lgb.Dataset] = []
    if valid is not None:
        dv = lgb.Dataset(
            valid[0], valid[1], weight=valid_weight, init_score=init_v, reference=train
        )
        valid_sets = [dv]
        callbacks.append(lgb.early_stopping(config.early_stopping_rounds, verbose=False))
    booster = lgb.train(
        params, train, config.num_boost_round, valid_sets=valid_sets, callbacks=callbacks
    )
    best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


# Below this many rows a prediction runs on one thread: OpenMP start-up costs more than it
# saves (measured on the demo model: 1 customer 40 ms vs 96 ms, 100 customers 173 vs 273 ms
# with 2 threads), and HTTP workers already run side by side.
SMALL_BATCH_ROWS = 5_000


def threads_for(rows: int) -> int:
    """One thread for small batches, else every core this process may use."""
    return 1 if rows < SMALL_BATCH_ROWS else available_cores()


def predict_booster(
    booster: lgb.Booster,
    m: FloatArray,
    **kwargs: Any,  # Booster.predict's own keywords
) -> FloatArray:
    """``Booster.predict`` with the thread count chosen by batch size."""
    return cast(FloatArray, booster.predict(m, num_threads=threads_for(len(m)), **kwargs))


def sigmoid(raw: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-raw))


def booster_from_text(text: str) -> lgb.Booster:
    return lgb.Booster(model_str=text)
