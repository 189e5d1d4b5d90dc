"""The campaign results section: each offer's measured lift against its holdout.

Reads the JSON of ``retain lift --json`` (:meth:`serving.lift.measure.LiftResult.to_dict`): per
offer and per segment, the repurchase-rate lift with its 95% interval, incremental revenue,
p-value, minimum detectable effect and verdict, and one figure of the intervals.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from features.errors import InputError
from serving.report.blocks import Section, html_table, inline_png, new_figure, note

RESULT_FIELDS: tuple[str, ...] = (
    "campaign",
    "rule",
    "offer",
    "segment",
    "treated",
    "holdout",
    "bought_treated",
    "bought_holdout",
    "bought_lift",
    "bought_lift_low",
    "bought_lift_high",
    "incremental_revenue",
    "incremental_revenue_low",
    "incremental_revenue_high",
    "p_value",
    "mde",
    "verdict",
)


class LiftJsonError(InputError):
    """``--lift`` is not the JSON of ``retain lift --json``; the message says what is off."""


def check_lift_json(measured: object, source: str) -> dict[str, Any]:
    """``measured`` if it is the JSON of ``retain lift --json``, else one line saying why.

    Any other JSON (a config, another command's output) would otherwise give a page that
    says "no campaign measured", or a traceback.
    """
    where = f"--lift {source}: not the JSON of `retain lift --json`"
    if not isinstance(measured, dict):
        raise LiftJsonError(f"{where} (a {type(measured).__name__}, not an object)")
    missing = [k for k in ("window_days", "log_end", "results") if k not in measured]
    if missing:
        raise LiftJsonError(f"{where} (no {', '.join(missing)})")
    results = measured["results"]
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise LiftJsonError(f"{where} ('results' is not a list of objects)")
    for i, r in enumerate(results):
        lacking = [k for k in RESULT_FIELDS if k not in r]
        if lacking:
            raise LiftJsonError(f"{where} (results[{i}] lacks {lacking})")
    if not isinstance(measured["window_days"], int) or isinstance(measured["window_days"], bool):
        raise LiftJsonError(f"{where} (window_days {measured['window_days']!r} is not a number)")
    return measured


def lift_figure(results: pd.DataFrame) -> Any:
    """Repurchase-rate lift with its 95% interval, one bar per offer (and segment) row."""
    fig, ax = new_figure()
    rows = results.iloc[::-1]
    labels = [
        f"{r.campaign} · {r.offer}" if r.segment == "all" else f"    {r.segment}"
        for r in rows.itertuples()
    ]
    lift = rows["bought_lift"].to_numpy(dtype=float) * 100
    low = rows["bought_lift_low"].to_numpy(dtype=float) * 100
    high = rows["bought_lift_high"].to_numpy(dtype=float) * 100
    y = np.arange(len(rows))
    colors = [
        "#4c9a2a" if lo > 0 else "#c0392b" if hi < 0 else "#7f8c8d"
        for lo, hi in zip(low, high, strict=True)
    ]
    ax.hlines(y, low, high, colors=colors, linewidth=2)
    ax.scatter(lift, y, color=colors, zorder=3)
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("lift in repurchase rate, percentage points (95% interval)")
    ax.set_title("Measured lift against the holdout")
    fig.set_figheight(max(2.5, 0.28 * len(rows) + 1.2))
    return fig


def _num(value: Any, spec: str, scale: float = 1.0) -> str:  # a lift JSON number or null
    if value is None or not np.isfinite(value):
        return "-"
    return spec.format(value * scale)


def _interval(value: Any, low: Any, high: Any, scale: float, spec: str) -> str:  # JSON numbers
    return f"{_num(value, spec, scale)} [{_num(low, spec, scale)}, {_num(high, spec, scale)}]"


def _intervals(frame: pd.DataFrame, column: str, scale: float, spec: str) -> list[str]:
    """``column`` with its ``_low`` / ``_high`` interval, formatted per row."""
    return [
        _interval(v, lo, hi, scale, spec)
        for v, lo, hi in zip(
            frame[column], frame[f"{column}_low"], frame[f"{column}_high"], strict=True
        )
    ]


def campaign_section(lift: dict[str, Any] | None) -> Section:
    title = "Campaign results"
    if not lift or not lift.get("results"):
        return Section(
            "campaigns",
            title,
            note("no campaign measured (run `retain lift ... --json` and pass --lift)"),
        )
    results = pd.DataFrame(lift["results"])
    offers = results[results["segment"] == "all"]
    segments = results[results["segment"] != "all"]
    excluded = lift.get("excluded") or {}
    intro = (
        f"<p>Each offer against the held-out customers of the same rule (intention to treat), "
        f"over the {int(lift['window_days'])} days after each send day; log observed to "
        f"{html.escape(str(lift['log_end']))}. {int(lift.get('assigned', 0)):,} assigned "
        "customers; not in the experiment: "
        + (
            ", ".join(f"{html.escape(k)} {v:,}" for k, v in excluded.items())
            if excluded
            else "none"
        )
        + ".</p>"
    )

    def shown(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(
            {
                "campaign": frame["campaign"],
                "offer": frame["offer"],
                "segment": frame["segment"],
                "treated": frame["treated"],
                "held out": frame["holdout"],
                "rate treated": frame["bought_treated"].map(lambda v: _num(v, "{:.1%}")),
                "rate held out": frame["bought_holdout"].map(lambda v: _num(v, "{:.1%}")),
                "lift (pts)": _intervals(frame, "bought_lift", 100, "{:+.1f}"),
                "incremental revenue": _intervals(frame, "incremental_revenue", 1, "{:,.0f}"),
                "p": frame["p_value"].map(lambda v: _num(v, "{:.3f}")),
                "MDE (pts)": frame["mde"].map(lambda v: _num(v, "{:.1f}", 100)),
                "verdict": frame["verdict"],
            }
        )
        return out.set_index(["campaign", "offer", "segment"])

    # one figure: each offer, then its segments (indented labels)
    ordered = results.assign(_seg=results["segment"] != "all").sort_values(
        ["campaign", "rule", "offer", "_seg", "segment"], kind="stable"
    )
    parts = [
        intro,
        inline_png(lift_figure(ordered), "lift per offer and segment with 95% intervals"),
    ]
    parts.append(html_table(shown(offers)))
    if not segments.empty:
        parts.append("<h3>By segment</h3>")
        parts.append(html_table(shown(segments)))
    return Section("campaigns", title, "".join(parts))
