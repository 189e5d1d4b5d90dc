"""The versioned, atomic publication of a batch run, and the Parquet bytes it publishes.

Output layout (``DIR``; ``--features-out`` is published the same way)::

    DIR -> .DIR.retain/versions/000007     a link to the current version
    DIR/part-00000.parquet ...   one file per customer chunk, columns SCORE_COLUMNS
    DIR/_summary.json            the run summary (rows in, drops by reason, timings, files)
    DIR/_SUCCESS                 the output is complete
    DIR/_manifest.json           every file retain wrote there, with its sha256

Nothing half-done is ever visible, and nothing retain did not write is ever removed
(:class:`features.atomic.VersionedDir`): chunks are written into
``.DIR.retain/staging-<runid>/`` (beside ``DIR``, a dot-directory that Parquet dataset
readers skip) by :class:`Staging`, with a manifest updated after each chunk; a finished run
hard-links them into a new version directory with the summary and ``_SUCCESS``, then switches
the ``DIR`` link to it in one rename. A kill at any moment leaves ``DIR`` on the old version or
the new one.

The run id is a hash of the inputs (:class:`BatchJob`), so ``--resume`` finds the staging
directory of an interrupted run with the same inputs and continues after its last finished
chunk. Parquet files are written deterministically (fixed schema and row order, no
wall-clock metadata), so a rerun is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.atomic import MANIFEST_NAME as VERSION_MANIFEST
from features.atomic import pinned, sha256_file, write_atomic, write_text_atomic
from features.builders import COUNT_COLUMNS
from features.catalog import FEATURE_COLUMNS
from serving.batch.chunks import BatchError, ChunkResult
from serving.scorer import SCORE_COLUMNS

STAGING_PREFIX = "staging-"
MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "_summary.json"
SUCCESS_NAME = "_SUCCESS"
FEATURES_DIR = "features"
OUTPUT_FORMAT = 1
PARQUET_COMPRESSION = "zstd"
PAUSE_ENV = "RETAIN_TEST_PAUSE_AT"
"""Tests only: ``<output>:<step>`` (e.g. ``scores:link-made``) makes a run print
``paused at ...`` to stderr and wait there for a line on stdin, so a test can kill it (or let
it go on) at that point of publish. Steps: see :meth:`features.atomic.VersionedDir.publish`."""

_UTC = "UTC"
_TEXT_COLUMNS = (
    "customer_id",
    "campaign",
    "risk_band",
    "segment",
    "reason_1",
    "reason_2",
    "reason_3",
    "offer",
    "offer_channel",
    "offer_reason",
    "offer_rule",
    "suppressed_reason",
)
_BOOL_COLUMNS = ("holdout", "suppressed")
_NULLABLE_FLOATS = ("uplift",)  # null when the artifact has no uplift model
_TIME_UNITS = {"as_of": "us", "expected_next_purchase_date": "ns", "offer_send_date": "us"}


def _score_field(name: str) -> pa.Field:
    if name in _TEXT_COLUMNS:
        return pa.field(name, pa.string())
    if name in _BOOL_COLUMNS:
        return pa.field(name, pa.bool_())
    if name in _TIME_UNITS:
        return pa.field(name, pa.timestamp(_TIME_UNITS[name], tz=_UTC))
    return pa.field(name, pa.float64())


SCORE_SCHEMA: pa.Schema = pa.schema([_score_field(c) for c in SCORE_COLUMNS])
"""Fixed Arrow schema of every score part, so empty or all-missing chunks look the same."""

FEATURE_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        *(pa.field(c, pa.int64() if c in COUNT_COLUMNS else pa.float64()) for c in FEATURE_COLUMNS),
        pa.field("as_of", pa.timestamp("us", tz=_UTC)),
    ]
)
"""The feature snapshot that ``/score/ids`` reads: customer_id, the features, as_of."""


def _arrow_column(values: pd.Series, typ: pa.DataType, name: str) -> pa.Array:
    if pa.types.is_timestamp(typ):
        # via int64: pa.array on a tz-aware Series goes through the deprecated Series.values
        utc = pd.to_datetime(values, utc=True).dt.tz_convert(None).dt.as_unit(typ.unit)
        raw = utc.to_numpy()
        return pa.array(raw.view("int64"), type=pa.int64(), mask=np.isnat(raw)).cast(typ)
    if pa.types.is_string(typ):
        text = values.astype("str")
        return pa.array(text.array).cast(typ)
    if pa.types.is_boolean(typ):
        if values.isna().any():
            raise BatchError(f"column {name!r} has {int(values.isna().sum())} missing flag(s)")
        return pa.array(values.to_numpy(dtype=bool), type=typ)
    kind = np.int64 if pa.types.is_integer(typ) else np.float64
    numbers = values.to_numpy(dtype=kind)
    if name in _NULLABLE_FLOATS:  # NaN there means "no value": null in Parquet
        return pa.array(numbers, type=typ, mask=np.isnan(numbers))
    return pa.array(numbers, type=typ)


def to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table of exactly ``schema`` (names the column that cannot fit)."""
    missing = [f.name for f in schema if f.name not in frame.columns]
    if missing:
        raise BatchError(f"frame lacks column(s) {missing} of the output schema")
    arrays = []
    for fld in schema:
        try:
            arrays.append(_arrow_column(frame[fld.name], fld.type, fld.name))
        except (ValueError, TypeError, pa.ArrowException) as exc:
            raise BatchError(f"column {fld.name!r} cannot be written as {fld.type}: {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=schema)


def scores_table(scores: pd.DataFrame) -> pa.Table:
    return to_table(scores, SCORE_SCHEMA)


def features_table(features: pd.DataFrame, as_of: pd.Timestamp) -> pa.Table:
    frame = features.reset_index()
    frame["customer_id"] = frame["customer_id"].astype("str")
    frame["as_of"] = pd.Series(as_of, index=frame.index, dtype=f"datetime64[us, {_UTC}]")
    return to_table(frame, FEATURE_SCHEMA)


def write_parquet(table: pa.Table, path: Path) -> str:
    """Write deterministically (same table, same bytes) and atomically; return the sha256."""
    write_atomic(
        path,
        lambda tmp: pq.write_table(
            table,
            tmp,
            compression=PARQUET_COMPRESSION,
            use_dictionary=True,
            write_statistics=True,
            row_group_size=1 << 20,
        ),
    )
    return sha256_file(path)


def json_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


@dataclass(frozen=True)
class BatchJob:
    """Everything that decides the output bytes; hashed into the run id."""

    as_of: pd.Timestamp
    chunk_customers: int
    campaign: str | None
    with_features: bool
    model_id: str
    data_id: str

    @property
    def run_id(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": OUTPUT_FORMAT,
            "as_of": self.as_of.isoformat(),
            "chunk_customers": self.chunk_customers,
            "campaign": self.campaign,
            "with_features": self.with_features,
            "model_id": self.model_id,
            "data_id": self.data_id,
        }


class Staging:
    """The hidden directory a run writes into, with its manifest of finished chunks."""

    def __init__(self, store: Path, job: BatchJob) -> None:
        self.job = job
        self.root = store / f"{STAGING_PREFIX}{job.run_id}"
        self.manifest_path = self.root / MANIFEST_NAME
        self.done: dict[int, dict[str, Any]] = {}

    def open(self, resume: bool) -> int:
        """Create (or, resuming, reload) the staging dir; return the number of chunks kept."""
        if self.root.exists() and not resume:
            shutil.rmtree(self.root)
        if resume and self.manifest_path.is_file():
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            if manifest.get("job") != self.job.to_dict():
                raise BatchError(f"{self.root} belongs to a different job; rerun without --resume")
            for key, entry in manifest.get("chunks", {}).items():
                if self._intact(entry):
                    self.done[int(key)] = entry
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / FEATURES_DIR).mkdir(exist_ok=True)
        self._save()
        return len(self.done)

    def _intact(self, entry: dict[str, Any]) -> bool:
        for rel, digest in entry.get("files", {}).items():
            path = self.root / rel
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True

    def _save(self) -> None:
        chunks = {str(k): v for k, v in sorted(self.done.items())}
        write_text_atomic(
            self.manifest_path, json_text({"job": self.job.to_dict(), "chunks": chunks})
        )

    def record(self, result: ChunkResult, as_of: pd.Timestamp) -> None:
        """Write the chunk's files, then mark it finished in the manifest (in that order)."""
        self.add(result.chunk.index, write_chunk(self.root, result, as_of))

    def add(self, index: int, entry: dict[str, Any]) -> None:
        """Mark a chunk whose files are already in staging (written by a worker) finished."""
        self.done[index] = entry
        self._save()


def write_chunk(root: Path, result: ChunkResult, as_of: pd.Timestamp) -> dict[str, Any]:
    """Write one chunk's parts under a staging ``root``; return its manifest entry.

    Runs wherever the chunk was scored (the driver, a thread, a Dask worker): the bytes and
    the entry are the same.
    """
    name = result.chunk.part_name
    files = {name: write_parquet(scores_table(result.scores), root / name)}
    if result.features is not None:
        rel = f"{FEATURES_DIR}/{name}"
        files[rel] = write_parquet(features_table(result.features, as_of), root / rel)
    offers = result.scores["offer"].astype("str").value_counts()
    return {
        "customers": len(result.scores),
        "rows": result.chunk.row_stop - result.chunk.row_start,
        "offers": {str(k): int(v) for k, v in offers.items()},
        "files": files,
    }


def pause_hook(output: str) -> Callable[[str], None]:
    """The :data:`PAUSE_ENV` test hook for one output (``scores`` or ``features``)."""
    wanted = os.environ.get(PAUSE_ENV, "")

    def pause(step: str) -> None:
        if wanted == f"{output}:{step}":
            print(f"paused at {wanted} (pid {os.getpid()})", file=sys.stderr, flush=True)
            sys.stdin.readline()

    return pause


def plain_output(directory: Path) -> dict[str, str] | None:
    """The files of a scores directory written by retain before outputs were versioned.

    Recognised by its ``_SUCCESS`` and ``_summary.json``, whose ``files`` must list every
    other file in it with the sha256 it has now; None for anything else.
    """
    try:
        listed = json.loads((directory / SUMMARY_NAME).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, dict):
        return None
    parts = {name: digest for name, digest in listed.items() if "/" not in str(name)}
    present = {p.name for p in directory.iterdir()} - {VERSION_MANIFEST}  # (adopted half-way)
    if present != {*parts, SUMMARY_NAME, SUCCESS_NAME} or not all(
        (directory / n).is_file() and sha256_file(directory / n) == d for n, d in parts.items()
    ):
        return None
    own = {n: sha256_file(directory / n) for n in (SUMMARY_NAME, SUCCESS_NAME)}
    return {**parts, **own}


def read_scores(directory: str | Path) -> pd.DataFrame:
    """All parts of a finished scores directory (refuses one without ``_SUCCESS``).

    Reads one version even if a run publishes meanwhile (:func:`features.atomic.pinned`).
    """
    root = pinned(directory)
    if not (root / SUCCESS_NAME).is_file():
        raise BatchError(f"{directory} has no {SUCCESS_NAME}: not a finished `retain score` output")
    parts = sorted(root.glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=list(SCORE_COLUMNS))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
