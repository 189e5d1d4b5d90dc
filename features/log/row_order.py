"""The canonical row order (customer, instant, order id) and exact-duplicate detection.

Rows are ordered with integer sorts on customer codes and UTC microseconds; only runs that tie
on both look at order ids. Exact duplicates share customer and instant, so the same runs
bound the full-row comparison: a 64-bit signature of each tied row's numeric columns (then
text lengths) narrows the candidates before ``DataFrame.duplicated`` confirms them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.log.reading import SourceColumns

__all__ = [
    "break_ties",
    "customer_time_order",
    "exact_duplicates",
    "float_bits",
    "is_identity",
    "order_without",
]


def order_without(order: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """A sort order of all rows, restricted to the rows not ``dropped`` (renumbered)."""
    renumber = np.cumsum(~dropped) - 1
    return renumber[order[~dropped[order]]]


def exact_duplicates(
    df: pd.DataFrame,
    columns: SourceColumns,
    present: np.ndarray,
    customer_codes: np.ndarray,
    instants: np.ndarray,
    order: np.ndarray,
) -> np.ndarray:
    """Rows (among ``present``) equal in every source column to an earlier row.

    Exact duplicates share customer and instant (adjacent in ``order``) and every numeric
    source column, so the full-row comparison (slow on wide text frames) only runs on rows
    that tie on all of these; order lines share customer and instant, not usually amounts.
    Numeric columns are compared first, text lengths (dearer to get) only for rows still tied.
    """
    duplicate = np.zeros(len(order), dtype=bool)
    codes, times = customer_codes[order], instants[order]
    same = (codes[1:] == codes[:-1]) & (times[1:] == times[:-1])
    del codes, times
    if not same.any():
        return duplicate
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    run = np.cumsum(np.concatenate(([True], ~same)))[tied]
    members = order[tied]  # positions among present rows, runs contiguous
    positions = np.flatnonzero(present)[members] if not present.all() else members
    signature = np.zeros(len(members), dtype=np.uint64)
    for stage in _signature_stages(columns.all()):
        with np.errstate(over="ignore"):
            signature = signature * _MIX + _row_signature(stage, len(df), positions)
        tie = _tie_within_runs(run, signature)
        run, members, positions, signature = run[tie], members[tie], positions[tie], signature[tie]
        if not members.size:
            return duplicate
    candidate = members
    if candidate.size:
        candidate.sort()  # source order: "earlier" means an earlier data row
        rows = np.flatnonzero(present)[candidate] if not present.all() else candidate
        duplicate[candidate] = df.iloc[rows].duplicated(keep="first").to_numpy(dtype=bool)
    return duplicate


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _signature_stages(columns: Sequence[pd.Series]) -> list[list[pd.Series]]:
    """The columns a row signature is built from: numeric-like first, then text (if any)."""
    cheap: list[pd.Series] = []
    text: list[pd.Series] = []
    for column in columns:
        kind = _signature_kind(column.dtype)
        if kind == "text":
            text.append(column)
        elif kind is not None:
            cheap.append(column)
    return [stage for stage in (cheap, text) if stage]


def _signature_kind(dtype: Any) -> str | None:  # numpy or pandas (untyped) dtype
    """How a column enters the row signature, or None when it does not."""
    # Common dtypes first: what the general checks below conclude for them, sooner.
    if isinstance(dtype, np.dtype):
        return "integer" if dtype.kind in "biu" else "float" if dtype.kind == "f" else None
    if isinstance(dtype, pd.StringDtype):
        return "text"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return None
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    ):
        return "float"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    return None


def _row_signature(columns: Sequence[pd.Series], n_rows: int, positions: np.ndarray) -> np.ndarray:
    """A 64-bit value per row that is equal for rows equal in every one of ``columns``.

    Built from numeric and boolean columns (-0.0 and 0.0 alike, every NaN alike, as in
    ``DataFrame.duplicated``) and the length of text columns; unequal rows may collide, which
    only costs a full comparison. Mixed in source order (sequential memory), then gathered.
    """
    signature = np.zeros(n_rows, dtype=np.uint64)
    for column in columns:
        kind = _signature_kind(column.dtype)
        if kind == "integer":
            values = column.to_numpy().astype(np.uint64)
        elif kind == "float":
            values = float_bits(column.to_numpy(dtype="float64", na_value=np.nan))
        elif kind == "category":
            values = column.cat.codes.to_numpy().astype(np.uint64)
        elif kind == "text":
            lengths = pc.binary_length(pa.array(column.array))
            if lengths.null_count:
                lengths = lengths.fill_null(-1)
            values = lengths.to_numpy().astype(np.uint64)
        else:
            continue
        with np.errstate(over="ignore"):
            signature *= _MIX
            signature += values
    return signature[positions]


def float_bits(values: np.ndarray) -> np.ndarray:
    canonical = np.where(np.isnan(values), np.nan, values + 0.0)  # one NaN, no -0.0
    return canonical.view(np.uint64)


_MAX_PAIR_DISTANCE = 32
"""Runs longer than this are searched with a hash table instead of pairwise comparisons."""


def _tie_within_runs(run: np.ndarray, signature: np.ndarray) -> np.ndarray:
    """Rows whose signature equals that of another row of the same run (runs contiguous)."""
    found = np.zeros(len(run), dtype=bool)
    left = np.arange(len(run))
    for distance in range(1, _MAX_PAIR_DISTANCE + 1):
        left = left[left + distance < len(run)]
        left = left[run[left + distance] == run[left]]
        if not left.size:
            return found
        equal = left[signature[left] == signature[left + distance]]
        found[equal] = True
        found[equal + distance] = True
    long_run = np.isin(run, np.unique(run[left]))
    key = pd.DataFrame({"run": run[long_run], "signature": signature[long_run]})
    found[long_run] |= key.duplicated(keep=False).to_numpy(dtype=bool)
    return found


def _stable_order(key: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integers: one vectorised sort of (key, position)."""
    position_bits = max(int(len(key) - 1).bit_length(), 1)
    if len(key) == 0 or int(key.max()).bit_length() + position_bits > 63:
        return np.argsort(key, kind="stable")
    packed = (key.astype(np.int64) << position_bits) | np.arange(len(key), dtype=np.int64)
    packed.sort()  # values are unique, so the fast unstable sort gives the stable order
    return packed & ((1 << position_bits) - 1)


def customer_time_order(customer_codes: np.ndarray, instants: np.ndarray) -> np.ndarray:
    """Stable argsort by (customer, instant): by instant, then by customer (skipped if sorted)."""
    if len(instants) == 0:
        return np.zeros(0, dtype=np.int64)
    codes_diff = np.diff(customer_codes)
    if ((codes_diff > 0) | ((codes_diff == 0) & (np.diff(instants) >= 0))).all():
        return np.arange(len(instants))
    del codes_diff
    if (np.diff(instants) >= 0).all():
        return _stable_order(customer_codes)
    start = int(instants.min())
    step = 1_000_000 if not (instants % 1_000_000).any() else 1
    by_time = _stable_order((instants - start) // step)
    return by_time[_stable_order(customer_codes[by_time])]


def is_identity(order: np.ndarray) -> bool:
    """Whether a permutation of row positions keeps every row in place.

    Taking Arrow text in such an order is a costly no-op (a strictly increasing permutation
    is the identity, so one comparison pass tells).
    """
    return bool((order[1:] > order[:-1]).all())


def break_ties(
    order: np.ndarray,
    customer_codes: np.ndarray,
    instants: np.ndarray,
    order_id: pa.Array,
    *,
    ids_from_instants: bool,
) -> tuple[np.ndarray, pa.Array]:
    """Order rows sharing customer and instant by order id; stable, so ties keep source order.

    Order ids (text, slow to rank) are only ranked in runs where they differ; when every id
    was made from its row's instant (``ids_from_instants``), tied rows have equal ids. Also
    returns the order ids taken in the final order (taking text is costly, so done once).
    """
    sorted_ids = order_id if is_identity(order) else order_id.take(order)
    if ids_from_instants:
        return order, sorted_ids
    codes, times = customer_codes[order], instants[order]
    same = (codes[1:] == codes[:-1]) & (times[1:] == times[:-1])
    del codes, times
    if not same.any():
        return order, sorted_ids
    differs = same & pc.not_equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
    if not differs.any():
        return order, sorted_ids
    run = np.cumsum(np.concatenate(([True], ~same)))
    mixed = np.isin(run, np.unique(run[1:][differs]))
    local = np.flatnonzero(mixed)
    ranks = pc.rank(sorted_ids.take(local), sort_keys="ascending", tiebreaker="dense")
    order = order.copy()
    within = local[np.lexsort((ranks.to_numpy(), run[local]))]
    order[local] = order[within]
    fixed = np.arange(len(order))
    fixed[local] = within
    return order, sorted_ids.take(fixed)
