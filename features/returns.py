"""Which purchase a return or cancellation takes its money back from.

Spend is counted net of returns: a customer whose only order was cancelled the same day has
spent nothing, and a model that reads the gross order value predicts the cancelled amount
again. A return row (``is_return``) is matched to one earlier purchase line of the same
customer, by the first rule that applies:

1. **order**: the return's ``order_id``, without the cancel prefix ``C`` (the Online Retail
   convention and :class:`~features.schema.LogConfig`'s default) or as it stands, is the id
   of an order of the same customer placed at or before the return: the return nets against
   that order (its line of the same product when there is one, else its largest line);
2. **product**: the same customer's latest purchase line of the same ``product_id`` at or
   before the return;
3. **customer**: the same customer's latest purchase line at or before the return.

Lines tied on time go by the largest amount, so the match does not depend on how rows that
the canonical sort leaves tied happen to be ordered.

A return with no earlier purchase (its order lies before the log starts) nets nothing. Net
line values are clipped at 0: a return never makes a purchase worth less than nothing.
Matching looks back only, so a return counts from its own time on: features at ``as_of``
net the returns before ``as_of``, labels those before the window's end.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["CANCEL_PREFIX", "match_log_returns", "match_returns", "net_amounts"]

CANCEL_PREFIX = "C"
_UNMATCHED = -1


def match_returns(
    customer_codes: np.ndarray,
    timestamp_us: np.ndarray,
    is_return: np.ndarray,
    order_ids: pa.Array | None = None,
    product_ids: pa.Array | None = None,
    amount: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, the purchase row (position) a return nets against; -1 for purchases and
    unmatched returns. Rows may come in any order; ids are Arrow string arrays or None.

    The work is array work on the rows of customers with a return, in (customer, time)
    order: a log already in that order (every canonical log) is not sorted again, and a log
    without a return costs one check.
    """
    is_ret = np.asarray(is_return, dtype=bool)
    n = is_ret.size
    out = np.full(n, _UNMATCHED, dtype=np.int64)
    if not is_ret.any():
        return out
    rows, whole = _rows_with_returns(customer_codes, timestamp_us, is_ret)
    c = np.asarray(customer_codes, dtype=np.int64)[rows]
    t = np.asarray(timestamp_us, dtype=np.int64)[rows]
    a = np.zeros(rows.size) if amount is None else np.asarray(amount, dtype=np.float64)[rows]
    q = is_ret[rows]
    queries = np.flatnonzero(q)  # positions (in ``rows``) of the returns
    found = np.full(queries.size, _UNMATCHED, dtype=np.int64)
    products: np.ndarray | None = None
    if product_ids is not None:
        products = _codes_of_returned(_taken(product_ids, rows, whole), queries)
    if order_ids is not None:
        found = _by_order(_taken(order_ids, rows, whole), rows, c, t, a, q, queries, products)
    if products is not None:
        todo = (found == _UNMATCHED) & (products[queries] >= 0)
        if todo.any():
            found[todo] = _by_product(c, t, a, q, queries[todo], products)
    todo = found == _UNMATCHED
    if todo.any():
        new_customer = np.empty(rows.size, dtype=bool)
        new_customer[0] = True
        np.not_equal(c[1:], c[:-1], out=new_customer[1:])
        found[todo] = _latest_line(new_customer, t, a, q)[queries[todo]]
    hit = found >= 0
    out[rows[queries[hit]]] = rows[found[hit]]
    return out


def _rows_with_returns(
    codes: np.ndarray, ts: np.ndarray, is_ret: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Rows of the customers with a return, by customer then time (tied rows keep row
    order), and whether they are every row in row order."""
    codes = np.asarray(codes, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    low = int(codes.min())
    shifted = codes - low if low < 0 else codes
    with_returns = np.zeros(int(shifted.max()) + 1, dtype=bool)
    with_returns[shifted[is_ret]] = True
    whole = bool(with_returns[shifted].all())
    rows = np.arange(codes.size) if whole else np.flatnonzero(with_returns[shifted])
    c, t = codes[rows], ts[rows]
    step_c, step_t = c[1:] - c[:-1], t[1:] >= t[:-1]
    if not ((step_c > 0) | ((step_c == 0) & step_t)).all():
        return rows[np.lexsort((t, c))], False  # stable: ties keep row order
    return rows, whole


def _taken(ids: pa.Array, rows: np.ndarray, whole: bool) -> pa.Array:
    """``ids`` (as strings) at ``rows``; ``whole``: rows are every row in row order."""
    ids = pc.cast(ids, pa.string())
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    return ids if whole else ids.take(pa.array(rows))


def _codes_of_returned(ids: pa.Array, queries: np.ndarray) -> np.ndarray:
    """Per row, a code equal between rows exactly where the ids are equal, when the id is one
    a return (at ``queries``) has; -1 for other and missing ids."""
    value_set = pc.unique(ids.take(pa.array(queries)).drop_null())
    codes = pc.index_in(ids, value_set=value_set)
    return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _by_order(
    ids: pa.Array,
    rows: np.ndarray,
    c: np.ndarray,
    t: np.ndarray,
    a: np.ndarray,
    q: np.ndarray,
    queries: np.ndarray,
    products: np.ndarray | None,
) -> np.ndarray:
    """Rule 1: the return names its order (with or without the cancel prefix); within the
    order, the line of the same product first, then the largest line, then the first row."""
    given = ids.take(pa.array(queries))
    prefixed = pc.fill_null(pc.starts_with(given, CANCEL_PREFIX), False)
    stripped = pc.if_else(prefixed, pc.utf8_slice_codeunits(given, len(CANCEL_PREFIX)), given)
    value_set = pc.unique(stripped.drop_null())
    found = np.full(queries.size, _UNMATCHED, dtype=np.int64)
    if len(value_set) == 0:
        return found
    codes = pc.fill_null(pc.index_in(ids, value_set=value_set), -1)
    line_order = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    ret_order = pc.fill_null(pc.index_in(stripped, value_set=value_set), -1)
    ret_order = ret_order.to_numpy(zero_copy_only=False).astype(np.int64)
    lines = np.flatnonzero(~q & (line_order >= 0))
    asks = np.flatnonzero(ret_order >= 0)
    if lines.size == 0 or asks.size == 0:
        return found
    # best first: the largest amount (NaN last), then the first row
    rank = np.empty(lines.size, dtype=np.int64)
    rank[np.lexsort((rows[lines], -a[lines]))] = np.arange(lines.size)[::-1]
    keys_l = [c[lines], line_order[lines]]
    keys_q = [c[queries[asks]], ret_order[asks]]
    best = _best_before(keys_l, t[lines], rank, keys_q, t[queries[asks]])
    if products is not None:
        same = products[queries[asks]] >= 0
        of_line = products[lines] >= 0
        if same.any() and of_line.any():
            sub = np.flatnonzero(of_line)
            pick = _best_before(
                [k[sub] for k in keys_l] + [products[lines[sub]]],
                t[lines[sub]],
                rank[sub],
                [k[same] for k in keys_q] + [products[queries[asks[same]]]],
                t[queries[asks[same]]],
            )
            chosen = best[same]
            chosen[pick >= 0] = sub[pick[pick >= 0]]
            best[same] = chosen
    hit = best >= 0
    found[asks[hit]] = lines[best[hit]]
    return found


def _best_before(
    line_keys: list[np.ndarray],
    line_t: np.ndarray,
    line_rank: np.ndarray,
    ask_keys: list[np.ndarray],
    ask_t: np.ndarray,
) -> np.ndarray:
    """Per ask, the line (index) of highest rank among lines with equal keys at or before the
    ask's time; -1 when there is none. Ranks are distinct.

    Lines and asks are sorted together by keys, time, lines before asks; the running maximum
    of ``group * width + rank`` (asks add -1) then holds, at each ask, its group's best line
    so far, and a value below ``group * width`` says the group had none.
    """
    n_lines, n_asks = line_t.size, ask_t.size
    line_of_rank = np.argsort(line_rank)
    line_rank = np.empty(n_lines, dtype=np.int64)
    line_rank[line_of_rank] = np.arange(n_lines)  # dense: 0 to n_lines - 1
    keys = [np.concatenate((lk, ak)) for lk, ak in zip(line_keys, ask_keys, strict=True)]
    time = np.concatenate((line_t, ask_t))
    kind = np.concatenate((np.zeros(n_lines, dtype=np.int8), np.ones(n_asks, dtype=np.int8)))
    order = np.lexsort((kind, time, *keys[::-1]))
    new_group = np.zeros(order.size, dtype=bool)
    new_group[0] = True
    for key in keys:
        ordered = key[order]
        new_group[1:] |= ordered[1:] != ordered[:-1]
    group = np.cumsum(new_group) - 1
    width = n_lines + 1
    value = np.concatenate((line_rank, np.full(n_asks, -1, dtype=np.int64)))[order]
    value = np.where(value >= 0, group * width + value, -1)
    running = np.maximum.accumulate(value)
    is_ask = order >= n_lines
    best_rank = running[is_ask] - group[is_ask] * width
    out = np.full(n_asks, _UNMATCHED, dtype=np.int64)
    out[order[is_ask] - n_lines] = np.where(
        best_rank >= 0, line_of_rank[np.maximum(best_rank, 0)], _UNMATCHED
    )
    return out


def _by_product(
    c: np.ndarray,
    t: np.ndarray,
    a: np.ndarray,
    q: np.ndarray,
    asks: np.ndarray,
    products: np.ndarray,
) -> np.ndarray:
    """Rule 2: the same customer's latest line of the returned product (per ask position)."""
    keep = (products >= 0) & ~q
    keep[asks] = True
    sub = np.flatnonzero(keep)
    key = c[sub] * (int(products.max()) + 1) + products[sub]
    by_key = np.argsort(key, kind="stable")  # rows are by (customer, time): now by product too
    sub, key = sub[by_key], key[by_key]
    new_group = np.empty(sub.size, dtype=bool)
    new_group[0] = True
    np.not_equal(key[1:], key[:-1], out=new_group[1:])
    latest = _latest_line(new_group, t[sub], a[sub], q[sub])
    where = np.empty(q.size, dtype=np.int64)
    where[sub] = np.arange(sub.size)
    best = latest[where[asks]]
    return np.where(best >= 0, sub[np.maximum(best, 0)], _UNMATCHED)


def _latest_line(new_group: np.ndarray, t: np.ndarray, a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per row of rows sorted by group then time (tied rows in row order), the latest line
    (``~q``) of its group at or before it; among lines tied on time the largest (NaN
    largest), then the last. -1 where the group has none so far."""
    k = t.size
    new_block = new_group.copy()
    new_block[1:] |= t[1:] != t[:-1]
    starts = np.flatnonzero(new_block)
    block = np.cumsum(new_block) - 1
    line_a = np.where(q, -np.inf, a)
    top = np.maximum.reduceat(line_a, starts)
    top_of_row = top[block]
    best = ~q & (a == top_of_row)
    nan_top = np.isnan(top_of_row)
    if nan_top.any():
        best |= ~q & nan_top & np.isnan(a)
    position = np.where(best, np.arange(k), -1)
    in_block = np.maximum.reduceat(position, starts)
    latest = np.maximum.accumulate(in_block)
    group_start = np.maximum.accumulate(np.where(new_group[starts], starts, 0))
    latest[latest < group_start] = _UNMATCHED
    return latest[block]


def match_log_returns(log: pd.DataFrame) -> np.ndarray:
    """:func:`match_returns` of a canonical log frame (optional id columns used if present)."""
    is_return = log["is_return"].to_numpy(dtype=bool)
    if not is_return.any():
        return np.full(len(log), _UNMATCHED, dtype=np.int64)
    ids = log["customer_id"]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes = ids.cat.codes.to_numpy(dtype=np.int64)
    else:
        codes = pd.factorize(ids)[0].astype(np.int64)
    ts = np.asarray(log["timestamp"].array.as_unit("us").asi8, dtype=np.int64)
    order = _strings(log, "order_id")
    product = _strings(log, "product_id")
    amount = log["amount"].to_numpy(dtype=np.float64)
    return match_returns(codes, ts, is_return, order, product, amount)


def _strings(log: pd.DataFrame, column: str) -> pa.Array | None:
    if column not in log.columns:
        return None
    values = log[column].array
    if isinstance(values, np.ndarray | pd.arrays.NumpyExtensionArray):
        values = np.asarray(values, dtype=object)
    arr = pa.array(values, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return pc.cast(arr, pa.string())


def net_amounts(
    amount: np.ndarray,
    is_return: np.ndarray,
    matched: np.ndarray,
    counted: np.ndarray | None = None,
) -> np.ndarray:
    """Per row: a purchase's amount minus the matched returns among ``counted`` rows
    (default all), clipped at 0; return rows keep their own (refunded) amount."""
    net = np.asarray(amount, dtype=np.float64).copy()
    take = np.flatnonzero(np.asarray(is_return, dtype=bool) & (matched >= 0))
    if counted is not None:
        take = take[np.asarray(counted, dtype=bool)[take]]
    if take.size == 0:
        return net
    refunds = np.bincount(matched[take], weights=net[take], minlength=len(net))
    touched = refunds > 0
    net[touched] = np.maximum(net[touched] - refunds[touched], 0.0)
    return net
