"""Business KPIs of a canonical purchase log over an explicit period ``[start, end)``.

Counting follows ``features.log.schema``: the lines of one order are one *order*, the orders of
a customer on one UTC calendar day are one *purchase day*, and return rows never count as
orders. An order belongs to the period of its first line's timestamp. Months are UTC
calendar months labelled ``YYYY-MM``; a period that starts or ends inside a month counts only
the part of that month inside the period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.errors import InputError
from features.utc import US_PER_DAY, as_utc, to_utc_timestamp

if TYPE_CHECKING:
    from rich.console import RenderableType

_METRICS: dict[str, str] = {
    "customers": "customers with at least one order in the period",
    "orders": "orders in the period",
    "purchase_days": "customer purchase days in the period",
    "revenue": "sum of order value in the period (returns not deducted)",
    "repeat_rate": "share of customers with 2+ orders in the period",
    "repeat_rate_purchase_days": "share of customers with 2+ purchase days in the period",
    "purchase_frequency": "orders per customer",
    "average_order_value": "revenue / orders",
    "avg_days_between_orders": (
        "mean gap in days between consecutive orders of one customer, both in the period"
    ),
    "avg_days_between_purchase_days": (
        "mean gap in days between consecutive purchase days of one customer, both in the period"
    ),
    "returns": "return or cancellation rows in the period",
    "returned_value": "value of the return rows in the period",
}


def _period(
    start: str | pd.Timestamp, end: str | pd.Timestamp
) -> tuple[pd.Timestamp, pd.Timestamp]:
    lo, hi = to_utc_timestamp(start, "start"), to_utc_timestamp(end, "end")
    if hi <= lo:
        raise InputError(f"empty period: end ({hi}) must be after start ({lo})")
    return lo, hi


def _us(ts: pd.Timestamp) -> int:
    """UTC microseconds, rounded up: ``t < ts`` <=> ``t_us < _us(ts)`` for microsecond data."""
    return -(-int(ts.value) // 1_000)


def _month_of_us(us: np.ndarray) -> np.ndarray:
    """Months since year 0 (year * 12 + month - 1) of UTC microsecond timestamps."""
    index = pd.DatetimeIndex(pd.to_datetime(us, unit="us"))
    return (index.year.to_numpy() * 12 + index.month.to_numpy() - 1).astype(np.int64)


def _month_label(number: int) -> str:
    return f"{number // 12:04d}-{number % 12 + 1:02d}"


@dataclass(frozen=True)
class _Orders:
    """Orders as integer arrays, sorted by customer then time (fast at 10M rows)."""

    customer: np.ndarray  # int64 code
    time_us: np.ndarray  # int64, UTC microseconds of the order's first line
    value: np.ndarray  # float64
    n_customers: int

    @property
    def day(self) -> np.ndarray:
        return self.time_us // US_PER_DAY

    def first_time_us(self) -> np.ndarray:
        """Each customer's first order time (int64 max for customers without orders)."""
        first = np.full(self.n_customers, np.iinfo(np.int64).max, dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, self.customer[1:] != self.customer[:-1]])
        if len(self.customer):
            first[self.customer[starts]] = self.time_us[starts]
        return first

    def within(self, lo_us: int, hi_us: int) -> _Orders:
        mask = (self.time_us >= lo_us) & (self.time_us < hi_us)
        return _Orders(self.customer[mask], self.time_us[mask], self.value[mask], self.n_customers)


def _timestamps_us(column: pd.Series) -> np.ndarray:
    return as_utc(pd.DatetimeIndex(column)).as_unit("us").asi8


def _orders(log: pd.DataFrame) -> _Orders:
    """One entry per order (returns excluded): customer, time of its first line, value."""
    missing = [c for c in ("customer_id", "timestamp", "amount", "is_return") if c not in log]
    if missing:
        raise ValueError(f"canonical log lacks column(s) {missing}")
    customer_codes, uniques = pd.factorize(log["customer_id"])
    time_us = _timestamps_us(log["timestamp"])
    buy = ~log["is_return"].to_numpy(dtype=bool)
    if "order_id" in log.columns:
        order_codes = pd.factorize(log["order_id"])[0].astype(np.int64)
    else:
        order_codes = np.full(len(log), -1, dtype=np.int64)
    # Without an order id, one customer's rows at one timestamp are one order.
    time_key = np.where(order_codes < 0, time_us, 0)
    frame = pd.DataFrame(
        {
            "c": customer_codes[buy].astype(np.int64),
            "o": order_codes[buy],
            "k": time_key[buy],
            "t": time_us[buy],
            "v": log["amount"].to_numpy(dtype=float)[buy],
        }
    )
    grouped = frame.groupby(["c", "o", "k"], sort=False).agg(t=("t", "min"), v=("v", "sum"))
    customer = grouped.index.get_level_values("c").to_numpy(dtype=np.int64)
    time = grouped["t"].to_numpy(dtype=np.int64)
    value = grouped["v"].to_numpy(dtype=float)
    order = np.lexsort((time, customer))
    return _Orders(customer[order], time[order], value[order], max(len(uniques), 1))


def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and their counts (sort-based: faster than np.unique here)."""
    ordered = np.sort(keys)
    if len(ordered) == 0:
        return ordered, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return ordered[starts], np.diff(np.r_[starts, len(ordered)])


def _mean_consecutive_gap_days(customer: np.ndarray, time_days: np.ndarray) -> float:
    """Mean gap between consecutive entries of the same customer (input sorted by both)."""
    same = customer[1:] == customer[:-1]
    if not same.any():
        return math.nan
    return float(np.diff(time_days)[same].mean())


def _monthly(orders: _Orders, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
    first_month = _month_of_us(np.minimum(orders.first_time_us(), _us(hi)))
    period = orders.within(_us(lo), _us(hi))
    m0 = int(_month_of_us(np.array([_us(lo)]))[0])
    m1 = int(_month_of_us(np.array([_us(hi) - 1]))[0])
    n_months = m1 - m0 + 1
    month = _month_of_us(period.time_us) - m0
    key = month * orders.n_customers + period.customer
    pairs, per_pair = _unique_counts(key)
    pair_month = pairs // orders.n_customers
    pair_customer = pairs % orders.n_customers
    returning = first_month[pair_customer] - m0 < pair_month
    buyers = np.bincount(pair_month, minlength=n_months)
    table = pd.DataFrame(
        {
            "buyers": buyers,
            "orders": np.bincount(month, minlength=n_months),
            "multi_order_buyers": np.bincount(pair_month[per_pair >= 2], minlength=n_months),
            "returning_buyers": np.bincount(pair_month[returning], minlength=n_months),
        },
        index=pd.Index([_month_label(m0 + i) for i in range(n_months)], name="month"),
    ).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = np.where(buyers > 0, buyers, np.nan)
        table["multi_order_share"] = table["multi_order_buyers"] / denominator
        table["returning_share"] = table["returning_buyers"] / denominator
    return table[
        [
            "buyers",
            "orders",
            "multi_order_buyers",
            "multi_order_share",
            "returning_buyers",
            "returning_share",
        ]
    ]


def _cohort_counts(
    orders: _Orders, lo: pd.Timestamp, hi: pd.Timestamp, max_months: int | None
) -> pd.DataFrame:
    """Customers of each cohort ordering in month k; NaN where month k is after the period."""
    lo_us, hi_us = _us(lo), _us(hi)
    first = orders.first_time_us()
    in_cohort = (first >= lo_us) & (first < hi_us)
    cohort_month = np.zeros(orders.n_customers, dtype=np.int64)
    cohort_month[in_cohort] = _month_of_us(first[in_cohort])
    last_month = int(_month_of_us(np.array([hi_us - 1]))[0])
    cohorts = _unique_counts(cohort_month[in_cohort])[0]
    n_cols = last_month - int(cohorts[0]) + 1 if len(cohorts) else 1
    if max_months is not None:
        n_cols = min(n_cols, max_months + 1)
    active = in_cohort[orders.customer] & (orders.time_us < hi_us)
    customer = orders.customer[active]
    k = _month_of_us(orders.time_us[active]) - cohort_month[customer]
    keep = k < n_cols
    pairs = _unique_counts(customer[keep] * n_cols + k[keep])[0]
    pair_customer, pair_k = pairs // n_cols, pairs % n_cols
    row = np.searchsorted(cohorts, cohort_month[pair_customer])
    counts = np.bincount(row * n_cols + pair_k, minlength=len(cohorts) * n_cols)
    values = counts.reshape(len(cohorts), n_cols).astype(float)
    observed = (cohorts[:, None] + np.arange(n_cols)[None, :]) <= last_month
    return pd.DataFrame(
        np.where(observed, values, np.nan),
        index=pd.Index([_month_label(int(c)) for c in cohorts], name="cohort"),
        columns=pd.Index(range(n_cols), name="months_since"),
    )


def monthly_repeat_buyers(
    log: pd.DataFrame, start: str | pd.Timestamp, end: str | pd.Timestamp
) -> pd.DataFrame:
    """Per calendar month of the period: buyers, and two different notions of 'repeat'.

    - ``multi_order_buyers``: buyers with 2+ orders inside that month;
    - ``returning_buyers``: buyers in the month whose first order (anywhere in the log, also
      before ``start``) was before the month began.
    ``*_share`` columns divide by ``buyers`` (NaN in a month without buyers).
    """
    lo, hi = _period(start, end)
    return _monthly(_orders(log), lo, hi)


def cohort_retention(
    log: pd.DataFrame,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    *,
    counts: bool = False,
    max_months: int | None = None,
) -> pd.DataFrame:
    """Share of each first-purchase-month cohort that orders in month k after its first.

    Cohorts are customers whose first order (over the whole log) falls in ``[start, end)``;
    activity is counted up to ``end``. Rows: cohort ``YYYY-MM``; columns: ``months_since``
    0, 1, ... (0 is always 1.0). Cells after the period's last month are NaN (not observed),
    not 0. With ``counts=True`` the cells are numbers of customers instead of shares.
    """
    lo, hi = _period(start, end)
    table = _cohort_counts(_orders(log), lo, hi, max_months)
    return table if counts else table.div(table[0], axis=0)


def _json_value(value: Any) -> Any:  # any cell of a KPI frame, to a JSON value
    """JSON has no NaN or Infinity: a non-finite number is written as null."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True)
class Kpis:
    """KPIs of one period; ``metrics`` keys and meanings are in ``METRIC_DESCRIPTIONS``."""

    start: pd.Timestamp
    end: pd.Timestamp
    metrics: dict[str, float]
    monthly: pd.DataFrame = field(repr=False)
    cohorts: pd.DataFrame = field(repr=False)
    cohort_sizes: pd.Series = field(repr=False)

    def summary(self) -> pd.DataFrame:
        """One row per metric: value and description (what ``--format csv`` writes)."""
        return pd.DataFrame(
            {
                "metric": list(self.metrics),
                # object dtype keeps counts as integers in CSV output
                "value": pd.Series(list(self.metrics.values()), dtype=object),
                "description": [_METRICS[k] for k in self.metrics],
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinities become null, months and cohorts keyed by ``YYYY-MM``."""
        monthly = {
            month: {k: _json_value(v) for k, v in row.items()}
            for month, row in self.monthly.to_dict(orient="index").items()
        }
        cohorts = {
            cohort: {
                "customers": int(self.cohort_sizes[cohort]),
                "retention": [_json_value(v) for v in row],
            }
            for cohort, row in zip(self.cohorts.index, self.cohorts.to_numpy(), strict=True)
        }
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "metrics": {k: _json_value(v) for k, v in self.metrics.items()},
            "monthly": monthly,
            "cohort_retention": cohorts,
        }

    def render(self, max_cohort_months: int = 12) -> list[RenderableType]:
        """Rich tables (summary, monthly repeat buyers, cohort retention) for a terminal."""
        from rich.table import Table

        def fmt(value: float, share: bool = False) -> str:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return "-"
            if share:
                return f"{value:.1%}"
            if float(value).is_integer():
                return f"{int(value):,}"
            return f"{value:,.2f}"

        summary = Table(title=f"KPIs {self.start.date()} .. {self.end.date()} (end exclusive)")
        summary.add_column("metric")
        summary.add_column("value", justify="right")
        summary.add_column("meaning", style="dim")
        for name, value in self.metrics.items():
            summary.add_row(name, fmt(value, share=name.startswith("repeat_rate")), _METRICS[name])

        monthly = Table(title="Monthly buyers")
        for col in ("month", *self.monthly.columns):
            monthly.add_column(col, justify="left" if col == "month" else "right")
        for month, row in self.monthly.iterrows():
            monthly.add_row(
                str(month),
                *(fmt(v, share=c.endswith("_share")) for c, v in row.items()),
            )

        shown = [c for c in self.cohorts.columns if c <= max_cohort_months]
        cohorts = Table(title="Cohort retention (share of cohort ordering k months after)")
        cohorts.add_column("cohort")
        cohorts.add_column("customers", justify="right")
        for k in shown:
            cohorts.add_column(str(k), justify="right")
        for cohort, row in self.cohorts[shown].iterrows():
            cohorts.add_row(
                str(cohort),
                f"{int(self.cohort_sizes[cohort]):,}",
                *(fmt(v, share=True) for v in row),
            )
        return [summary, monthly, cohorts]


METRIC_DESCRIPTIONS: dict[str, str] = dict(_METRICS)


def compute_kpis(
    log: pd.DataFrame,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    *,
    max_cohort_months: int | None = None,
) -> Kpis:
    """All KPIs of the canonical ``log`` over ``[start, end)`` (naive dates are UTC)."""
    lo, hi = _period(start, end)
    orders = _orders(log)
    period = orders.within(_us(lo), _us(hi))
    per_customer = np.bincount(period.customer, minlength=orders.n_customers)
    n_customers = int((per_customer > 0).sum())
    n_orders = len(period.customer)
    revenue = float(period.value.sum())
    # Purchase days: unique (customer, day), sorted by customer, then day.
    day0 = int(period.day.min()) if n_orders else 0
    span = int(period.day.max()) - day0 + 1 if n_orders else 1
    day_keys = _unique_counts(period.customer * span + (period.day - day0))[0]
    day_customer, day_number = day_keys // span, day_keys % span
    days_per_customer = np.bincount(day_customer, minlength=orders.n_customers)
    time_us = _timestamps_us(log["timestamp"])
    is_return = log["is_return"].to_numpy(dtype=bool)
    in_period = is_return & (time_us >= _us(lo)) & (time_us < _us(hi))
    nan = math.nan
    metrics: dict[str, float] = {
        "customers": n_customers,
        "orders": n_orders,
        "purchase_days": len(day_keys),
        "revenue": revenue,
        "repeat_rate": (per_customer >= 2).sum() / n_customers if n_customers else nan,
        "repeat_rate_purchase_days": (
            (days_per_customer >= 2).sum() / n_customers if n_customers else nan
        ),
        "purchase_frequency": n_orders / n_customers if n_customers else nan,
        "average_order_value": revenue / n_orders if n_orders else nan,
        "avg_days_between_orders": _mean_consecutive_gap_days(
            period.customer, period.time_us / US_PER_DAY
        ),
        "avg_days_between_purchase_days": _mean_consecutive_gap_days(
            day_customer, day_number.astype(float)
        ),
        "returns": int(in_period.sum()),
        "returned_value": float(np.abs(log["amount"].to_numpy(dtype=float)[in_period]).sum()),
    }
    metrics = {k: v.item() if isinstance(v, np.generic) else v for k, v in metrics.items()}
    counts = _cohort_counts(orders, lo, hi, max_cohort_months)
    return Kpis(
        start=lo,
        end=hi,
        metrics=metrics,
        monthly=_monthly(orders, lo, hi),
        cohorts=counts.div(counts[0], axis=0),
        cohort_sizes=counts[0].fillna(0).astype(np.int64).rename("customers"),
    )
