"""What a campaign did: each offer's effect measured against its holdout.

Why in ``serving``: the assignments are what the offer policy (``serving.offers``) decided, and
the measured lifts go back into that policy (:mod:`serving.lift.policy_update`). This module
measures (assignments from :mod:`serving.lift.assignments` and the purchase log in, one row of
estimates per group out, with no I/O); the estimators are :mod:`serving.lift.statistics`.

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

from features.retention.assignments import log_end_text
from features.utc import US_PER_DAY, as_utc, day_after_last_row
from serving.lift.assignments import (
    ALL_SEGMENTS,
    CONTROL,
    Assignments,
    LiftInputError,
    check_assignments,
    describe_rows,
)
from serving.lift.statistics import (
    Z80,
    Z95,
    binary_floor,
    critical,
    estimate,
    mean_var,
    p_value,
    relative_lift,
)

METRICS: tuple[str, ...] = ("bought", "orders", "spend")
DEFAULT_MIN_EFFECT = 0.01
VERDICT_SIGNIFICANT = "significant"
VERDICT_TOO_SMALL = "too small to tell"
VERDICT_NONE = "no effect detected"
VERDICT_NO_HOLDOUT = "no holdout"
VERDICT_NO_TREATED = "no treated"


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
            f"{window_days}-day window (sent from {first.date()}; "
            f"{log_end_text(log_end, '--log-end')}), e.g. {describe_rows(frame, late)}: pass "
            "a later log, a shorter --window, or --exclude-unobserved to measure without them"
        )
    if not n_late:
        return assignments, 0
    if n_late == len(frame):
        raise LiftInputError(
            f"none of the {n_late} assigned customers can be observed for the whole "
            f"{window_days}-day window: {log_end_text(log_end, '--log-end')}"
        )
    return assignments.only(~late, "window not observed to its end"), n_late


def check_against_log(assignments: Assignments, log: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Which assigned customers the log knows, and warnings; refuses send days before the log.

    A send day before the log's first day, or an arm none of whose customers is in the log,
    would read as "nobody bought" in every window: refused, naming the rows.
    """
    frame = assignments.frame
    first = pd.Timestamp(log["timestamp"].min()).tz_convert("UTC").floor("D")
    early = (frame["send_day"] < first).to_numpy()
    if early.any():
        days = sorted({str(d.date()) for d in frame.loc[early, "send_day"]})[:3]
        raise LiftInputError(
            f"{int(early.sum()):,} send date(s) fall before the purchase log's first day "
            f"{first.date()} (e.g. {', '.join(days)}): {describe_rows(frame, early)}; the log "
            "must cover the campaign (a send_date like 20250101 must be written 2025-01-01)"
        )
    ids = log["customer_id"]
    known = ids.cat.categories if isinstance(ids.dtype, pd.CategoricalDtype) else ids.unique()
    known_ids = pa.array(pd.Index(known).astype("str").array).cast(pa.large_string())
    ids_in = pa.array(frame["customer_id"].to_numpy(dtype=object), type=pa.large_string())
    in_log = pc.is_in(ids_in, value_set=known_ids).to_numpy(zero_copy_only=False)
    warnings = []
    if not in_log.all():
        warnings.append(
            f"{int((~in_log).sum()):,} of {len(frame):,} assigned customer ids are not in the "
            f"purchase log and count as non-buyers: {describe_rows(frame, ~in_log)}"
        )
    return in_log, warnings


def _empty_value_warnings(assignments: Assignments) -> list[str]:
    left = assignments.left_out
    out = []
    for reason, rows in left.groupby("reason", sort=True):
        if str(reason).startswith("empty "):
            mask = np.ones(len(rows), dtype=bool)
            out.append(
                f"{len(rows):,} row(s) left out of the experiment for an {reason}: "
                f"{describe_rows(rows, mask)}"
            )
    return out


def _shared_control_hint(part: pd.DataFrame, campaign: str) -> list[str]:
    """A hint when held-out rows carry offers no treated row has (an undeclared control)."""
    treated_offers = set(part.loc[~part["holdout"], "offer"].unique().tolist())
    held = set(part.loc[part["holdout"], "offer"].unique().tolist())
    strays = sorted(held - treated_offers - {CONTROL})
    alone = sorted(treated_offers - held) if CONTROL not in held else []
    if not strays or not alone:
        return []
    return [
        f"held-out rows of campaign {campaign!r} carry offer(s) {strays} that no treated row "
        f"has, so the arms {alone} are compared with no holdout of theirs: if "
        f"they are one control group shared by the arms, give them the offer {CONTROL!r} or "
        "leave it empty"
    ]


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


@dataclass
class LiftResult:
    """Every estimate (``table``: one row per campaign x rule x offer x segment) and context."""

    table: pd.DataFrame
    window_days: int
    log_end: pd.Timestamp
    excluded: dict[str, int] = field(default_factory=dict)
    assigned: int = 0
    in_log: int = 0
    warnings: list[str] = field(default_factory=list)

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
            "in_log": self.in_log,
            "excluded": dict(self.excluded),
            "warnings": list(self.warnings),
            "results": records,
        }


def _plain(value: Any) -> Any:  # any result cell, to a JSON value
    """A JSON-safe Python value: NaN and infinities become None, numpy scalars plain."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _group_row(
    key: dict[str, Any],
    data: dict[str, np.ndarray],
    treated: np.ndarray,
    min_effect: float,
    in_log: np.ndarray,
) -> dict[str, Any]:
    nt, nc = int(treated.sum()), int((~treated).sum())
    row: dict[str, Any] = {**key, "treated": nt, "holdout": nc}
    row["treated_in_log"] = int(in_log[treated].sum())
    row["holdout_in_log"] = int(in_log[~treated].sum())
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
        row[f"{m}_p_value"] = p_value(lift, se, df)
    rate = ests["bought"]
    lift, se, df = rate.headline
    vt = binary_floor(data["bought"][treated], mean_var(data["bought"][treated])[1])
    vc = binary_floor(data["bought"][~treated], mean_var(data["bought"][~treated])[1])
    rel, rel_se = relative_lift(rate, nt, nc, vt, vc) if nt > 1 and nc > 1 else (math.nan, math.nan)
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
    would matter (absolute, e.g. 0.01 = one point), one number or one per rule. A campaign's
    shared control (held-out rows with the offer ``control``) is compared with each of its
    arms and counted once in ``assigned``.
    """
    if window_days < 1:
        raise LiftInputError(f"window must be at least 1 day, got {window_days}")
    check_assignments(assignments)
    end = day_after_last_row(log) if log_end is None else as_utc(pd.Timestamp(log_end))
    warnings = _empty_value_warnings(assignments)
    assigned = len(assignments.frame)
    kept, _ = observable(assignments, window_days, end, exclude=exclude_unobserved)
    in_log_all, log_warnings = check_against_log(kept, log)
    warnings += log_warnings
    rows: list[dict[str, Any]] = []
    unmatched: list[str] = []
    for campaign, part in kept.frame.groupby("campaign", sort=True):
        at = part.index.to_numpy()
        part = part.reset_index(drop=True)
        in_log = in_log_all[at]
        warnings += _shared_control_hint(part, str(campaign))
        data = window_outcomes(log, part["customer_id"].to_numpy(), part["send_day"], window_days)
        treated_all = ~part["holdout"].to_numpy(dtype=bool)
        control = (part["holdout"] & (part["offer"] == CONTROL)).to_numpy()
        shared = np.flatnonzero(control)
        segments = part["segment"].to_numpy(dtype=object)
        for (rule, offer), group in part.loc[~control].groupby(["rule", "offer"], sort=True):
            idx = np.concatenate([group.index.to_numpy(), shared])
            treated = treated_all[idx]
            for arm, side in ((treated, "treated"), (~treated, "held-out")):
                if arm.any() and not in_log[idx][arm].any():
                    unmatched.append(
                        f"campaign {campaign!r} rule {rule!r}: none of its {int(arm.sum()):,} "
                        f"{side} customer ids is in the log ({describe_rows(part.iloc[idx], arm)})"
                    )
            effect = (
                min_effect.get(rule, DEFAULT_MIN_EFFECT)
                if isinstance(min_effect, Mapping)
                else float(min_effect)
            )
            sub = {k: v[idx] for k, v in data.items()}
            key = {"campaign": campaign, "rule": rule, "offer": offer, "segment": ALL_SEGMENTS}
            rows.append(_group_row(key, sub, treated, effect, in_log[idx]))
            segs = segments[idx]
            if len(set(segs.tolist())) <= 1:
                continue  # one segment: its row would repeat the offer's
            for seg in sorted(set(segs.tolist())):
                sel = idx[segs == seg]
                sub = {k: v[sel] for k, v in data.items()}
                key = {"campaign": campaign, "rule": rule, "offer": offer, "segment": seg}
                rows.append(_group_row(key, sub, treated_all[sel], effect, in_log[sel]))
    if unmatched:
        raise LiftInputError(
            f"only {int(in_log_all.sum()):,} of {len(in_log_all):,} assigned customer ids are "
            f"in the purchase log: {unmatched[0]}"
            + (f" and {len(unmatched) - 1} more arm(s)" if len(unmatched) > 1 else "")
            + "; their buy rate would read 0. Check the ids against the log's (e.g. "
            f"{_log_id_example(log)!r}) or map the log's id column with --map customer_id=SOURCE"
        )
    return LiftResult(
        table=pd.DataFrame(rows),
        window_days=window_days,
        log_end=end,
        excluded=dict(kept.excluded),
        assigned=assigned,
        in_log=int(in_log_all.sum()),
        warnings=warnings,
    )


def _log_id_example(log: pd.DataFrame) -> str:
    ids = log["customer_id"]
    return str(ids.iloc[0]) if len(ids) else ""
