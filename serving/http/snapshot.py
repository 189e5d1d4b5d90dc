"""The feature snapshot behind ``/score/ids``: per-customer features the batch job wrote.

A request names customers by id; their features are looked up here and scored at the
snapshot's ``as_of`` of each customer, with no history sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.atomic import pinned
from features.builders import FeatureBlock
from serving.http.responses import score_records, unscored_record
from serving.http.schemas import ModelInfo, SnapshotInfo


def _snapshot_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise FileNotFoundError(f"feature snapshot directory {path} has no .parquet files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"feature snapshot {path} does not exist")
    return [path]


def snapshot_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
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
    """

    path: Path | None
    features: FeatureBlock
    as_of: pd.Series
    signature: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def empty(cls) -> FeatureSnapshot:
        return cls(
            None,
            FeatureBlock(np.empty(0, dtype=object), np.empty((0, 0)), ()),
            pd.Series(dtype="datetime64[us, UTC]", index=pd.Index([], dtype="str")),
        )

    @classmethod
    def load(cls, path: str | Path) -> FeatureSnapshot:
        root = Path(path)
        signature = snapshot_signature(root)
        # files of one version, even if `retain score` switches the link meanwhile
        frames = [pd.read_parquet(p) for p in _snapshot_files(pinned(root))]
        frame = pd.concat(frames) if len(frames) > 1 else frames[0]
        if "customer_id" not in frame.columns:
            if frame.index.name != "customer_id":
                raise ValueError(f"feature snapshot {root}: no customer_id column or index")
            frame = frame.reset_index()
        if "as_of" not in frame.columns:
            raise ValueError(f"feature snapshot {root}: no as_of column")
        as_of = pd.to_datetime(frame["as_of"], utc=True)
        if as_of.isna().any():
            raise ValueError(f"feature snapshot {root}: {int(as_of.isna().sum())} empty as_of")
        frame = frame.assign(as_of=as_of, customer_id=frame["customer_id"].astype("str"))
        frame = frame.sort_values("as_of", kind="stable").drop_duplicates(
            "customer_id", keep="last"
        )
        frame = frame.set_index("customer_id")
        block = FeatureBlock.from_frame(frame.drop(columns=["as_of"]))
        return cls(root, block, frame["as_of"], signature)

    def refreshed(self) -> FeatureSnapshot:
        """This snapshot, or its files re-read when the batch job rewrote them.

        Every worker calls it per ``/score/ids`` request, so all of them pick up a new
        snapshot, not only the one that got ``/admin/reload-snapshot``.
        """
        if self.path is None:
            return self
        try:
            signature = snapshot_signature(self.path)
        except FileNotFoundError:
            return self
        return self if signature == self.signature else FeatureSnapshot.load(self.path)

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
    model: Any, snapshot: FeatureSnapshot, customer_ids: Sequence[str], campaign: str | None
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
