"""Which rows return netting has to look at: those of the customers with a return.

Matching looks back only, so a customer without a return, and a customer's rows after
their last return, can match nothing; :func:`rows_with_returns` leaves them out before any
id is compared. In a log known to be sorted by customer then time (the feature builder
checks it), each customer's rows are one range, found from the return rows alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["row_changes", "rows_with_returns"]

_NO_RETURN = int(np.iinfo(np.int64).min)


def row_changes(*keys: np.ndarray) -> np.ndarray:
    """Per row, whether any key differs from the row before (the first row: True)."""
    new = np.zeros(keys[0].size, dtype=bool)
    if new.size:
        new[0] = True
    for key in keys:
        new[1:] |= key[1:] != key[:-1]
    return new


def rows_with_returns(
    codes: np.ndarray, ts: np.ndarray, is_ret: np.ndarray, sorted_rows: bool = False
) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
    """Rows of the customers with a return, by customer then time (tied rows keep row
    order), whether they are every row in row order, and their customers (numbered 0, 1, ...
    in that order) and times.

    Matching looks back only, so a customer's rows after their last return (by time; rows
    tied with it stay) can match nothing and are left out."""
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":  # integer codes of any width are used as they are
        codes = codes.astype(np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    if sorted_rows:
        ranges = _sorted_ranges(codes, ts, is_ret)
        if ranges is not None:
            return ranges
    low = int(codes.min())
    shifted = codes.astype(np.int64) - low if low < 0 else codes
    # the time of each customer's last return; _NO_RETURN for customers without one
    last_return = np.full(int(shifted.max()) + 1, _NO_RETURN)
    ret_rows = np.flatnonzero(is_ret)
    ret_codes, ret_ts = shifted[ret_rows], ts[ret_rows]
    if (ret_codes[1:] >= ret_codes[:-1]).all():  # grouped by customer (canonical logs)
        starts = np.flatnonzero(row_changes(ret_codes))
        last_return[ret_codes[starts]] = np.maximum.reduceat(ret_ts, starts)
    else:
        np.maximum.at(last_return, ret_codes, ret_ts)
    last = last_return[shifted]
    kept = ts <= last
    kept &= last > _NO_RETURN
    whole = bool(kept.all())
    rows = np.arange(codes.size) if whole else np.flatnonzero(kept)
    c, t = (codes, ts) if whole else (codes[rows], ts[rows])
    same_c = c[1:] == c[:-1]
    same_c &= t[1:] >= t[:-1]
    if not ((c[1:] > c[:-1]) | same_c).all():
        by_time = np.lexsort((t, c))  # stable: ties keep row order
        return rows[by_time], False, _numbered(c[by_time]), t[by_time]
    return rows, whole, _numbered(c), t


def _numbered(codes: np.ndarray) -> np.ndarray:
    """Customers numbered 0, 1, ... in row order, from codes grouped by customer."""
    cust = np.zeros(codes.size, dtype=np.int64)
    if codes.size:
        np.cumsum(codes[1:] != codes[:-1], out=cust[1:])
    return cust


def _sorted_ranges(
    codes: np.ndarray, ts: np.ndarray, is_ret: np.ndarray
) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray] | None:
    """:func:`rows_with_returns` of rows sorted by customer code then time: each customer's
    rows are one range, from the customer's first row to its last return and the rows tied
    with it in time, so only the returns and the ranges are read. None when more than a few
    rows follow a last return at its very time (the general path then handles them)."""
    n = codes.size
    ret_rows = np.flatnonzero(is_ret)
    ret_codes = codes[ret_rows]
    last_of = np.flatnonzero(row_changes(ret_codes[::-1])[::-1])  # each customer's last return
    cust = ret_codes[last_of]
    end = ret_rows[last_of] + 1
    t_last = ts[end - 1]
    still = np.arange(cust.size)
    for _ in range(8):  # rows right after a last return, at its time, stay
        still = still[end[still] < n]
        tied = end[still]
        still = still[(codes[tied] == cust[still]) & (ts[tied] == t_last[still])]
        if still.size == 0:
            break
        end[still] += 1
    else:
        return None
    first = np.searchsorted(codes, cust, side="left")
    lengths = end - first
    total = int(lengths.sum())
    if total == n:
        return np.arange(n), True, _numbered(codes), ts
    shift = first - (np.cumsum(lengths) - lengths)
    rows = np.arange(total) + np.repeat(shift, lengths)
    # one range per customer: numbered by range, their codes are not read again
    return rows, False, np.repeat(np.arange(lengths.size), lengths), ts[rows]
