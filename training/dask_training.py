"""LightGBM churn training on Dask, for training sets that do not fit one machine.

:func:`train_churn_dask` builds stacked snapshots (features at a cutoff, churn label over the
following horizon) per customer partition on the workers and fits
``lightgbm.DaskLGBMClassifier`` on them. The caller cuts the canonical log into partitions of
whole customers (the batch path's customer chunks, ``serving.batch``), so ``training`` never
imports ``serving``. The fitted booster is returned as LightGBM text
(``booster_.model_to_string()``), the format ``training.bundle`` stores. LightGBM's Dask
training opens sockets between worker processes, so the cluster must run worker processes
(``LocalCluster(processes=True)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from distributed import Client


def training_partition(
    log: pd.DataFrame, cutoffs: Sequence[pd.Timestamp], horizon_days: int
) -> pd.DataFrame:
    """Stacked snapshots (features + churn label + cutoff) of one customer partition."""
    from features.catalog import FEATURE_COLUMNS
    from training.labels import build_training_set

    table = build_training_set(log, list(cutoffs), horizon_days)
    out = table[list(FEATURE_COLUMNS)].astype(np.float64)
    out["churn"] = table["churn"].astype(np.int64).to_numpy()
    out["cutoff_day"] = (
        (table["cutoff"] - pd.Timestamp("1970-01-01", tz="UTC")).dt.days.astype(np.int64)
    ).to_numpy()
    return out.reset_index(drop=True)


def _training_meta() -> pd.DataFrame:
    from features.catalog import FEATURE_COLUMNS

    meta = pd.DataFrame({c: pd.Series(dtype="float64") for c in FEATURE_COLUMNS})
    meta["churn"] = pd.Series(dtype="int64")
    meta["cutoff_day"] = pd.Series(dtype="int64")
    return meta


@dataclass(frozen=True)
class DaskChurnModel:
    """A churn booster trained on Dask, kept as LightGBM text (never pickled)."""

    model_text: str
    feature_names: tuple[str, ...]
    n_train_rows: int

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """P(churn) for a ``build_features`` frame, on this machine."""
        import lightgbm as lgb

        booster = lgb.Booster(model_str=self.model_text)
        x = features.loc[:, list(self.feature_names)].to_numpy(dtype=np.float64)
        return np.asarray(booster.predict(x), dtype=np.float64)


def train_churn_dask(
    client: Client,
    partitions: Iterable[pd.DataFrame],
    cutoffs: Sequence[pd.Timestamp | str],
    horizon_days: int,
    *,
    n_estimators: int = 200,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> DaskChurnModel:
    """Fit ``lightgbm.DaskLGBMClassifier`` for churn on snapshots built on the workers.

    ``partitions`` are canonical logs of whole customers (each customer in one partition);
    each is scattered to the cluster as soon as it is produced (a generator keeps one at a
    time on the driver) and becomes its own training partition (features at every cutoff,
    churn over ``[cutoff, cutoff + horizon)``), so the stacked training set is only ever
    materialised in pieces on the workers. ``cutoffs`` must leave a full label window inside
    the log (see ``training.labels.snapshot_cutoffs``).
    """
    import dask.dataframe as dd
    import lightgbm as lgb

    from features.catalog import FEATURE_COLUMNS
    from features.utc import to_utc_timestamp

    cuts = [to_utc_timestamp(c) for c in cutoffs]
    parts: list[Any] = []
    empty: pd.DataFrame | None = None
    for frame in partitions:
        if empty is None:
            empty = frame.iloc[:0]
        parts.append(client.scatter(frame))
    if empty is None:
        raise ValueError("no partitions to train on")
    meta = _training_meta()
    frames = dd.from_delayed(parts, meta=empty, verify_meta=False)
    table = frames.map_partitions(training_partition, cuts, horizon_days, meta=meta)
    table = table.persist()
    names = list(FEATURE_COLUMNS)
    x = table[names].to_dask_array(lengths=True)
    y = table["churn"].to_dask_array(lengths=True)
    model = lgb.DaskLGBMClassifier(
        client=client,
        n_estimators=n_estimators,
        random_state=seed,
        verbose=-1,
        **{"learning_rate": 0.08, "num_leaves": 31, "min_child_samples": 50, **(params or {})},
    )
    with warnings.catch_warnings():
        # the sklearn wrapper always passes n_jobs; lightgbm.dask sets threads per worker
        warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored", UserWarning)
        model.fit(x, y)
    n_rows = int(y.shape[0])
    text = model.booster_.model_to_string()
    del table, parts
    return DaskChurnModel(model_text=text, feature_names=tuple(names), n_train_rows=n_rows)
