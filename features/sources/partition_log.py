"""``retain partition``: rewrite a Parquet log once into files of disjoint customer ranges.

Cluster scoring (:mod:`serving.batch.partitioned`) needs every customer's rows in one file
and the files ordered by customer id, so that each task reads only its own files and the
output parts are the single-machine ones. A log whose customers are spread over files (or
one big file) is rewritten once here; every later run skips the reshuffle.

Why ranges, not hashes: the output parts are blocks of consecutive customer ids (the
single-machine path's chunks, which fix the bytes); with range files a part needs one or two
files, with hash files every part would need every file (a shuffle on every run).

Two streaming passes over the source in row batches, so memory holds the distinct customer
ids and one batch, never the log: pass 1 reads the id column and picks ``parts - 1``
boundary ids at equal customer counts; pass 2 routes each row to its range's file. Rows are
copied as they are (same columns and types, the loader's job stays the loader's), in their
source order within each file. Ids are compared as the loader compares them: stripped of
surrounding white space, as text; rows with an empty id go to the first file (the loader
drops and counts them). The output directory is published atomically
(:class:`features.atomic.VersionedDir`), so a rerun of the same input gives the same bytes.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.atomic import VersionedDir
from features.errors import InputError
from features.log.reading import resolve_columns
from features.log.schema import LogConfig

PART_TEMPLATE = "part-{:05d}.parquet"
BATCH_ROWS = 1 << 20


class PartitionInputError(InputError):
    """The log cannot be partitioned as asked (not Parquet, bad part count, ...)."""


@dataclass(frozen=True)
class PartitionSummary:
    """What ``retain partition`` wrote."""

    out: str
    parts: int
    rows: int
    customers: int
    rows_per_part: tuple[int, ...]


def _stripped_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    return pc.utf8_trim_whitespace(values)


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with dictionary columns as their values (Parquet still dictionary-encodes).

    A categorical written by pandas carries every category in every row group: copied as
    is, each part would hold the whole log's customer dictionary, and each read of a part
    would decode it.
    """
    fields = [
        f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema
    ]
    return pa.schema(fields, metadata=None)


def aligned_cuts(customers: int, parts: int, chunk_customers: int | None) -> list[int]:
    """Where the files start (as customer ranks): ``k * customers // parts``, or aligned.

    With ``chunk_customers``, each cut moves to the nearest multiple of it (unless that
    leaves a file empty: files under about half a chunk). A ``retain score`` chunk of that
    size then lies in one file, and its task loads that one file. Unaligned, nearly every
    chunk ends a few customers into the next file, so most files are loaded by two tasks,
    on different workers.
    """
    cuts = [k * customers // parts for k in range(1, parts)]
    if chunk_customers is None:
        return cuts
    snapped = [round(c / chunk_customers) * chunk_customers for c in cuts]
    bounds = [0, *snapped, customers]
    if all(a < b for a, b in itertools.pairwise(bounds)):
        return snapped
    return cuts  # files much smaller than a chunk: no aligned cut gives `parts` files


def boundary_ids(
    source: Path, column: str, parts: int, chunk_customers: int | None = None
) -> tuple[np.ndarray, int]:
    """``parts - 1`` ids cutting the sorted distinct ids into runs; and their count.

    Runs of equal length, or aligned to ``chunk_customers`` (:func:`aligned_cuts`).
    """
    file = pq.ParquetFile(source)
    distinct: list[pa.Array] = []
    for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=[column]):
        distinct.append(pc.unique(_stripped_text(batch.column(0))))
    ids = pc.unique(pa.concat_arrays(distinct)) if distinct else pa.array([], pa.string())
    ids = ids.filter(pc.not_equal(ids, ""))
    ids = ids.take(pc.array_sort_indices(ids))
    n = len(ids)
    cuts = aligned_cuts(n, parts, chunk_customers)
    return np.array([ids[c].as_py() for c in cuts], dtype=str), n


def partition_log(
    source: Path,
    out: Path,
    parts: int,
    config: LogConfig | None = None,
    chunk_customers: int | None = None,
) -> PartitionSummary:
    """Rewrite ``source`` (Parquet) into ``parts`` customer-range files under ``out``.

    ``chunk_customers``: align the files to the chunks scoring cuts (:func:`aligned_cuts`).
    """
    if parts < 1:
        raise PartitionInputError(f"--parts must be at least 1, got {parts}")
    if chunk_customers is not None and chunk_customers < 1:
        raise PartitionInputError(f"--chunk-customers must be at least 1, got {chunk_customers}")
    if not source.is_file():
        raise PartitionInputError(f"purchase log not found: {source}")
    if not source.name.lower().endswith((".parquet", ".pq")):
        raise PartitionInputError(
            f"retain partition reads a Parquet log, got {str(source)!r}; convert it first "
            "(e.g. pandas.read_csv(...).to_parquet(...))"
        )
    config = config or LogConfig()
    try:
        file = pq.ParquetFile(source)
    except (OSError, pa.ArrowException) as exc:
        raise PartitionInputError(f"{source}: not a readable Parquet file ({exc})") from None
    column = resolve_columns(file.schema_arrow.names, config)["customer_id"]
    bounds, customers = boundary_ids(source, column, parts, chunk_customers)
    rows = [0] * parts
    with (
        VersionedDir(out) as target,
        tempfile.TemporaryDirectory(prefix=".retain-partition-", dir=target.store) as tmp,
    ):
        names = [PART_TEMPLATE.format(i) for i in range(parts)]
        schema = plain_schema(file.schema_arrow)
        writers = [pq.ParquetWriter(Path(tmp) / n, schema, compression="zstd") for n in names]
        try:
            for batch in file.iter_batches(batch_size=BATCH_ROWS):
                table = pa.Table.from_batches([batch]).cast(schema)
                encoded = pc.dictionary_encode(_stripped_text(table.column(column)))
                values = np.array(encoded.dictionary.to_pylist(), dtype=str)
                per_value = np.searchsorted(bounds, values, side="right")
                indices = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
                bucket = np.append(per_value, 0)[indices]  # "" sorts first: part 0 too
                order = np.argsort(bucket, kind="stable")
                edges = np.searchsorted(bucket[order], np.arange(parts + 1), side="left")
                for b in range(parts):
                    if edges[b] < edges[b + 1]:
                        writers[b].write_table(table.take(order[edges[b] : edges[b + 1]]))
                        rows[b] += int(edges[b + 1] - edges[b])
        finally:
            for writer in writers:
                writer.close()
        target.publish({n: Path(tmp) / n for n in names}, {})
    return PartitionSummary(str(out), parts, sum(rows), customers, tuple(rows))
