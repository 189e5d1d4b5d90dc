"""The canonical log of a few typed rows, in plain Python: a request's history.

:func:`features.log.log_arrays.canonical_log_arrays` is array work: some forty Arrow and NumPy
calls whatever the size (half of them when returns are matched), whose fixed cost was the
largest stage of a one-customer ``/score`` request. For a few dozen rows a loop over Python
values is several times cheaper, so :func:`typed_log_arrays` runs :func:`small_log_arrays`
up to ``SMALL_ROWS`` rows and the array path above that. The result is the same ``LogArrays``,
value for value (``tests/features/test_small_log.py`` compares the two on random logs with
returns, cancellations, order and product ids, duplicates and ties), by the same rules:

- customer ids are stripped, blank ones dropped, and sorted by code point;
- rows ordered by customer and instant (ties in the given order), exact duplicates dropped
  unless ``config.duplicates == "keep"``; with order ids, full ties ordered by order id;
- a return is a negative amount or quantity, or an order id with ``config.cancel_prefix``;
- a missing order id is the row's UTC instant in ISO form (whole seconds unless some
  missing one has a fraction), and order codes are the dense rank of the ids;
- returns net against a purchase line by :mod:`features.log.returns`' three rules (order, then
  product, then the customer's latest line);
- category and channel codes number the values in order of first appearance.

Anything outside the common case (a non-finite number, a missing customer id, lengths that
disagree) goes to the array path, which owns the error messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from typing_extensions import TypedDict, Unpack

from features.log.log_arrays import LogArrays, canonical_log_arrays
from features.log.returns import CANCEL_PREFIX
from features.log.schema import LogConfig

__all__ = ["SMALL_ROWS", "small_log_arrays", "typed_log_arrays"]

SMALL_ROWS = 256
"""Up to this many rows the plain-Python path: its cost grows per row where the array
path's is mostly fixed, and they meet at a few hundred rows."""

_DEFAULT_CONFIG = LogConfig()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LogColumns(TypedDict, total=False):
    """The optional columns and config of ``canonical_log_arrays``, passed on unchanged."""

    quantity: np.ndarray | None
    discount: np.ndarray | None
    order_id: Sequence[str | None] | None
    product_id: Sequence[str | None] | None
    category: Sequence[str | None] | None
    channel: Sequence[str | None] | None
    config: LogConfig | None


def typed_log_arrays(
    customer_id: Sequence[str],
    timestamp_us: np.ndarray,
    amount: np.ndarray,
    **columns: Unpack[LogColumns],
) -> LogArrays:
    """``canonical_log_arrays`` of the same arguments, by the cheaper path for their size."""
    if len(timestamp_us) <= SMALL_ROWS:
        small = small_log_arrays(customer_id, timestamp_us, amount, **columns)
        if small is not None:
            return small
    return canonical_log_arrays(customer_id, timestamp_us, amount, **columns)


def small_log_arrays(
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
) -> LogArrays | None:
    """``canonical_log_arrays`` in plain Python; None when the input is not the common case
    (then the array path gives the answer or the error)."""
    config = config or _DEFAULT_CONFIG
    ts = [int(t) for t in np.asarray(timestamp_us, dtype=np.int64).tolist()]
    n = len(ts)
    amt_in = np.asarray(amount, dtype=np.float64).tolist()
    qty_in = None if quantity is None else np.asarray(quantity, dtype=np.float64).tolist()
    disc_in = None if discount is None else np.asarray(discount, dtype=bool).tolist()
    texts = {"order_id": order_id, "product_id": product_id}
    texts |= {"category": category, "channel": channel}
    if n == 0 or len(customer_id) != n or len(amt_in) != n:
        return None
    if any(v is not None and len(v) != n for v in (qty_in, disc_in, *texts.values())):
        return None
    if not all(math.isfinite(a) for a in amt_in):
        return None
    if qty_in is not None and any(math.isinf(q) for q in qty_in):
        return None
    if not all(isinstance(c, str) for c in customer_id):
        return None
    for values in texts.values():
        if values is not None and not all(v is None or isinstance(v, str) for v in values):
            return None

    stripped = [c.strip() for c in customer_id]
    customers = sorted({c for c in stripped if c})
    code_of = {c: k for k, c in enumerate(customers)}
    codes = [code_of.get(c, -1) for c in stripped]
    order = sorted((i for i in range(n) if codes[i] >= 0), key=lambda i: (codes[i], ts[i]))
    if config.duplicates == "drop":
        given = [qty_in, disc_in, *texts.values()]
        order = _without_duplicates(order, codes, ts, customer_id, amt_in, given)

    amt = [amt_in[i] for i in order]
    qty = [1.0] * len(order) if qty_in is None else [qty_in[i] for i in order]
    qty = [1.0 if q != q else q for q in qty]
    is_return = [a < 0 or q < 0 for a, q in zip(amt, qty, strict=True)]
    kept_ts = [ts[i] for i in order]
    ids: list[str] | None = None
    order_codes: list[int] | None = None
    if order_id is not None:
        given_ids = [_blank_is_none(order_id[i], strip=True) for i in order]
        prefix = config.cancel_prefix
        if prefix:
            is_return = [
                r or (g is not None and g.startswith(prefix))
                for r, g in zip(is_return, given_ids, strict=True)
            ]
        ids = _filled_ids(given_ids, kept_ts)
        rank_of = {s: k + 1 for k, s in enumerate(sorted(set(ids)))}
        rank = [rank_of[s] for s in ids]
        kept_codes = [codes[i] for i in order]
        final = sorted(range(len(order)), key=lambda k: (kept_codes[k], kept_ts[k], rank[k]))
        order = [order[k] for k in final]
        order_codes = [rank[k] for k in final]
        amt, qty = [amt[k] for k in final], [qty[k] for k in final]
        is_return, kept_ts = [is_return[k] for k in final], [kept_ts[k] for k in final]
        ids = [ids[k] for k in final]
    kept_codes = [codes[i] for i in order]
    abs_amt = [abs(a) for a in amt]
    return_of = None
    if any(is_return):
        # without order ids every id is the row's instant, equal exactly where instants
        # are and never with the cancel prefix (it starts with a digit): the instant will do
        ids_or_instants: list[str] | list[int] = kept_ts if ids is None else ids
        products = None
        if product_id is not None:
            products = [_blank_is_none(product_id[i], strip=False) for i in order]
        return_of = np.array(
            _match_returns(kept_codes, kept_ts, is_return, ids_or_instants, products, abs_amt),
            dtype=np.int64,
        )
    ts_array = np.array(kept_ts, dtype=np.int64)
    category_codes, n_categories = _text_codes(category, order)
    channel_codes, n_channels = _text_codes(channel, order)
    return LogArrays(
        customers=np.array(customers, dtype=object),
        customer_codes=np.array(kept_codes, dtype=np.int64),
        timestamp_us=ts_array,
        amount=np.array(abs_amt, dtype=np.float64),
        quantity=np.array([abs(q) for q in qty], dtype=np.float64),
        discount=(
            np.zeros(len(order), bool)
            if disc_in is None
            else np.array([disc_in[i] for i in order], dtype=bool)
        ),
        is_return=np.array(is_return, dtype=bool),
        order_codes=ts_array if order_codes is None else np.array(order_codes, dtype=np.int64),
        category_codes=category_codes,
        n_categories=n_categories,
        channel_codes=channel_codes,
        n_channels=n_channels,
        return_of=return_of,
    )


def _blank_is_none(value: str | None, *, strip: bool) -> str | None:
    if value is None:
        return None
    if strip:
        value = value.strip()
    return value if value else None


def _comparable(value: object) -> object:
    """A value as the duplicate check compares it: NaN and None alike, -0.0 as 0.0."""
    if isinstance(value, float):
        return None if value != value else value + 0.0
    return value


def _without_duplicates(
    order: list[int],
    codes: list[int],
    ts: list[int],
    customer_id: Sequence[str],
    amount: list[float],
    given: list[list[object] | Sequence[str | None] | None],
) -> list[int]:
    """``order`` without rows equal in every given column to an earlier row (duplicates
    share customer and instant, so they are adjacent runs in ``order``)."""
    present = [values for values in given if values is not None]
    seen: set[tuple[object, ...]] = set()
    kept = []
    for i in order:
        row = (
            codes[i],
            ts[i],
            customer_id[i],
            amount[i] + 0.0,
            *(_comparable(values[i]) for values in present),
        )
        if row not in seen:
            seen.add(row)
            kept.append(i)
    return kept


def _filled_ids(given: list[str | None], instants: list[int]) -> list[str]:
    """Missing order ids as the row's UTC instant in ISO form, as ``fill_order_ids`` writes
    them: with microseconds only when some missing one has a fraction."""
    missing = [t for g, t in zip(given, instants, strict=True) if g is None]
    if not missing:
        return [g for g in given if g is not None]
    fractions = any(t % 1_000_000 for t in missing)
    out = []
    for g, t in zip(given, instants, strict=True):
        if g is None:
            when = _EPOCH + timedelta(microseconds=t)
            text = when.strftime("%Y-%m-%dT%H:%M:%S")
            g = f"{text}.{when.microsecond:06d}Z" if fractions else f"{text}Z"
        out.append(g)
    return out


def _text_codes(values: Sequence[str | None] | None, order: list[int]) -> tuple[np.ndarray, int]:
    """Codes (-1 where missing or blank) by first appearance, and the distinct count."""
    if values is None:
        return np.full(len(order), -1, dtype=np.int64), 0
    code_of: dict[str, int] = {}
    codes = []
    for i in order:
        value = values[i]
        if value:
            codes.append(code_of.setdefault(value, len(code_of)))
        else:
            codes.append(-1)
    return np.array(codes, dtype=np.int64), len(code_of)


def _match_returns(
    codes: list[int],
    ts: list[int],
    is_return: list[bool],
    ids: list[str] | list[int],
    products: list[str | None] | None,
    amount: list[float],
) -> list[int]:
    """:func:`features.log.returns.match_returns` of rows in canonical order, one return at a
    time: per row the purchase row a return nets against, -1 elsewhere."""
    out = [-1] * len(ts)
    product_of = [None] * len(ts) if products is None else products
    line_ids = {ids[j] for j, r in enumerate(is_return) if not r}
    start = 0  # the first row of row i's customer (rows come grouped by customer)
    for i, returned in enumerate(is_return):
        if codes[i] != codes[start]:
            start = i
        if not returned:
            continue
        # rows are in time order within a customer: its lines up to i's time end at or after i
        end = i + 1
        while end < len(ts) and codes[end] == codes[i] and ts[end] == ts[i]:
            end += 1
        lines = [j for j in range(start, end) if not is_return[j]]
        product = product_of[i]
        # 1. the order the return names, with or without the cancel prefix
        named = ids[i]
        if isinstance(named, str) and named.startswith(CANCEL_PREFIX):
            named = named[len(CANCEL_PREFIX) :]
        if named in line_ids:
            of_order = [j for j in lines if ids[j] == named]
            same = [j for j in of_order if product is not None and product_of[j] == product]
            pick = same or of_order
            if pick:
                out[i] = max(pick, key=lambda j: (amount[j], -j))
                continue
        # 2. the latest line of the same product; 3. the customer's latest line
        if product is not None:
            same = [j for j in lines if product_of[j] == product]
            if same:
                out[i] = max(same, key=lambda j: (ts[j], amount[j], j))
                continue
        if lines:
            out[i] = max(lines, key=lambda j: (ts[j], amount[j], j))
    return out
