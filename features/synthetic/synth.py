"""A seeded synthetic purchase log with known ground truth: retain's built-in demo dataset.

The generator follows the buy-till-you-die story the models assume, plus the calendar effects
they must learn, so a backtest on it has a right answer:

- **acquisition**: each customer's first purchase is spread over the whole period, more of
  them in Q4 and in campaigns (same calendar intensity as repeat purchases);
- **buying**: while alive, a customer buys as a Poisson process with a personal base rate
  ``lambda ~ Gamma(rate_shape, mean_purchases_per_year / rate_shape)`` per year, modulated by
  a yearly seasonality (peak in mid December) and by campaign lifts; the process is drawn
  exactly by time rescaling of the cumulative daily intensity (no per-customer loops);
- **gift buyers**: a share (``gift_share``) buys only in the run-up to Christmas, at the
  same yearly rate: BTYD models, blind to the calendar, expect them in any season;
- **rhythm**: a share of customers (``regular_share``) buys on a rhythm instead: a renewal
  process whose gaps (in seasonal/campaign-rescaled time) are Gamma(``regularity_shape``)
  with the same mean rate, as replenishment buyers do. BTYD models assume Poisson timing
  and cannot tell an overdue regular from a quiet one (Platzer & Reutterer, 2016); the
  buying-rhythm features can;
- **dropout**: after every purchase (including the first) the customer leaves for good with
  a personal probability ``p ~ Beta(dropout_a, dropout_b)``; ``dropout_time`` is the time of
  that last purchase (BG/NBD convention);
- **sale-only buyers**: a share of customers buys only while a campaign runs, and every
  order they place is discounted;
- **orders**: 1 + Poisson lines per order (distinct products), categories drawn from a personal favourite plus
  the catalogue mix, per-customer spend level (Gamma), a preferred channel, discounted
  orders cheaper; outside campaigns a few orders use a coupon;
- **returns**: a few percent of lines come back later as a negative-amount row whose
  ``order_id`` is the original one prefixed with ``C`` (the Online Retail convention).

Rows per customer (``log`` rows, returns included) at the defaults over 2022-01-01 ..
2024-12-31: about 10 (9.95 to 10.02 on 20k-customer draws with seeds 0-2; 9.88 with 1M
customers, seed 0), so 1M customers give about 10M rows, drawn in about 11 s on an idle
2-core machine (peak memory about 3.5 GB). ``mean_purchases_per_year`` scales this
sub-linearly (dropout caps lifetimes); use :func:`customers_for_rows` to target a row count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import InputError
from features.utc import US_PER_DAY, to_utc_timestamp

CATEGORIES: tuple[str, ...] = (
    "books",
    "music",
    "electronics",
    "home",
    "garden",
    "toys",
    "beauty",
    "sports",
)
_CATEGORY_WEIGHTS = np.array([0.2, 0.16, 0.14, 0.14, 0.08, 0.1, 0.1, 0.08])
_CATEGORY_PRICE = np.array([14.0, 11.0, 95.0, 38.0, 30.0, 22.0, 19.0, 45.0])
CHANNELS: tuple[str, ...] = ("web", "store", "app")
_CHANNEL_WEIGHTS = np.array([0.55, 0.3, 0.15])


@dataclass(frozen=True)
class SyntheticLog:
    """A raw purchase log (source contract) and the per-customer truth it was drawn from.

    ``truth`` columns: customer_id, first_purchase, alive_at_end, dropout_time (NaT while
    alive), purchase_rate_per_year (base rate before seasonality and campaigns),
    dropout_probability, sale_only, gift_buyer (buys only 15 Nov - 24 Dec), regular_buyer (Gamma-renewal rhythm), n_orders (orders in
    ``log``).
    ``campaigns`` lists the campaign windows (start inclusive, end exclusive, UTC).
    """

    log: pd.DataFrame
    truth: pd.DataFrame
    campaigns: pd.DataFrame


def default_campaigns(start: pd.Timestamp, end: pd.Timestamp) -> list[tuple[str, str]]:
    """Yearly campaign windows: January sale, spring week, summer sale, Black Friday week."""
    windows: list[tuple[str, str]] = []
    for year in range(start.year, end.year + 1):
        nov1 = pd.Timestamp(year=year, month=11, day=1)
        fourth_thursday = nov1 + pd.Timedelta(days=(3 - nov1.weekday()) % 7 + 21)
        black_friday = fourth_thursday + pd.Timedelta(days=1)
        windows += [
            (f"{year}-01-02", f"{year}-01-16"),
            (f"{year}-04-10", f"{year}-04-17"),
            (f"{year}-07-01", f"{year}-07-15"),
            (str(black_friday.date()), str((black_friday + pd.Timedelta(days=7)).date())),
        ]
    return windows


def _invert(cum: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Time (in days) where the cumulative daily intensity reaches ``target`` (piecewise linear)."""
    day = np.searchsorted(cum, target, side="right") - 1
    day = np.clip(day, 0, len(cum) - 2)
    width = cum[day + 1] - cum[day]
    frac = np.where(width > 0, (target - cum[day]) / np.where(width > 0, width, 1.0), 0.0)
    return day + np.clip(frac, 0.0, np.nextafter(1.0, 0.0))


def _invert_by_kind(
    calendars: tuple[np.ndarray, ...], kind: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """:func:`_invert` with each row on its own customer type's cumulative intensity."""
    out = np.empty(len(target))
    for k, cum in enumerate(calendars):
        rows = kind == k
        out[rows] = _invert(cum, target[rows])
    return out


def _strings(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def generate_purchase_log(
    n_customers: int,
    seed: int = 0,
    start: str | pd.Timestamp = "2022-01-01",
    end: str | pd.Timestamp = "2024-12-31",
    *,
    mean_purchases_per_year: float = 6.0,
    rate_shape: float = 0.9,
    dropout_a: float = 1.0,
    dropout_b: float = 6.0,
    sale_only_share: float = 0.08,
    gift_share: float = 0.12,
    regular_share: float = 0.4,
    regularity_shape: float = 8.0,
    seasonality_amplitude: float = 0.35,
    campaign_lift: float = 2.5,
    sale_only_lift: float = 6.0,
    campaigns: list[tuple[str, str]] | None = None,
    mean_lines_per_order: float = 1.85,
    coupon_share: float = 0.05,
    discount_depth: float = 0.2,
    return_share: float = 0.03,
    favourite_category_share: float = 0.6,
) -> SyntheticLog:
    """Draw a purchase log for ``n_customers`` over the calendar days ``start`` .. ``end``.

    ``end`` is the last calendar day included (UTC). The same arguments always give the same
    frames. The ``log`` is sorted by timestamp, as raw exports usually are; timestamps are
    tz-aware UTC at one-second resolution.
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be >= 1, got {n_customers}")
    start_ts = to_utc_timestamp(start, "start").normalize()
    end_ts = to_utc_timestamp(end, "end").normalize() + pd.Timedelta(days=1)
    n_days = int((end_ts - start_ts) / pd.Timedelta(days=1))
    if n_days < 1:
        raise InputError(f"end ({end}) must not be before start ({start})")
    for name, value in {
        "sale_only_share": sale_only_share,
        "gift_share": gift_share,
        "regular_share": regular_share,
        "coupon_share": coupon_share,
        "discount_depth": discount_depth,
        "return_share": return_share,
        "favourite_category_share": favourite_category_share,
    }.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {value}")
    if regularity_shape < 1.0:
        raise ValueError(f"regularity_shape must be >= 1, got {regularity_shape}")
    if mean_lines_per_order < 1.0:
        raise ValueError(f"mean_lines_per_order must be >= 1, got {mean_lines_per_order}")
    rng = np.random.default_rng(seed)

    # Calendar: daily seasonality (mean 1 over a year, peak mid December) and campaign days.
    days = pd.date_range(start_ts, periods=n_days, freq="D")
    doy = days.day_of_year.to_numpy()
    season = 1.0 + seasonality_amplitude * np.cos(2.0 * np.pi * (doy - 350) / 365.25)
    windows = default_campaigns(start_ts, end_ts) if campaigns is None else campaigns
    in_campaign = np.zeros(n_days, dtype=bool)
    campaign_rows = []
    for w_start, w_end in windows:
        a = to_utc_timestamp(w_start, "campaign start").normalize()
        b = to_utc_timestamp(w_end, "campaign end").normalize()
        campaign_rows.append((a, b))
        lo = max(int((a - start_ts) / pd.Timedelta(days=1)), 0)
        hi = min(int((b - start_ts) / pd.Timedelta(days=1)), n_days)
        if hi > lo:
            in_campaign[lo:hi] = True
    regular_intensity = season * np.where(in_campaign, campaign_lift, 1.0)
    sale_intensity = sale_only_lift * in_campaign.astype(float)
    if sale_only_share > 0 and not in_campaign.any():
        raise ValueError("sale-only customers need at least one campaign day inside the period")
    cum_regular = np.concatenate([[0.0], np.cumsum(regular_intensity)]) / 365.25
    cum_sale = np.concatenate([[0.0], np.cumsum(sale_intensity)]) / 365.25
    # Gift buyers shop only in the run-up to Christmas (15 Nov - 24 Dec), at the same yearly
    # rate; without such days in the period there are none.
    in_gift = ((days.month == 11) & (days.day >= 15)) | ((days.month == 12) & (days.day <= 24))
    gift_intensity = in_gift.astype(float) * (365.25 / 40.0)
    cum_gift = np.concatenate([[0.0], np.cumsum(gift_intensity)]) / 365.25
    calendars = (cum_regular, cum_sale, cum_gift)

    # Customers.
    sale_only = rng.random(n_customers) < sale_only_share
    gift = ~sale_only & (rng.random(n_customers) < (gift_share if in_gift.any() else 0.0))
    kind = np.where(sale_only, 1, np.where(gift, 2, 0))  # index into ``calendars``
    rate = rng.gamma(rate_shape, mean_purchases_per_year / rate_shape, n_customers)
    dropout_p = rng.beta(dropout_a, dropout_b, n_customers)
    spend = rng.gamma(4.0, 0.25, n_customers)
    favourite = rng.choice(len(CATEGORIES), n_customers, p=_CATEGORY_WEIGHTS)
    channel_pref = rng.choice(len(CHANNELS), n_customers, p=_CHANNEL_WEIGHTS)
    span = np.array([c[-1] for c in calendars])[kind]
    first_target = rng.random(n_customers) * span
    first_t = _invert_by_kind(calendars, kind, first_target)
    cum_at_first = first_target
    remaining = span - cum_at_first

    # Repeat purchases on (first, end), in "operational time" (cumulative intensity), then
    # mapped to calendar time by time rescaling (no per-customer loops).
    # Irregular customers: a Poisson process (the BTYD assumption): a Poisson count at sorted
    # uniform positions, drawn as normalised exponential spacings (O(n), no sort).
    regular = (kind == 0) & (rng.random(n_customers) < regular_share)
    expected = rate * remaining
    n_poisson = np.where(regular, 0, rng.poisson(expected))
    counts = n_poisson + 1  # with a slot that closes the spacings
    owner = np.repeat(np.arange(n_customers), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    spacing = rng.exponential(1.0, len(owner))
    inclusive = np.cumsum(spacing)
    inclusive -= np.repeat(inclusive[starts] - spacing[starts], counts)
    total = np.repeat(inclusive[starts + counts - 1], counts)
    last_slot = np.zeros(len(owner), dtype=bool)
    last_slot[starts + counts - 1] = True
    poisson_cust = owner[~last_slot]
    poisson_pos = (inclusive / total)[~last_slot] * remaining[poisson_cust]
    # Regular customers: a renewal process with Gamma(k) gaps of mean 1 / rate (k > 1 is more
    # regular than Poisson), the "timing regularity" BTYD models ignore and buying-rhythm
    # features (gap mean, spread, overdue ratio) can see. Enough gaps are drawn to pass the
    # end of the period with overwhelming probability; those beyond it are discarded.
    reg_idx = np.flatnonzero(regular)
    reg_mean = expected[reg_idx]
    n_gaps = np.ceil(reg_mean + 8.0 * np.sqrt(reg_mean / regularity_shape) + 4.0).astype(np.int64)
    reg_owner = np.repeat(reg_idx, n_gaps)
    gaps = rng.gamma(regularity_shape, 1.0, len(reg_owner)) / (
        regularity_shape * np.maximum(rate[reg_owner], 1e-12)
    )
    reg_starts = np.concatenate([[0], np.cumsum(n_gaps)[:-1]])
    reg_pos = np.cumsum(gaps)
    reg_pos -= np.repeat(reg_pos[reg_starts] - gaps[reg_starts], n_gaps)
    inside = reg_pos < remaining[reg_owner]
    ev_cust = np.concatenate([np.arange(n_customers), poisson_cust, reg_owner[inside]])
    ev_pos = np.concatenate([np.zeros(n_customers), poisson_pos, reg_pos[inside]])
    order = np.lexsort((ev_pos, ev_cust))
    cust, pos = ev_cust[order], ev_pos[order]
    n_events = np.bincount(cust, minlength=n_customers)
    group_start = np.concatenate([[0], np.cumsum(n_events)[:-1]])
    is_first = np.zeros(len(cust), dtype=bool)
    is_first[group_start] = True
    target = cum_at_first[cust] + pos
    t = _invert_by_kind(calendars, kind[cust], target)
    t[is_first] = first_t

    # Dropout after each purchase: keep a purchase when no earlier purchase triggered it.
    drop = rng.random(len(cust)) < dropout_p[cust]
    drop_cum = np.cumsum(drop)
    before = drop_cum - drop - np.repeat(drop_cum[group_start] - drop[group_start], n_events)
    keep = before == 0
    dropped_here = keep & drop
    dropout_time = np.full(n_customers, np.nan)
    dropout_time[cust[dropped_here]] = t[dropped_here]
    cust, t = cust[keep], t[keep]
    n_orders = np.bincount(cust, minlength=n_customers)

    # Orders: discount, channel, number of lines.
    n_orders_total = len(cust)
    day_idx = np.minimum(t.astype(np.int64), n_days - 1)
    order_campaign = in_campaign[day_idx]
    order_discount = order_campaign | (rng.random(n_orders_total) < coupon_share)
    order_channel = np.where(
        rng.random(n_orders_total) < 0.85,
        channel_pref[cust],
        rng.choice(len(CHANNELS), n_orders_total, p=_CHANNEL_WEIGHTS),
    )
    n_lines = 1 + rng.poisson(mean_lines_per_order - 1.0, n_orders_total)
    t_us = np.round(t * 86_400.0).astype(np.int64) * 1_000_000
    order_rank = np.empty(n_orders_total, dtype=np.int64)
    order_rank[np.argsort(t_us)] = np.arange(n_orders_total)

    # Lines.
    line_order = np.repeat(np.arange(n_orders_total), n_lines)
    line_cust = cust[line_order]
    n_line_rows = len(line_order)
    cat = np.where(
        rng.random(n_line_rows) < favourite_category_share,
        favourite[line_cust],
        rng.choice(len(CATEGORIES), n_line_rows, p=_CATEGORY_WEIGHTS),
    )
    # Skewed popularity within a category: a few best sellers, a long tail.
    product_in_cat = (50 * rng.random(n_line_rows) ** 2.5).astype(np.int64)
    product = cat * 50 + product_in_cat
    # One line per product and order (a product drawn twice is one line), so no two rows are
    # identical: exports look like that and the loader drops exact duplicates.
    repeated = np.zeros(n_line_rows, dtype=bool)
    for lag in range(1, int(n_lines.max())):
        repeated[lag:] |= (line_order[lag:] == line_order[:-lag]) & (
            product[lag:] == product[:-lag]
        )
    keep_line = ~repeated
    line_order, line_cust = line_order[keep_line], line_cust[keep_line]
    cat, product = cat[keep_line], product[keep_line]
    n_line_rows = len(line_order)
    product_price = _CATEGORY_PRICE.repeat(50) * np.exp(
        np.random.default_rng([seed, 1]).normal(0.0, 0.35, len(CATEGORIES) * 50)
    )
    quantity = 1 + rng.poisson(0.25, n_line_rows)
    line_discount = order_discount[line_order]
    amount = (
        product_price[product]
        * quantity
        * spend[line_cust]
        * np.where(line_discount, 1.0 - discount_depth, 1.0)
    )
    amount = np.maximum(np.round(amount, 2), 0.01)
    line_t_us = t_us[line_order]

    # Returns: a later negative-amount row for a few lines, dropped if after the period.
    is_returned = rng.random(n_line_rows) < return_share
    ret_idx = np.flatnonzero(is_returned)
    ret_delay = 1.0 + rng.exponential(10.0, len(ret_idx))
    ret_t_us = line_t_us[ret_idx] + np.round(ret_delay * 86_400.0).astype(np.int64) * 1_000_000
    in_period = ret_t_us < n_days * US_PER_DAY
    ret_idx, ret_t_us = ret_idx[in_period], ret_t_us[in_period]

    src = np.concatenate([np.arange(n_line_rows), ret_idx])
    row_t_us = np.concatenate([line_t_us, ret_t_us])
    row_is_return = np.zeros(len(src), dtype=bool)
    row_is_return[n_line_rows:] = True
    order_of_rows = np.argsort(row_t_us)
    src, row_t_us, row_is_return = (
        src[order_of_rows],
        row_t_us[order_of_rows],
        row_is_return[order_of_rows],
    )

    id_width = max(len(str(n_customers - 1)), 6)
    customer_ids = _strings("cust", np.arange(n_customers), id_width)
    order_width = max(len(str(n_orders_total)), 8)
    order_ids = _strings("o", order_rank, order_width)
    row_order_ids = order_ids.take(pa.array(line_order[src]))
    row_order_ids = pc.if_else(
        pa.array(row_is_return),
        pc.binary_join_element_wise("C", row_order_ids, ""),
        row_order_ids,
    )
    product_ids = _strings("p", np.arange(len(CATEGORIES) * 50), 4)

    start_us = start_ts.value // 1_000
    log = pd.DataFrame(
        {
            "customer_id": pd.Series(customer_ids.take(pa.array(line_cust[src])), dtype="str"),
            "timestamp": pd.to_datetime(row_t_us + start_us, unit="us", utc=True),
            "amount": np.where(row_is_return, -amount[src], amount[src]),
            "order_id": pd.Series(row_order_ids, dtype="str"),
            "quantity": quantity[src].astype(np.float64),
            "product_id": pd.Series(product_ids.take(pa.array(product[src])), dtype="str"),
            "category": pd.Series(pa.array(CATEGORIES).take(pa.array(cat[src])), dtype="str"),
            "discount": line_discount[src],
            "channel": pd.Series(
                pa.array(CHANNELS).take(pa.array(order_channel[line_order[src]])), dtype="str"
            ),
        }
    )

    def to_time(days_from_start: np.ndarray) -> pd.DatetimeIndex:
        us = np.round(days_from_start * 86_400.0) * 1_000_000 + start_us
        return pd.to_datetime(np.where(np.isnan(us), np.nan, us), unit="us", utc=True).as_unit("us")

    truth = pd.DataFrame(
        {
            "customer_id": pd.Series(customer_ids, dtype="str"),
            "first_purchase": to_time(first_t),
            "alive_at_end": np.isnan(dropout_time),
            "dropout_time": to_time(dropout_time),
            "purchase_rate_per_year": rate,
            "dropout_probability": dropout_p,
            "sale_only": sale_only,
            "gift_buyer": gift,
            "regular_buyer": regular,
            "n_orders": n_orders,
        }
    )
    campaign_frame = pd.DataFrame(
        {
            "start": pd.DatetimeIndex([a for a, _ in campaign_rows], tz="UTC").as_unit("us"),
            "end": pd.DatetimeIndex([b for _, b in campaign_rows], tz="UTC").as_unit("us"),
        }
    )
    return SyntheticLog(log=log, truth=truth, campaigns=campaign_frame)


def customers_for_rows(
    target_rows: int, seed: int = 0, pilot: int = 20_000, **kwargs: object
) -> int:
    """How many customers give about ``target_rows`` log rows with these generator arguments.

    Measured on a ``pilot``-customer draw (well under a second), so it stays right when the
    rates, period or dropout parameters change.
    """
    if target_rows < 1:
        raise ValueError(f"target_rows must be >= 1, got {target_rows}")
    sample = generate_purchase_log(pilot, seed=seed, **kwargs)  # type: ignore[arg-type]
    rows_per_customer = max(len(sample.log) / pilot, 1e-9)
    return max(1, round(target_rows / rows_per_customer))
