"""The feature snapshot behind ``/score/ids``: per-customer features the batch job wrote.

A request names customers by id; their features are looked up here and scored at the
snapshot's ``as_of`` of each customer, with no history sent.

A snapshot is checked against the model when it is read (every column the model reads,
``as_of``, readable Parquet), so a broken one is refused at start-up and at reload instead
of failing every request. A re-read that fails keeps the last good snapshot in service and
records why, for ``/readyz`` and ``/admin/reload-snapshot`` to report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.atomic import pinned
from features.builders import FeatureBlock
from features.retention.segments import REQUIRED_FEATURES
from serving.http.responses import score_records, unscored_record
from serving.http.schemas import ModelInfo, SnapshotInfo
from serving.http.settings import SERVICE_LOGGER

if TYPE_CHECKING:
    from serving.scorer import ScoringModel

logger = logging.getLogger(SERVICE_LOGGER)

Signature = tuple[tuple[str, int, int], ...]


class SnapshotError(ValueError):
    """A feature snapshot that cannot be scored from; one line naming the file and why."""


def model_columns(model: ScoringModel) -> tuple[str, ...]:
    """The snapshot columns a :class:`~serving.scorer.ScoringModel` reads to score a row.

    The boosters' and the uplift model's fit-time features, the segment rule's inputs and
    ``recency_days`` (the last purchase date of an offer).
    """
    names = list(model.artifact.models.feature_names_in_)
    if model.artifact.uplift is not None:
        names += list(model.artifact.uplift.feature_names_in_)
    names += [*REQUIRED_FEATURES, "recency_days"]
    return tuple(dict.fromkeys(names))


def _snapshot_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise FileNotFoundError(f"feature snapshot directory {path} has no .parquet files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"feature snapshot {path} does not exist")
    return [path]


def snapshot_signature(path: Path) -> Signature:
    """File names, sizes and mtimes: changes when the batch job rewrites the snapshot."""
    return tuple(
        (str(p), st.st_size, st.st_mtime_ns) for p in _snapshot_files(path) if (st := p.stat())
    )


@dataclass(frozen=True)
class FeatureSnapshot:
    """Per-customer features written by the batch job, as the block the scorer reads.

    ``as_of`` is indexed by ``customer_id`` in the block's row order, so a request only
    looks rows up and slices the block (converted from Parquet once, at load). A customer
    present in several files keeps its row with the latest ``as_of``.

    ``required`` are the columns every re-read must hold (:func:`model_columns`);
    ``failure`` says why the last re-read of ``failed_signature`` was refused while this
    snapshot stays in service.
    """

    path: Path | None
    features: FeatureBlock
    as_of: pd.Series
    signature: Signature = ()
    required: tuple[str, ...] = ()
    failure: str | None = None
    failed_signature: Signature = ()

    @classmethod
    def empty(cls) -> FeatureSnapshot:
        return cls(
            None,
            FeatureBlock(np.empty(0, dtype=object), np.empty((0, 0)), ()),
            pd.Series(dtype="datetime64[us, UTC]", index=pd.Index([], dtype="str")),
        )

    @classmethod
    def load(cls, path: str | Path, required: Sequence[str] = ()) -> FeatureSnapshot:
        """Read and check the snapshot; :class:`SnapshotError` in one line when it is unusable."""
        root = Path(path)
        try:
            return cls._read(root, tuple(required))
        except SnapshotError:
            raise
        except FileNotFoundError as exc:  # ours name the path already
            raise SnapshotError(str(exc)) from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:  # pyarrow's are ValueError
            text = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {text[0] if text else ''}"
            raise SnapshotError(f"feature snapshot {root} cannot be read: {reason}") from exc

    @classmethod
    def _read(cls, root: Path, required: tuple[str, ...]) -> FeatureSnapshot:
        signature = snapshot_signature(root)
        # files of one version, even if `retain score` switches the link meanwhile
        frames = [pd.read_parquet(p) for p in _snapshot_files(pinned(root))]
        frame = pd.concat(frames) if len(frames) > 1 else frames[0]
        if "customer_id" not in frame.columns:
            if frame.index.name != "customer_id":
                raise SnapshotError(f"feature snapshot {root}: no customer_id column or index")
            frame = frame.reset_index()
        if "as_of" not in frame.columns:
            raise SnapshotError(f"feature snapshot {root}: no as_of column")
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise SnapshotError(
                f"feature snapshot {root}: lacks the model's column(s) {', '.join(missing)}"
            )
        as_of = pd.to_datetime(frame["as_of"], utc=True)
        if as_of.isna().any():
            raise SnapshotError(f"feature snapshot {root}: {int(as_of.isna().sum())} empty as_of")
        frame = frame.assign(as_of=as_of, customer_id=frame["customer_id"].astype("str"))
        frame = frame.sort_values("as_of", kind="stable").drop_duplicates(
            "customer_id", keep="last"
        )
        frame = frame.set_index("customer_id")
        block = FeatureBlock.from_frame(frame.drop(columns=["as_of"]))
        return cls(root, block, frame["as_of"], signature, required)

    def refreshed(self) -> FeatureSnapshot:
        """This snapshot, or its files re-read when the batch job rewrote them.

        Every worker calls it per ``/score/ids`` request, so all of them pick up a new
        snapshot, not only the one that got ``/admin/reload-snapshot``. Files that fail to
        load are tried once per change: until they change again this snapshot stays in
        service, with the reason in ``failure``.
        """
        if self.path is None:
            return self
        try:
            signature = snapshot_signature(self.path)
        except (FileNotFoundError, SnapshotError):
            return self  # between a rename and a link switch; the next request looks again
        if signature == self.signature:
            return self if self.failure is None else replace(self, failure=None)
        if signature == self.failed_signature:
            return self
        return self.reloaded(signature)

    def reloaded(self, signature: Signature | None = None) -> FeatureSnapshot:
        """The files re-read now, or this snapshot with ``failure`` set when they are unusable."""
        assert self.path is not None
        try:
            return FeatureSnapshot.load(self.path, self.required)
        except SnapshotError as exc:
            logger.error("%s; still serving the snapshot loaded before", exc)
            if signature is None:
                try:
                    signature = snapshot_signature(self.path)
                except (OSError, SnapshotError):
                    signature = ()
            return replace(self, failure=str(exc), failed_signature=signature)

    def state(self) -> dict[str, Any]:
        """What ``/readyz`` says of the snapshot: none, ok, or stale and why."""
        if self.path is None:
            return {"snapshot_state": "none"}
        if self.failure is None:
            return {"snapshot_state": "ok"}
        return {"snapshot_state": "stale", "snapshot_error": f"last reload failed: {self.failure}"}

    def info(self, model: ModelInfo) -> SnapshotInfo:
        has = len(self.as_of) > 0
        return SnapshotInfo(
            model=model,
            path=None if self.path is None else str(self.path),
            customers=len(self.features),
            as_of_min=self.as_of.min().to_pydatetime() if has else None,
            as_of_max=self.as_of.max().to_pydatetime() if has else None,
        )


def score_ids(
    model: ScoringModel,
    snapshot: FeatureSnapshot,
    customer_ids: Sequence[str],
    campaign: str | None,
) -> list[dict[str, Any]]:
    """Score ids from the feature snapshot: one scorer call per snapshot ``as_of``."""
    from serving.scorer import score_block

    unique = pd.Index(list(dict.fromkeys(customer_ids)), dtype="str")
    rows: dict[str, dict[str, Any]] = {}
    positions = snapshot.as_of.index.get_indexer(unique)
    positions = positions[positions >= 0]
    if len(positions):
        stamps = snapshot.as_of.iloc[positions]
        for stamp in np.unique(stamps.to_numpy()):
            picked = positions[(stamps == stamp).to_numpy()]
            block = snapshot.features.take(picked)
            rows.update(score_records(score_block(model, block, stamp, campaign=campaign)))
    out = []
    for cid in customer_ids:
        if cid in rows:
            out.append(rows[cid])
        elif cid in snapshot.as_of.index:
            out.append(unscored_record(cid, "no_purchases_before_as_of", snapshot.as_of.loc[cid]))
        else:
            out.append(unscored_record(cid, "unknown_customer_id", None))
    return out
