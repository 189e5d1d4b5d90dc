"""The sections of the retention report (``retain report``), one function each.

The report is one self-contained HTML page a marketer can mail around
(:mod:`serving.report.page`). Sections (each has a stable ``id``; ``campaigns`` is
:mod:`serving.report.campaigns`):

- ``kpis``: repeat rate, purchase frequency, order value over the year before ``as_of``, and
  monthly buyers with the share of returning buyers;
- ``cohorts``: first-purchase-month cohorts, share ordering k months later (heatmap);
- ``segments``: segment sizes and their spend (``features.retention.segments`` at ``as_of``);
- ``risk``: churn-probability distribution by risk band, and the forecast total purchases
  and spend over the horizon with their 90 % interval (needs ``--scores``);
- ``calibration``: last period's predictions against what happened: the scores' churn
  probability, binned, against the share of those customers who did not buy in the
  ``horizon_days`` after the scores' ``as_of`` (needs scores whose horizon is inside the log);
- ``offers``: the offer plan by segment (needs ``--scores``);
- ``campaigns``: campaign results, each offer's measured lift in the repurchase rate against
  its holdout, per offer and per segment, with 95% intervals (needs ``--lift``, the JSON of
  ``retain lift``).

A section without its input says why instead of disappearing, so the page always has the same
structure.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from features.retention.kpis import cohort_retention, compute_kpis
from features.retention.segments import SEGMENTS, summarize_segments
from serving.report.blocks import Section, html_table, inline_png, new_figure, note

KPI_DAYS = 365
COHORT_MONTHS = 12
CALIBRATION_BINS = 10
_RISK_COLORS = {"low": "#4c9a2a", "medium": "#e0a526", "high": "#c0392b"}


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
        fig, ax = new_figure()
        x = np.arange(len(monthly))
        ax.bar(x, monthly["buyers"], color="#9ab7d3", label="buyers")
        ax.bar(x, monthly["returning_buyers"], color="#2c6fa8", label="returning buyers")
        ax.set_xticks(x, list(monthly.index), rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("customers")
        ax.set_title("Monthly buyers and monthly repeat (returning) buyers")
        ax.legend(loc="upper left")
        parts.append(inline_png(fig, "monthly buyers and returning buyers"))
        shown = monthly[["buyers", "multi_order_buyers", "returning_buyers"]]
        parts.append(html_table(shown.astype("int64").T, "{:,.0f}"))
    return Section("kpis", "Key figures", "".join(parts))


def cohort_section(log: pd.DataFrame, as_of: pd.Timestamp) -> Section:
    start = (as_of - pd.Timedelta(days=2 * KPI_DAYS)).floor("D")
    table = cohort_retention(log, start, as_of, max_months=COHORT_MONTHS)
    if table.empty:
        return Section("cohorts", "Cohort retention", note("no first purchases in the period"))
    fig, ax = new_figure()
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
        "observed).</p>" + inline_png(fig, "cohort retention heatmap")
    )
    return Section("cohorts", "Cohort retention", body)


def segment_section(features: pd.DataFrame, segments: pd.Series) -> Section:
    if features.empty:
        return Section("segments", "Segments", note("no customers bought before as_of"))
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
    body = inline_png(fig, "segment sizes and value") + html_table(table)
    return Section("segments", "Segments: size and value", body)


def risk_section(scores: pd.DataFrame | None, summary: dict[str, Any] | None = None) -> Section:
    if scores is None or scores.empty:
        return Section("risk", "Churn risk", note("no scores given (run `retain score`)"))
    fig, ax = new_figure()
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
    return Section(
        "risk",
        "Churn risk",
        inline_png(fig, "churn probability histogram")
        + html_table(counts)
        + forecast_totals(scores, summary or {}),
    )


def forecast_totals(scores: pd.DataFrame, summary: dict[str, Any]) -> str:
    """The scored customers' total purchases and spend over the horizon, with the 90 %
    interval the model's past cutoffs give (``total_log_spread`` of the scores' run
    summary); a note when the scores carry no interval."""
    from training.models.total_interval import totals_with_interval

    spreads = summary.get("total_log_spread")
    columns = ("expected_purchases_horizon", "expected_spend_horizon")
    if spreads is None or any(c not in scores for c in columns):
        return note("the scores' run summary carries no interval of the totals")
    totals = totals_with_interval(
        float(scores[columns[0]].sum()), float(scores[columns[1]].sum()), spreads
    )
    horizon = summary.get("horizon_days")
    frame = pd.DataFrame(
        {
            "forecast": [t["forecast"] for t in totals.values()],
            "90% interval low": [t["low"] for t in totals.values()],
            "90% interval high": [t["high"] for t in totals.values()],
        },
        index=pd.Index(["purchase days", "spend"], name="total"),
    )
    return (
        f'<p class="meta" id="forecast-totals">Forecast over the {horizon} days after the '
        f"scores' as_of, all {len(scores):,} scored customers (90% interval from the "
        "spread of the model's past forecast errors and the count's Poisson noise):</p>"
        + html_table(frame, "{:,.0f}")
    )


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
    from training.dataset.labels import build_labels
    from training.evaluation.metrics import calibration_curve, expected_calibration_error

    title = "Calibration: last period's predictions against what happened"
    if scores is None or scores.empty:
        return Section("calibration", title, note("no scores given (run `retain score`)"))
    if horizon_days is None:
        return Section("calibration", title, note("horizon unknown: _summary.json missing"))
    scored_at = pd.Timestamp(scores["as_of"].iloc[0])
    window_end = scored_at + pd.Timedelta(days=horizon_days)
    if window_end > observed_until:
        return Section(
            "calibration",
            title,
            note(
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
    fig, ax = new_figure()
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
        + inline_png(fig, "calibration plot")
        + html_table(curve.set_index("bin"), "{:,.3f}")
    )
    return Section("calibration", title, body)


def offer_section(scores: pd.DataFrame | None) -> Section:
    title = "Offer plan by segment"
    if scores is None or scores.empty:
        return Section("offers", title, note("no scores given (run `retain score`)"))
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
        fig, ax = new_figure()
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
        parts.append(inline_png(fig, "offer plan by segment"))
        parts.append(html_table(plan, "{:,.0f}"))
    else:
        parts.append(note("no offers to send"))
    parts.append(html_table(summary))
    return Section("offers", title, "".join(parts))
