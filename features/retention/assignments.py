"""An experiment's assignments: who was in it, who was sent the offer, who was held out.

One reader for every command that reads a campaign's assignments (``retain lift``,
``retain uplift-train``, ``retain synth --campaign-scores``), so they agree on every row.

**Who is treated, who is held out** (the one rule):

- A ``retain score`` output (it has ``offer_rule``): a customer is in the experiment when a
  rule matched (``offer_rule`` non-empty) and the offer was not suppressed for a negative
  expected value (held-out rows keep their would-be value); ``holdout`` says who was held
  out, everyone else in the experiment was sent the offer. The offer is the rule's (held-out
  rows carry ``none``), the send day ``offer_send_date``.
- Any other table: ``holdout`` (true = held out) or ``treated`` (true = sent, false = held
  out); when both are given they must be each other's opposite on every row. Flags are
  ``true/false``, ``1/0``, ``yes/no``, ``t/f``, ``y/n`` (any case); anything else is refused.
- Held-out rows whose offer is empty or ``control`` are the campaign's **shared control**
  (:data:`CONTROL`): one control group compared with every arm of their campaign, as in an
  experiment with one no-message group for several offers.
- So **treated** means in the experiment and sent; **held out** means in the experiment and
  not sent. A customer whose offer was suppressed for a negative expected value is neither:
  never sent, and never part of the comparison. :func:`assignments_from_scores` writes the
  rule out as columns (``treated``, ``holdout``) for the campaign simulator and for uplift
  training.

Values are canonical as the purchase log's are: ids and campaign names stripped
(:func:`features.log.text_columns.as_text`, the loader's own rule), so ``" c1"`` and ``"c1"``
are one customer. Send dates must be dates: a number such as ``20250101`` would read as
nanoseconds after 1970, so it is refused naming the rows. Rows with an empty customer id,
campaign, rule or offer are left out and counted by reason (:attr:`Assignments.left_out`
names them), never dropped silently; a column empty in every row is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import InputError
from features.log.column_map import parse_column_map
from features.log.text_columns import as_text

__all__ = [
    "ALL_SEGMENTS",
    "CONTROL",
    "NEGATIVE_VALUE",
    "NO_RULE",
    "AssignmentError",
    "Assignments",
    "assignment_columns",
    "assignments_from_scores",
    "describe_rows",
    "flags",
    "log_end_text",
    "read_assignments",
    "send_days",
]

REQUIRED_FIELDS: tuple[str, ...] = ("customer_id", "campaign", "offer", "send_date")
OPTIONAL_FIELDS: tuple[str, ...] = (
    "holdout",
    "treated",
    "rule",
    "segment",
    "as_of",
    "expected_value",
)
ALL_SEGMENTS = "all"
CONTROL = "control"
"""The offer of a shared control group (held-out rows with an empty offer get it too)."""
NO_OFFER = "none"
NO_RULE = "no rule matched"
NEGATIVE_VALUE = "negative expected value (never sent)"
_TRUE = ("true", "1", "yes", "t", "y", "1.0")
_FALSE = ("false", "0", "no", "f", "n", "0.0")
_MAX_SHOWN = 5


class AssignmentError(InputError):
    """An assignments table that cannot be read as an experiment; the message names rows."""


@dataclass(frozen=True)
class Assignments:
    """The experiment: one row per customer and campaign, canonical columns.

    ``frame`` columns: row (1-based row of the source table), customer_id, campaign, rule,
    offer, segment, holdout (bool), send_day (datetime64[us, UTC], a UTC day), as_of (or
    NaT). ``excluded``: rows of the source not in the experiment, by reason; ``left_out``:
    those rows (the same columns, plus ``reason``).
    """

    frame: pd.DataFrame
    excluded: dict[str, int]
    left_out: pd.DataFrame

    def only(self, keep: np.ndarray | pd.Series, reason: str) -> Assignments:
        """The experiment restricted to ``keep``; the other rows counted under ``reason``."""
        keep = np.asarray(keep, dtype=bool)
        dropped = int((~keep).sum())
        if not dropped:
            return self
        excluded = {**self.excluded, reason: self.excluded.get(reason, 0) + dropped}
        gone = self.frame.loc[~keep].assign(reason=reason)
        left_out = pd.concat([self.left_out, gone], ignore_index=True)
        return Assignments(self.frame.loc[keep].reset_index(drop=True), excluded, left_out)


def describe_rows(frame: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    """``rows 3, 8 (customer_id c3, c8)``: the first few rows of ``frame`` where ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    shown = frame["row"].to_numpy()[mask][:_MAX_SHOWN].tolist()
    ids = [str(x) for x in frame["customer_id"].to_numpy(dtype=object)[mask][:_MAX_SHOWN]]
    more = ", ..." if int(mask.sum()) > _MAX_SHOWN else ""
    return f"rows {', '.join(map(str, shown))}{more} (customer_id {', '.join(ids)}{more})"


def log_end_text(end: pd.Timestamp, option: str) -> str:
    """How every message states the end of the log, and the option that sets it."""
    last = (end - pd.Timedelta(days=1)).date()
    return (
        f"the log is observed through {last} (up to {end.date()}, exclusive; "
        f"if it runs on quietly after its last row, say so with {option} DAY)"
    )


def assignment_columns(pairs: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """``CANONICAL=SOURCE`` items (or a mapping) checked against the assignment fields.

    Items are parsed by :func:`features.log.column_map.parse_column_map`, the parser of every
    ``CANONICAL=SOURCE`` option (a canonical name mapped twice to two sources is refused).
    """
    known = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
    if not isinstance(pairs, Mapping):
        return parse_column_map(pairs, known, what="assignments mapping", error=AssignmentError)
    mapping = {str(k): str(v) for k, v in pairs.items()}
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise AssignmentError(
            f"assignments mapping: unknown canonical column(s) {unknown}; known: {list(known)}"
        )
    return mapping


def _shown(values: pd.Series | np.ndarray, mask: np.ndarray) -> list[str]:
    return [str(v) for v in np.asarray(values, dtype=object)[mask][:_MAX_SHOWN]]


def _rows(rows: np.ndarray, mask: np.ndarray) -> str:
    more = ", ..." if int(mask.sum()) > _MAX_SHOWN else ""
    return ", ".join(map(str, rows[mask][:_MAX_SHOWN].tolist())) + more


def flags(values: pd.Series, name: str, rows: np.ndarray) -> np.ndarray:
    """A true/false column as bools; anything else (``maybe``, ``10.0``, empty) refused."""
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.to_numpy(dtype=bool)
    text = values.astype("str").str.strip().str.lower()
    truth = text.isin(_TRUE).to_numpy(dtype=bool, na_value=False)
    false = text.isin(_FALSE).to_numpy(dtype=bool, na_value=False)
    bad = ~(truth | false)
    if bad.any():
        raise AssignmentError(
            f"{name} must be true/false (or 1/0, yes/no); {int(bad.sum())} row(s) are not, "
            f"e.g. rows [{_rows(rows, bad)}] (values {_shown(values, bad)})"
        )
    return truth


def send_days(values: pd.Series, name: str, rows: np.ndarray) -> pd.Series:
    """A date column as UTC days (NaT where empty); numbers and non-dates refused by row."""
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        number = values.notna().to_numpy()
    elif values.dtype == object:
        number = np.array(
            [isinstance(v, (int, float, np.number)) and v == v for v in values], dtype=bool
        )
    else:
        number = np.zeros(len(values), dtype=bool)
    if number.any():
        raise AssignmentError(
            f"{name} must hold dates such as 2025-01-01, not numbers (a number such as "
            f"20250101 would read as nanoseconds after 1970): {int(number.sum())} row(s), "
            f"e.g. rows [{_rows(rows, number)}] (values {_shown(values, number)})"
        )
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = pd.to_datetime(values, utc=True)
    else:
        missing = values.isna().to_numpy()
        text = values.astype("str").str.strip()
        blank = missing | (text == "").to_numpy(dtype=bool, na_value=True)
        parsed = pd.to_datetime(text.mask(blank), utc=True, errors="coerce")
        retry = parsed.isna().to_numpy() & ~blank
        if retry.any():  # formats differing between rows: only those parsed one by one
            parsed = parsed.copy()
            parsed[retry] = pd.to_datetime(
                text[retry], utc=True, errors="coerce", format="mixed"
            ).to_numpy()
        bad = parsed.isna().to_numpy() & ~blank
        if bad.any():
            raise AssignmentError(
                f"{name} must hold dates such as 2025-01-01: {int(bad.sum())} row(s) do not, "
                f"e.g. rows [{_rows(rows, bad)}] (values {_shown(values, bad)})"
            )
    return parsed.dt.floor("D").dt.as_unit("us").reset_index(drop=True)


def _text(values: pd.Series) -> np.ndarray:
    """Stripped text, ``""`` where missing (the loader's rule for ids)."""
    return as_text(values, strip=True).fillna("").to_numpy(dtype=object)


def read_assignments(
    table: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    *,
    arms: bool = True,
) -> Assignments:
    """The experiment from a ``retain score`` output or any assignments table (module doc).

    ``columns`` maps canonical names (``REQUIRED_FIELDS``, ``OPTIONAL_FIELDS``) to the
    table's own; ``offer`` may also be called ``arm``. ``arms``: the caller measures each
    arm (``retain lift``), so ``campaign`` and ``offer`` are required; without it only
    ``customer_id``, ``send_date`` and ``holdout`` or ``treated`` are (``campaign`` then
    defaults to one unnamed campaign).
    """
    renamed = table.rename(columns={v: k for k, v in (columns or {}).items()})
    rows = np.arange(1, len(renamed) + 1)
    if "offer_rule" in renamed.columns and "rule" not in renamed.columns:
        return _from_scores(renamed, rows, arms=arms)
    if "offer" not in renamed.columns and "arm" in renamed.columns:
        renamed = renamed.rename(columns={"arm": "offer"})
    if "holdout" not in renamed.columns and "treated" not in renamed.columns:
        raise AssignmentError(
            "the assignments have no holdout column (nor treated): without a control group no "
            "lift can be measured (map yours with --assignments-map holdout=SOURCE)"
        )
    needed = REQUIRED_FIELDS if arms else ("customer_id", "send_date")
    missing = [c for c in needed if c not in renamed.columns]
    if missing:
        raise AssignmentError(
            f"assignments lack column(s) {missing}; needed: {list(needed)} and holdout or "
            "treated (map yours with --assignments-map CANONICAL=SOURCE)"
        )
    holdout = _holdout(renamed, rows)
    n = len(renamed)
    texts: dict[str, np.ndarray] = {"customer_id": _text(renamed["customer_id"])}
    for name in ("campaign", "offer", "rule", "segment"):
        if name in renamed.columns:
            texts[name] = _text(renamed[name])
            required = name == "campaign" or (arms and name != "segment")
            if n and required and not (texts[name] != "").any():
                raise AssignmentError(
                    f"column {name!r} is empty in every one of the {n:,} rows: fill it"
                    + (
                        ", or drop the column (the offer then names the rule)"
                        if name == "rule"
                        else ""
                    )
                )
    if n and not (texts["customer_id"] != "").any():
        raise AssignmentError(f"column 'customer_id' is empty in every one of the {n:,} rows")
    campaign = texts.get("campaign", np.full(n, "", dtype=object))
    offer = texts.get("offer", np.full(n, "", dtype=object))
    control = holdout & ((offer == "") | (np.char.lower(offer.astype(str)) == CONTROL))
    offer = np.where(control, CONTROL, offer)
    if arms:
        odd = ~holdout & (offer == CONTROL)
        if odd.any():
            raise AssignmentError(
                f"{int(odd.sum())} row(s) are not held out but their offer is {CONTROL!r} "
                f"(the shared control's name), e.g. rows [{_rows(rows, odd)}]"
            )
    rule = texts.get("rule", offer)
    rule = np.where(control & (rule == ""), CONTROL, rule)
    frame = pd.DataFrame(
        {
            "row": rows,
            "customer_id": texts["customer_id"],
            "campaign": campaign,
            "rule": rule,
            "offer": offer,
            "segment": texts.get("segment", np.full(n, ALL_SEGMENTS, dtype=object)),
            "holdout": holdout,
            "send_day": _naive(send_days(renamed["send_date"], "send_date", rows)),
            "as_of": _as_of(renamed, rows),
        }
    )
    frame["segment"] = np.where(frame["segment"] == "", ALL_SEGMENTS, frame["segment"])
    reasons = np.full(n, "", dtype=object)
    checks = [("customer_id", texts["customer_id"])]
    if arms or "campaign" in texts:
        checks.append(("campaign", campaign))
    if arms:
        checks += [("offer", offer), ("rule", rule)]
    for name, values in checks:
        reasons = np.where((reasons == "") & (values == ""), f"empty {name}", reasons)
    if "expected_value" in renamed.columns:
        value = pd.to_numeric(renamed["expected_value"], errors="coerce").to_numpy()
        reasons = np.where((reasons == "") & (value < 0), NEGATIVE_VALUE, reasons)
    return _split(frame, reasons)


def assignments_from_scores(scores: pd.DataFrame, *, suppressed: bool = False) -> pd.DataFrame:
    """A ``retain score`` output as one row per assigned customer, the rule as columns.

    Columns: customer_id, campaign, arm (the rule), send_date (a UTC day), treated (sent) and
    holdout (held out), in the scores' row order; the experiment is what
    :func:`read_assignments` reads (module doc: who is treated, who is held out).

    ``suppressed``: also the customers whose offer was suppressed for a negative expected
    value, with ``treated`` and ``holdout`` both false (never sent, not in the comparison).
    The campaign simulator draws their purchases too (they buy as the untreated do); uplift
    training and ``retain lift`` leave them out, and :func:`read_assignments` refuses a
    table holding them, so they can never be taken for held-out customers.
    """
    need = ("customer_id", "offer_rule", "offer_send_date", "holdout")
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise AssignmentError(
            f"scores lack column(s) {missing}; expected the output of `retain score`"
        )
    exp = read_assignments(scores, arms=False)
    parts = [exp.frame.assign(treated=~exp.frame["holdout"].to_numpy(dtype=bool))]
    if suppressed:
        never = exp.left_out.loc[exp.left_out["reason"] == NEGATIVE_VALUE]
        parts.append(never.assign(treated=False, holdout=False))
    taken = pd.concat(parts, ignore_index=True).sort_values("row", kind="stable")
    return pd.DataFrame(
        {
            "customer_id": taken["customer_id"].astype("str").to_numpy(),
            "campaign": taken["campaign"].astype("str").to_numpy(),
            "arm": taken["rule"].astype("str").to_numpy(),
            "send_date": pd.DatetimeIndex(taken["send_day"]),
            "treated": taken["treated"].to_numpy(dtype=bool),
            "holdout": taken["holdout"].to_numpy(dtype=bool),
        }
    )


def _holdout(table: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    held = flags(table["holdout"], "holdout", rows) if "holdout" in table else None
    sent = flags(table["treated"], "treated", rows) if "treated" in table else None
    if held is not None and sent is not None:
        clash = held == sent
        if clash.any():
            raise AssignmentError(
                f"holdout and treated must be opposites; {int(clash.sum())} row(s) say both or "
                f"neither, e.g. rows [{_rows(rows, clash)}]"
            )
    return held if held is not None else ~np.asarray(sent)


def _naive(days: pd.Series) -> np.ndarray:
    """UTC instants as naive datetime64[us] (no per-row Timestamp objects)."""
    return days.dt.tz_convert(None).dt.as_unit("us").to_numpy()


def _as_of(table: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    if "as_of" not in table.columns:
        return np.full(len(table), np.datetime64("NaT", "us"))
    return pd.to_datetime(table["as_of"], utc=True).dt.tz_convert(None).dt.as_unit("us").to_numpy()


def _split(frame: pd.DataFrame, reasons: np.ndarray) -> Assignments:
    """The rows with no reason are the experiment; the others counted by reason."""
    frame["send_day"] = pd.to_datetime(frame["send_day"], utc=True).dt.as_unit("us")
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True).dt.as_unit("us")
    keep = reasons == ""
    excluded = {str(r): int((reasons == r).sum()) for r in dict.fromkeys(reasons[~keep])}
    left_out = frame.loc[~keep].assign(reason=reasons[~keep]).reset_index(drop=True)
    kept = frame.loc[keep].reset_index(drop=True)
    missing = kept["send_day"].isna().to_numpy()
    if missing.any():
        raise AssignmentError(
            f"send_date is missing in {int(missing.sum())} {describe_rows(kept, missing)}"
        )
    return Assignments(frame=kept, excluded=excluded, left_out=left_out)


def _from_scores(scores: pd.DataFrame, rows: np.ndarray, *, arms: bool) -> Assignments:
    need = ["customer_id", "offer_rule", "holdout", "offer_send_date"]
    missing = [c for c in (*need, "offer") if c not in scores.columns and (arms or c in need)]
    if "holdout" in missing:
        raise AssignmentError(
            "the scores have no holdout column: without a control group no lift can be measured"
        )
    if missing:
        raise AssignmentError(
            f"the scores lack column(s) {missing}; expected `retain score` output"
        )
    if arms and "campaign" not in scores.columns:
        raise AssignmentError(
            "the scores carry no campaign column (written by an older retain): re-score, or "
            "add the column and pass it as a table"
        )
    n = len(scores)
    rule = _text(scores["offer_rule"])
    offer = _text(scores["offer"]) if "offer" in scores.columns else rule
    holdout = flags(scores["holdout"], "holdout", rows)
    if "offer_expected_value" in scores.columns:
        value = pd.to_numeric(scores["offer_expected_value"], errors="coerce").to_numpy()
    else:
        value = np.zeros(n)
    matched = rule != ""
    negative = matched & (value < 0)
    sent = matched & ~negative & ~holdout
    rule_offer = dict(zip(rule[sent].tolist(), offer[sent].tolist(), strict=True))
    the_offer = np.array(
        [rule_offer.get(r, r) if m else o for r, o, m in zip(rule, offer, matched, strict=True)],
        dtype=object,
    )
    day = np.full(n, np.datetime64("NaT", "us"))
    if matched.any():
        at = np.flatnonzero(matched)
        parsed = send_days(scores["offer_send_date"].iloc[at], "offer_send_date", rows[at])
        day[at] = _naive(parsed)
    frame = pd.DataFrame(
        {
            "row": rows,
            "customer_id": _text(scores["customer_id"]),
            "campaign": (
                _text(scores["campaign"]) if "campaign" in scores else np.full(n, "", dtype=object)
            ),
            "rule": rule,
            "offer": the_offer,
            "segment": (
                _text(scores["segment"])
                if "segment" in scores
                else np.full(n, ALL_SEGMENTS, dtype=object)
            ),
            "holdout": holdout,
            "send_day": day,
            "as_of": _as_of(scores, rows),
        }
    )
    reasons = np.where(~matched, NO_RULE, np.where(negative, NEGATIVE_VALUE, ""))
    reasons = np.where((reasons == "") & (frame["customer_id"] == ""), "empty customer_id", reasons)
    return _split(frame, reasons)
