"""More bad input a user can give ``retain``: one ``error:`` line and exit 2, never a traceback.

Run as users run it (``python -m serving.cli``). Each case printed a traceback (exit 1), took
30 s and three tracebacks (``--dask`` at a closed port), or was accepted (a YAML key written
twice, an uplift model worse than random) before.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.builders import FeatureConfig
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from features.synthetic.synth import generate_purchase_log
from serving.offers.policy import OfferPolicy
from tests.serving.conftest import free_port
from tests.serving.test_cli_errors import error_line, retain
from training.artifact import save_artifact
from training.models.bundle import RetainModels
from training.models.uplift import held_out_customers

pytestmark = [pytest.mark.slow]  # one retain process per case

SEND = pd.Timestamp("2024-05-01", tz="UTC")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log (CSV) and a small artifact trained on it (horizon 30 days)."""
    root = tmp_path_factory.mktemp("inputs")
    raw = generate_purchase_log(200, seed=5, start="2023-01-01", end="2024-06-30").log
    raw.to_csv(root / "log.csv", index=False)
    models = RetainModels(
        horizon_days=30,
        n_snapshots=2,
        num_boost_round=8,
        early_stopping_rounds=4,
        num_threads=1,
        use_baselines=False,
    ).fit(canonicalize(raw).log, "2024-07-01")
    save_artifact(
        root / "art",
        models,
        feature_config=FeatureConfig(horizon_days=30),
        segment_config=SegmentConfig(),
        policy_yaml=OfferPolicy.default().to_yaml(),
    )
    before = canonicalize(raw).log
    ids = sorted(before.loc[before["timestamp"] < "2024-04-01", "customer_id"].unique())
    pd.DataFrame(
        {"customer_id": ids, "send_date": "2024-05-01", "treated": np.arange(len(ids)) % 2}
    ).to_csv(root / "assign.csv", index=False)
    return root


def score_args(work: Path, out: str) -> list[str]:
    data = str(work / "log.csv")
    art = str(work / "art")
    return ["score", "--data", data, "--as-of", "2024-07-01", "--out", out, "--model-uri", art]


def uplift_args(work: Path, out: str, *extra: str) -> list[str]:
    return [
        "uplift-train",
        "--model-uri",
        str(work / "art"),
        "--assignments",
        str(work / "assign.csv"),
        "--data",
        str(work / "log.csv"),
        "--out",
        out,
        *extra,
    ]


def test_score_with_no_dask_workers_or_no_scheduler(tmp_path: Path, work: Path) -> None:
    line = error_line(retain(*score_args(work, "s0"), "--dask-local", "0", cwd=tmp_path))
    assert "--dask-local needs at least 1 worker, got 0" in line
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    line = error_line(retain(*score_args(work, "s1"), "--dask", address, cwd=tmp_path))
    assert f"--dask {address}: no Dask scheduler answers there" in line
    assert not (tmp_path / "s0").exists() and not (tmp_path / "s1").exists()


def test_synth_start_after_end(tmp_path: Path) -> None:
    args = ["synth", "-n", "10", "--out", "x.csv", "--start", "2024-01-01", "--end", "2023-01-01"]
    line = error_line(retain(*args, cwd=tmp_path))
    assert "end (2023-01-01) must not be before start (2024-01-01)" in line
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--learner", "bogus", "--learner 'bogus': use one of two_model, transformed_outcome"),
        ("--evaluate-share", "0", "--evaluate-share must be between 0 and 1"),
        ("--evaluate-share", "1", "got 1.0"),
        ("--evaluate-share", "-1", "got -1.0"),
        ("--evaluate-share", "nan", "got nan"),
    ],
)
def test_uplift_train_bad_options(
    tmp_path: Path, work: Path, option: str, value: str, expected: str
) -> None:
    line = error_line(retain(*uplift_args(work, "up", option, value), cwd=tmp_path))
    assert expected in line
    assert not (tmp_path / "up").exists()


def test_uplift_train_out_through_a_missing_directory(tmp_path: Path, work: Path) -> None:
    """``sub/../ART`` is ``ART``: an existing one is refused in one line; a new one is
    written there, with no stray ``sub/`` (before: an OSError traceback, and ``sub/`` made)."""
    (tmp_path / "ART0").mkdir()
    (tmp_path / "ART0" / "mine.txt").write_text("keep", encoding="utf-8")
    line = error_line(retain(*uplift_args(work, "sub/../ART0"), cwd=tmp_path))
    assert f"{tmp_path / 'ART0'} already exists and is not empty" in line
    assert (tmp_path / "ART0" / "mine.txt").read_text(encoding="utf-8") == "keep"
    assert not (tmp_path / "sub").exists()

    done = retain(*uplift_args(work, "sub/../ART", "--allow-below-random"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["artifact"] == str(tmp_path / "ART")
    assert (tmp_path / "ART" / "retain_artifact.json").is_file()
    assert not (tmp_path / "sub").exists()


def test_score_with_a_malformed_model_text(tmp_path: Path, work: Path) -> None:
    """A churn model whose tree claims more leaves than it holds, every hash rewritten:
    LightGBM aborts on it; retain says which file in one line."""
    root = tmp_path / "broken"
    shutil.copytree(work / "art", root)
    model = root / "models" / "churn.lgb.txt"
    lines = model.read_text(encoding="utf-8").splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("num_leaves="))
    lines[first] = "num_leaves=999\n"
    model.write_text("".join(lines), encoding="utf-8")
    manifest_path = root / "retain_artifact.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for rel in manifest["files"]:
        manifest["files"][rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    args = score_args(work, "s")
    args[args.index("--model-uri") + 1] = str(root)
    line = error_line(retain(*args, cwd=tmp_path))
    assert "model file churn.lgb.txt is not a valid LightGBM model" in line


DEEP = 100_000


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("deep.yaml", "log:\n  columns: " + "[" * DEEP + "]" * DEEP + "\n", "nested too deeply"),
        ("deep.toml", "[log]\ncolumns = " + "[" * DEEP + "]" * DEEP + "\n", "nested too deeply"),
        ("big.toml", "[log]\ntimezone = " + "1" * 5000 + "\n", "more digits than Python"),
        (
            "twice.yaml",
            "log:\n  timezone: UTC\n  timezone: Europe/London\n",
            "duplicate key 'timezone' at line 3",
        ),
        (
            "twice-columns.yaml",
            "log:\n  columns:\n    customer_id: a\n    customer_id: b\n",
            "duplicate key 'customer_id' at line 4",
        ),
    ],
)
def test_config_file_that_cannot_be_used(
    tmp_path: Path, work: Path, name: str, text: str, expected: str
) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    args = ["train", "--data", str(work / "log.csv"), "--as-of", "2024-03-01", "--horizon", "30"]
    args += ["--config", name, "--no-register", "--tracking-uri", "sqlite:///m.db"]
    line = error_line(retain(*args, cwd=tmp_path))
    assert line.startswith(f"error: {name}: not valid ")
    assert expected in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: " + "[" * DEEP + "]" * DEEP + "\n", "nested too deeply"),
        ("rules: []\nrules: []\n", "duplicate key 'rules' at line 2"),
    ],
)
def test_policy_file_that_cannot_be_used(
    tmp_path: Path, work: Path, text: str, expected: str
) -> None:
    (tmp_path / "policy.yaml").write_text(text, encoding="utf-8")
    args = ["train", "--data", str(work / "log.csv"), "--as-of", "2024-03-01", "--horizon", "30"]
    args += ["--policy", "policy.yaml", "--no-register", "--tracking-uri", "sqlite:///m.db"]
    line = error_line(retain(*args, cwd=tmp_path))
    assert "offer policy file policy.yaml is not valid YAML" in line
    assert expected in line


def test_train_on_a_log_without_repeat_buyers(tmp_path: Path, work: Path) -> None:
    log = pd.read_csv(work / "log.csv").drop_duplicates("customer_id")
    log.to_csv(tmp_path / "once.csv", index=False)
    args = ["train", "--data", "once.csv", "--as-of", "2024-03-01", "--horizon", "30"]
    args += ["--no-register", "--tracking-uri", "sqlite:///m.db"]
    line = error_line(retain(*args, cwd=tmp_path))
    assert "bought on two different days" in line
    assert "needs repeat buyers" in line


def crafted_campaign(root: Path, n: int = 4000) -> tuple[Path, Path]:
    """A campaign whose effect is reversed between the customers uplift-train fits on and
    the ones it holds out (drawn by the same seeded function): the fitted model ranks the
    held-out customers worst-first, so its Qini there is far below random."""
    ids = np.array([f"c{i:05d}" for i in range(n)])
    test = held_out_customers(ids, 0.3, 0)
    frequent = np.arange(n) % 2 == 0
    treated = (np.arange(n) // 2) % 2
    helps = np.where(test, ~frequent, frequent)
    bought = np.where(helps, treated == 1, treated == 0)
    rows = []
    for i, cid in enumerate(ids):
        for j in range(10 if frequent[i] else 2):
            rows.append((cid, SEND - pd.Timedelta(days=20 + 30 * j + i % 7), 20.0 + i % 5))
        if bought[i]:
            rows.append((cid, SEND + pd.Timedelta(days=5 + i % 10), 25.0))
    rows.append(("zz", SEND + pd.Timedelta(days=40), 1.0))  # the log covers the window
    log = root / "campaign_log.csv"
    pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"]).to_csv(log, index=False)
    assignments = root / "campaign.csv"
    frame = pd.DataFrame({"customer_id": ids, "send_date": "2024-05-01", "treated": treated})
    frame.to_csv(assignments, index=False)
    return log, assignments


def test_uplift_train_refuses_a_model_worse_than_random(tmp_path: Path, work: Path) -> None:
    log, assignments = crafted_campaign(tmp_path)
    args = ["uplift-train", "--model-uri", str(work / "art"), "--assignments", str(assignments)]
    args += ["--data", str(log)]
    line = error_line(retain(*args, "--out", "up", cwd=tmp_path))
    assert "the uplift model targets worse than random on the 1," in line
    assert "no artifact written" in line and "--allow-below-random" in line
    qini = float(line.split("(Qini ")[1].split(" ")[0])
    assert qini < 0
    assert not (tmp_path / "up").exists()

    done = retain(*args, "--out", "up", "--allow-below-random", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "targets worse than random" in done.stderr and "written anyway" in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["evaluation"]["targeting"]["uplift"]["qini"] == pytest.approx(qini, abs=1e-4)
    assert (tmp_path / "up" / "retain_artifact.json").is_file()


def test_map_one_source_for_two_columns(tmp_path: Path, work: Path) -> None:
    done = retain(
        "kpis", "--data", str(work / "log.csv"), "--map", "customer_id=amount", cwd=tmp_path
    )
    line = error_line(done)
    assert "source column 'amount' would be read as 'customer_id' and 'amount'" in line


def campaign_table(path: Path, ids: list[str], send: str, **extra: object) -> None:
    frame = pd.DataFrame(
        {"customer_id": ids, "offer": "reactivation", "offer_rule": "r", "offer_send_date": send}
    )
    frame.assign(**extra).to_csv(path, index=False)


def test_synth_campaign_reads_holdout_and_refuses_windows_past_2200(tmp_path: Path) -> None:
    base = ["synth", "-n", "300", "--seed", "1", "--window", "30", "--out", "log.csv"]
    ids = generate_purchase_log(300, seed=1, start="2022-01-01", end="2024-12-31").log
    ids = sorted(ids["customer_id"].unique())
    held = [i % 2 == 0 for i in range(len(ids))]
    campaign_table(tmp_path / "held.csv", ids, "2025-01-05", holdout=held)
    done = retain(*base, "--campaign-scores", "held.csv", "--truth", "truth.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    truth = pd.read_csv(tmp_path / "truth.csv").set_index("customer_id")
    assert truth.loc[ids, "treated"].astype(bool).tolist() == [not h for h in held]

    campaign_table(tmp_path / "maybe.csv", ids, "2025-01-05", holdout="maybe")
    line = error_line(retain(*base[:-1], "bad.csv", "--campaign-scores", "maybe.csv", cwd=tmp_path))
    assert "holdout must be true/false" in line and "300 row(s) are not" in line
    assert "'maybe'" in line

    late = ["synth", "-n", "30", "--seed", "1", "--start", "2199-01-01", "--end", "2199-11-30"]
    ids = generate_purchase_log(30, seed=1, start="2199-01-01", end="2199-11-30").log
    campaign_table(
        tmp_path / "late.csv", sorted(ids["customer_id"].unique()), "2199-12-15", holdout=False
    )
    args = [*late, "--campaign-scores", "late.csv", "--window", "90", "--out", "late_log.csv"]
    line = error_line(retain(*args, cwd=tmp_path))
    assert "30 assignment row(s) have a send_date whose 90-day window ends past 2200-01-01" in line
    assert not (tmp_path / "late_log.csv").exists() and not (tmp_path / "bad.csv").exists()
