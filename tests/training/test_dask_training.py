"""Churn training on a Dask LocalCluster of worker processes (LightGBM's Dask sockets)."""

from __future__ import annotations

import distributed
import pandas as pd
import pytest

from features.builders import build_features
from features.purchase_log import canonicalize
from features.synth import generate_purchase_log
from serving.batch.chunks import chunk_frame, customer_chunks
from training.dask_training import train_churn_dask
from training.labels import build_labels
from training.metrics import roc_auc


@pytest.mark.slow
def test_dask_lightgbm_churn_model_ranks_a_later_holdout() -> None:
    raw = generate_purchase_log(1500, seed=4, start="2022-01-01", end="2024-12-31").log
    log = canonicalize(raw).log
    horizon = 90
    cutoffs = ["2023-03-01", "2023-06-01", "2023-09-01", "2023-12-01"]
    partitions = (chunk_frame(log, chunk) for chunk in customer_chunks(log, 400))
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        model = train_churn_dask(client, partitions, cutoffs, horizon, n_estimators=60)
    assert model.n_train_rows > 2000
    holdout_at = pd.Timestamp("2024-06-01", tz="UTC")  # after every training label window
    features = build_features(log, holdout_at)
    labels = build_labels(log, holdout_at, horizon).reindex(features.index.astype(str))
    p = model.predict_proba(features)
    assert ((p > 0) & (p < 1)).all()
    churn = labels["churn"].to_numpy()
    assert roc_auc(churn, p) > 0.6
    # predicted churn is on the observed scale, not just a ranking
    assert abs(p.mean() - churn.mean()) < 0.15


def test_no_partitions_is_refused_before_the_cluster_is_used() -> None:
    with pytest.raises(ValueError, match="no partitions"):
        train_churn_dask(None, iter(()), ["2023-03-01"], 90)
