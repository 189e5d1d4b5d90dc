"""Point-in-time customer features from the canonical purchase log.

``build_features(log, as_of)`` returns one row per customer with at least one purchase (a
non-return row) strictly before ``as_of``: index ``customer_id`` (``str``, sorted), columns
exactly ``catalog.FEATURE_COLUMNS`` in order. The column meanings live in ``features.catalog``;
this docstring records the choices the catalog leaves open.

Dtypes: the count columns in ``COUNT_COLUMNS`` are ``int64`` (they are never missing); every
other column is ``float64``.

Time: timestamps are handled as int64 microseconds since the epoch (UTC).
- ``recency_days``, ``tenure_days`` and ``active_span_days`` come from exact timestamps and
  are fractional days (an order 36 hours before ``as_of`` has ``recency_days == 1.5``);
  ``recency_gap_ratio`` divides that fractional recency by ``gap_mean_days``.
- Gaps are between consecutive purchase days (UTC calendar dates), so they are whole days.
- A window of ``W`` days is ``[as_of - W days, as_of)``: an order exactly ``W`` days before
  ``as_of`` is inside, one exactly at ``as_of`` is not used at all. Windows count an order
  (and its whole value) by the order's time; ``spend_trend``'s earlier half is
  ``[as_of - 360 days, as_of - 180 days)``.

Orders: an order is a maximal run of consecutive purchase rows (in canonical order) with the
same ``customer_id`` and ``order_id``; its time is its first line's timestamp and its value
the sum of its lines' ``amount`` net of the returns made before ``as_of`` (matched to their
purchase lines by ``features.log.returns``; a fully cancelled order is still an order, worth 0),
so every money column is net of returns and cancellations. Lines of one order that carry different timestamps are one
order only while they stay adjacent in the canonical sort (no other order of that customer in
between); the loader is expected to keep them so. The last order (for ``last_order_value``) is
the last one in canonical order, so ties on time go to the greatest ``order_id``.

Input: the log must already be canonical (see ``features.log.schema``). Sorting 10 million rows
per call would cost more than building every feature, so the function checks the
``customer_id``/``timestamp`` order cheaply and raises ``PurchaseLogError`` instead of
sorting. Everything is vectorised over the sorted arrays (``np.add.reduceat`` and friends on
group boundaries); nothing loops over customers in Python.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import lru_cache

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.catalog import FEATURE_COLUMNS, WINDOWS_DAYS
from features.feature_inputs import (
    InputColumns,
    PurchaseRows,
    array_columns,
    bool_column,
    check_amount,
    check_columns,
    check_sorted,
    frame_columns,
    order_id_changes,
    take_kept,
    timestamps_us,
)
from features.group_values import distinct_pair_per_group
from features.log.log_arrays import LogArrays
from features.log.returns import log_return_pairs, net_amounts, net_pair_amounts
from features.order_times import most_on_one_weekday, per_day, window_columns
from features.utc import US_PER_DAY, to_utc_timestamp

COUNT_COLUMNS: frozenset[str] = frozenset(
    {
        "n_orders",
        "n_purchase_days",
        "n_repeat_days",
        "orders_same_season_last_year",
        "n_returns",
        "n_categories",
        "n_channels",
        *(f"orders_{w}d" for w in WINDOWS_DAYS),
    }
)
_THREADED_MIN_ROWS = 200_000
_CATALOG = frozenset(FEATURE_COLUMNS)


MAX_HORIZON_DAYS = 365
"""The longest horizon the features describe; longer label horizons share its features."""


class FeatureConfig(BaseModel):
    """Knobs of the feature builder; windows are fixed by ``catalog.WINDOWS_DAYS``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_days: int = Field(default=90, gt=0, le=MAX_HORIZON_DAYS)

    @classmethod
    def for_horizon(cls, horizon_days: int) -> FeatureConfig:
        """The features a model trained for ``horizon_days`` is built with (training and the
        artifact both ask here, so they cannot disagree)."""
        return cls(horizon_days=min(horizon_days, MAX_HORIZON_DAYS))


class FeatureBlock:
    """Customers' features as one float64 matrix (columns ``FEATURE_COLUMNS``) and their ids.

    The array form of :func:`build_features` for the scorer: a request of a few customers
    then costs no DataFrame work. Count columns hold whole numbers (exact in float64);
    :meth:`to_frame` restores their int64 dtype.
    """

    __slots__ = ("_columns", "_ids", "_index", "_positions", "_values", "names")

    def __init__(
        self,
        customer_id: np.ndarray | pd.Index,
        values: np.ndarray | None,
        names: tuple[str, ...] = FEATURE_COLUMNS,
        columns: dict[str, np.ndarray] | None = None,
    ) -> None:
        shape = (len(customer_id), len(names))
        if values is None:
            if columns is None or not _one_column_each(columns, names, shape[0]):
                raise ValueError(f"FeatureBlock: give values, or one column of each of {names}")
        elif values.shape != shape:
            raise ValueError(
                f"FeatureBlock: values of shape {values.shape} do not match "
                f"{len(customer_id)} customers x {len(names)} columns"
            )
        # ids taken from a log's str categories stay a str Index until someone asks for the
        # object array, and columns stay apart until someone asks for the matrix: the frame
        # of build_features then skips a round trip through objects and a copy of every value
        self._index = customer_id if isinstance(customer_id, pd.Index) else None
        self._ids = None if isinstance(customer_id, pd.Index) else customer_id
        self._values = values
        self._columns = columns
        self.names = tuple(names)
        self._positions = _positions(self.names)

    @property
    def customer_id(self) -> np.ndarray:
        """The customers' ids, an object array of ``str``."""
        if self._ids is None:
            self._ids = np.asarray(self._index, dtype=object)
        return self._ids

    @property
    def values(self) -> np.ndarray:
        """The features as one float64 matrix, a row per customer."""
        if self._values is None:
            assert self._columns is not None
            # one (columns, rows) stack, transposed: each column contiguous, in one call
            columns = [self._columns[name] for name in self.names]
            self._values = np.array(columns, dtype=np.float64).T
        return self._values

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else len(self.customer_id)

    def column(self, name: str) -> np.ndarray:
        if name not in self._positions:
            raise KeyError(f"feature block lacks column {name!r}")
        return self.values[:, self._positions[name]]

    def take(self, rows: np.ndarray) -> FeatureBlock:
        """The block's rows at ``rows`` (positions), in that order."""
        return FeatureBlock(self.customer_id[rows], self.values[rows], self.names)

    def to_frame(self) -> pd.DataFrame:
        """The documented ``build_features`` frame: index ``customer_id``, catalog dtypes."""
        ids = self._index if self._index is not None else self.customer_id
        index = pd.Index(ids, dtype="str", name="customer_id")
        if self._values is None and self._columns is not None:
            # the float64 matrix would hold the same numbers: counts are whole, below 2**53
            values = [self._columns[name] for name in self.names]
        else:
            values = [self.values[:, j] for j in range(len(self.names))]
        return pd.DataFrame(
            {
                name: column.astype(np.int64 if name in COUNT_COLUMNS else np.float64, copy=False)
                for name, column in zip(self.names, values, strict=True)
            },
            index=index,
            copy=False,
        )

    @classmethod
    def from_frame(cls, features: pd.DataFrame) -> FeatureBlock:
        """A feature frame (index customer_id) as a block of its catalog columns."""
        names = tuple(c for c in features.columns if c in _CATALOG)
        values = features.loc[:, list(names)].to_numpy(dtype=np.float64, na_value=np.nan)
        ids = np.asarray(features.index.astype("str"), dtype=object)
        return cls(ids, values, names)


@lru_cache(maxsize=16)
def _positions(names: tuple[str, ...]) -> dict[str, int]:
    """Column positions by name, shared by every block with these names (read-only)."""
    return {name: i for i, name in enumerate(names)}


def _one_column_each(columns: dict[str, np.ndarray], names: tuple[str, ...], n: int) -> bool:
    """Whether ``columns`` holds a one-dimensional column of ``n`` rows for every name."""
    try:
        return {columns[name].shape for name in names} <= {(n,)}
    except KeyError:
        return False


def build_features(
    log: pd.DataFrame,
    as_of: str | datetime | pd.Timestamp,
    config: FeatureConfig | None = None,
) -> pd.DataFrame:
    """Features of every customer who bought before ``as_of``, from rows before ``as_of`` only."""
    return build_feature_block(log, as_of, config).to_frame()


def build_feature_block(
    log: pd.DataFrame | LogArrays,
    as_of: str | datetime | pd.Timestamp,
    config: FeatureConfig | None = None,
) -> FeatureBlock:
    """:func:`build_features` as a :class:`FeatureBlock` (same rows, same values).

    ``log`` is the canonical log, or the same log as :class:`~features.log.log_arrays.LogArrays`
    (what the HTTP service builds from a request's rows, with no DataFrame in between).
    """
    if config is None:
        config = FeatureConfig()
    cutoff_ns = to_utc_timestamp(as_of).value
    # first microsecond not before as_of, so that ts < as_of <=> ts < cutoff
    cutoff = -(-cutoff_ns // 1000)
    if isinstance(log, LogArrays):
        codes, ts, amount = log.customer_codes, log.timestamp_us, log.amount
        is_return = log.is_return
    else:
        check_columns(log)
        codes = np.asarray(log["customer_id"].array.codes)
        ts = timestamps_us(log["timestamp"])
        is_return = bool_column(log, "is_return")
        amount = log["amount"].to_numpy(dtype=np.float64)
    check_sorted(codes, ts)
    check_amount(amount)

    before = ts < cutoff
    order_changes = None  # of the frame's order ids, once computed: netting and orders share it
    if (is_return & before).any():
        # money is counted net of the returns made before as_of (features.log.returns)
        if isinstance(log, LogArrays):
            matched = log.return_of
            if matched is None:
                raise ValueError(
                    "LogArrays with returns lacks return_of: build it with "
                    "canonical_log_arrays or LogArrays.from_frame"
                )
            amount = net_amounts(amount, is_return, matched, before)
        else:
            order_changes = order_id_changes(log["order_id"])
            pairs = log_return_pairs(log, order_changes, before_us=cutoff, sorted_rows=True)
            amount = net_pair_amounts(amount, *pairs)
    rows = (before & ~is_return).nonzero()[0]
    if rows.size == 0:
        return _empty_block()
    data = PurchaseRows(codes, ts, amount, is_return, before, rows, rows.size == len(log))
    if isinstance(log, LogArrays):
        return _build(array_columns(log, data), data, cutoff_ns, config)
    # string work (pyarrow, releases the GIL) runs beside the numpy work on large logs
    pool = ThreadPoolExecutor(max_workers=2) if len(log) >= _THREADED_MIN_ROWS else None
    try:
        return _build(frame_columns(log, data, pool, order_changes), data, cutoff_ns, config)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _build(
    columns: InputColumns, data: PurchaseRows, cutoff_ns: int, config: FeatureConfig
) -> FeatureBlock:
    codes, rows, all_rows = data.codes, data.rows, data.all_rows
    cutoff = -(-cutoff_ns // 1000)
    order_changes, category_codes, channel_codes = (
        columns.order_changes,
        columns.category_codes,
        columns.channel_codes,
    )
    cc = take_kept(codes, rows, all_rows)
    t = take_kept(data.ts, rows, all_rows)
    amt = take_kept(data.amount, rows, all_rows)
    qty, disc = columns.quantity, columns.discount

    n = rows.size
    cust_new = np.empty(n, dtype=bool)
    cust_new[0] = True
    np.not_equal(cc[1:], cc[:-1], out=cust_new[1:])
    cust_start = cust_new.nonzero()[0]
    n_cust = cust_start.size
    order_new = cust_new.copy()
    order_new[1:] |= order_changes.result()
    order_start = order_new.nonzero()[0]
    n_ord = order_start.size
    o_row = order_new.cumsum(dtype=np.int64)
    o_row -= 1

    # order level, sorted by customer then order time
    o_t = t[order_start]
    o_val = np.bincount(o_row, weights=amt, minlength=n_ord)
    disc_orders = o_row[disc.nonzero()[0]]  # an order per discounted line, ascending
    o_cust_new = cust_new[order_start]
    o_g = o_cust_new.cumsum() - 1
    c_row = o_g[o_row]
    co = o_cust_new.nonzero()[0]  # each customer's first order
    co_last = np.empty(n_cust, dtype=np.int64)
    co_last[:-1] = co[1:] - 1
    co_last[-1] = n_ord - 1
    n_orders = co_last - co + 1

    first_t = o_t[co]
    last_t = o_t[co_last]
    ns_per_day = US_PER_DAY * 1000
    recency = (cutoff_ns - last_t * 1000) / ns_per_day  # exact int64 ns, then one division
    tenure = (cutoff_ns - first_t * 1000) / ns_per_day
    span = (last_t - first_t) / US_PER_DAY

    monetary_total = np.add.reduceat(o_val, co)
    # a maximum is exact in any order; ``np.maximum.at`` (one float64 dimension) costs a
    # fraction of ``np.maximum.reduceat`` over a million short runs
    monetary_max = np.full(n_cust, -np.inf)
    np.maximum.at(monetary_max, o_g, o_val)
    n_items = np.bincount(c_row, weights=qty, minlength=n_cust)

    # purchase days
    o_day = o_t // US_PER_DAY
    day_new = o_cust_new.copy()
    day_new[1:] |= o_day[1:] != o_day[:-1]
    d_idx = day_new.nonzero()[0]
    day = o_day[d_idx]
    d_cust_new = o_cust_new[d_idx]
    cd = d_cust_new.nonzero()[0]
    cd_last = np.empty(n_cust, dtype=np.int64)
    cd_last[:-1] = cd[1:] - 1
    cd_last[-1] = d_idx.size - 1
    n_days = cd_last - cd + 1
    n_gaps = n_days - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        gap_mean = np.where(n_gaps > 0, (day[cd_last] - day[cd]) / np.maximum(n_gaps, 1), np.nan)
        gap_last = np.where(n_gaps > 0, day[cd_last] - day[np.maximum(cd_last - 1, 0)], np.nan)
        dev = np.subtract(day[1:], day[:-1], dtype=np.float64)  # the gaps: whole days, exact
        day_cust = d_cust_new.cumsum()
        day_cust -= 1
        gap_cust = day_cust[1:]  # customer of the later day of each gap
        dev -= gap_mean[gap_cust]
        dev *= dev
        # a gap across two customers weighs +0.0, which leaves every sum as it is
        dev[d_cust_new[1:]] = 0.0
        sq = np.bincount(gap_cust, weights=dev, minlength=n_cust)
        gap_std = np.where(n_gaps >= 2, np.sqrt(sq / np.maximum(n_gaps, 1)), np.nan)
        recency_gap_ratio = recency / gap_mean
    # Seasonal affinity: a purchase day lies in an earlier year's copy of the coming horizon
    # when its calendar phase relative to as_of is within [0, H). Shares need a history that
    # reaches back to such a copy (tenure above one year minus the horizon), else NaN.
    year = 365.25
    season_days_ahead = min(config.horizon_days, year)
    in_season = per_day(
        lambda d: (
            np.mod(-((cutoff_ns / ns_per_day) - d.astype(np.float64)), year) < season_days_ahead
        ),
        day,
    )
    season_days = np.bincount(day_cust, weights=in_season, minlength=n_cust)  # whole numbers
    reaches = tenure > year - season_days_ahead
    season_share = np.where(reaches, season_days / n_days, np.nan)

    out: dict[str, np.ndarray] = {
        "recency_days": recency,
        "tenure_days": tenure,
        "active_span_days": span,
        "n_orders": n_orders,
        "n_purchase_days": n_days,
        "n_repeat_days": n_gaps,
        "n_items": n_items,
        "monetary_total": monetary_total,
        "monetary_mean": monetary_total / n_orders,
        "monetary_max": monetary_max,
        "last_order_value": o_val[co_last],
        "items_per_order": n_items / n_orders,
        "gap_mean_days": gap_mean,
        "gap_std_days": gap_std,
        "gap_last_days": gap_last,
        "recency_gap_ratio": recency_gap_ratio,
        "purchase_rate_30d": n_days / np.maximum(tenure, 1.0) * 30.0,
        "season_share": season_share,
    }

    out.update(window_columns(o_t, o_g, o_cust_new, o_val, n_cust, cutoff, config.horizon_days))
    # orders with any discounted line (the first line of each), counted per customer
    if disc_orders.size > 1:
        first_line = np.empty(disc_orders.size, dtype=bool)
        first_line[0] = True
        np.not_equal(disc_orders[1:], disc_orders[:-1], out=first_line[1:])
        disc_orders = disc_orders[first_line]
    out["discount_share"] = np.bincount(o_g[disc_orders], minlength=n_cust) / n_orders

    cust_code = cc[cust_start].astype(np.int64)
    ret_rows = (data.before & data.is_return).nonzero()[0]
    n_codes = len(columns.customers)
    ret_codes = codes[ret_rows]
    n_returns = np.bincount(ret_codes, minlength=n_codes)[cust_code]
    returned = np.bincount(ret_codes, weights=data.amount[ret_rows], minlength=n_codes)[cust_code]
    denom = monetary_total + returned
    out["n_returns"] = n_returns.astype(np.int64)
    out["return_rate"] = np.divide(
        returned, denom, out=np.zeros(n_cust), where=(n_returns > 0) & (denom > 0)
    )

    out["weekday_concentration"] = most_on_one_weekday(o_day, o_g, n_orders) / n_orders
    out["n_categories"], out["n_channels"] = distinct_pair_per_group(
        category_codes.result(), channel_codes.result(), c_row, cust_start
    )
    # where in the year the horizon starts: one value per snapshot, so a model trained on
    # cutoffs across the year can learn seasonal levels and who buys in which season
    calendar_sin, calendar_cos = _calendar(cutoff_ns)
    out["calendar_sin"] = np.full(n_cust, calendar_sin)
    out["calendar_cos"] = np.full(n_cust, calendar_cos)

    categories = columns.customers
    if isinstance(categories, pd.Index):
        index = categories.take(cust_code)
        if categories.is_monotonic_increasing and index.dtype == "str":
            return FeatureBlock(index, None, columns=out)
        ids = np.asarray(index, dtype=object)
        if not categories.is_monotonic_increasing:
            order = np.argsort(ids, kind="stable")
            block = FeatureBlock(ids, None, columns=out)
            return FeatureBlock(ids[order], block.values[order])
        return FeatureBlock(ids, None, columns=out)
    return FeatureBlock(np.asarray(categories.take(cust_code), dtype=object), None, columns=out)


@lru_cache(maxsize=64)
def _calendar(cutoff_ns: int) -> tuple[np.float64, np.float64]:
    """sin and cos of where in the year the horizon starts, once per cutoff (a scorer's
    requests share a few ``as_of``; each is four scalar ufunc calls otherwise)."""
    year = 365.25
    angle = 2.0 * np.pi * np.mod(cutoff_ns / (US_PER_DAY * 1000), year) / year
    return np.sin(angle), np.cos(angle)


def _empty_block() -> FeatureBlock:
    return FeatureBlock(np.empty(0, dtype=object), np.empty((0, len(FEATURE_COLUMNS))))
