"""Uplift benchmark: targeting by uplift against churn targeting and random, on held-out customers.

Each seed draws a synthetic campaign with heterogeneous true effects
(:func:`serving.lift.campaign_sim.run_synthetic_campaign`: persuadables, sure things, sleeping
dogs, lost causes) run through the default offer policy with half of the matched customers
held out (a learning campaign), builds the uplift training set from the log the way
``retain uplift-train`` does, holds out a share of customers, fits the uplift models on the
rest and compares, on the held-out customers, the Qini coefficient and the uplift at the
top 10 % and 30 % of:

- ``uplift (two-model)`` and ``uplift (transformed outcome)``: :class:`training.models.uplift.UpliftModel`;
- ``churn (retain model)``: the churn probability of retain's own models, trained on the log
  before the campaign's scoring day (what churn targeting means in retain);
- ``churn (oracle)``: the simulator's true probability of no purchase in the horizon, the
  best churn targeting possible (the campaign's scores are drawn from the truth);
- ``random``; and ``true uplift``, the ceiling.

    python benchmarks/uplift.py [--customers 20000] [--seeds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# first on the path even when PYTHONPATH has it: run as a script, this folder comes first,
# and its features.py benchmark would hide the features package
sys.path.insert(0, str(REPO))

from training.uplift import (  # noqa: E402
    UpliftModel,
    evaluate_on_held_out,
    held_out_customers,
)

from features.log.purchase_log import canonicalize  # noqa: E402
from features.retention.assignments import assignments_from_scores  # noqa: E402
from serving.lift.campaign_sim import run_synthetic_campaign  # noqa: E402
from serving.offers.policy import OfferPolicy  # noqa: E402
from training.dataset.uplift_data import uplift_training_set  # noqa: E402
from training.models.bundle import RetainModels  # noqa: E402

AS_OF = "2025-01-01"
CHURN_MODEL = {
    "n_snapshots": 4,
    "n_snapshots_365": 2,
    "num_boost_round": 100,
    "baseline_sample": 2_000,
    "num_threads": 1,
}


def run_seed(
    customers: int,
    seed: int,
    *,
    holdout_share: float,
    evaluate_share: float,
    window_days: int,
    churn_model: bool,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One campaign: the targeting table on its held-out customers, and its sizes/timings."""
    t0 = time.perf_counter()
    policy = OfferPolicy.default().model_copy(update={"holdout_share": holdout_share})
    campaign = run_synthetic_campaign(
        customers, seed, as_of=AS_OF, window_days=window_days, horizon_days=window_days,
        policy=policy,
    )  # fmt: skip
    log = canonicalize(campaign.log).log
    assignments = assignments_from_scores(campaign.scores)
    data = uplift_training_set(
        log, assignments, window_days, observed_until=campaign.outcome_truth["window_end"].max()
    )
    t_data = time.perf_counter() - t0
    ids = assignments["customer_id"].astype("str").to_numpy()
    scores = campaign.scores.set_index(campaign.scores["customer_id"].astype("str"))
    truth = campaign.outcome_truth.set_index(campaign.outcome_truth["customer_id"].astype("str"))
    targets: dict[str, np.ndarray] = {}
    t1 = time.perf_counter()
    if churn_model:
        models = RetainModels(horizon_days=window_days, seed=seed, **CHURN_MODEL).fit(log, AS_OF)
        churn = models.predict(log, AS_OF)["churn_probability"]
        targets["churn (retain model)"] = churn.reindex(ids).to_numpy(dtype=float)
    t_churn = time.perf_counter() - t1
    targets["churn (oracle)"] = scores["churn_probability"].reindex(ids).to_numpy(dtype=float)
    targets["true uplift"] = truth["true_uplift"].reindex(ids).to_numpy(dtype=float)
    held_out = held_out_customers(ids, evaluate_share, seed)
    t2 = time.perf_counter()
    table = evaluate_on_held_out(
        data,
        held_out,
        {
            "uplift (two-model)": UpliftModel(seed=seed),
            "uplift (transformed outcome)": UpliftModel(learner="transformed_outcome", seed=seed),
        },
        targets,
        seed,
    )
    info = {
        "seed": seed,
        "assigned": len(data),
        "sent": int(data.treated.sum()),
        "held_out_group": int((data.treated == 0).sum()),
        "evaluated_customers": int(held_out.sum()),
        "buying_rate_sent": float(data.bought[data.treated == 1].mean()),
        "buying_rate_held_out_group": float(data.bought[data.treated == 0].mean()),
        "seconds_simulate_and_build": round(t_data, 2),
        "seconds_churn_model": round(t_churn, 2),
        "seconds_uplift_models": round(time.perf_counter() - t2, 2),
    }
    return table, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--holdout-share", type=float, default=0.5)
    parser.add_argument("--evaluate-share", type=float, default=0.3)
    parser.add_argument("--window", type=int, default=90)
    parser.add_argument("--no-churn-model", action="store_true", help="Skip retain's churn model.")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures as JSON.")
    args = parser.parse_args()

    tables, infos = [], []
    for seed in range(args.seeds):
        table, info = run_seed(
            args.customers,
            seed,
            holdout_share=args.holdout_share,
            evaluate_share=args.evaluate_share,
            window_days=args.window,
            churn_model=not args.no_churn_model,
        )
        tables.append(table)
        infos.append(info)
        print(
            f"seed {seed}: {info['assigned']:,} assigned ({info['sent']:,} sent, "
            f"{info['held_out_group']:,} held out), evaluated on {info['evaluated_customers']:,}"
            f" held-out customers; buying rate sent {info['buying_rate_sent']:.3f}, held out "
            f"{info['buying_rate_held_out_group']:.3f}"
        )
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
        print()
    mean = sum(tables) / len(tables)
    wins = {
        name: int(sum(t.loc["uplift (two-model)", "qini"] > t.loc[name, "qini"] for t in tables))
        for name in mean.index
        if name != "uplift (two-model)"
    }
    print(f"mean over {len(tables)} seed(s), {args.customers:,} customers each:")
    print(mean.to_string(float_format=lambda v: f"{v:.4f}"))
    print("seeds where uplift (two-model) has the higher Qini: " + ", ".join(
        f"{name} {n}/{len(tables)}" for name, n in wins.items()
    ))  # fmt: skip
    if args.json is not None:
        payload = {
            "customers": args.customers,
            "seeds": args.seeds,
            "holdout_share": args.holdout_share,
            "evaluate_share": args.evaluate_share,
            "window_days": args.window,
            "per_seed": [
                {**info, "targeting": json.loads(t.to_json(orient="index"))}
                for info, t in zip(infos, tables, strict=True)
            ],
            "mean": json.loads(mean.to_json(orient="index")),
            "uplift_two_model_qini_wins": wins,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
