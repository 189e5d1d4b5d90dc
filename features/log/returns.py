"""Which purchase a return or cancellation takes its money back from.

Spend is counted net of returns: a customer whose only order was cancelled the same day has
spent nothing, and a model that reads the gross order value predicts the cancelled amount
again. A return row (``is_return``) is matched to one earlier purchase line of the same
customer, by the first rule that applies:

1. **order**: the return's ``order_id``, without the cancel prefix ``C`` (the Online Retail
   convention and :class:`~features.log.schema.LogConfig`'s default) or as it stands, is the id
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

from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.log.return_rows import row_changes as _changes
from features.log.return_rows import rows_with_returns

__all__ = [
    "CANCEL_PREFIX",
    "id_changes",
    "log_return_pairs",
    "match_log_returns",
    "match_returns",
    "net_amounts",
    "net_pair_amounts",
    "return_pairs",
]

CANCEL_PREFIX = "C"
_UNMATCHED = -1


def match_returns(
    customer_codes: np.ndarray,
    timestamp_us: np.ndarray,
    is_return: np.ndarray,
    order_ids: pa.Array | None = None,
    product_ids: pa.Array | None = None,
    amount: np.ndarray | None = None,
    order_changes: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, the purchase row (position) a return nets against; -1 for purchases and
    unmatched returns. Rows may come in any order; ids are Arrow string arrays or None.

    ``order_changes`` (one per row from the second on: does the order id differ from the
    row before's, a missing id differing from every id) is what :func:`id_changes` gives
    for ``order_ids``. A caller that has it anyway (the feature builder compares adjacent
    order ids to find orders) passes it, and ids are then looked up once per run of equal
    ids (an order's lines) instead of once per row; the matches are the same.

    The work is array work (no hashing but of the ids) on the rows of customers with a
    return, in (customer, time) order: a log already in that order (every canonical log) is
    not sorted again, each rule looks only at the customers whose returns are still
    unmatched, and a log without a return costs one check.
    """
    is_ret = np.asarray(is_return, dtype=bool)
    out = np.full(is_ret.size, _UNMATCHED, dtype=np.int64)
    returns, lines = return_pairs(
        customer_codes, timestamp_us, is_ret, order_ids, product_ids, amount, order_changes
    )
    out[returns] = lines
    return out


def return_pairs(
    customer_codes: np.ndarray,
    timestamp_us: np.ndarray,
    is_return: np.ndarray,
    order_ids: pa.Array | None = None,
    product_ids: pa.Array | None = None,
    amount: np.ndarray | None = None,
    order_changes: np.ndarray | None = None,
    sorted_rows: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`match_returns` as two arrays: the matched return rows (ascending) and the
    purchase row each nets against; the rows of a large log are not all written out.

    ``sorted_rows`` says the caller has checked that the rows come by customer code
    (ascending) then time (``features.feature_inputs.check_sorted``): the rows of the
    customers with a return are then found as ranges, without a pass over every row.
    """
    is_ret = np.asarray(is_return, dtype=bool)
    none = np.zeros(0, dtype=np.int64)
    if not is_ret.any():
        return none, none
    rows, whole, cust, t = rows_with_returns(customer_codes, timestamp_us, is_ret, sorted_rows)
    log = _Rows(
        rows=rows,
        cust=cust,
        t=t,
        a=np.zeros(rows.size) if amount is None else np.asarray(amount, dtype=np.float64)[rows],
        q=is_ret[rows],
    )
    asks = np.flatnonzero(log.q)  # positions (in ``rows``) of the returns
    found = np.full(asks.size, _UNMATCHED, dtype=np.int64)
    products = None if product_ids is None else _as_strings(product_ids)
    if order_ids is not None:
        ids = _as_strings(order_ids)
        found = _by_order(ids, order_changes, whole, log, asks, products)
    if products is not None:
        todo = np.flatnonzero(found == _UNMATCHED)
        if todo.size:
            found[todo] = _by_product(products, log, asks[todo])
    todo = np.flatnonzero(found == _UNMATCHED)
    if todo.size:
        part = _of_customers(log.cust, asks[todo])
        new_customer = _changes(log.cust[part])
        latest = _latest_line(new_customer, log.t[part], log.a[part], log.q[part])
        best = latest[np.searchsorted(part, asks[todo])]
        found[todo] = np.where(best >= 0, part[np.maximum(best, 0)], _UNMATCHED)
    hit = found >= 0
    returns, lines = rows[asks[hit]], rows[found[hit]]
    if not sorted_rows and returns.size and not (returns[1:] > returns[:-1]).all():
        by_row = np.argsort(returns)
        returns, lines = returns[by_row], lines[by_row]
    return returns, lines


class _Rows(NamedTuple):
    """The rows of customers with a return, by customer then time (positions in the log)."""

    rows: np.ndarray
    cust: np.ndarray  # customer number, 0 upwards
    t: np.ndarray
    a: np.ndarray
    q: np.ndarray  # is a return


def _as_strings(ids: pa.Array) -> pa.Array:
    """The ids as one string array; large strings (pandas' ``str`` columns) stay as they
    are, since casting them copies every offset and matching compares the same text."""
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        ids = pc.cast(ids, pa.string())
    return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids


def _take(ids: pa.Array, rows: np.ndarray) -> pa.Array:
    return ids.take(pa.array(rows))


def _codes_in(ids: pa.Array, value_set: pa.Array) -> np.ndarray:
    """Per id, its position in ``value_set``; -1 for other and missing ids."""
    codes = pc.fill_null(pc.index_in(ids, value_set=value_set), -1)
    return codes.to_numpy(zero_copy_only=False).astype(np.int64)


def _dense_codes(ids: pa.Array) -> np.ndarray:
    """Per id, a number shared by the equal ids only; -1 for missing ids. One hashing pass:
    a line whose product no return names then has a number too, and only groups it alone."""
    codes = pc.dictionary_encode(ids).indices
    return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _of_customers(cust: np.ndarray, asks: np.ndarray) -> np.ndarray:
    """Positions of the rows whose customer has one of ``asks`` (sorted)."""
    flag = np.zeros(int(cust[-1]) + 1, dtype=bool)
    flag[cust[asks]] = True
    return np.flatnonzero(flag[cust])


def id_changes(ids: pa.Array) -> np.ndarray:
    """Per row from the second on, whether its id differs from the row before's; a missing
    id differs from every id. Compares neighbours, hashes nothing."""
    if len(ids) < 2:
        return np.zeros(0, dtype=bool)
    differ = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    return pc.fill_null(differ, True).to_numpy(zero_copy_only=False)


def _run_codes(
    ids: pa.Array, changes: np.ndarray, rows: np.ndarray, value_set: pa.Array
) -> np.ndarray:
    """:func:`_codes_in` of the ids at ``rows``, looking up one id per run of consecutive
    rows that share it (the lines of an order; ``changes`` is :func:`id_changes` of ``ids``)
    rather than every row."""
    head = np.ones(rows.size, dtype=bool)
    if rows.size > 1:
        prev = rows[:-1]
        np.not_equal(rows[1:], prev + 1, out=head[1:])  # not the next row: a run starts
        head[1:] |= changes[np.minimum(prev, changes.size - 1)]
    starts = np.flatnonzero(head)
    if starts.size > rows.size * 0.9:  # runs of about one row: look every row up
        return _codes_in(_take(ids, rows), value_set)
    run = np.cumsum(head)
    run -= 1
    return _codes_in(_take(ids, rows[starts]), value_set)[run]


def _by_order(
    ids: pa.Array,
    changes: np.ndarray | None,
    whole: bool,
    log: _Rows,
    asks: np.ndarray,
    products: pa.Array | None,
) -> np.ndarray:
    """Rule 1: the return names its order (with or without the cancel prefix); within the
    order, the line of the same product first, then the largest line, then the first row."""
    found = np.full(asks.size, _UNMATCHED, dtype=np.int64)
    given = _take(ids, log.rows[asks])
    prefixed = pc.fill_null(pc.starts_with(given, CANCEL_PREFIX), False)
    stripped = pc.if_else(prefixed, pc.utf8_slice_codeunits(given, len(CANCEL_PREFIX)), given)
    named_ids = pc.dictionary_encode(stripped)  # the named orders and each return's, in one pass
    value_set = named_ids.dictionary
    if len(value_set) == 0:
        return found
    if changes is None:
        order = _codes_in(ids if whole else _take(ids, log.rows), value_set)
        order[log.q] = -1
    else:  # the ids of the return rows are no order to net against: not looked up
        purchases = np.flatnonzero(~log.q)
        order = np.full(log.q.size, -1, dtype=np.int64)
        order[purchases] = _run_codes(ids, changes, log.rows[purchases], value_set)
    named = pc.fill_null(named_ids.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    lines = np.flatnonzero(order >= 0)
    asking = np.flatnonzero(named >= 0)
    if lines.size == 0 or asking.size == 0:
        return found
    order[asks[asking]] = named[asking]
    # the best line first: the largest amount (NaN last), then the first row
    line_rows = log.rows[lines]
    if (line_rows[1:] > line_rows[:-1]).all():  # lines in row order: one key is enough
        by_merit = _stable_descending(log.a[lines])[::-1]
    else:
        by_merit = np.lexsort((line_rows, -log.a[lines]))[::-1]
    score = np.full(log.q.size, -1, dtype=np.int64)
    score[lines[by_merit]] = np.arange(lines.size)
    line_of_score = lines[by_merit]
    part = np.flatnonzero(order >= 0)  # the lines and the returns naming an order
    best = _best_so_far(part, [log.cust, order], log.t, score)
    if products is not None:
        product = _dense_codes(_take(products, log.rows[part]))
        same = part[product >= 0]
        if same.size:
            of_product = np.full(log.q.size, -1, dtype=np.int64)
            of_product[same] = product[product >= 0]
            better = _best_so_far(same, [log.cust, order, of_product], log.t, score)
            where = np.flatnonzero(product >= 0)  # the positions of ``same`` in ``part``
            best[where] = np.where(better >= 0, better, best[where])
    at = best[np.searchsorted(part, asks[asking])]
    found[asking] = np.where(at >= 0, line_of_score[np.maximum(at, 0)], _UNMATCHED)
    return found


def _stable_descending(a: np.ndarray) -> np.ndarray:
    """``np.argsort(-a, kind="stable")``: positions by ``a`` descending, NaN last, ties in
    position order.

    A stable sort of floats is a merge sort; the default sort (vectorised) is several times
    faster, and ordering its tied runs by position then takes one sort of distinct integers.
    """
    by_value = np.argsort(-a)
    v = a[by_value]
    new_value = np.empty(v.size, dtype=bool)
    new_value[:1] = True
    np.not_equal(v[1:], v[:-1], out=new_value[1:])  # NaN != NaN: NaNs fixed below
    nan = np.isnan(v)
    if nan.any():
        new_value[1:] &= ~(nan[1:] & nan[:-1])
    if new_value.all():
        return by_value
    packed = np.cumsum(new_value, dtype=np.int64)  # tie block, then position
    packed *= v.size
    packed += by_value
    packed.sort()
    return packed % v.size


def _returned(ids: pa.Array, log: _Rows, asks: np.ndarray) -> pa.Array:
    """The distinct ids the returns at ``asks`` carry."""
    return pc.unique(_take(ids, log.rows[asks]).drop_null())


def _stable_order(keys: list[np.ndarray]) -> np.ndarray:
    """Stable argsort by non-negative integer ``keys``, the first the most significant.

    ``np.lexsort`` sorts once per key; the keys packed into one int64 (when their ranges
    fit) take one stable sort, which also runs fast on the already sorted leading key.
    """
    packed = keys[0].astype(np.int64)
    bits = int(packed.max(initial=0)).bit_length()
    for key in keys[1:]:
        width = int(key.max(initial=0)) + 1
        bits += width.bit_length()
        if bits > 62:
            return np.lexsort(keys[::-1])
        packed *= width
        packed += key
    return np.argsort(packed, kind="stable")


def _best_so_far(
    part: np.ndarray, keys: list[np.ndarray], t: np.ndarray, score: np.ndarray
) -> np.ndarray:
    """Per row of ``part`` (sorted positions), the highest ``score`` among the rows of
    ``part`` with equal keys at or before its time; -1 when there is none (-1 scores: rows
    that are no line).

    Rows sorted by keys keep their time order (the sort is stable); the running maximum of
    ``group * width + score``, taken per block of rows tied on keys and time, then holds each
    group's best line so far, and a value below ``group * width`` says the group had none.
    """
    by_key = _stable_order([key[part] for key in keys])
    at = part[by_key]
    new_group = _changes(*(key[at] for key in keys))
    new_block = new_group | _changes(t[at])
    starts = np.flatnonzero(new_block)
    block = np.cumsum(new_block) - 1
    top = np.maximum.reduceat(score[at], starts)
    group = (np.cumsum(new_group) - 1)[starts]
    width = int(score.max()) + 2
    running = np.maximum.accumulate(np.where(top >= 0, group * width + top, -1))
    best = running - group * width
    best[best < 0] = -1
    out = np.empty(part.size, dtype=np.int64)
    out[by_key] = best[block]
    return out


def _by_product(products: pa.Array, log: _Rows, asks: np.ndarray) -> np.ndarray:
    """Rule 2: the same customer's latest line of the returned product."""
    found = np.full(asks.size, _UNMATCHED, dtype=np.int64)
    value_set = _returned(products, log, asks)
    if len(value_set) == 0:
        return found
    part = _of_customers(log.cust, asks)
    product = _codes_in(_take(products, log.rows[part]), value_set)
    asking = np.zeros(log.q.size, dtype=bool)
    asking[asks] = True
    keep = (product >= 0) & (~log.q[part] | asking[part])
    part, product = part[keep], product[keep]
    by_key = _stable_order([log.cust[part], product])  # by time within a product
    at = part[by_key]
    new_group = _changes(log.cust[at], product[by_key])
    latest = _latest_line(new_group, log.t[at], log.a[at], log.q[at])
    where = np.full(log.q.size, -1, dtype=np.int64)
    where[at] = np.arange(at.size)
    pos = where[asks]
    best = np.where(pos >= 0, latest[np.maximum(pos, 0)], -1)
    return np.where(best >= 0, at[np.maximum(best, 0)], _UNMATCHED)


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


def match_log_returns(
    log: pd.DataFrame, order_changes: np.ndarray | None = None, before_us: int | None = None
) -> np.ndarray:
    """:func:`match_returns` of a canonical log frame (optional id columns used if present;
    ``order_changes`` as there). With ``before_us``, only the returns before that instant
    (UTC microseconds) are matched, the others get -1: matching looks back only, so their
    matches are the same, and the rows from that instant on are never looked at."""
    out = np.full(len(log), _UNMATCHED, dtype=np.int64)
    returns, lines = log_return_pairs(log, order_changes, before_us)
    out[returns] = lines
    return out


def log_return_pairs(
    log: pd.DataFrame,
    order_changes: np.ndarray | None = None,
    before_us: int | None = None,
    sorted_rows: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`match_log_returns` as :func:`return_pairs` gives it (``sorted_rows`` as there)."""
    is_return = log["is_return"].to_numpy(dtype=bool)
    ts = np.asarray(log["timestamp"].array.as_unit("us").asi8, dtype=np.int64)
    if before_us is not None:
        is_return = is_return & (ts < before_us)
    if not is_return.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ids = log["customer_id"]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes = np.asarray(ids.array.codes)  # any integer width will do: no int64 copy
    else:
        codes = pd.factorize(ids)[0].astype(np.int64)
        sorted_rows = False
    order = _strings(log, "order_id")
    product = _strings(log, "product_id")
    amount = log["amount"].to_numpy(dtype=np.float64)
    return return_pairs(codes, ts, is_return, order, product, amount, order_changes, sorted_rows)


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
    return _as_strings(arr)


def net_amounts(
    amount: np.ndarray,
    is_return: np.ndarray,
    matched: np.ndarray,
    counted: np.ndarray | None = None,
) -> np.ndarray:
    """Per row: a purchase's amount minus the matched returns among ``counted`` rows
    (default all), clipped at 0; return rows keep their own (refunded) amount."""
    take = np.flatnonzero(np.asarray(is_return, dtype=bool) & (matched >= 0))
    if counted is not None:
        take = take[np.asarray(counted, dtype=bool)[take]]
    return net_pair_amounts(amount, take, matched[take])


def net_pair_amounts(amount: np.ndarray, returns: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """:func:`net_amounts` of the returns at rows ``returns`` (ascending) netted against the
    purchase rows ``lines``, as :func:`return_pairs` gives them."""
    net = np.asarray(amount, dtype=np.float64).copy()
    if returns.size == 0:
        return net
    # summed per purchase in row order, as a bincount over every row would, but over the
    # returned-to purchases only
    purchases, slot = np.unique(lines, return_inverse=True)
    refunds = np.bincount(slot, weights=net[returns], minlength=purchases.size)
    touched = refunds > 0
    purchases = purchases[touched]
    net[purchases] = np.maximum(net[purchases] - refunds[touched], 0.0)
    return net
