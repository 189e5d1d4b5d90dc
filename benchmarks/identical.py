"""Digests of what retain trains and scores, to show a refactor changed no number.

Runs only the ``retain`` command (so the same script runs on any layout of the code): on the
CDNOW sample and on a seeded synthetic log it trains a model (``retain train --no-register
--artifact-out``), scores every customer with it (``retain score``) and prints one sha256 per
output: the model's LightGBM text files, and the scores with their reasons and offers (rows
sorted by customer, floats written with 17 significant digits). Equal digests before and
after a change mean bit-identical models, scores, reasons and offers.

    python benchmarks/identical.py --json identical.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("RETAIN_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
# columns that describe the run rather than the customer (none of them is a score)
RUN_COLUMNS = ("scored_at", "model_uri", "model_version", "run_id")


def retain(*args: str, cwd: Path) -> None:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    exe = Path(sys.executable).with_name("retain")
    done = subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"retain {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def cdnow_sample(out: Path) -> Path:
    """The CDNOW sample as a plain table (id, YYYYMMDD date, CDs, dollars)."""
    raw = pd.read_csv(
        DATASETS / "cdnow" / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["customer_id", "sample_id", "date", "quantity", "amount"],
        dtype={"customer_id": "str", "date": "str"},
    )
    table = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d", utc=True),
            "quantity": raw["quantity"],
            "amount": raw["amount"],
        }
    )
    table.to_parquet(out, index=False)
    return out


def digest_files(root: Path, pattern: str) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob(pattern)):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def digest_scores(scores: Path) -> tuple[str, int]:
    frame = pd.read_parquet(scores)
    frame = frame.drop(columns=[c for c in RUN_COLUMNS if c in frame.columns])
    frame = frame.sort_values("customer_id").reset_index(drop=True)
    frame = frame[sorted(frame.columns)]
    text = frame.to_csv(index=False, float_format="%.17g")
    return hashlib.sha256(text.encode()).hexdigest(), len(frame)


def case(name: str, data: Path, train_as_of: str, score_as_of: str, work: Path) -> dict:
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    artifact = work / f"{name}-artifact"
    scores = work / f"{name}-scores"
    started = time.perf_counter()
    retain(
        "train", "--data", str(data), "--as-of", train_as_of, "--horizon", "90",
        "--no-register", "--artifact-out", str(artifact), "--tracking-uri", tracking, cwd=work,
    )  # fmt: skip
    retain(
        "score", "--data", str(data), "--as-of", score_as_of, "--out", str(scores),
        "--model-uri", str(artifact), cwd=work,
    )  # fmt: skip
    scores_sha, rows = digest_scores(scores)
    return {
        "case": name,
        "models_sha256": digest_files(artifact, "*.lgb.txt"),
        "scores_sha256": scores_sha,
        "customers": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1500, help="synthetic log size")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="keep outputs here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="retain-identical-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        synth = work / "synthetic.parquet"
        retain("synth", "--customers", str(args.customers), "--seed", "7", "--out", str(synth),
               cwd=work)  # fmt: skip
        cdnow = cdnow_sample(work / "cdnow.parquet")
        results = [
            case("cdnow_sample", cdnow, "1998-01-01", "1998-06-30", work),
            case("synthetic", synth, "2024-10-01", "2025-01-01", work),
        ]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'case':<14} {'customers':>9} {'models sha256':<20} {'scores sha256':<20} seconds")
    for r in results:
        print(
            f"{r['case']:<14} {r['customers']:>9,} {r['models_sha256'][:16]:<20} "
            f"{r['scores_sha256'][:16]:<20} {r['seconds']:.1f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"cases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
