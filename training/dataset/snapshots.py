"""Records of the training snapshots a fit asked for: used, dropped (and why), degenerate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd


def snapshot_record(
    cutoff: pd.Timestamp,
    horizon_days: int,
    dropped_because: str | None,
    n_customers: int,
    degenerate: dict[str, str],
) -> dict[str, Any]:
    """One requested training snapshot as JSON-ready facts (``RetainModels.snapshots_``)."""
    return {
        "cutoff": cutoff.isoformat(),
        "horizon_days": int(horizon_days),
        "used": dropped_because is None,
        "dropped_because": dropped_because,
        "n_customers": int(n_customers),
        "degenerate_baselines": dict(degenerate),
    }


def describe_snapshots(records: Sequence[dict[str, Any]]) -> list[str]:
    """Readable lines: snapshots used and dropped (with why) per horizon, degenerate fits."""
    lines: list[str] = []
    scoring = [r for r in records if r.get("scoring")]
    trained = [r for r in records if not r.get("scoring")]
    for horizon in sorted({int(r["horizon_days"]) for r in trained}):
        group = [r for r in trained if r["horizon_days"] == horizon]
        used = [r for r in group if r["used"]]
        dropped = [r for r in group if not r["used"]]
        line = f"training snapshots (H = {horizon} d): {len(used)} of {len(group)} used"
        if used:
            line += f" ({used[0]['cutoff'][:10]} .. {used[-1]['cutoff'][:10]})"
        if dropped:
            days = ", ".join(r["cutoff"][:10] for r in dropped)
            line += f"; {len(dropped)} dropped ({days}): {dropped[0]['dropped_because']}"
        lines.append(line)
        for r in used:
            for name, why in r["degenerate_baselines"].items():
                lines.append(
                    f"degenerate {name} fit on the {r['cutoff'][:10]} snapshot "
                    f"(H = {horizon} d): {why}"
                )
    for r in scoring:
        for name, why in r["degenerate_baselines"].items():
            lines.append(f"degenerate {name} fit at the scoring cutoff {r['cutoff'][:10]}: {why}")
    return lines
