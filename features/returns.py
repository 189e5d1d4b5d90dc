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
    unmatched returns. Rows may come in any order; ids are Arrow string arrays or None."""
    n = len(timestamp_us)
    out = np.full(n, _UNMATCHED, dtype=np.int64)
    ret = np.flatnonzero(is_return)
    if ret.size == 0:
        return out
    codes = np.asarray(customer_codes, dtype=np.int64)
    ts = np.asarray(timestamp_us, dtype=np.int64)
    with_returns = np.zeros(int(codes.max()) + 1, dtype=bool)
    with_returns[codes[ret]] = True
    pur = np.flatnonzero(~np.asarray(is_return, dtype=bool) & with_returns[codes])
    if pur.size == 0:
        return out
    product = None
    if product_ids is not None:
        encoded = pc.dictionary_encode(pc.cast(product_ids, pa.string()))
        product = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    left = pd.DataFrame({"c": codes[ret], "t": ts[ret], "r": ret})
    value = np.zeros(n) if amount is None else np.asarray(amount, dtype=np.float64)
    right = pd.DataFrame({"c": codes[pur], "t": ts[pur], "a": value[pur], "p": pur})
    if product is not None:
        left["prod"], right["prod"] = product[ret], product[pur]
    matched = pd.Series(_UNMATCHED, index=ret, dtype=np.int64)
    if order_ids is not None:
        matched = _by_order(left, right, order_ids, matched)
    if product is not None:
        todo = matched.to_numpy() == _UNMATCHED
        known = left["prod"].to_numpy() >= 0
        found = _latest_before(left[todo & known], right[right["prod"] >= 0], ["c", "prod"])
        matched.loc[found.index] = found.to_numpy()
    todo = matched.to_numpy() == _UNMATCHED
    found = _latest_before(left[todo], right, ["c"])
    matched.loc[found.index] = found.to_numpy()
    out[matched.index.to_numpy()] = matched.to_numpy()
    return out


def _by_order(
    left: pd.DataFrame, right: pd.DataFrame, order_ids: pa.Array, matched: pd.Series
) -> pd.Series:
    """Rule 1: the return names its order (with or without the cancel prefix)."""
    ids = pc.cast(order_ids, pa.string())
    given = ids.take(pa.array(left["r"].to_numpy()))
    prefixed = pc.fill_null(pc.starts_with(given, CANCEL_PREFIX), False)
    stripped = pc.if_else(prefixed, pc.utf8_slice_codeunits(given, len(CANCEL_PREFIX)), given)
    keys = left.assign(o=pd.Series(stripped.to_pandas(), dtype=object).to_numpy())
    lines = right.assign(o=pd.Series(ids.take(pa.array(right["p"].to_numpy())).to_pandas()))
    lines = lines.dropna(subset=["o"])
    hit = keys.merge(lines, on=["c", "o"], suffixes=("", "_p"))
    hit = hit[hit["t_p"] <= hit["t"]]
    if hit.empty:
        return matched
    if "prod" in hit:
        # the line of the same product first, then the order's largest line
        hit = hit.assign(other=(hit["prod"] != hit["prod_p"]) | (hit["prod"] < 0))
        hit = hit.sort_values(["r", "other", "a", "p"], ascending=[True, True, False, True])
    else:
        hit = hit.sort_values(["r", "a", "p"], ascending=[True, False, True])
    first = hit.drop_duplicates("r")
    matched.loc[first["r"].to_numpy()] = first["p"].to_numpy()
    return matched


def _latest_before(left: pd.DataFrame, right: pd.DataFrame, by: list[str]) -> pd.Series:
    """For each return, the latest purchase row with equal ``by`` keys at or before it."""
    if left.empty or right.empty:
        return pd.Series(dtype=np.int64)
    # ties on time go to the largest line (the last one in this order)
    lines = right.sort_values(["t", "a", "p"], kind="stable")
    hit = pd.merge_asof(
        left.sort_values("t", kind="stable"),
        lines[[*by, "t", "p"]],
        on="t",
        by=by,
        direction="backward",
        allow_exact_matches=True,
    ).dropna(subset=["p"])
    return pd.Series(hit["p"].to_numpy(dtype=np.int64), index=hit["r"].to_numpy())


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
