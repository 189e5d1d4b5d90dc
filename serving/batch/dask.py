"""Batch scoring on Dask: customer chunks scored on a cluster, written by the driver.

The driver loads the log once (the loader's report must describe the whole file), cuts it
into the same customer chunks as the pandas path (:func:`serving.batch.chunks.customer_chunks`,
:func:`serving.batch.chunks.chunk_frame`) and hands them to the cluster as the partitions of a
Dask DataFrame; ``map_partitions`` runs :func:`serving.batch.chunks.score_chunk`, i.e. the
shared scorer, on each. So the rows are the pandas path's rows, bit for bit. Partitions are
sent in waves of a few per worker, so neither the scheduler nor the workers ever hold the
whole log; results come back to the driver, which writes them (staging, manifest, atomic
publish and resume are the pandas path's).

The model travels as the artifact's files (text, JSON, YAML) and each partition loads it
with :func:`training.artifact.load_artifact`, hash checks included: no model object is ever
pickled, and a remote worker needs no shared file system.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from serving.batch.chunks import (
    Chunk,
    ChunkResult,
    ChunkRunner,
    chunk_frame,
    score_chunk,
)
from serving.batch.publish import FEATURE_SCHEMA
from serving.scorer import SCORE_COLUMNS, ScoringModel

if TYPE_CHECKING:
    from distributed import Client

FEATURE_PREFIX = "feature__"
DEFAULT_WAVE_PER_WORKER = 2


@dataclass(frozen=True)
class ArtifactFiles:
    """An artifact directory as (relative path, bytes) pairs, to ship to workers."""

    files: tuple[tuple[str, bytes], ...]
    digest: str = ""

    @classmethod
    def read(cls, directory: str | Path) -> ArtifactFiles:
        root = Path(directory)
        files = sorted(
            (p.relative_to(root).as_posix(), p.read_bytes())
            for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()
        )
        sha = hashlib.sha256()
        for rel, data in files:
            sha.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        return cls(tuple(files), sha.hexdigest())

    @contextlib.contextmanager
    def materialized(self) -> Iterator[Path]:
        """The files written to a temporary directory (deleted afterwards)."""
        with tempfile.TemporaryDirectory(prefix="retain-worker-artifact-") as tmp:
            root = Path(tmp) / "artifact"
            for rel, data in self.files:
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            yield root

    def load(self) -> ScoringModel:
        with self.materialized() as root:
            return ScoringModel.load(root)

    def cached(self) -> ScoringModel:
        """The loaded model, once per worker process and artifact.

        Loading compiles the boosters (seconds), more than scoring a partition costs, so each
        worker loads once. The key is the content digest, so a different artifact is never
        served stale.
        """
        with _CACHE_LOCK:
            model = _LOADED.get(self.digest) if self.digest else None
            if model is None:
                model = self.load()
                _LOADED.clear()  # one artifact per worker at a time: bounded memory
                if self.digest:
                    _LOADED[self.digest] = model
            return model


_LOADED: dict[str, ScoringModel] = {}
_CACHE_LOCK = threading.Lock()


def _score_meta(with_features: bool) -> pd.DataFrame:
    """Empty frame with the partition function's columns (dtypes are not relied upon)."""
    columns = list(SCORE_COLUMNS)
    if with_features:
        columns += [FEATURE_PREFIX + f.name for f in FEATURE_SCHEMA if f.name != "as_of"]
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def score_partition(
    log: pd.DataFrame,
    artifact: ArtifactFiles,
    as_of: pd.Timestamp,
    campaign: str | None,
    with_features: bool,
) -> pd.DataFrame:
    """One customer partition scored by the shared scorer; features joined on, prefixed."""
    model = artifact.cached()
    scores, features = score_chunk(
        model, log, as_of, campaign=campaign, with_features=with_features
    )
    if features is None:
        return scores
    wide = features.reset_index().add_prefix(FEATURE_PREFIX)
    return pd.concat([scores, wide], axis=1)


def _split(frame: pd.DataFrame, with_features: bool) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    scores = frame[list(SCORE_COLUMNS)]
    if not with_features:
        return scores, None
    cols = [c for c in frame.columns if c.startswith(FEATURE_PREFIX)]
    features = frame[cols].rename(columns=lambda c: c.removeprefix(FEATURE_PREFIX))
    return scores, features.set_index("customer_id")


def dask_runner(
    client: Client,
    artifact_dir: str | Path,
    log: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    campaign: str | None,
    with_features: bool,
    wave_per_worker: int = DEFAULT_WAVE_PER_WORKER,
) -> ChunkRunner:
    """A :data:`serving.batch.chunks.ChunkRunner` that scores chunks on a Dask cluster."""
    import dask.dataframe as dd

    artifact = client.scatter(ArtifactFiles.read(artifact_dir), broadcast=True)
    meta = _score_meta(with_features)
    empty = chunk_frame(log, Chunk(0, 0, 0, 0, 0))
    n_workers = max(len(client.scheduler_info().get("workers", {})), 1)
    wave = max(n_workers * wave_per_worker, 1)

    def submit(batch: list[Chunk]) -> list[Any]:
        parts = [client.scatter(chunk_frame(log, c)) for c in batch]
        frames = dd.from_delayed(parts, meta=empty, verify_meta=False)
        scored = frames.map_partitions(
            score_partition,
            artifact,
            as_of,
            campaign,
            with_features,
            meta=meta,
            enforce_metadata=False,
        )
        return list(client.compute(scored.to_delayed()))

    def run(chunks: Sequence[Chunk]) -> Iterator[ChunkResult]:
        # two waves in flight: the next one computes while this one is written
        in_flight: deque[tuple[list[Chunk], list[Any]]] = deque()
        for start in range(0, len(chunks), wave):
            batch = list(chunks[start : start + wave])
            in_flight.append((batch, submit(batch)))
            if len(in_flight) > 1:
                yield from collect(*in_flight.popleft())
        while in_flight:
            yield from collect(*in_flight.popleft())

    def collect(batch: list[Chunk], futures: list[Any]) -> Iterator[ChunkResult]:
        for chunk, future in zip(batch, futures, strict=True):
            scores, features = _split(future.result(), with_features)
            future.release()
            yield ChunkResult(chunk, scores.reset_index(drop=True), features)

    return run
