"""The report page: every section in a fixed order, rendered to one HTML file.

:func:`build_report` reads what the sections need (the log, a ``retain score`` output, the
JSON of ``retain lift``) and :func:`render_page` lays them out with inline styles; the page is
written atomically (:func:`write_report`, :mod:`features.atomic`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from features.atomic import write_text_atomic
from features.builders import build_features
from features.errors import InputError
from features.retention.segments import assign_segments
from features.utc import day_after_last_row, to_utc_timestamp
from serving.report.blocks import Section
from serving.report.campaigns import campaign_section
from serving.report.sections import (
    calibration_section,
    cohort_section,
    kpi_section,
    offer_section,
    risk_section,
    segment_section,
)

SECTION_IDS: tuple[str, ...] = (
    "kpis",
    "cohorts",
    "segments",
    "risk",
    "calibration",
    "offers",
    "campaigns",
)
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.meta{color:#666}.note{color:#8a6d3b;background:#fcf8e3;padding:.5rem .8rem;border-radius:4px}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{border:1px solid #ddd;border-radius:6px;
padding:.6rem 1rem;min-width:10rem}.card b{display:block;font-size:1.5rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
th{background:#f4f4f4}img{max-width:100%;height:auto;display:block;margin:.6rem 0}
"""


def load_scores(scores_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scores of a finished ``retain score`` output and its run summary."""
    from serving.batch.publish import SUMMARY_NAME, read_scores

    root = Path(scores_dir)
    scores = read_scores(root)
    summary_path = root / SUMMARY_NAME
    summary = json.loads(summary_path.read_text("utf-8")) if summary_path.is_file() else {}
    return scores, summary


def build_report(
    log: pd.DataFrame,
    *,
    scores_dir: str | Path | None = None,
    as_of: object = None,
    horizon_days: int | None = None,
    lift: dict[str, Any] | None = None,
) -> str:
    """The whole page as HTML text.

    ``lift`` is the JSON of ``retain lift`` (the campaign results section).

    ``as_of`` defaults to the UTC day after the log's last row (a date from the data, never
    the clock). ``horizon_days`` defaults to the one recorded in the scores' run summary.
    """
    if log.empty:
        raise InputError("the purchase log has no rows: nothing to report")
    scores: pd.DataFrame | None = None
    summary: dict[str, Any] = {}
    if scores_dir is not None:
        scores, summary = load_scores(scores_dir)
    report_as_of = to_utc_timestamp(as_of) if as_of is not None else day_after_last_row(log)
    horizon = horizon_days if horizon_days is not None else summary.get("horizon_days")
    features = build_features(log, report_as_of)
    segments = assign_segments(features)
    sections = [
        kpi_section(log, report_as_of),
        cohort_section(log, report_as_of),
        segment_section(features, segments),
        risk_section(scores, summary),
        calibration_section(log, scores, horizon, report_as_of),
        offer_section(scores),
        campaign_section(lift),
    ]
    return render_page(sections, report_as_of, scores_dir, summary)


def render_page(
    sections: list[Section],
    as_of: pd.Timestamp,
    scores_dir: str | Path | None,
    summary: dict[str, Any],
) -> str:
    scored = (
        f"scores: {html.escape(str(scores_dir))} (as of {html.escape(str(summary.get('as_of')))},"
        f" model {html.escape(str(summary.get('model')))})"
        if scores_dir is not None
        else "no scores"
    )
    nav = " · ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    blocks = "\n".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Retention report {as_of.date()}</title><style>{_STYLE}</style></head><body>"
        f'<h1>Retention report</h1><p class="meta">as of {as_of.date()} · {scored}</p>'
        f"<nav>{nav}</nav>\n{blocks}\n</body></html>\n"
    )


def write_report(html_text: str, path: str | Path) -> Path:
    """Write atomically (:func:`features.atomic.write_text_atomic`)."""
    return write_text_atomic(path, html_text)
