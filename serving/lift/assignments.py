"""The experiment of a campaign: who was assigned which offer, and who was held out.

:func:`read_assignments` reads a ``retain score`` output or any assignments table into one
canonical frame (:class:`Assignments`); :func:`check_assignments` refuses what cannot be
measured with one line naming the rows (no holdout column, a campaign with no held-out
customer, a customer assigned twice in one campaign, a send day before the scores' ``as_of``
or missing). Customers the policy would not have sent anything (no rule matched, or a
negative expected value) are not in the experiment; they are counted by reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import InputError
from serving.offers.policy import NO_OFFER

REQUIRED_FIELDS: tuple[str, ...] = ("customer_id", "campaign", "offer", "holdout", "send_date")
OPTIONAL_FIELDS: tuple[str, ...] = ("rule", "segment", "as_of", "expected_value")
ALL_SEGMENTS = "all"
_MAX_SHOWN = 5


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


def describe_rows(frame: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
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
    offer = scores["offer"].fillna(NO_OFFER).astype("str").to_numpy()
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
            f"send_date is missing in {int(missing.sum())} {describe_rows(frame, missing)}"
        )
    twice = frame.duplicated(["campaign", "customer_id"], keep=False).to_numpy()
    if twice.any():
        first = frame.loc[twice].iloc[0]
        raise LiftInputError(
            f"{int(twice.sum())} rows assign a customer more than once in one campaign "
            f"(e.g. {first['customer_id']} in campaign {first['campaign']!r}): {describe_rows(frame, twice)}"
        )
    early = (frame["send_day"] < frame["as_of"].dt.floor("D")).to_numpy()
    if early.any():
        raise LiftInputError(
            f"{int(early.sum())} send date(s) fall before the scores' as_of: {describe_rows(frame, early)}"
        )
    held = frame.groupby("campaign", sort=True)["holdout"].agg(["sum", "size"])
    empty = held.index[held["sum"] == 0].tolist()
    if empty:
        raise LiftInputError(
            f"campaign(s) {empty} have no held-out customer among "
            f"{held.loc[empty, 'size'].tolist()} assigned: without a holdout no lift can be "
            "measured"
        )
