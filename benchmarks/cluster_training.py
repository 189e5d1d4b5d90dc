"""Training time locally vs with the snapshots built on a Dask cluster (``retain train --dask``).

The fit is ``benchmarks/quality.py``'s training-time measurement: ``RetainModels(horizon_days
=90, n_snapshots=6)`` on ``--customers`` synthetic customers (``features.synthetic.synth``), fitted at
2024-10-01. It runs once in this process (``local``) and once with
``training.dataset.cluster_snapshots.ClusterSnapshots`` on a cluster (``cluster``): a ``LocalCluster``
of ``--workers`` worker processes, or the scheduler at ``--dask``. The boosters fit in this
process either way; the script checks that every LightGBM text is the same and prints wall
and this process's CPU seconds, with the 1-minute load average at the end of each fit (the
machine may be shared).

    python benchmarks/cluster_training.py [--customers 1000000] [--workers 2 | --dask ADDR]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# benchmarks/features.py and benchmarks/http.py would shadow the features package and the
# standard library's http (also in the Dask worker processes this script spawns): the
# repository goes first and the benchmarks directory goes
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]

from features.atomic import write_text_atomic  # noqa: E402

HORIZON_DAYS = 90  # benchmarks/quality.py
FIT_AS_OF = "2024-10-01"  # benchmarks/quality.py SYNTH_CUTOFFS[-1]


def _fit(log: Any, seed: int, snapshots: Any) -> tuple[dict[str, Any], dict[str, str]]:
    from training.models.bundle import RetainModels

    wall, cpu = time.perf_counter(), time.process_time()
    models = RetainModels(horizon_days=HORIZON_DAYS, n_snapshots=6, seed=seed).fit(
        log, FIT_AS_OF, snapshots=snapshots
    )
    figures = {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s_driver": round(time.process_time() - cpu, 2),
        "n_train_rows": int(models.n_train_rows_),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    texts = {
        name: model.booster_.model_to_string()
        for name, model in models._boosters().items()
        if model is not None
    }
    return figures, texts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--dask", default=None, help="a running scheduler instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from features.dask_cluster import dask_client
    from features.log.purchase_log import canonicalize
    from features.synthetic.synth import generate_purchase_log
    from training.dataset.cluster_snapshots import ClusterSnapshots

    started = time.perf_counter()
    log = canonicalize(generate_purchase_log(args.customers, seed=args.seed).log).log
    print(
        f"log: {args.customers:,} customers, {len(log):,} rows "
        f"({time.perf_counter() - started:.1f} s to generate)",
        flush=True,
    )
    local, local_texts = _fit(log, args.seed, None)
    print(f"local:   {json.dumps(local)}", flush=True)
    where = args.dask or f"LocalCluster({args.workers} worker processes, 1 thread each)"
    with dask_client(args.dask, None if args.dask else args.workers) as client:
        cluster, cluster_texts = _fit(log, args.seed, ClusterSnapshots(client))
    print(f"cluster: {json.dumps(cluster)} on {where}", flush=True)
    identical = cluster_texts == local_texts
    print(
        f"LightGBM texts identical: {identical}; cluster / local wall: "
        f"{cluster['wall_s'] / local['wall_s']:.2f}",
        flush=True,
    )
    out = {
        "customers": args.customers,
        "rows": len(log),
        "cpu_count": os.cpu_count(),
        "cluster_where": where,
        "local": local,
        "cluster": cluster,
        "texts_identical": identical,
    }
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
