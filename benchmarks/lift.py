"""Benchmark ``retain lift``: are its intervals right, and how long does a million take?

Usage: ``python benchmarks/lift.py [--campaigns 200] [--customers 20000] [--per-population 8]
[--million 1000000] [--json PATH]``

1. **Coverage**: ``--campaigns`` seeded synthetic campaigns with heterogeneous true effects
   (``features.synthetic.campaigns``, default effects), each run through the default offer policy on
   oracle scores (``serving.lift.campaign_sim``): a new population (log, truth) every
   ``--per-population`` campaigns, a new campaign name (so a new holdout draw) and outcome
   seed every campaign. For every offer of every campaign, does the headline 95% interval of
   the repurchase-rate lift cover the true lift (the mean ``true_uplift`` of the offer's
   customers, treated and held out)? Reported pooled and per offer, for the headline, raw and
   CUPED intervals.
2. **False positives**: as many campaigns with no effect (``CampaignEffects(scale=0)``): the
   share of offers whose verdict is "significant".
3. **Speed**: ``retain lift`` in a fresh subprocess on ``--million`` assigned customers (a
   synthetic log of that many customers, one campaign with every customer assigned, a 10%
   holdout, seven rules, send days over a month), wall time of the whole command (load
   included) and of the measurement alone (``measure_lift`` in this process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.atomic import write_text_atomic  # noqa: E402
from features.log.purchase_log import canonicalize  # noqa: E402
from features.synthetic.campaigns import CampaignEffects, simulate_campaign_outcomes  # noqa: E402
from features.synthetic.synth import generate_purchase_log  # noqa: E402
from serving.lift.assignments import read_assignments  # noqa: E402
from serving.lift.campaign_sim import oracle_scores, send_campaign  # noqa: E402
from serving.lift.measure import measure_lift  # noqa: E402
from serving.offers.policy import OfferPolicy  # noqa: E402

AS_OF = pd.Timestamp("2025-01-01", tz="UTC")
WINDOW = 90
FAR = pd.Timestamp("2030-01-01", tz="UTC")  # every window is simulated to its end


def campaigns(
    n_campaigns: int, customers: int, per_population: int, effects: CampaignEffects, tag: str
) -> pd.DataFrame:
    """One row per campaign x offer: the interval, the truth, the verdict."""
    policy = OfferPolicy.default()
    rows: list[dict[str, Any]] = []
    population = None
    for k in range(n_campaigns):
        if k % per_population == 0:
            seed = 1000 + k // per_population
            synthetic = generate_purchase_log(
                customers, seed=seed, end=AS_OF - pd.Timedelta(days=1)
            )
            scores = oracle_scores(synthetic.log, synthetic.truth, AS_OF, horizon_days=WINDOW)
            population = (synthetic, scores)
        assert population is not None
        synthetic, scores = population
        name = f"{tag}{k}"
        scored, outcome = send_campaign(
            synthetic,
            scores,
            policy,
            name,
            as_of=AS_OF,
            window_days=WINDOW,
            seed=k,
            effects=effects,
        )
        log = canonicalize(outcome.log).log
        experiment = read_assignments(scored)
        result = measure_lift(log, experiment, window_days=WINDOW, log_end=FAR)
        truth = outcome.truth.merge(
            experiment.frame[["customer_id", "rule"]], on="customer_id", how="inner"
        )
        true = truth.groupby("rule")["true_uplift"].mean()
        table = result.offers()
        table["true_lift"] = table["rule"].map(true)
        table["campaign_index"] = k
        rows.extend(table.to_dict(orient="records"))
        if (k + 1) % 50 == 0:
            print(f"  {tag}: {k + 1}/{n_campaigns} campaigns", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def coverage(frame: pd.DataFrame, kind: str = "") -> pd.Series:
    suffix = f"_{kind}" if kind else ""
    low, high = frame[f"bought_lift{suffix}_low"], frame[f"bought_lift{suffix}_high"]
    measurable = low.notna() & high.notna()
    return ((low <= frame["true_lift"]) & (frame["true_lift"] <= high))[measurable]


def speed(n: int, console: Console) -> dict[str, Any]:
    """``retain lift`` on ``n`` assigned customers, end to end in a subprocess."""
    from features.synthetic.campaigns import CampaignEffects as Effects

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    synthetic = generate_purchase_log(n, seed=0, end=AS_OF - pd.Timedelta(days=1))
    rules = [r.name for r in OfferPolicy.default().rules]
    offers = [r.offer for r in OfferPolicy.default().rules]
    pick = rng.integers(0, len(rules), n)
    holdout = rng.random(n) < 0.1
    send = AS_OF + pd.to_timedelta(rng.integers(0, 30, n), unit="D")
    assignments = pd.DataFrame(
        {
            "customer_id": synthetic.truth["customer_id"].astype("str"),
            "campaign": "million",
            "rule": np.array(rules, dtype=object)[pick],
            "offer": np.array(offers, dtype=object)[pick],
            "holdout": holdout,
            "send_date": send,
            "as_of": AS_OF,
        }
    )
    outcome = simulate_campaign_outcomes(
        synthetic.log,
        synthetic.truth,
        assignments.assign(arm=assignments["rule"], treated=~assignments["holdout"]),
        log_end=AS_OF,
        window_days=WINDOW,
        seed=0,
        effects=Effects(),
    )
    prepared = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="retain-lift-bench-") as tmp:
        data, table = Path(tmp) / "log.parquet", Path(tmp) / "assignments.parquet"
        outcome.log.to_parquet(data)
        assignments.to_parquet(table)
        rows = len(outcome.log)
        del synthetic, outcome
        command = [
            sys.executable,
            "-m",
            "serving.cli",
            "lift",
            "--assignments",
            str(table),
            "--data",
            str(data),
            "--window",
            str(WINDOW),
            "--log-end",
            "2030-01-01",
            "--json",
            "--no-mlflow",
        ]
        t0 = time.perf_counter()
        done = subprocess.run(
            command, cwd=tmp, capture_output=True, text=True, check=False, env=_env()
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"retain lift failed: {done.stderr[-2000:]}")
        from features.log.purchase_log import read_purchase_log

        log = read_purchase_log(data).log
        t0 = time.perf_counter()
        measure_lift(log, read_assignments(pd.read_parquet(table)), window_days=WINDOW, log_end=FAR)
        measure = time.perf_counter() - t0
    console.print(
        f"retain lift on {n:,} assigned customers ({rows:,} log rows): {wall:.1f} s end to end "
        f"(subprocess: load, check, measure, table, JSON); measurement alone {measure:.1f} s "
        f"(inputs prepared in {prepared:.1f} s)"
    )
    return {
        "assigned_customers": n,
        "log_rows": rows,
        "retain_lift_seconds": round(wall, 2),
        "measure_seconds": round(measure, 2),
    }


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=200)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--per-population", type=int, default=8)
    parser.add_argument("--million", type=int, default=1_000_000, help="0 skips the timing.")
    parser.add_argument("--json", type=Path, default=None, help="Write every figure here.")
    args = parser.parse_args(argv)
    console = Console(width=160)
    report: dict[str, Any] = {}

    t0 = time.perf_counter()
    effect = campaigns(args.campaigns, args.customers, args.per_population, CampaignEffects(), "c")
    null = campaigns(
        args.campaigns, args.customers, args.per_population, CampaignEffects(scale=0.0), "n"
    )
    seconds = time.perf_counter() - t0

    table = Table(
        title=f"{args.campaigns} campaigns with effects: 95% interval covers the true lift"
    )
    for name in ("offer", "estimates", "mean holdout", "headline", "raw", "CUPED", "significant"):
        table.add_column(name, justify="left" if name == "offer" else "right")
    per_offer: dict[str, Any] = {}
    for rule, part in effect.groupby("rule"):
        cov, raw, cup = coverage(part), coverage(part, "raw"), coverage(part, "cuped")
        per_offer[rule] = {
            "estimates": len(cov),
            "mean_holdout": float(part["holdout"].mean()),
            "coverage": float(cov.mean()),
            "coverage_raw": float(raw.mean()),
            "coverage_cuped": float(cup.mean()),
            "significant_share": float((part["verdict"] == "significant").mean()),
        }
        d = per_offer[rule]
        table.add_row(
            rule,
            f"{d['estimates']}",
            f"{d['mean_holdout']:.0f}",
            f"{d['coverage']:.1%}",
            f"{d['coverage_raw']:.1%}",
            f"{d['coverage_cuped']:.1%}" if d["coverage_cuped"] == d["coverage_cuped"] else "-",
            f"{d['significant_share']:.0%}",
        )
    pooled = coverage(effect)
    table.add_row(
        "all offers",
        f"{len(pooled)}",
        f"{effect['holdout'].mean():.0f}",
        f"{pooled.mean():.1%}",
        f"{coverage(effect, 'raw').mean():.1%}",
        f"{coverage(effect, 'cuped').mean():.1%}",
        f"{(effect['verdict'] == 'significant').mean():.0%}",
    )
    console.print(table)
    null_cov = coverage(null)
    false_positive = float((null["verdict"] == "significant").mean())
    null_by_offer = null.groupby("rule")["verdict"].apply(
        lambda v: float((v == "significant").mean())
    )
    console.print(
        f"{args.campaigns} campaigns with no effect: 'significant' in {false_positive:.1%} of "
        f"{len(null)} offer estimates (per offer: "
        + ", ".join(f"{k} {v:.1%}" for k, v in null_by_offer.items())
        + f"); intervals cover 0 in {null_cov.mean():.1%}"
    )
    console.print(f"{2 * args.campaigns} campaigns drawn and measured in {seconds:.0f} s")
    report["coverage"] = {
        "campaigns": args.campaigns,
        "customers_per_population": args.customers,
        "campaigns_per_population": args.per_population,
        "pooled": float(pooled.mean()),
        "pooled_raw": float(coverage(effect, "raw").mean()),
        "pooled_cuped": float(coverage(effect, "cuped").mean()),
        "estimates": len(pooled),
        "per_offer": per_offer,
    }
    report["no_effect"] = {
        "campaigns": args.campaigns,
        "estimates": len(null),
        "significant_share": false_positive,
        "significant_share_per_offer": {k: float(v) for k, v in null_by_offer.items()},
        "coverage_of_zero": float(null_cov.mean()),
    }
    report["campaign_seconds"] = round(seconds, 1)
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    if args.million > 0:
        report["speed"] = speed(args.million, console)
        if args.json is not None:
            write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
