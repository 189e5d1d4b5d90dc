"""Training snapshots built on a Dask cluster: ``retain train --dask``.

The driver cuts the canonical log into partitions of whole customers, in the order of their
ids (the order ``build_features`` sorts a snapshot in), and sends each partition to the
cluster once per log. Then, for every cutoff at once:

1. each worker builds its partition's features and labels at every cutoff
   (``features.builders``, ``training.dataset.labels``: the functions local training calls) and
   keeps them;
2. the driver draws the BTYD sample positions :func:`training.models.btyd_features.fit_baselines`
   draws on the whole snapshot (:func:`~training.models.btyd_features.baseline_sample`) and fetches
   only those customers' (x, t_x, T), in that order: at most ``baseline_sample`` rows a
   cutoff, whatever the customer count. The BG/NBD and Pareto/NBD fits run on the workers,
   one task a cutoff. The sample's rows and order are what make the fits bit-identical to
   a local fit; a fit on a unique-row summary with counts
   (``CountModel.fit(weights=...)``) is equal only within the optimiser's tolerance, which
   would move every BTYD feature and with it the boosters' text;
3. each worker appends the BTYD outputs and labels to its features
   (:func:`training.dataset.snapshot_builder.finish_snapshot`) and the driver gathers the snapshot
   parts, concatenated in id order: the rows, columns and values of the local snapshot.

The boosters then fit on the gathered matrix in the driver (``RetainModels.fit``), so with
the same snapshots their LightGBM texts are the local run's. Nothing is pickled by reference
to the driver's memory: tasks name importable functions and carry frames and arrays as
bytes, so any ``dask worker`` with retain installed can run them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from features.builders import build_features
from training.dataset.labels import build_labels
from training.dataset.snapshot_builder import SnapshotSpec, finish_snapshot
from training.models.btyd_features import baseline_sample, btyd_inputs, fit_baseline_rows

if TYPE_CHECKING:
    from distributed import Client

FloatArray = NDArray[np.float64]
Inputs = list[tuple[pd.DataFrame, pd.DataFrame | None]]  # per cutoff: features, labels


def customer_partitions(log: pd.DataFrame, n_parts: int) -> list[pd.DataFrame]:
    """The canonical log as ``n_parts`` logs of whole customers, in customer-id order.

    Partition ``p`` holds the customers whose id ranks in the ``p``-th share of the sorted
    ids, with their rows in canonical order; unused categories are dropped, so a partition
    carries only its own customers' ids.
    """
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    ids = log["customer_id"]
    cats = ids.cat.categories
    if len(cats) == 0:
        return [log]
    order = np.argsort(np.asarray(cats.astype(str), dtype=object), kind="stable")
    rank = np.empty(len(cats), dtype=np.int64)
    rank[order] = np.arange(len(cats))
    part_of_row = rank[np.asarray(ids.cat.codes)] * n_parts // len(cats)
    rows = np.argsort(part_of_row, kind="stable")
    bounds = np.searchsorted(part_of_row[rows], np.arange(n_parts + 1))
    parts = []
    for p in range(n_parts):
        if bounds[p] == bounds[p + 1]:
            continue
        part = log.iloc[rows[bounds[p] : bounds[p + 1]]]
        parts.append(part.assign(customer_id=part["customer_id"].cat.remove_unused_categories()))
    return parts


# ---- tasks: module-level functions a worker imports ------------------------------------


def partition_inputs(
    part: pd.DataFrame, cutoffs: Sequence[pd.Timestamp], spec: SnapshotSpec, labels: bool
) -> Inputs:
    """Features (and labels) of one partition at every cutoff: stays on the worker."""
    out: Inputs = []
    for cutoff in cutoffs:
        feats = build_features(part, cutoff, spec.feature_config)
        lab = None
        if labels:
            lab = build_labels(part, cutoff, spec.label_horizon, include_365d=spec.include_365d)
        out.append((feats, lab))
    return out


def partition_sizes(inputs: Inputs) -> list[int]:
    """Customers of the partition at each cutoff."""
    return [len(feats) for feats, _ in inputs]


def partition_rfm(
    inputs: Inputs, positions: Sequence[NDArray[np.intp] | None]
) -> list[tuple[FloatArray, FloatArray, FloatArray]]:
    """Per cutoff, the BTYD (x, t_x, T) of the customers at ``positions`` (None: all)."""
    out = []
    for (feats, _), pick in zip(inputs, positions, strict=True):
        x, tx, age = btyd_inputs(feats)
        out.append((x, tx, age) if pick is None else (x[pick], tx[pick], age[pick]))
    return out


def partition_snapshots(
    inputs: Inputs,
    cutoffs: Sequence[pd.Timestamp],
    states: Sequence[dict[str, Any] | None],
    spec: SnapshotSpec,
) -> list[pd.DataFrame]:
    """The partition's share of every snapshot: features, BTYD outputs, labels, cutoff."""
    return [
        finish_snapshot(feats, labels, cutoff, state, spec)
        for (feats, labels), cutoff, state in zip(inputs, cutoffs, states, strict=True)
        if labels is not None
    ]


# ---- the driver ------------------------------------------------------------------------


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Partition frames in id order; empty ones left out (their dtypes may be generic)."""
    kept = [f for f in frames if len(f)] or list(frames[:1])
    return kept[0] if len(kept) == 1 else pd.concat(kept)


class ClusterSnapshots:
    """A :class:`training.dataset.snapshot_builder.SnapshotBuilder` on a Dask ``client``.

    ``n_parts`` customer partitions (default: two per worker, so a slow worker is not the
    whole job's tail). The partitions of the last log are kept on the cluster, so the
    backtest fit and the production fit of one ``retain train`` send the log once.
    """

    def __init__(self, client: Client, n_parts: int | None = None) -> None:
        self.client = client
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        self.n_parts = n_parts if n_parts is not None else 2 * workers
        self._log: pd.DataFrame | None = None
        self._parts: list[Any] = []

    def _partitions(self, log: pd.DataFrame) -> list[Any]:
        if self._log is not log:
            self._parts = []  # drop the previous log's partitions first
            self._parts = self.client.scatter(customer_partitions(log, self.n_parts), hash=False)
            self._log = log
        return self._parts

    def _inputs(
        self, log: pd.DataFrame, cutoffs: Sequence[pd.Timestamp], spec: SnapshotSpec, labels: bool
    ) -> list[Any]:
        submit = self.client.submit
        return [
            submit(partition_inputs, part, list(cutoffs), spec, labels, pure=False)
            for part in self._partitions(log)
        ]

    def _states(self, inputs: list[Any], n_cutoffs: int, spec: SnapshotSpec) -> list[Any]:
        """Per cutoff, a future of the ``fit_baselines`` state on the whole snapshot."""
        client = self.client
        sizes = np.array(client.gather([client.submit(partition_sizes, f) for f in inputs]))
        sizes = sizes.reshape(len(inputs), n_cutoffs)
        offsets = np.vstack([np.zeros((1, n_cutoffs), np.int64), np.cumsum(sizes, axis=0)])
        picks = [
            baseline_sample(int(offsets[-1, k]), spec.baseline_sample, spec.seed)
            for k in range(n_cutoffs)
        ]
        owner = [
            None if pick is None else np.searchsorted(offsets[1:, k], pick, side="right")
            for k, pick in enumerate(picks)
        ]
        requests = []
        for p, f in enumerate(inputs):
            positions = [
                None if pick is None else pick[who == p] - offsets[p, k]
                for k, (pick, who) in enumerate(zip(picks, owner, strict=True))
            ]
            requests.append(client.submit(partition_rfm, f, positions, pure=False))
        rows = client.gather(requests)
        states = []
        for k, (pick, who) in enumerate(zip(picks, owner, strict=True)):
            columns = []
            for j in range(3):
                if pick is None:
                    columns.append(np.concatenate([r[k][j] for r in rows]))
                    continue
                col = np.empty(len(pick))
                for p, r in enumerate(rows):
                    col[who == p] = r[k][j]
                columns.append(col)
            states.append(client.submit(fit_baseline_rows, *columns, spec.seed, pure=False))
        return states

    def snapshots(
        self, log: pd.DataFrame, cutoffs: Sequence[pd.Timestamp], spec: SnapshotSpec
    ) -> Iterator[tuple[pd.DataFrame, dict[str, str]]]:
        cutoffs = list(cutoffs)
        inputs = self._inputs(log, cutoffs, spec, labels=True)
        states: list[Any] = [None] * len(cutoffs)
        if spec.use_baselines:
            states = self._states(inputs, len(cutoffs), spec)
        client = self.client
        parts = client.gather(
            [client.submit(partition_snapshots, f, cutoffs, states, spec) for f in inputs]
        )
        fitted = client.gather(states) if spec.use_baselines else states
        del inputs  # the workers drop the partitions' features
        for k in range(len(cutoffs)):
            degenerate = fitted[k]["degenerate"] if fitted[k] is not None else {}
            yield _concat([frames[k] for frames in parts]), degenerate

    def baselines(
        self, log: pd.DataFrame, cutoff: pd.Timestamp, spec: SnapshotSpec
    ) -> dict[str, Any]:
        inputs = self._inputs(log, [cutoff], spec, labels=False)
        state: dict[str, Any] = self.client.gather(self._states(inputs, 1, spec)[0])
        return state
