"""``retain report``: the retention report as one self-contained HTML page.

One file a marketer can mail around: every plot is a PNG inlined as a ``data:`` URI (matplotlib
Agg), styles are inline, nothing is fetched from anywhere. Sections (each has a stable ``id``):

- ``kpis``: repeat rate, purchase frequency, order value over the year before ``as_of``, and
  monthly buyers with the share of returning buyers;
- ``cohorts``: first-purchase-month cohorts, share ordering k months later (heatmap);
- ``segments``: segment sizes and their spend (``features.segments`` at ``as_of``);
- ``risk``: churn-probability distribution by risk band (needs ``--scores``);
- ``calibration``: last period's predictions against what happened: the scores' churn
  probability, binned, against the share of those customers who did not buy in the
  ``horizon_days`` after the scores' ``as_of`` (needs scores whose horizon is inside the log);
- ``offers``: the offer plan by segment (needs ``--scores``);
- ``campaigns``: campaign results, each offer's measured lift in the repurchase rate against
  its holdout, per offer and per segment, with 95% intervals (needs ``--lift``, the JSON of
  ``retain lift``).

A section without its input says why instead of disappearing, so the page always has the same
structure. The page is written atomically (:mod:`features.atomic`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.atomic import write_text_atomic
from features.builders import build_features
from features.errors import InputError
from features.kpis import cohort_retention, compute_kpis
from features.segments import SEGMENTS, assign_segments, summarize_segments
from features.utc import to_utc_timestamp

SECTION_IDS: tuple[str, ...] = (
    "kpis",
    "cohorts",
    "segments",
    "risk",
    "calibration",
    "offers",
    "campaigns",
)
KPI_DAYS = 365
COHORT_MONTHS = 12
CALIBRATION_BINS = 10
_RISK_COLORS = {"low": "#4c9a2a", "medium": "#e0a526", "high": "#c0392b"}
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


@dataclass(frozen=True)
class Section:
    """One titled block of the page: HTML body (tables, figures, notes)."""

    id: str
    title: str
    body: str


# ---- figures ----------------------------------------------------------------------------


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 3.6), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _img(fig: Any, alt: str) -> str:
    """The figure as an inline PNG (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, float_format: str = "{:,.2f}") -> str:
    return frame.to_html(
        border=0, float_format=lambda v: float_format.format(v), na_rep="-", escape=True
    )


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


# ---- sections ---------------------------------------------------------------------------


def kpi_section(log: pd.DataFrame, as_of: pd.Timestamp) -> Section:
    start = as_of - pd.Timedelta(days=KPI_DAYS)
    kpis = compute_kpis(log, start, as_of)
    m = kpis.metrics
    cards = [
        ("customers", f"{m['customers']:,}"),
        ("repeat rate", f"{m['repeat_rate']:.1%}" if m["customers"] else "-"),
        ("purchase frequency", f"{m['purchase_frequency']:.2f}" if m["customers"] else "-"),
        ("orders", f"{m['orders']:,}"),
        ("revenue", f"{m['revenue']:,.0f}"),
        ("average order value", f"{m['average_order_value']:,.2f}" if m["orders"] else "-"),
    ]
    card_html = "".join(
        f'<div class="card">{html.escape(k)}<b>{html.escape(v)}</b></div>' for k, v in cards
    )
    monthly = kpis.monthly
    parts = [
        f'<p class="meta">{start.date()} to {as_of.date()} (end exclusive); repeat rate = '
        "share of customers with 2+ orders; purchase frequency = orders per customer.</p>",
        f'<div class="cards">{card_html}</div>',
    ]
    if len(monthly):
        fig, ax = _figure()
        x = np.arange(len(monthly))
        ax.bar(x, monthly["buyers"], color="#9ab7d3", label="buyers")
        ax.bar(x, monthly["returning_buyers"], color="#2c6fa8", label="returning buyers")
        ax.set_xticks(x, list(monthly.index), rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("customers")
        ax.set_title("Monthly buyers and monthly repeat (returning) buyers")
        ax.legend(loc="upper left")
        parts.append(_img(fig, "monthly buyers and returning buyers"))
        shown = monthly[["buyers", "multi_order_buyers", "returning_buyers"]]
        parts.append(_table(shown.astype("int64").T, "{:,.0f}"))
    return Section("kpis", "Key figures", "".join(parts))


def cohort_section(log: pd.DataFrame, as_of: pd.Timestamp) -> Section:
    start = (as_of - pd.Timedelta(days=2 * KPI_DAYS)).floor("D")
    table = cohort_retention(log, start, as_of, max_months=COHORT_MONTHS)
    if table.empty:
        return Section("cohorts", "Cohort retention", _note("no first purchases in the period"))
    fig, ax = _figure()
    fig.set_size_inches(8.5, max(3.0, 0.28 * len(table) + 1.2))
    values = table.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(np.arange(values.shape[1]), [str(c) for c in table.columns], fontsize=8)
    ax.set_yticks(np.arange(values.shape[0]), list(table.index), fontsize=8)
    ax.set_xlabel("months since first purchase")
    ax.set_ylabel("cohort (first purchase month)")
    fig.colorbar(image, ax=ax, label="share of cohort ordering")
    for (i, j), v in np.ndenumerate(values):
        if j > 0 and np.isfinite(v):
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=6)
    body = (
        f'<p class="meta">Cohorts whose first order falls in {start.date()} .. {as_of.date()}; '
        "cell = share of the cohort ordering in that month after its first (blank = not yet "
        "observed).</p>" + _img(fig, "cohort retention heatmap")
    )
    return Section("cohorts", "Cohort retention", body)


def segment_section(features: pd.DataFrame, segments: pd.Series) -> Section:
    if features.empty:
        return Section("segments", "Segments", _note("no customers bought before as_of"))
    table = summarize_segments(features, segments)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 3.6), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    names = list(table.index)
    left.barh(names, table["customers"], color="#2c6fa8")
    left.set_title("customers")
    left.invert_yaxis()
    right.barh(names, table["spend_total"], color="#4c9a2a")
    right.set_title("spend to date")
    body = _img(fig, "segment sizes and value") + _table(table)
    return Section("segments", "Segments: size and value", body)


def risk_section(scores: pd.DataFrame | None) -> Section:
    if scores is None or scores.empty:
        return Section("risk", "Churn risk", _note("no scores given (run `retain score`)"))
    fig, ax = _figure()
    bins = np.linspace(0, 1, 21)
    for band, color in _RISK_COLORS.items():
        p = scores.loc[scores["risk_band"] == band, "churn_probability"].to_numpy(dtype=float)
        ax.hist(p, bins=bins, color=color, label=f"{band} ({len(p):,})")
    ax.set_xlabel("churn probability")
    ax.set_ylabel("customers")
    ax.set_title("Distribution of churn probability by risk band")
    ax.legend()
    counts = (
        scores.groupby("risk_band", observed=True)["churn_probability"]
        .agg(customers="size", mean_churn_probability="mean")
        .reindex(list(_RISK_COLORS))
        .dropna(how="all")
        .astype({"customers": "int64"})
    )
    return Section("risk", "Churn risk", _img(fig, "churn probability histogram") + _table(counts))


def calibration_section(
    log: pd.DataFrame,
    scores: pd.DataFrame | None,
    horizon_days: int | None,
    observed_until: pd.Timestamp,
) -> Section:
    """Predicted churn of the scores against churn observed in the log after their as_of.

    ``observed_until`` is where the log's coverage ends (the report's as_of); the scores'
    horizon must end by then, or customers would count as churned for lack of data.
    """
    from training.labels import build_labels
    from training.metrics import calibration_curve, expected_calibration_error

    title = "Calibration: last period's predictions against what happened"
    if scores is None or scores.empty:
        return Section("calibration", title, _note("no scores given (run `retain score`)"))
    if horizon_days is None:
        return Section("calibration", title, _note("horizon unknown: _summary.json missing"))
    scored_at = pd.Timestamp(scores["as_of"].iloc[0])
    window_end = scored_at + pd.Timedelta(days=horizon_days)
    if window_end > observed_until:
        return Section(
            "calibration",
            title,
            _note(
                f"scores are as of {scored_at.date()}; their {horizon_days}-day horizon ends "
                f"{window_end.date()}, after the report date {observed_until.date()}: not yet "
                "observable. Score an earlier date to check calibration."
            ),
        )
    labels = build_labels(log, scored_at, horizon_days)
    joined = scores.set_index(scores["customer_id"].astype("str"))[["churn_probability"]].join(
        labels["churn"], how="inner"
    )
    y = joined["churn"].to_numpy(dtype=float)
    p = joined["churn_probability"].to_numpy(dtype=float)
    curve = calibration_curve(y, p, n_bins=CALIBRATION_BINS)
    ece = expected_calibration_error(y, p, n_bins=CALIBRATION_BINS)
    fig, ax = _figure()
    fig.set_size_inches(6.0, 4.5)
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", label="perfect calibration")
    ax.plot(curve["mean_predicted"], curve["fraction_positive"], marker="o", label="model")
    for _, row in curve.iterrows():
        ax.annotate(
            f"{int(row['count']):,}",
            (row["mean_predicted"], row["fraction_positive"]),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted churn probability (bin mean)")
    ax.set_ylabel("observed churn rate")
    ax.set_title(f"Scores of {scored_at.date()} vs the next {horizon_days} days")
    ax.legend(loc="upper left")
    body = (
        f'<p class="meta">{len(joined):,} customers scored as of {scored_at.date()}; churn = no '
        f"order in [{scored_at.date()}, {window_end.date()}). Predicted mean "
        f"{p.mean():.1%}, observed {y.mean():.1%}, expected calibration error {ece:.3f}.</p>"
        + _img(fig, "calibration plot")
        + _table(curve.set_index("bin"), "{:,.3f}")
    )
    return Section("calibration", title, body)


def offer_section(scores: pd.DataFrame | None) -> Section:
    title = "Offer plan by segment"
    if scores is None or scores.empty:
        return Section("offers", title, _note("no scores given (run `retain score`)"))
    sent = scores[scores["offer"] != "none"]
    plan = pd.crosstab(sent["segment"], sent["offer"])
    order = [s for s in SEGMENTS if s in plan.index] + [s for s in plan.index if s not in SEGMENTS]
    plan = plan.reindex(order)
    summary = scores.groupby("segment", observed=True).agg(
        customers=("customer_id", "size"),
        offers_sent=("offer", lambda s: int((s != "none").sum())),
        holdout=("holdout", "sum"),
        suppressed=("suppressed", "sum"),
        expected_value_sent=(
            "offer_expected_value",
            lambda v: float(v[scores.loc[v.index, "offer"] != "none"].sum()),
        ),
    )
    summary = summary.reindex([s for s in SEGMENTS if s in summary.index])
    parts = []
    if not plan.empty:
        fig, ax = _figure()
        left = np.zeros(len(plan))
        colors = [
            "#2c6fa8",
            "#4c9a2a",
            "#e0a526",
            "#c0392b",
            "#8e44ad",
            "#16a085",
            "#7f8c8d",
            "#d35400",
        ]
        for i, offer in enumerate(plan.columns):
            ax.barh(
                list(plan.index), plan[offer], left=left, label=offer, color=colors[i % len(colors)]
            )
            left += plan[offer].to_numpy()
        ax.invert_yaxis()
        ax.set_xlabel("offers to send")
        ax.set_title("Offers by segment (holdout and negative-value offers excluded)")
        ax.legend(fontsize=7, loc="lower right")
        parts.append(_img(fig, "offer plan by segment"))
        parts.append(_table(plan, "{:,.0f}"))
    else:
        parts.append(_note("no offers to send"))
    parts.append(_table(summary))
    return Section("offers", title, "".join(parts))


def lift_figure(results: pd.DataFrame) -> Any:
    """Repurchase-rate lift with its 95% interval, one bar per offer (and segment) row."""
    fig, ax = _figure()
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


def _num(value: Any, spec: str, scale: float = 1.0) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return spec.format(value * scale)


def _interval(value: Any, low: Any, high: Any, scale: float, spec: str) -> str:
    return f"{_num(value, spec, scale)} [{_num(low, spec, scale)}, {_num(high, spec, scale)}]"


def campaign_section(lift: dict[str, Any] | None) -> Section:
    title = "Campaign results"
    if not lift or not lift.get("results"):
        return Section(
            "campaigns",
            title,
            _note("no campaign measured (run `retain lift ... --json` and pass --lift)"),
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
                "lift (pts)": [
                    _interval(v, lo, hi, 100, "{:+.1f}")
                    for v, lo, hi in zip(
                        frame["bought_lift"],
                        frame["bought_lift_low"],
                        frame["bought_lift_high"],
                        strict=True,
                    )
                ],
                "incremental revenue": [
                    _interval(v, lo, hi, 1, "{:,.0f}")
                    for v, lo, hi in zip(
                        frame["incremental_revenue"],
                        frame["incremental_revenue_low"],
                        frame["incremental_revenue_high"],
                        strict=True,
                    )
                ],
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
    parts = [intro, _img(lift_figure(ordered), "lift per offer and segment with 95% intervals")]
    parts.append(_table(shown(offers)))
    if not segments.empty:
        parts.append("<h3>By segment</h3>")
        parts.append(_table(shown(segments)))
    return Section("campaigns", title, "".join(parts))


# ---- page -------------------------------------------------------------------------------


def load_scores(scores_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scores of a finished ``retain score`` output and its run summary."""
    from serving.batch import SUMMARY_NAME, read_scores

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
    last = pd.Timestamp(log["timestamp"].max())
    report_as_of = (
        to_utc_timestamp(as_of) if as_of is not None else last.floor("D") + pd.Timedelta(days=1)
    )
    horizon = horizon_days if horizon_days is not None else summary.get("horizon_days")
    features = build_features(log, report_as_of)
    segments = assign_segments(features)
    sections = [
        kpi_section(log, report_as_of),
        cohort_section(log, report_as_of),
        segment_section(features, segments),
        risk_section(scores),
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
