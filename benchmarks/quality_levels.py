"""Aggregate-level experiment of issue 25: can a level chosen before the cutoff meet the floors?

The quality floors on |aggregate purchase error| and |aggregate spend error| ask the model's
total to be within 2 % (relative) of the better of BG/NBD and Pareto/NBD on the test window.
This script runs the quality benchmark's backtest (:func:`training.evaluation.backtest.evaluate`)
at each case's cutoff and at earlier cutoffs of the same log, so every case has past windows
that a model trained before them forecast out of time, as the real one must forecast the test.
It prints, per case:

- the oracle table: each candidate level's aggregate error window by window (M: the model as
  shipped, B: BG/NBD, P: Pareto/NBD, and their means), the floor's margin beside the
  spread of the past errors, and the chance that a level with that spread lands inside the
  floor (``P(|N(0, sd)| <= floor)``, the best candidate's sd);
- the rules: a level chosen on the past windows (the latest one, the mean |error| over all,
  the RMS of the latest three, the |mean error|; among the model, the BTYD models and their
  means), the model's per-customer forecasts rescaled to that total, and the test floors
  (aggregate, count RMSE, Poisson deviance, spend RMSE) it then meets, with the worst change
  of RMSE or deviance against the model as shipped.

    python benchmarks/quality_levels.py [--json out.json] [--skip-synthetic] ...

``PYTHONPATH`` chooses the checkout measured, as for ``benchmarks/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # benchmarks/features.py would shadow the features package
if not os.environ.get("PYTHONPATH") and sys.path[0] != str(REPO):
    sys.path.insert(0, str(REPO))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # for ``benchmarks.quality`` only

from benchmarks.quality import CJ_HORIZON_DAYS, HORIZON_DAYS, datasets_dir  # noqa: E402
from features.atomic import write_text_atomic  # noqa: E402
from features.log.purchase_log import canonicalize  # noqa: E402
from features.sources.cdnow import read_cdnow  # noqa: E402
from features.sources.completejourney import read_complete_journey  # noqa: E402
from features.synthetic.synth import generate_purchase_log  # noqa: E402
from training.evaluation.backtest import evaluate  # noqa: E402

# the quality benchmark's cases, and earlier cutoffs whose windows end by a case's cutoff
CASES: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "cdnow": (HORIZON_DAYS, ("1998-01-01", "1998-04-01"), ("1997-07-01", "1997-10-01")),
    "synthetic": (
        HORIZON_DAYS,
        ("2024-07-01", "2024-10-01"),
        ("2023-07-01", "2023-10-01", "2024-01-01", "2024-04-01"),
    ),
    "completejourney": (
        CJ_HORIZON_DAYS,
        ("2017-09-01", "2017-12-01", "2017-04-01", "2017-06-01"),
        ("2017-05-01", "2017-07-01", "2017-08-01", "2017-10-01", "2017-11-01"),
    ),
}
SOURCES = {"M": "model", "B": "bgnbd", "P": "paretonbd"}
CANDIDATES: dict[str, dict[str, float]] = {
    "M": {"M": 1.0},
    "B": {"B": 1.0},
    "P": {"P": 1.0},
    "BP": {"B": 0.5, "P": 0.5},
    "MB": {"M": 0.5, "B": 0.5},
    "MP": {"M": 0.5, "P": 0.5},
    "MBP": {"M": 1 / 3, "B": 1 / 3, "P": 1 / 3},
}
RULES = ("last", "mean abs error (all)", "rms last 3", "abs mean error (all)")
POOLS: dict[str, tuple[str, ...]] = {
    "all": tuple(CANDIDATES),
    "M,B,P": ("M", "B", "P"),
    "BTYD": ("B", "P", "BP"),
    # B*: Pareto/NBD when the classic BG/NBD fit at that cutoff collapsed to no dropout and
    # Pareto/NBD's did not, else BG/NBD (a criterion known at the cutoff)
    "M,B*": ("M", "B*"),
}
MARGIN = 0.02
LEVEL_FLOORS = ("agg purch", "agg spend", "count RMSE", "Poisson dev", "spend RMSE")
Window = dict[str, Any]


def window(result: Any) -> Window:
    """The labels and each method's count and spend forecasts of one backtest."""
    out = {
        "count": result.labels["n_purchase_days_h"].to_numpy(dtype=np.float64),
        "spend": result.labels["spend_h"].to_numpy(dtype=np.float64),
    }
    for method in SOURCES.values():
        pred = result.predictions[method]
        out[f"{method}_count"] = pred["expected_purchases_horizon"].to_numpy(dtype=np.float64)
        out[f"{method}_spend"] = pred["expected_spend_horizon"].to_numpy(dtype=np.float64)
    collapsed = set(getattr(result, "degenerate_fits", {}) or {})
    out["bgnbd_alone_collapsed"] = "bgnbd" in collapsed and "paretonbd" not in collapsed
    return out


def errors(w: Window, output: str) -> dict[str, float]:
    """Aggregate error (forecast total / actual - 1) of every candidate level."""
    actual = float(w[output].sum())
    total = {k: float(w[f"{m}_{output}"].sum()) for k, m in SOURCES.items()}
    out = {
        name: sum(share * total[k] for k, share in mix.items()) / actual - 1.0
        for name, mix in CANDIDATES.items()
    }
    out["B*"] = out["P"] if w["bgnbd_alone_collapsed"] else out["B"]
    return out


def deviance(mu: np.ndarray, y: np.ndarray) -> float:
    mu = np.maximum(mu, 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(np.mean(2.0 * (term - (y - mu))))


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def scored(w: Window, level_count: str, level_spend: str) -> dict[str, Any]:
    """The test floors of the model's forecasts rescaled to the candidate totals."""
    e_c, e_s = errors(w, "count"), errors(w, "spend")
    count = w["model_count"] * (1 + e_c[level_count]) / (1 + e_c["M"])
    spend = w["model_spend"] * (1 + e_s[level_spend]) / (1 + e_s["M"])
    value = {
        "agg purch": abs(e_c[level_count]),
        "agg spend": abs(e_s[level_spend]),
        "count RMSE": rmse(count, w["count"]),
        "Poisson dev": deviance(count, w["count"]),
        "spend RMSE": rmse(spend, w["spend"]),
    }
    best = {
        "agg purch": min(abs(e_c["B"]), abs(e_c["P"])),
        "agg spend": min(abs(e_s["B"]), abs(e_s["P"])),
        "count RMSE": min(rmse(w[f"{m}_count"], w["count"]) for m in ("bgnbd", "paretonbd")),
        "Poisson dev": min(deviance(w[f"{m}_count"], w["count"]) for m in ("bgnbd", "paretonbd")),
        "spend RMSE": min(rmse(w[f"{m}_spend"], w["spend"]) for m in ("bgnbd", "paretonbd")),
    }
    failed = [k for k in LEVEL_FLOORS if value[k] > best[k] * (1 + MARGIN) + 1e-12]
    return {"level": [level_count, level_spend], "value": value, "best": best, "failed": failed}


def pick(past: list[Window], output: str, rule: str, pool: tuple[str, ...]) -> str | None:
    """The candidate a rule picks on the past windows (oldest first); None without one."""
    if not past:
        return None
    errs = [errors(w, output) for w in past]
    if rule == "last":
        score = {c: abs(errs[-1][c]) for c in pool}
    elif rule == "mean abs error (all)":
        score = {c: float(np.mean([abs(e[c]) for e in errs])) for c in pool}
    elif rule == "rms last 3":
        score = {c: float(np.sqrt(np.mean([e[c] ** 2 for e in errs[-3:]]))) for c in pool}
    else:  # abs mean error: the bias, errors of both signs cancelling
        score = {c: abs(float(np.mean([e[c] for e in errs]))) for c in pool}
    return min(pool, key=lambda c: (score[c], c != "M"))


def spread(past: list[Window], output: str) -> dict[str, float] | None:
    """Standard deviation of each candidate's past errors (None below two windows)."""
    if len(past) < 2:
        return None
    errs = [errors(w, output) for w in past]
    return {c: float(np.std([e[c] for e in errs], ddof=1)) for c in CANDIDATES}


def chance_inside(floor: float, sd: float) -> float:
    """P(|N(0, sd)| <= floor): a level with that past spread and no bias meets the floor."""
    return math.erf(floor / (sd * math.sqrt(2.0))) if sd > 0 else 1.0


def past_windows(windows: dict[str, Window], cutoff: str, horizon: int) -> list[tuple[str, Window]]:
    """Every cached window that ends by ``cutoff`` (oldest first)."""
    at = pd.Timestamp(cutoff)
    return [
        (c, w)
        for c, w in sorted(windows.items())
        if pd.Timestamp(c) + pd.Timedelta(days=horizon) <= at
    ]


def case_report(cutoff: str, horizon: int, windows: dict[str, Window]) -> dict[str, Any]:
    test = windows[cutoff]
    past = past_windows(windows, cutoff, horizon)
    history = [w for _, w in past]
    out: dict[str, Any] = {
        "windows": {
            c: {"count": errors(w, "count"), "spend": errors(w, "spend")}
            for c, w in [*past, (cutoff, test)]
        },
        "past_cutoffs": [c for c, _ in past],
        "bgnbd_alone_collapsed": {
            c: bool(w["bgnbd_alone_collapsed"]) for c, w in [*past, (cutoff, test)]
        },
    }
    for output in ("count", "spend"):
        e = errors(test, output)
        floor = min(abs(e["B"]), abs(e["P"])) * (1 + MARGIN)
        sd = spread(history, output)
        out[output] = {
            "floor": floor,
            "margin": floor - min(abs(e["B"]), abs(e["P"])),
            "gap_b_p": abs(e["B"] - e["P"]),
            "past_sd": sd,
            "chance_inside": None if sd is None else chance_inside(floor, min(sd.values())),
            # which BTYD model was nearer the actual total on each past window
            "past_p_nearer": sum(
                abs(errors(w, output)["P"]) < abs(errors(w, output)["B"]) for w in history
            ),
            "past_n": len(history),
        }
    rules: dict[str, Any] = {"today (M)": scored(test, "M", "M")}
    for fixed in ("B", "P", "BP"):
        rules[f"always {fixed}"] = scored(test, fixed, fixed)
    for rule in RULES:
        for pool_name, pool in POOLS.items():
            # no past window: fall back toward BTYD (BG/NBD, the blend's weight-0 end)
            fallback = "B*" if "B*" in pool else "B"
            level_c = pick(history, "count", rule, pool) or fallback
            level_s = pick(history, "spend", rule, pool) or fallback
            rules[f"{rule} among {pool_name}"] = scored(test, level_c, level_s)
    today = rules["today (M)"]["value"]
    for r in rules.values():
        r["worst_change"] = max(
            r["value"][k] / today[k] - 1.0 for k in ("count RMSE", "Poisson dev", "spend RMSE")
        )
    out["rules"] = rules
    return out


def print_case(key: str, case: dict[str, Any]) -> None:
    print(f"\n### {key}\n")
    print("| window (count / spend) | " + " | ".join(CANDIDATES) + " | B* |")
    print("| --- " * (len(CANDIDATES) + 2) + "|")
    for c, e in case["windows"].items():
        mark = " (test)" if c == key.split("@")[1] else ""
        star = "P" if case["bgnbd_alone_collapsed"][c] else "B"
        cells = [f"{e['count'][k]:+.4f} / {e['spend'][k]:+.4f}" for k in CANDIDATES] + [star]
        print(f"| {c}{mark} | " + " | ".join(cells) + " |")
    for output in ("count", "spend"):
        o = case[output]
        sd = o["past_sd"]
        sds = (
            "fewer than 2 past windows"
            if sd is None
            else ", ".join(f"{k} {sd[k]:.4f}" for k in ("M", "B", "P", "BP"))
        )
        chance = "n/a" if o["chance_inside"] is None else f"{o['chance_inside']:.0%}"
        print(
            f"\n{output}: floor {o['floor']:.4f} (margin {o['margin']:.5f}), test |B - P| "
            f"{o['gap_b_p']:.4f}; sd of past errors: {sds}; chance inside the floor {chance}; "
            f"Pareto/NBD nearer than BG/NBD on {o['past_p_nearer']} of {o['past_n']} past windows"
        )


def print_rules(report: dict[str, Any]) -> None:
    keys = list(report)
    names = list(report[keys[0]]["rules"])
    print("\n## Level rules (the model's forecasts rescaled to the chosen total)\n")
    print("| rule | level floors failed | worst RMSE/deviance change | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 3) + "|")
    for rule in names:
        cells, failed, worst = [], 0, -1.0
        for k in keys:
            r = report[k]["rules"][rule]
            failed += len(r["failed"])
            worst = max(worst, r["worst_change"])
            flag = "F: " + ", ".join(r["failed"]) if r["failed"] else "ok"
            lc, ls = r["level"]
            cells.append(
                f"{lc}/{ls} {r['value']['agg purch']:.4f}/{r['value']['agg spend']:.4f} {flag}"
            )
        print(f"| {rule} | {failed} | {worst:+.1%} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="Write every figure here.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic-customers", type=int, default=20_000)
    for name in CASES:
        parser.add_argument(
            f"--skip-{name.replace('completejourney', 'complete-journey')}", action="store_true"
        )
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    for name, (horizon, tests, earlier) in CASES.items():
        if getattr(args, f"skip_{name.replace('completejourney', 'complete_journey')}"):
            continue
        if name == "cdnow":
            log = read_cdnow(datasets_dir() / "cdnow" / "CDNOW_master.txt").log
        elif name == "synthetic":
            raw = generate_purchase_log(args.synthetic_customers, seed=args.seed)
            log = canonicalize(raw.log).log
        else:
            log = read_complete_journey().log
        windows: dict[str, Window] = {}
        for cutoff in sorted({*tests, *earlier}):
            result = evaluate(log, cutoff, horizon_days=horizon, seed=args.seed)
            windows[cutoff] = window(result)
            print(f"{name} {cutoff}: backtest done", file=sys.stderr, flush=True)
        for cutoff in tests:
            key = f"{name}@{cutoff}"
            report[key] = case_report(cutoff, horizon, windows)
            print_case(key, report[key])
    if report:
        print_rules(report)
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
