"""The experiment of a campaign as ``retain lift`` measures it.

Reading the table is :func:`features.retention.assignments.read_assignments` (the one reader that
``retain uplift-train`` and ``retain synth --campaign-scores`` use too: who is treated, who
is held out, the shared control, canonical ids); :func:`check_assignments` refuses what
cannot be measured with one line naming the rows (a campaign with no held-out customer, a
customer assigned twice in one campaign, a send day before the scores' ``as_of``).
"""

from __future__ import annotations

from features.retention.assignments import (
    ALL_SEGMENTS,
    CONTROL,
    AssignmentError,
    Assignments,
    assignment_columns,
    describe_rows,
    read_assignments,
)

__all__ = [
    "ALL_SEGMENTS",
    "CONTROL",
    "Assignments",
    "LiftInputError",
    "assignment_columns",
    "check_assignments",
    "describe_rows",
    "read_assignments",
]


class LiftInputError(AssignmentError):
    """Assignments, log or window that cannot be measured; the message names the rows."""


def check_assignments(assignments: Assignments) -> None:
    """Refuse what cannot be measured: one line per problem, naming rows (first found wins)."""
    frame = assignments.frame
    if frame.empty:
        reasons = "; ".join(f"{k}: {v:,}" for k, v in assignments.excluded.items())
        raise LiftInputError(
            "no assigned customers to measure ("
            + (f"every row left out: {reasons}" if reasons else "no rows")
            + ")"
        )
    twice = frame.duplicated(["campaign", "customer_id"], keep=False).to_numpy()
    if twice.any():
        first = frame.loc[twice].iloc[0]
        raise LiftInputError(
            f"{int(twice.sum())} rows assign a customer more than once in one campaign "
            f"(e.g. {first['customer_id']} in campaign {first['campaign']!r}): "
            f"{describe_rows(frame, twice)}"
        )
    early = (frame["send_day"] < frame["as_of"].dt.floor("D")).to_numpy()
    if early.any():
        raise LiftInputError(
            f"{int(early.sum())} send date(s) fall before the scores' as_of: "
            f"{describe_rows(frame, early)}"
        )
    held = frame.groupby("campaign", sort=True)["holdout"].agg(["sum", "size"])
    empty = held.index[held["sum"] == 0].tolist()
    if empty:
        raise LiftInputError(
            f"campaign(s) {empty} have no held-out customer among "
            f"{held.loc[empty, 'size'].tolist()} assigned: without a holdout no lift can be "
            "measured"
        )
