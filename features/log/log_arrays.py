"""The canonical log as arrays, built straight from typed rows (the HTTP service's input).

:func:`features.log.purchase_log.canonicalize` reads any source (text, mixed dtypes, time zones)
into the canonical DataFrame. For the few already-typed rows of an HTTP request its pandas
work cost more than the features and the five models together, so this module applies the
same rules to typed rows and returns the arrays :func:`features.builders.build_feature_block`
reads, with no DataFrame in between. The rules, checked against ``canonicalize`` by
``tests/features/test_log_arrays.py``:

- customer ids are stripped; rows whose id is blank are dropped;
- exact duplicates (rows equal in every column given, as given) are dropped, the first kept,
  unless ``config.duplicates == "keep"``;
- a return is a row with a negative amount or quantity, or an order id that starts with
  ``config.cancel_prefix``; amounts and quantities become absolute values;
- a missing quantity is 1; a blank order id is missing, and a missing order id is the row's
  UTC instant in ISO form, so a customer's rows at one instant form one order;
- a blank category or channel is missing;
- rows are ordered by customer, instant, then order id; full ties keep the given order;
- each return is matched to the purchase it nets against (``features.log.returns``, from the
  order ids as canonicalize keeps them and the product ids): ``LogArrays.return_of``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.log.canonical import fill_order_ids
from features.log.returns import match_log_returns, match_returns
from features.log.row_order import float_bits
from features.log.schema import LogConfig, PurchaseLogError
from features.log.text_columns import clean_text, code_customer_text

__all__ = ["LogArrays", "canonical_log_arrays"]

_DEFAULT_CONFIG = LogConfig()
_MAX_SHOWN = 5


@dataclass(frozen=True, slots=True)
class LogArrays:
    """A canonical log as arrays, rows in canonical order.

    Text columns the features only compare are integer codes: equal codes, equal values.
    ``customer_codes`` index ``customers`` (sorted distinct ids); ``order_codes`` are equal
    exactly where order ids are; category and channel codes are -1 where missing.
    """

    customers: np.ndarray
    customer_codes: np.ndarray
    timestamp_us: np.ndarray
    amount: np.ndarray
    quantity: np.ndarray
    discount: np.ndarray
    is_return: np.ndarray
    order_codes: np.ndarray
    category_codes: np.ndarray
    n_categories: int
    channel_codes: np.ndarray
    n_channels: int
    # per row, the purchase row a return nets against (features.log.returns), -1 elsewhere
    return_of: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.timestamp_us)

    @classmethod
    def from_frame(cls, log: pd.DataFrame) -> LogArrays:
        """A canonical log frame as arrays, rows as they stand (not re-sorted or checked)."""
        customer = log["customer_id"].array
        order_codes, _ = pd.factorize(log["order_id"], use_na_sentinel=True)
        category_codes, categories = pd.factorize(log["category"], use_na_sentinel=True)
        channel_codes, channels = pd.factorize(log["channel"], use_na_sentinel=True)
        return cls(
            customers=np.asarray(customer.categories, dtype=object),
            customer_codes=np.asarray(customer.codes, dtype=np.int64),
            timestamp_us=np.asarray(log["timestamp"].array.as_unit("us").asi8),
            amount=log["amount"].to_numpy(dtype=np.float64),
            quantity=log["quantity"].to_numpy(dtype=np.float64),
            discount=log["discount"].to_numpy(dtype=bool),
            is_return=log["is_return"].to_numpy(dtype=bool),
            order_codes=order_codes.astype(np.int64),
            category_codes=category_codes.astype(np.int64),
            n_categories=len(categories),
            channel_codes=channel_codes.astype(np.int64),
            n_channels=len(channels),
            return_of=match_log_returns(log),
        )


def canonical_log_arrays(
    customer_id: Sequence[str],
    timestamp_us: np.ndarray,
    amount: np.ndarray,
    *,
    quantity: np.ndarray | None = None,
    discount: np.ndarray | None = None,
    order_id: Sequence[str | None] | None = None,
    product_id: Sequence[str | None] | None = None,
    category: Sequence[str | None] | None = None,
    channel: Sequence[str | None] | None = None,
    config: LogConfig | None = None,
) -> LogArrays:
    """The canonical log of typed rows: what ``canonicalize`` makes of the same columns.

    ``timestamp_us`` are UTC microseconds since the epoch. A column left as None is absent
    (as if the source had no such column); ``quantity`` may hold NaN for "not given".
    ``product_id`` is not kept (no feature reads it) but takes part in the duplicate check.
    Errors name the column and the 0-based row positions.
    """
    config = config or _DEFAULT_CONFIG
    ts = np.asarray(timestamp_us, dtype=np.int64)
    n = len(ts)
    amount = np.asarray(amount, dtype=np.float64)
    optional = {
        "quantity": quantity,
        "discount": discount,
        "order_id": order_id,
        "product_id": product_id,
        "category": category,
        "channel": channel,
    }
    for name, values in {"customer_id": customer_id, "amount": amount, **optional}.items():
        if values is not None and len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} rows, timestamp_us has {n}")
    _check_finite(amount, "amount", missing_ok=False)
    if quantity is not None:
        quantity = np.asarray(quantity, dtype=np.float64)
        _check_finite(quantity, "quantity", missing_ok=True)
    if discount is not None:
        discount = np.asarray(discount, dtype=bool)

    coded = _code_plain_customers(customer_id)
    if coded is None:
        codes, distinct = code_customer_text(pa.array(customer_id, pa.string()))
        customers = np.asarray(distinct, dtype=object)
    else:
        codes, customers = coded
    order = np.lexsort((ts, codes))  # stable: ties keep the given order
    order = order[codes[order] >= 0]  # blank ids sort first; drop them
    if config.duplicates == "drop":
        order = _drop_duplicates(order, codes, ts, amount, optional, customer_id)

    amt = amount[order]
    qty = np.ones(len(order)) if quantity is None else quantity[order]
    qty[np.isnan(qty)] = 1.0
    is_return = (amt < 0) | (qty < 0)
    kept_ts = ts[order]
    ids: pa.Array | None = None
    if order_id is None:
        # every order id would be its row's instant: the instants code the orders, and rows
        # tied on customer and instant share an id, so their order stands
        order_codes = kept_ts
    else:
        # the loader's own steps: strip (blank is missing), cancel prefix, ids from times
        given = clean_text(pa.array(order_id, pa.string()).take(order), strip=True)
        if config.cancel_prefix:
            cancelled = pc.starts_with(given, config.cancel_prefix).fill_null(False)
            is_return |= cancelled.to_numpy(zero_copy_only=False)
        ids = fill_order_ids(given, kept_ts, [])
        # full ties are ordered by order id (ranked as text); the rank codes the order too
        rank = pc.rank(ids, sort_keys="ascending", tiebreaker="dense").to_numpy()
        final = np.lexsort((rank, kept_ts, codes[order]))
        order, order_codes = order[final], rank[final].astype(np.int64)
        amt, qty, is_return, kept_ts = amt[final], qty[final], is_return[final], kept_ts[final]
        ids = ids.take(pa.array(final))
    return_of = None
    if is_return.any() and ids is None and product_id is None:
        return_of = _match_instant_returns(codes[order], kept_ts, is_return, np.abs(amt))
    elif is_return.any():
        if ids is None:  # the ids canonicalize gives rows without one: their UTC instant
            ids = fill_order_ids(None, kept_ts, [])
        products = None
        if product_id is not None:
            products = clean_text(pa.array(product_id, pa.string()).take(order), strip=False)
        return_of = match_returns(codes[order], kept_ts, is_return, ids, products, np.abs(amt))
    category_codes, n_categories = _text_codes(category, order)
    channel_codes, n_channels = _text_codes(channel, order)
    return LogArrays(
        customers=customers,
        customer_codes=codes[order],
        timestamp_us=kept_ts,
        amount=np.abs(amt),
        quantity=np.abs(qty),
        discount=np.zeros(len(order), bool) if discount is None else discount[order],
        is_return=is_return,
        order_codes=order_codes,
        category_codes=category_codes,
        n_categories=n_categories,
        channel_codes=channel_codes,
        n_channels=n_channels,
        return_of=return_of,
    )


def _check_finite(values: np.ndarray, column: str, *, missing_ok: bool) -> None:
    bad = np.isinf(values) if missing_ok else ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(f"{int(r)} ({values[r]!r})" for r in rows[:_MAX_SHOWN])
        more = f" and {len(rows) - _MAX_SHOWN} more" if len(rows) > _MAX_SHOWN else ""
        what = "infinite" if missing_ok else "non-finite or missing"
        raise PurchaseLogError(f"column {column!r}: {what} value(s) at rows {shown}{more}")


def _drop_duplicates(
    order: np.ndarray,
    codes: np.ndarray,
    ts: np.ndarray,
    amount: np.ndarray,
    optional: Mapping[str, Sequence[object] | np.ndarray | None],
    customer_id: Sequence[str],
) -> np.ndarray:
    """``order`` without rows equal, in every given column, to an earlier row.

    Duplicates share customer and instant (adjacent in ``order``) and every number, so the
    rows are narrowed on those with array work first; only rows still tied are compared as
    tuples of every given value (-0.0 equal to 0.0, NaN to NaN).
    """
    c, t = codes[order], ts[order]
    same = (c[1:] == c[:-1]) & (t[1:] == t[:-1])
    if not same.any():
        return order
    run = np.cumsum(np.concatenate(([True], ~same)))
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    at = np.flatnonzero(tied)  # positions in ``order``
    rows = order[at]
    keys = [run[at], float_bits(amount[rows])]
    for name in ("quantity", "discount"):
        values = optional[name]
        if values is not None:
            keys.append(float_bits(np.asarray(values, dtype=np.float64)[rows]))
    by_key = np.lexsort((at, *keys[::-1]))  # run first, then the numbers, then position
    stacked = np.stack([k[by_key] for k in keys])
    equal = (stacked[:, 1:] == stacked[:, :-1]).all(axis=0)
    candidate = np.zeros(len(at), dtype=bool)
    candidate[1:] |= equal
    candidate[:-1] |= equal
    if not candidate.any():
        return order
    given = [values for values in optional.values() if values is not None]
    seen: dict[int, set[tuple[object, ...]]] = {}
    duplicate = np.zeros(len(order), dtype=bool)
    for k in np.sort(at[by_key[candidate]]).tolist():  # source order within a run
        i = int(order[k])
        row = (
            customer_id[i],
            float(amount[i]) + 0.0,
            *(_comparable(values[i]) for values in given),
        )
        earlier = seen.setdefault(int(run[k]), set())
        if row in earlier:
            duplicate[k] = True
        else:
            earlier.add(row)
    return order[~duplicate]


def _comparable(value: object) -> object:
    """A value as the duplicate check compares it: NaN and None alike, numbers as floats."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return None if value != value else float(value)
    return value


def _text_codes(values: Sequence[str | None] | None, order: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes (-1 where missing or blank) of the rows in ``order``, and the distinct count.

    Codes number the values in order of first appearance, as Arrow's ``dictionary_encode``
    does. Text given as Python strings is coded by :func:`_code_plain_text`, several times
    cheaper than the Arrow calls on request-sized columns; anything else goes to Arrow.
    """
    if values is None:
        return np.full(len(order), -1, dtype=np.int64), 0
    if isinstance(values, list):
        coded = _code_plain_text(values, order)
        if coded is not None:
            return coded
    text = clean_text(pa.array(values, pa.string()).take(order), strip=False)
    encoded = pc.dictionary_encode(text)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, len(encoded.dictionary)


def _code_plain_text(values: list[str | None], order: np.ndarray) -> tuple[np.ndarray, int] | None:
    """:func:`_text_codes` of Python strings (None or "" missing) with array work after one
    hashing pass over the rows; None when some value is of another type."""
    code_of = {v: k for k, v in enumerate(set(values))}
    if not all(v is None or v.__class__ is str for v in code_of):
        return None
    raw = np.fromiter(map(code_of.__getitem__, values), np.int64, len(values))[order]
    known = np.ones(len(code_of), dtype=bool)
    for missing in (None, ""):
        if missing in code_of:
            known[code_of[missing]] = False
    present = known[raw]
    distinct, first = np.unique(raw[present], return_index=True)
    # number the values in order of first appearance among the rows in ``order``
    renumber = np.full(len(code_of), -1, dtype=np.int64)
    renumber[distinct[np.argsort(first)]] = np.arange(distinct.size)
    return renumber[raw], int(distinct.size)


def _code_plain_customers(customer_id: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Customer codes and the sorted ids when every id is a Python string that is already
    stripped and not blank (a request's ids, canonical since the schema), else None.

    Only the distinct ids are checked and sorted (Python sorts text by code point, as
    Arrow sorts UTF-8); the rows are then coded by one dictionary lookup each.
    """
    distinct = set(customer_id)
    if not all(c.__class__ is str and c and c == c.strip() for c in distinct):
        return None
    customers = sorted(distinct)
    code_of = {c: k for k, c in enumerate(customers)}
    codes = np.fromiter(map(code_of.__getitem__, customer_id), np.int64, len(customer_id))
    return codes, np.array(customers, dtype=object)


def _match_instant_returns(
    codes: np.ndarray, ts: np.ndarray, is_return: np.ndarray, amount: np.ndarray
) -> np.ndarray:
    """:func:`features.log.returns.match_returns` of rows in canonical order whose order ids
    are their instants (no order id given) and that have no product id.

    Then an order is a customer's rows at one instant, and the rules come down to: a return
    nets against the largest line of its own instant (the first such row), else against the
    largest line of the customer's latest earlier instant that has one (the last such row).
    Each is a reduction per block of rows tied on customer and instant: a few array calls
    where the general matcher turns the instants into text and hashes them.
    """
    n = ts.size
    new_customer = np.ones(n, dtype=bool)
    new_customer[1:] = codes[1:] != codes[:-1]
    new_block = new_customer.copy()
    new_block[1:] |= ts[1:] != ts[:-1]
    starts = np.flatnonzero(new_block)
    block = np.cumsum(new_block) - 1
    top = np.maximum.reduceat(np.where(is_return, -np.inf, amount), starts)
    has_line = top > -np.inf
    is_top = ~is_return & (amount == top[block])
    position = np.arange(n)
    first_top = np.minimum.reduceat(np.where(is_top, position, n), starts)
    last_top = np.maximum.reduceat(np.where(is_top, position, -1), starts)
    blocks = np.arange(starts.size)
    latest = np.maximum.accumulate(np.where(has_line, blocks, -1))
    customer_first = np.maximum.accumulate(np.where(new_customer[starts], blocks, 0))
    returns = np.flatnonzero(is_return)
    at = block[returns]
    earlier = latest[at]
    match = np.where(
        has_line[at],
        first_top[at],
        np.where(earlier >= customer_first[at], last_top[np.maximum(earlier, 0)], -1),
    )
    out = np.full(n, -1, dtype=np.int64)
    out[returns] = match
    return out
