"""Where ``RetainModels`` builds its training snapshots: here, or on a cluster.

A training snapshot at cutoff ``c`` is every customer's features at ``c``, the BG/NBD and
Pareto/NBD outputs fitted on that snapshot's history, and the labels over ``[c, c + H)``
(``training.dataset.labels``). :class:`LocalSnapshots` builds them in this process, one cutoff at a
time; ``training.dataset.cluster_snapshots.ClusterSnapshots`` builds the same frames on Dask workers
from customer partitions. Both follow one :class:`SnapshotSpec` and finish a snapshot with
:func:`finish_snapshot`, so the boosters see the same rows either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from features.builders import FeatureConfig, build_features
from training.dataset.labels import build_labels, join_labels
from training.models.btyd_features import baseline_features, fit_baselines


@dataclass(frozen=True)
class SnapshotSpec:
    """What one set of training snapshots is made of (``RetainModels`` fills it in)."""

    feature_config: FeatureConfig
    label_horizon: int  # the labels' window: the models' horizon, or 365 for 365-day spend
    include_365d: bool
    baseline_horizon: int  # the horizon of the BTYD outputs: always the models' horizon
    use_baselines: bool
    baseline_sample: int
    seed: int


class SnapshotBuilder(Protocol):
    """Builds training snapshots and the BTYD fits at a cutoff for ``RetainModels.fit``."""

    def snapshots(
        self, log: pd.DataFrame, cutoffs: Sequence[pd.Timestamp], spec: SnapshotSpec
    ) -> Iterator[tuple[pd.DataFrame, dict[str, str]]]:
        """Per cutoff, oldest first: the snapshot frame and its degenerate BTYD fits."""
        ...

    def baselines(
        self, log: pd.DataFrame, cutoff: pd.Timestamp, spec: SnapshotSpec
    ) -> dict[str, Any]:
        """``fit_baselines`` state of the customers known at ``cutoff``."""
        ...


def finish_snapshot(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    cutoff: pd.Timestamp,
    state: dict[str, Any] | None,
    spec: SnapshotSpec,
) -> pd.DataFrame:
    """Features, then the BTYD outputs of ``state`` (when used), then labels and cutoff."""
    if state is not None:
        features = features.join(baseline_features(features, state, spec.baseline_horizon))
    return join_labels(features, labels, cutoff)


class LocalSnapshots:
    """Snapshots built in this process, one cutoff at a time (the default)."""

    def snapshots(
        self, log: pd.DataFrame, cutoffs: Sequence[pd.Timestamp], spec: SnapshotSpec
    ) -> Iterator[tuple[pd.DataFrame, dict[str, str]]]:
        for cutoff in cutoffs:
            feats = build_features(log, cutoff, spec.feature_config)
            state = None
            if spec.use_baselines:
                state = fit_baselines(feats, spec.baseline_sample, spec.seed)
            labels = build_labels(log, cutoff, spec.label_horizon, include_365d=spec.include_365d)
            degenerate = state["degenerate"] if state is not None else {}
            yield finish_snapshot(feats, labels, cutoff, state, spec), degenerate

    def baselines(
        self, log: pd.DataFrame, cutoff: pd.Timestamp, spec: SnapshotSpec
    ) -> dict[str, Any]:
        features = build_features(log, cutoff, spec.feature_config)
        return fit_baselines(features, spec.baseline_sample, spec.seed)
