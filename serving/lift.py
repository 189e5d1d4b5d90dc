"""What a campaign did: each offer's effect measured against its holdout.

Why in ``serving``: the assignments are what the offer policy (``serving.offers``) decided, and
the measured lifts go back into that policy (:mod:`serving.policy_update`); this module is
the statistics alone (assignments and the purchase log in, estimates out), with no I/O.

**Design.** Within a campaign, the policy picks customers by rule, then holds out a random
``holdout_share`` of them by a hash of ``campaign:customer_id``. The comparison is therefore
between the holdout and the *treated customers of the same rule* (the same selection), by
intention to treat: a treated customer counts as treated whether or not the message arrived.
Customers the policy would not have sent anything (no rule matched, or a negative expected
value: held-out rows keep their would-be expected value) are not in the experiment; they are
counted by reason, never dropped silently.

**Outcomes** per customer, in the window ``[send day, send day + window_days)``: bought
(any purchase: a non-return row), orders (distinct ``order_id``) and spend (amount of the
purchase rows, returns not subtracted). The same three over the ``window_days`` before the send
day are the pre-period covariates.

**Estimates** per campaign x rule x offer (segment ``all``) and per segment within it:

- difference in means, treated minus holdout, with the Neyman (Welch) standard error
  ``sqrt(s_t^2 / n_t + s_c^2 / n_c)``, a 95% interval and a two-sided p-value from Student's t
  with Welch-Satterthwaite degrees of freedom (the normal one for large groups: holdouts of a
  few dozen customers are common for the smaller rules); for the repurchase rate each arm's
  variance is at least ``p(1 - p)`` with one buyer and one non-buyer added (Agresti-Caffo), so
  a small holdout where nobody bought does not look exact;
- CUPED (Deng et al., 2013): ``y - theta * (x - mean(x))`` with ``theta = cov(x, y) / var(x)``
  pooled over both arms, ``x`` the same metric in the pre-period; the headline estimate is the
  CUPED one where it narrows the interval, else the raw one; both are reported;
- relative lift ``mean_t / mean_c - 1`` (delta method), incremental orders and revenue
  ``n_t * lift`` with their intervals;
- the minimum detectable effect on the repurchase rate at this size,
  ``(t_0.975 + z_0.8) * se`` (80% power), and a verdict: ``significant`` (p < 0.05),
  ``too small to tell`` (the interval's half-width exceeds ``min_effect``, the effect that
  would matter), else ``no effect detected``;
- the policy's ``lift`` (share of would-be non-buyers the offer brings back):
  ``(rate_t - rate_c) / (1 - rate_c)``, with its standard error scaled alike.

Bad input raises :class:`LiftInputError` with one line naming the rows: no holdout column, a
campaign with no held-out customer, a customer assigned twice in one campaign, a send day
before the scores' ``as_of`` or missing, and windows that run past the end of the log (unless
``exclude_unobserved``: then they are left out and counted, never taken for non-buyers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from features.errors import InputError
from features.utc import US_PER_DAY

REQUIRED_FIELDS: tuple[str, ...] = ("customer_id", "campaign", "offer", "holdout", "send_date")
OPTIONAL_FIELDS: tuple[str, ...] = ("rule", "segment", "as_of", "expected_value")
METRICS: tuple[str, ...] = ("bought", "orders", "spend")
ALL_SEGMENTS = "all"
Z95 = float(stats.norm.ppf(0.975))
Z80 = float(stats.norm.ppf(0.8))
DEFAULT_MIN_EFFECT = 0.01
VERDICT_SIGNIFICANT = "significant"
VERDICT_TOO_SMALL = "too small to tell"
VERDICT_NONE = "no effect detected"
VERDICT_NO_HOLDOUT = "no holdout"
VERDICT_NO_TREATED = "no treated"
_MAX_SHOWN = 5
_NO_OFFER = "none"


class LiftInputError(InputError):
    """Assignments, log or window that cannot be measured; the message names the rows."""


@dataclass(frozen=True)
class Assignments:
    """The experiment: one row per customer and campaign, canonical columns.

    ``frame`` columns: row (1-based row of the source table), customer_id, campaign, rule,
    offer, segment, holdout (bool), send_day (datetime64[us, UTC], a UTC day), as_of (or
    NaT). ``excluded``: rows of the source not in the experiment, by reason.
    """

    frame: pd.DataFrame
    excluded: dict[str, int]


def _rows(frame: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    mask = np.asarray(mask, dtype=bool)
    shown = frame["row"].to_numpy()[mask][:_MAX_SHOWN].tolist()
    ids = frame["customer_id"].to_numpy()[mask][:_MAX_SHOWN].tolist()
    more = ", ..." if int(mask.sum()) > _MAX_SHOWN else ""
    return f"rows {', '.join(map(str, shown))}{more} (customer_id {', '.join(map(str, ids))}{more})"


def _flags(values: pd.Series, name: str, rows: np.ndarray) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.to_numpy(dtype=bool)
    text = values.astype("str").str.strip().str.lower()
    truth = text.isin(["true", "1", "yes", "t", "y", "1.0"])
    false = text.isin(["false", "0", "no", "f", "n", "0.0"])
    bad = ~(truth | false).to_numpy()
    if bad.any():
        shown = rows[bad][:_MAX_SHOWN].tolist()
        raise LiftInputError(
            f"{name} must be true/false; {int(bad.sum())} row(s) are not, e.g. rows {shown} "
            f"(values {values[bad].astype('str').head(_MAX_SHOWN).tolist()})"
        )
    return truth.to_numpy()


def _utc(values: pd.Series, name: str, rows: np.ndarray) -> pd.Series:
    try:
        return pd.to_datetime(values, utc=True).dt.as_unit("us")
    except (ValueError, TypeError) as exc:
        raise LiftInputError(f"{name} must hold dates: {exc}") from exc


def assignment_columns(pairs: Mapping[str, str] | list[str]) -> dict[str, str]:
    """``CANONICAL=SOURCE`` items (or a mapping) checked against the assignment fields."""
    known = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
    mapping: dict[str, str] = {}
    items = pairs.items() if isinstance(pairs, Mapping) else []
    if not isinstance(pairs, Mapping):
        for item in pairs:
            canonical, sep, source = item.partition("=")
            if not sep or not canonical.strip() or not source.strip():
                raise LiftInputError(f"assignments mapping {item!r}: expected CANONICAL=SOURCE")
            mapping[canonical.strip()] = source.strip()
    else:
        mapping = {str(k): str(v) for k, v in items}
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise LiftInputError(
            f"assignments mapping: unknown canonical column(s) {unknown}; known: {list(known)}"
        )
    return mapping


def read_assignments(table: pd.DataFrame, columns: Mapping[str, str] | None = None) -> Assignments:
    """The experiment from a ``retain score`` output or any assignments table.

    ``columns`` maps canonical names (``REQUIRED_FIELDS``, ``OPTIONAL_FIELDS``) to the
    table's own. A ``retain score`` output is recognised by its ``offer_rule`` column: there
    the rule is ``offer_rule``, the send day ``offer_send_date``, held-out rows take their
    rule's offer, and rows with no rule or a negative expected value are left out (counted).
    Elsewhere ``offer`` (or ``arm``) names each row's offer, held-out rows included.
    """
    renamed = table.rename(columns={v: k for k, v in (columns or {}).items()})
    rows = np.arange(1, len(renamed) + 1)
    if "offer_rule" in renamed.columns and "rule" not in renamed.columns:
        return _from_scores(renamed, rows)
    if "offer" not in renamed.columns and "arm" in renamed.columns:
        renamed = renamed.rename(columns={"arm": "offer"})
    missing = [c for c in REQUIRED_FIELDS if c not in renamed.columns]
    if "holdout" in missing:
        raise LiftInputError(
            "the assignments have no holdout column: without a control group no lift can be "
            "measured (map yours with --assignments-map holdout=SOURCE)"
        )
    if missing:
        raise LiftInputError(
            f"assignments lack column(s) {missing}; needed: {list(REQUIRED_FIELDS)} "
            "(map yours with --assignments-map CANONICAL=SOURCE)"
        )
    offer = renamed["offer"].astype("str")
    frame = pd.DataFrame(
        {
            "row": rows,
            "customer_id": renamed["customer_id"].astype("str").to_numpy(),
            "campaign": renamed["campaign"].astype("str").to_numpy(),
            "rule": (renamed["rule"].astype("str") if "rule" in renamed else offer).to_numpy(),
            "offer": offer.to_numpy(),
            "segment": (
                renamed["segment"].astype("str").to_numpy()
                if "segment" in renamed
                else np.full(len(renamed), ALL_SEGMENTS, dtype=object)
            ),
            "holdout": _flags(renamed["holdout"], "holdout", rows),
            "send_day": _utc(renamed["send_date"], "send_date", rows).dt.floor("D").to_numpy(),
            "as_of": (
                _utc(renamed["as_of"], "as_of", rows).to_numpy()
                if "as_of" in renamed
                else np.full(len(renamed), np.datetime64("NaT", "us"))
            ),
        }
    )
    frame["send_day"] = pd.to_datetime(frame["send_day"], utc=True).dt.as_unit("us")
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True).dt.as_unit("us")
    excluded: dict[str, int] = {}
    if "expected_value" in renamed:
        negative = (pd.to_numeric(renamed["expected_value"], errors="coerce") < 0).to_numpy()
        if negative.any():
            excluded["negative expected value (never sent)"] = int(negative.sum())
            frame = frame.loc[~negative].reset_index(drop=True)
    return Assignments(frame=frame, excluded=excluded)


def _from_scores(scores: pd.DataFrame, rows: np.ndarray) -> Assignments:
    need = ["customer_id", "offer", "offer_rule", "holdout", "offer_send_date"]
    missing = [c for c in need if c not in scores.columns]
    if "holdout" in missing:
        raise LiftInputError(
            "the scores have no holdout column: without a control group no lift can be measured"
        )
    if missing:
        raise LiftInputError(f"the scores lack column(s) {missing}")
    if "campaign" not in scores.columns:
        raise LiftInputError(
            "the scores carry no campaign column (written by an older retain): re-score, or "
            "add the column and pass it as a table"
        )
    rule = scores["offer_rule"].fillna("").astype("str").to_numpy()
    offer = scores["offer"].fillna(_NO_OFFER).astype("str").to_numpy()
    holdout = _flags(scores["holdout"], "holdout", rows)
    value = pd.to_numeric(scores.get("offer_expected_value", 0.0), errors="coerce")
    value = np.broadcast_to(np.asarray(value, dtype=np.float64), len(scores))
    matched = rule != ""
    negative = matched & (value < 0)
    keep = matched & ~negative
    excluded = {}
    if (~matched).any():
        excluded["no rule matched"] = int((~matched).sum())
    if negative.any():
        excluded["negative expected value (never sent)"] = int(negative.sum())
    sent = keep & ~holdout
    rule_offer = dict(zip(rule[sent].tolist(), offer[sent].tolist(), strict=True))
    the_offer = np.array([rule_offer.get(r, r) for r in rule[keep]], dtype=object)
    frame = pd.DataFrame(
        {
            "row": rows[keep],
            "customer_id": scores["customer_id"].astype("str").to_numpy()[keep],
            "campaign": scores["campaign"].astype("str").to_numpy()[keep],
            "rule": rule[keep],
            "offer": the_offer,
            "segment": (
                scores["segment"].astype("str").to_numpy()[keep]
                if "segment" in scores
                else np.full(int(keep.sum()), ALL_SEGMENTS, dtype=object)
            ),
            "holdout": holdout[keep],
            "send_day": _utc(scores["offer_send_date"], "offer_send_date", rows)
            .dt.floor("D")
            .to_numpy()[keep],
            "as_of": (
                _utc(scores["as_of"], "as_of", rows).to_numpy()[keep]
                if "as_of" in scores
                else np.full(int(keep.sum()), np.datetime64("NaT", "us"))
            ),
        }
    )
    frame["send_day"] = pd.to_datetime(frame["send_day"], utc=True).dt.as_unit("us")
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True).dt.as_unit("us")
    return Assignments(frame=frame, excluded=excluded)


def check_assignments(assignments: Assignments) -> None:
    """Refuse what cannot be measured: one line per problem, naming rows (first found wins)."""
    frame = assignments.frame
    if frame.empty:
        raise LiftInputError(
            "no assigned customers to measure (no rows, or none in the experiment)"
        )
    missing = frame["send_day"].isna().to_numpy()
    if missing.any():
        raise LiftInputError(
            f"send_date is missing in {int(missing.sum())} {_rows(frame, missing)}"
        )
    twice = frame.duplicated(["campaign", "customer_id"], keep=False).to_numpy()
    if twice.any():
        first = frame.loc[twice].iloc[0]
        raise LiftInputError(
            f"{int(twice.sum())} rows assign a customer more than once in one campaign "
            f"(e.g. {first['customer_id']} in campaign {first['campaign']!r}): {_rows(frame, twice)}"
        )
    early = (frame["send_day"] < frame["as_of"].dt.floor("D")).to_numpy()
    if early.any():
        raise LiftInputError(
            f"{int(early.sum())} send date(s) fall before the scores' as_of: {_rows(frame, early)}"
        )
    held = frame.groupby("campaign", sort=True)["holdout"].agg(["sum", "size"])
    empty = held.index[held["sum"] == 0].tolist()
    if empty:
        raise LiftInputError(
            f"campaign(s) {empty} have no held-out customer among "
            f"{held.loc[empty, 'size'].tolist()} assigned: without a holdout no lift can be "
            "measured"
        )


def log_end_day(log: pd.DataFrame) -> pd.Timestamp:
    """The first UTC day the log does not cover: the day after its last row."""
    if log.empty:
        raise LiftInputError("the purchase log has no rows")
    return pd.Timestamp(log["timestamp"].max()).floor("D") + pd.Timedelta(days=1)


def observable(
    assignments: Assignments, window_days: int, log_end: pd.Timestamp, *, exclude: bool
) -> tuple[Assignments, int]:
    """Customers whose whole window lies before ``log_end``; the others refused or counted."""
    frame = assignments.frame
    late = (frame["send_day"] + pd.Timedelta(days=window_days) > log_end).to_numpy()
    n_late = int(late.sum())
    if n_late and not exclude:
        first = frame.loc[late, "send_day"].min()
        raise LiftInputError(
            f"{n_late} of {len(frame)} assigned customers cannot be observed for the whole "
            f"{window_days}-day window (sent from {first.date()}; the log ends "
            f"{(log_end - pd.Timedelta(days=1)).date()}), e.g. {_rows(frame, late)}: pass a "
            "later log, a shorter --window, or --exclude-unobserved to measure without them"
        )
    if not n_late:
        return assignments, 0
    if n_late == len(frame):
        raise LiftInputError(
            f"none of the {n_late} assigned customers can be observed for the whole "
            f"{window_days}-day window: the log ends {(log_end - pd.Timedelta(days=1)).date()}"
        )
    excluded = dict(assignments.excluded)
    excluded["window not observed to its end"] = n_late
    return Assignments(frame.loc[~late].reset_index(drop=True), excluded), n_late


def window_outcomes(
    log: pd.DataFrame, customer_id: np.ndarray, send_day: pd.Series, window_days: int
) -> dict[str, np.ndarray]:
    """Per customer: bought, orders, spend in the window and the same before the send day.

    ``customer_id`` must be unique (one campaign); ``log`` is canonical (sorted by customer,
    then time, then order).
    """
    n = len(customer_id)
    ids = log["customer_id"]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes, cats = ids.cat.codes.to_numpy(), ids.cat.categories
    else:
        codes, cats = pd.factorize(ids.astype("str"))
    position = pd.Index(customer_id).get_indexer(pd.Index(cats).astype("str"))
    row_pos = position[codes]
    purchase = (
        ~log["is_return"].to_numpy(dtype=bool) if "is_return" in log else np.ones(len(log), bool)
    )
    sel = np.flatnonzero((row_pos >= 0) & purchase)
    who = row_pos[sel]
    utc = log["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[us]")
    stamp = utc.view(np.int64)[sel]
    start = send_day.dt.tz_convert(None).to_numpy().astype("datetime64[us]").view(np.int64)[who]
    width = window_days * US_PER_DAY
    amount = log["amount"].to_numpy(dtype=np.float64)[sel]
    order_id = pa.array(log["order_id"].astype("str").array) if "order_id" in log else None
    out: dict[str, np.ndarray] = {}
    for prefix, inside in (
        ("", (stamp >= start) & (stamp < start + width)),
        ("pre_", (stamp >= start - width) & (stamp < start)),
    ):
        rows = sel[inside]
        owner = who[inside]
        spend = np.bincount(owner, weights=amount[inside], minlength=n)
        if order_id is not None and len(rows):
            oid = order_id.take(pa.array(rows))
            changed = pc.not_equal(oid[1:], oid[:-1]).to_numpy(zero_copy_only=False)
            new = np.concatenate([[True], changed | (owner[1:] != owner[:-1])])
        else:
            ts = stamp[inside]
            new = np.concatenate([[True], (ts[1:] != ts[:-1]) | (owner[1:] != owner[:-1])])[
                : len(rows)
            ]
        orders = np.bincount(owner[new], minlength=n).astype(np.float64)
        out[f"{prefix}orders"] = orders
        out[f"{prefix}bought"] = (orders > 0).astype(np.float64)
        out[f"{prefix}spend"] = spend
    return out


@dataclass(frozen=True)
class Estimate:
    """Treated minus holdout for one metric, raw and CUPED-adjusted, with Welch's df."""

    mean_treated: float
    mean_holdout: float
    lift: float
    se: float
    df: float
    lift_cuped: float
    se_cuped: float
    df_cuped: float
    theta: float

    @property
    def use_cuped(self) -> bool:
        return math.isfinite(self.se_cuped) and self.se_cuped < self.se

    @property
    def headline(self) -> tuple[float, float, float]:
        """(lift, se, df) of the estimate reported: CUPED where it narrows the interval."""
        if self.use_cuped:
            return self.lift_cuped, self.se_cuped, self.df_cuped
        return self.lift, self.se, self.df


def _mean_var(y: np.ndarray) -> tuple[float, float]:
    if len(y) == 0:
        return math.nan, math.nan
    return float(y.mean()), float(y.var(ddof=1)) if len(y) > 1 else 0.0


def _welch(vt: float, nt: int, vc: float, nc: int) -> tuple[float, float]:
    """Standard error and Welch-Satterthwaite degrees of freedom of a difference in means."""
    a, b = vt / nt, vc / nc
    se = math.sqrt(a + b)
    denominator = a * a / (nt - 1) + b * b / (nc - 1)
    df = (a + b) ** 2 / denominator if denominator > 0 else math.inf
    return se, df


def critical(df: float) -> float:
    """Two-sided 95% critical value of Student's t (the normal one for large df)."""
    if not math.isfinite(df) or df > 1e6:
        return Z95
    return float(stats.t.ppf(0.975, max(df, 1.0)))


def _binary_floor(y: np.ndarray, variance: float) -> float:
    """A 0/1 arm's variance, at least ``p(1 - p)`` with ``p = (buyers + 1) / (n + 2)``.

    An arm where nobody (or everybody) bought has sample variance 0, which would pretend its
    rate is known exactly; adding one buyer and one non-buyer (Agresti & Caffo, 2000) keeps
    small holdouts honest and changes nothing for arms of ordinary size and rate.
    """
    p = (float(y.sum()) + 1.0) / (len(y) + 2.0)
    return max(variance, p * (1.0 - p))


def estimate(
    y: np.ndarray, x: np.ndarray, treated: np.ndarray, *, binary: bool = False
) -> Estimate:
    """Difference in means (Welch) and its CUPED version with covariate ``x``.

    ``binary``: ``y`` is 0/1 (bought); each arm's variance is floored (:func:`_binary_floor`),
    the CUPED one at the floor times ``1 - rho^2`` (what the covariate can explain).
    """
    yt, yc = y[treated], y[~treated]
    mt, vt = _mean_var(yt)
    mc, vc = _mean_var(yc)
    nt, nc = len(yt), len(yc)
    nan = math.nan
    if nt < 2 or nc < 2:
        return Estimate(mt, mc, mt - mc, nan, nan, nan, nan, nan, nan)
    if binary:
        vt, vc = _binary_floor(yt, vt), _binary_floor(yc, vc)
    se, df = _welch(vt, nt, vc, nc)
    var_x = float(x.var(ddof=1))
    theta = float(np.cov(x, y, ddof=1)[0, 1] / var_x) if var_x > 0 else nan
    lift_c, se_c, df_c = nan, nan, nan
    if math.isfinite(theta):
        adjusted = y - theta * (x - x.mean())
        at, vat = _mean_var(adjusted[treated])
        ac, vac = _mean_var(adjusted[~treated])
        if binary:
            var_y = float(y.var(ddof=1))
            rho2 = theta * theta * var_x / var_y if var_y > 0 else 0.0
            keep = max(1.0 - rho2, 0.0)
            vat, vac = max(vat, vt * keep), max(vac, vc * keep)
        lift_c = at - ac
        se_c, df_c = _welch(vat, nt, vac, nc)
    return Estimate(mt, mc, mt - mc, se, df, lift_c, se_c, df_c, theta)


def _p_value(lift: float, se: float, df: float) -> float:
    if not (math.isfinite(se) and se > 0):
        return math.nan
    t = abs(lift / se)
    if not math.isfinite(df) or df > 1e6:
        return float(2.0 * stats.norm.sf(t))
    return float(2.0 * stats.t.sf(t, max(df, 1.0)))


def _relative(e: Estimate, nt: int, nc: int, vt: float, vc: float) -> tuple[float, float]:
    """``mean_t / mean_c - 1`` with a delta-method standard error."""
    mc = e.mean_holdout
    if not (mc > 0):
        return math.nan, math.nan
    lift = e.headline[0]
    mt = mc + lift
    var = vt / (nt * mc**2) + (mt**2) * vc / (nc * mc**4)
    return mt / mc - 1.0, math.sqrt(var)


@dataclass
class LiftResult:
    """Every estimate (``table``: one row per campaign x rule x offer x segment) and context."""

    table: pd.DataFrame
    window_days: int
    log_end: pd.Timestamp
    excluded: dict[str, int] = field(default_factory=dict)
    assigned: int = 0

    def offers(self) -> pd.DataFrame:
        """The offer-level rows (segment ``all``)."""
        return self.table.loc[self.table["segment"] == ALL_SEGMENTS].reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        records = [
            {k: _plain(v) for k, v in r.items()} for r in self.table.to_dict(orient="records")
        ]
        return {
            "window_days": self.window_days,
            "log_end": str(self.log_end.date()),
            "assigned": self.assigned,
            "excluded": dict(self.excluded),
            "results": records,
        }


def _plain(value: Any) -> Any:
    """A JSON-safe Python value: NaN and infinities become None, numpy scalars plain."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _group_row(
    key: dict[str, Any], data: dict[str, np.ndarray], treated: np.ndarray, min_effect: float
) -> dict[str, Any]:
    nt, nc = int(treated.sum()), int((~treated).sum())
    row: dict[str, Any] = {**key, "treated": nt, "holdout": nc}
    ests = {m: estimate(data[m], data[f"pre_{m}"], treated, binary=m == "bought") for m in METRICS}
    for m, e in ests.items():
        lift, se, df = e.headline
        half, half_raw = critical(df) * se, critical(e.df) * e.se
        half_cuped = critical(e.df_cuped) * e.se_cuped
        row[f"{m}_treated"] = e.mean_treated
        row[f"{m}_holdout"] = e.mean_holdout
        row[f"{m}_lift"] = lift
        row[f"{m}_lift_low"] = lift - half
        row[f"{m}_lift_high"] = lift + half
        row[f"{m}_lift_raw"] = e.lift
        row[f"{m}_lift_raw_low"] = e.lift - half_raw
        row[f"{m}_lift_raw_high"] = e.lift + half_raw
        row[f"{m}_lift_cuped"] = e.lift_cuped
        row[f"{m}_lift_cuped_low"] = e.lift_cuped - half_cuped
        row[f"{m}_lift_cuped_high"] = e.lift_cuped + half_cuped
        row[f"{m}_cuped"] = e.use_cuped
        row[f"{m}_p_value"] = _p_value(lift, se, df)
    rate = ests["bought"]
    lift, se, df = rate.headline
    vt = _binary_floor(data["bought"][treated], _mean_var(data["bought"][treated])[1])
    vc = _binary_floor(data["bought"][~treated], _mean_var(data["bought"][~treated])[1])
    rel, rel_se = _relative(rate, nt, nc, vt, vc) if nt > 1 and nc > 1 else (math.nan, math.nan)
    row["relative_lift"] = rel
    row["relative_lift_low"] = rel - Z95 * rel_se
    row["relative_lift_high"] = rel + Z95 * rel_se
    row["p_value"] = row["bought_p_value"]
    for m, name in (("orders", "incremental_orders"), ("spend", "incremental_revenue")):
        row[name] = nt * row[f"{m}_lift"]
        row[f"{name}_low"] = nt * row[f"{m}_lift_low"]
        row[f"{name}_high"] = nt * row[f"{m}_lift_high"]
    row["mde"] = (critical(df) + Z80) * se
    row["min_effect"] = min_effect
    non_buyers = 1.0 - rate.mean_holdout
    row["policy_lift"] = lift / non_buyers if non_buyers > 0 else math.nan
    row["policy_lift_se"] = se / non_buyers if non_buyers > 0 else math.nan
    row["policy_lift_low"] = row["bought_lift_low"] / non_buyers if non_buyers > 0 else math.nan
    row["policy_lift_high"] = row["bought_lift_high"] / non_buyers if non_buyers > 0 else math.nan
    if nc == 0:
        verdict = VERDICT_NO_HOLDOUT
    elif nt == 0:
        verdict = VERDICT_NO_TREATED
    elif math.isfinite(row["p_value"]) and row["p_value"] < 0.05:
        verdict = VERDICT_SIGNIFICANT
    elif not math.isfinite(se) or critical(df) * se > min_effect:
        verdict = VERDICT_TOO_SMALL
    else:
        verdict = VERDICT_NONE
    row["verdict"] = verdict
    return row


def measure_lift(
    log: pd.DataFrame,
    assignments: Assignments,
    *,
    window_days: int,
    log_end: pd.Timestamp | None = None,
    exclude_unobserved: bool = False,
    min_effect: float | Mapping[str, float] = DEFAULT_MIN_EFFECT,
) -> LiftResult:
    """Every campaign x rule x offer (and segment) measured against its holdout.

    ``log`` is the canonical purchase log; ``log_end`` the first UTC day it does not cover
    (default: the day after its last row). ``min_effect`` is the repurchase-rate lift that
    would matter (absolute, e.g. 0.01 = one point), one number or one per rule.
    """
    if window_days < 1:
        raise LiftInputError(f"window must be at least 1 day, got {window_days}")
    check_assignments(assignments)
    end = log_end_day(log) if log_end is None else pd.Timestamp(log_end).tz_convert("UTC")
    assigned = len(assignments.frame)
    kept, _ = observable(assignments, window_days, end, exclude=exclude_unobserved)
    rows: list[dict[str, Any]] = []
    for campaign, part in kept.frame.groupby("campaign", sort=True):
        part = part.reset_index(drop=True)
        data = window_outcomes(log, part["customer_id"].to_numpy(), part["send_day"], window_days)
        treated_all = ~part["holdout"].to_numpy(dtype=bool)
        for (rule, offer), group in part.groupby(["rule", "offer"], sort=True):
            idx = group.index.to_numpy()
            effect = (
                min_effect.get(rule, DEFAULT_MIN_EFFECT)
                if isinstance(min_effect, Mapping)
                else float(min_effect)
            )
            sub = {k: v[idx] for k, v in data.items()}
            key = {"campaign": campaign, "rule": rule, "offer": offer, "segment": ALL_SEGMENTS}
            rows.append(_group_row(key, sub, treated_all[idx], effect))
            segs = group["segment"].to_numpy()
            if len(set(segs.tolist())) <= 1:
                continue  # one segment: its row would repeat the offer's
            for seg in sorted(set(segs.tolist())):
                at = idx[segs == seg]
                sub = {k: v[at] for k, v in data.items()}
                key = {"campaign": campaign, "rule": rule, "offer": offer, "segment": seg}
                rows.append(_group_row(key, sub, treated_all[at], effect))
    return LiftResult(
        table=pd.DataFrame(rows),
        window_days=window_days,
        log_end=end,
        excluded=dict(kept.excluded),
        assigned=assigned,
    )
