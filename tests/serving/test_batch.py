"""``retain score``: chunked batch scoring equals the one scorer, atomically and repeatably."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner, Result

from features.builders import FeatureConfig, build_features
from features.log.purchase_log import canonicalize
from features.retention.segments import SegmentConfig
from features.synthetic.synth import generate_purchase_log
from serving.batch.chunks import (
    BatchError,
    Chunk,
    chunk_dependent_rules,
    chunk_frame,
    customer_chunks,
)
from serving.batch.commands import score_command
from serving.batch.publish import PAUSE_ENV, SCORE_SCHEMA, SUCCESS_NAME, SUMMARY_NAME, read_scores
from serving.offers.policy import OfferPolicy
from serving.scorer import SCORE_COLUMNS, ScoringModel, score
from tests.retain_cli import wait_for_pause
from training.artifact import save_artifact
from training.models.bundle import RetainModels

AS_OF = "2024-06-01"
FIT_AS_OF = "2024-05-01"
HORIZON = 30
SMALL_MODELS = {
    "horizon_days": HORIZON,
    "n_snapshots": 2,
    "num_boost_round": 8,
    "early_stopping_rounds": 4,
    "num_threads": 1,
    "use_baselines": False,
}


def chunk_free_policy() -> OfferPolicy:
    """The default policy with value quantiles replaced by an absolute spend floor."""
    data = OfferPolicy.default().model_dump(mode="json", exclude_none=True)
    for rule in data["rules"]:
        if rule["match"].pop("min_value_quantile", None) is not None:
            rule["match"]["min_expected_spend_365d"] = 100.0
    policy = OfferPolicy.model_validate(data)
    assert chunk_dependent_rules(policy) == []
    return policy


def small_raw_log(n_customers: int = 300, seed: int = 11) -> pd.DataFrame:
    return generate_purchase_log(n_customers, seed=seed, start="2023-01-01", end="2024-06-30").log


def make_artifact(directory: Path, log: pd.DataFrame, **params: Any) -> Path:
    models = RetainModels(**{**SMALL_MODELS, **params}).fit(log, FIT_AS_OF)
    return save_artifact(
        directory,
        models,
        feature_config=FeatureConfig(horizon_days=HORIZON),
        segment_config=SegmentConfig(),
        policy_yaml=chunk_free_policy().to_yaml(),
    )


def sha256s(directory: Path, pattern: str = "part-*.parquet") -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob(pattern))
    }


@pytest.fixture(scope="module")
def raw_log() -> pd.DataFrame:
    return small_raw_log()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, log: pd.DataFrame) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact") / "retain", log)


@pytest.fixture(scope="module")
def expected(artifact: Path, log: pd.DataFrame) -> pd.DataFrame:
    return score(ScoringModel.load(artifact), log, AS_OF)


def run(data: Path, out: Path, artifact: Path, **kwargs: object) -> object:
    return score_command(data, AS_OF, out, model_uri=str(artifact), progress=False, **kwargs)


# ---- chunks -----------------------------------------------------------------------------


def _tiny_log(ids: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "timestamp": pd.date_range("2024-01-01", periods=len(ids), freq="h", tz="UTC"),
            "amount": np.arange(1.0, len(ids) + 1.0),
        }
    )
    return canonicalize(frame).log


def test_chunks_are_contiguous_customer_blocks() -> None:
    log = _tiny_log(["a", "a", "b", "c", "c", "c", "d", "e"])
    chunks = customer_chunks(log, 2)
    # customers a,b | c,d | e -> rows [0,3) [3,7) [7,8)
    assert chunks == [Chunk(0, 0, 2, 0, 3), Chunk(1, 2, 4, 3, 7), Chunk(2, 4, 5, 7, 8)]
    middle = chunk_frame(log, chunks[1])
    assert list(middle["customer_id"].cat.categories) == ["c", "d"]
    assert middle["customer_id"].astype(str).tolist() == ["c", "c", "c", "d"]
    assert middle["amount"].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert isinstance(middle.index, pd.RangeIndex)


def test_chunking_rejects_unsorted_log_and_bad_size() -> None:
    log = _tiny_log(["a", "b", "c"])
    with pytest.raises(BatchError, match="at least 1 customer"):
        customer_chunks(log, 0)
    shuffled = log.iloc[::-1].reset_index(drop=True)
    with pytest.raises(BatchError, match="not sorted by customer_id"):
        customer_chunks(shuffled, 2)


def test_quantile_rules_are_flagged_as_chunk_dependent() -> None:
    data = chunk_free_policy().model_dump(mode="json", exclude_none=True)
    data["rules"][0]["match"]["min_value_quantile"] = 0.5
    policy = OfferPolicy.model_validate(data)
    assert chunk_dependent_rules(policy) == [data["rules"][0]["name"]]


# ---- scoring ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_customers", [37, 100_000])
@pytest.mark.slow
def test_batch_equals_whole_log_scores(
    tmp_path: Path, data_path: Path, artifact: Path, expected: pd.DataFrame, chunk_customers: int
) -> None:
    summary = run(data_path, tmp_path / "out", artifact, chunk_customers=chunk_customers)
    got = read_scores(tmp_path / "out")
    assert list(got.columns) == list(SCORE_COLUMNS)
    pd.testing.assert_frame_equal(got, expected, check_dtype=True)
    n_customers = expected["customer_id"].nunique()
    assert summary.customers_scored == n_customers == len(got)
    assert summary.chunks == len(list((tmp_path / "out").glob("part-*.parquet")))
    assert set(got["offer"]) - {"none"}  # some offers are made
    assert got["holdout"].dtype == bool


@pytest.mark.slow
def test_parts_share_one_schema_and_summary_is_written(
    tmp_path: Path, data_path: Path, artifact: Path, raw_log: pd.DataFrame
) -> None:
    import pyarrow.parquet as pq

    run(data_path, tmp_path / "out", artifact, chunk_customers=50)
    for part in (tmp_path / "out").glob("part-*.parquet"):
        assert pq.read_schema(part).equals(SCORE_SCHEMA, check_metadata=False)
    summary = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
    assert summary["rows_in"] == len(raw_log)
    assert summary["chunks"] == -(-raw_log["customer_id"].nunique() // 50)
    assert (tmp_path / "out" / SUCCESS_NAME).is_file()
    assert not list(tmp_path.glob(".out.retain/staging-*"))


@pytest.mark.slow
def test_rerun_is_byte_identical(tmp_path: Path, data_path: Path, artifact: Path) -> None:
    """Reruns, and runs on one or three threads, write the same bytes."""
    run(data_path, tmp_path / "a", artifact, chunk_customers=60, features_out=tmp_path / "fa")
    first = sha256s(tmp_path / "a")
    run(
        data_path,
        tmp_path / "b",
        artifact,
        chunk_customers=60,
        features_out=tmp_path / "fb",
        threads=1,
    )
    run(
        data_path,
        tmp_path / "a",
        artifact,
        chunk_customers=60,
        features_out=tmp_path / "fa",
        threads=3,
    )
    assert len(first) == 5
    assert sha256s(tmp_path / "b") == first == sha256s(tmp_path / "a")
    assert sha256s(tmp_path / "fa") == sha256s(tmp_path / "fb")


@pytest.mark.slow
def test_feature_snapshot_holds_the_scored_features(
    tmp_path: Path, data_path: Path, artifact: Path, log: pd.DataFrame
) -> None:
    run(data_path, tmp_path / "out", artifact, chunk_customers=70, features_out=tmp_path / "f")
    snap = pd.concat(
        [pd.read_parquet(p) for p in sorted((tmp_path / "f").glob("part-*.parquet"))],
        ignore_index=True,
    )
    want = build_features(log, AS_OF, FeatureConfig(horizon_days=HORIZON))
    assert (snap["as_of"] == pd.Timestamp(AS_OF, tz="UTC")).all()
    got = snap.drop(columns="as_of").set_index("customer_id")
    pd.testing.assert_frame_equal(got, want, check_index_type=False, check_names=False)
    assert (tmp_path / "f" / SUCCESS_NAME).is_file()
    from serving.http.snapshot import FeatureSnapshot  # what /score/ids reads, through the link

    loaded = FeatureSnapshot.load(tmp_path / "f")
    assert sorted(loaded.as_of.index) == sorted(want.index)


class Interrupt(RuntimeError):
    pass


@pytest.mark.slow
def test_interrupted_run_shows_nothing_and_resume_equals_clean_run(
    tmp_path: Path, data_path: Path, artifact: Path
) -> None:
    clean = tmp_path / "clean"
    run(data_path, clean, artifact, chunk_customers=60)

    out = tmp_path / "out"
    seen: list[int] = []

    def crash_after_second(chunk: Chunk) -> None:
        seen.append(chunk.index)
        if chunk.index == 1:
            raise Interrupt("killed")

    with pytest.raises(Interrupt):
        run(data_path, out, artifact, chunk_customers=60, on_chunk=crash_after_second)
    assert not out.exists()  # nothing published
    assert len(list(tmp_path.glob(".out.retain/staging-*/part-*.parquet"))) == 2

    resumed: list[int] = []
    summary = run(
        data_path,
        out,
        artifact,
        chunk_customers=60,
        resume=True,
        on_chunk=lambda c: resumed.append(c.index),
    )
    assert seen == [0, 1]
    assert resumed == [2, 3, 4]
    assert summary.chunks_resumed == 2
    assert sha256s(out) == sha256s(clean)
    assert not list(tmp_path.glob(".out.retain/staging-*"))


@pytest.mark.slow
def test_failed_rerun_keeps_the_previous_output(
    tmp_path: Path, data_path: Path, artifact: Path
) -> None:
    out = tmp_path / "out"
    run(data_path, out, artifact, chunk_customers=60)
    before = sha256s(out)

    def crash(chunk: Chunk) -> None:
        raise Interrupt("killed")

    with pytest.raises(Interrupt):
        run(data_path, out, artifact, chunk_customers=100, on_chunk=crash)
    assert sha256s(out) == before
    assert (out / SUCCESS_NAME).is_file()


@pytest.mark.slow
def test_resume_of_a_changed_job_starts_over(
    tmp_path: Path, data_path: Path, artifact: Path
) -> None:
    out = tmp_path / "out"

    def crash(chunk: Chunk) -> None:
        raise Interrupt("killed")

    with pytest.raises(Interrupt):
        run(data_path, out, artifact, chunk_customers=60, on_chunk=crash)
    # other chunking = other run id: nothing to resume, every chunk is scored
    summary = run(data_path, out, artifact, chunk_customers=100, resume=True)
    assert summary.chunks_resumed == 0
    assert summary.chunks == 3


# ---- CLI --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    """The root ``retain`` app: its error layer turns user errors into one line, exit 2."""
    from serving.cli import app

    return app


def _score_cli(cli: typer.Typer, data: Path, out: Path, *extra: str) -> Result:
    """``retain score --data DATA --as-of AS_OF --out OUT EXTRA...`` through the real CLI."""
    args = ["score", "--data", str(data), "--as-of", AS_OF, "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


@pytest.mark.slow
def test_cli_scores_and_reports_dropped_rows(
    tmp_path: Path, cli: typer.Typer, raw_log: pd.DataFrame, artifact: Path
) -> None:
    dirty = pd.concat([raw_log, raw_log.iloc[[5]]], ignore_index=True)
    dirty.loc[[0, 1], "customer_id"] = ""
    path = tmp_path / "dirty.parquet"
    dirty.to_parquet(path)
    out = tmp_path / "out"
    result = _score_cli(cli, path, out, "--model-uri", str(artifact), "--chunk-customers", "100")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["rows_in"] == len(raw_log) + 1
    assert summary["dropped"] == {"missing_customer_id": 2, "exact_duplicate": 1}
    assert summary["rows_kept"] == len(raw_log) - 2
    kept = dirty.drop_duplicates().loc[lambda d: d["customer_id"] != ""]
    after = int(
        (pd.to_datetime(kept["timestamp"], utc=True) >= pd.Timestamp(AS_OF, tz="UTC")).sum()
    )
    assert summary["not_used"] == {"at or after as_of": after} and after > 0
    assert f"  kept, not used (at or after as_of): {after:,}" in result.stderr
    assert summary["customers_scored"] == len(read_scores(out))


@pytest.mark.slow
def test_cli_reads_a_log_config_file(
    tmp_path: Path, cli: typer.Typer, raw_log: pd.DataFrame, artifact: Path
) -> None:
    """Source column names from --config (TOML here); --map overrides it; the model's
    counting rules apply and a --config that contradicts one is refused by name."""
    renamed = pd.concat([raw_log, raw_log.iloc[[5]]], ignore_index=True).rename(
        columns={"customer_id": "CustomerID", "amount": "Revenue"}
    )
    path = tmp_path / "renamed.parquet"
    renamed.to_parquet(path)
    config = tmp_path / "log.toml"
    config.write_text('[log]\ncolumns = {customer_id = "CustomerID", amount = "WrongName"}\n')
    out = tmp_path / "out"
    extra = ["--model-uri", str(artifact), "--config", str(config), "--map", "amount=Revenue"]
    result = _score_cli(cli, path, out, *extra)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["rows_in"] == len(raw_log) + 1
    # the artifact was trained with the default rules: the repeated row is dropped
    assert summary["dropped"] == {"exact_duplicate": 1}
    assert summary["customers_scored"] == len(read_scores(out))
    config.write_text('[log]\nduplicates = "keep"\ncolumns = {customer_id = "CustomerID"}\n')
    clash = _score_cli(cli, path, tmp_path / "out-clash", *extra)
    assert clash.exit_code == 2
    assert "duplicates: the model was trained with 'drop', --config says 'keep'" in clash.output
    assert not (tmp_path / "out-clash").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("log:\n  colums: {}\n")
    refused = _score_cli(cli, path, tmp_path / "out2", "--model-uri", str(artifact), "-c", str(bad))
    assert refused.exit_code == 2
    assert "colums" in refused.output


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: d / "missing.parquet", "not found"),
        (lambda d: d / "log.txt", "unsupported purchase-log file"),
        (lambda d: d / "no_amount.csv", "amount"),
        (lambda d: d / "huge.csv", "data rows 2 (1e+308)"),  # once aborted the whole batch
    ],
)
@pytest.mark.slow
def test_cli_bad_input_exits_nonzero_with_message(
    tmp_path: Path, cli: typer.Typer, artifact: Path, make_input: object, message: str
) -> None:
    (tmp_path / "log.txt").write_text("x")
    (tmp_path / "no_amount.csv").write_text("customer_id,timestamp\na,2024-01-01\n")
    (tmp_path / "huge.csv").write_text(
        "customer_id,timestamp,amount\na,2024-01-01,1\nb,2024-01-02,1e308\n"
    )
    path = make_input(tmp_path)  # type: ignore[operator]
    out = tmp_path / "out"
    result = _score_cli(cli, path, out, "--model-uri", str(artifact))
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output
    assert not out.exists() or not list(out.glob("part-*"))


def test_cli_bad_model_exits_nonzero(tmp_path: Path, cli: typer.Typer, data_path: Path) -> None:
    result = _score_cli(cli, data_path, tmp_path / "o", "--model-uri", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "neither models:/" in result.output


def test_cli_rejects_a_zero_chunk_size(tmp_path: Path, cli: typer.Typer, data_path: Path) -> None:
    result = _score_cli(cli, data_path, tmp_path / "o", "--chunk-customers", "0")
    assert result.exit_code == 2
    assert "--chunk-customers must be at least 1, got 0" in result.output


# ---- publishing: real processes killed mid-publish, concurrent runs, foreign files -------

REPO = Path(__file__).resolve().parents[2]
LATER = "2024-06-15"


def _score_process(
    data: Path, out: Path, artifact: Path, as_of: str, *extra: str, pause: str = ""
) -> subprocess.Popen[str]:
    """``retain score`` as its own process; with ``pause`` it stops there (PAUSE_ENV)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), PAUSE_ENV: pause}
    args = ["score", "--data", str(data), "--as-of", as_of, "--out", str(out)]
    args += ["--model-uri", str(artifact), "--chunk-customers", "60", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "serving.cli", *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _plain_read(directory: Path) -> pd.DataFrame:
    """What a plain Parquet reader sees in the directory (no retain code involved)."""
    frame = pd.read_parquet(directory)
    return frame.sort_values("customer_id", ignore_index=True)


@pytest.mark.parametrize("step", ["scores:writing", "scores:link-made"])
@pytest.mark.slow
def test_sigkill_during_publish_leaves_the_old_output_whole(
    tmp_path: Path, data_path: Path, artifact: Path, step: str
) -> None:
    """A run killed (SIGKILL) in the middle of publishing changes nothing a reader sees.

    The old output is as of AS_OF, the killed run's as of LATER, so a mix would show."""
    out, feats = tmp_path / "out", tmp_path / "feats"
    first = _score_process(data_path, out, artifact, AS_OF, "--features-out", str(feats))
    assert first.wait(timeout=300) == 0, first.stderr.read() if first.stderr else ""
    before, before_bytes = _plain_read(out), sha256s(out)
    features_before = sha256s(feats)
    assert set(before["as_of"]) == {pd.Timestamp(AS_OF, tz="UTC")}

    killed = _score_process(
        data_path, out, artifact, LATER, "--features-out", str(feats), pause=step
    )
    wait_for_pause(killed)
    killed.kill()  # SIGKILL: no cleanup of any kind runs
    assert killed.wait(timeout=60) == -signal.SIGKILL

    pd.testing.assert_frame_equal(_plain_read(out), before)
    assert sha256s(out) == before_bytes
    assert (out / SUCCESS_NAME).is_file()
    assert json.loads((out / SUMMARY_NAME).read_text())["as_of"].startswith(AS_OF)
    # the snapshot is published first: old or new (whole), never a mix
    assert len(set(_plain_read(feats)["as_of"])) == 1
    if step == "scores:writing":
        assert sha256s(feats) != features_before  # ... and here already the new one

    # the lock died with the process: a rerun goes through and equals a clean run
    rerun = _score_process(data_path, out, artifact, LATER, "--features-out", str(feats))
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read() if rerun.stderr else ""
    clean = _score_process(data_path, tmp_path / "clean", artifact, LATER)
    assert clean.wait(timeout=300) == 0
    assert sha256s(out) == sha256s(tmp_path / "clean")
    assert set(_plain_read(out)["as_of"]) == {pd.Timestamp(LATER, tz="UTC")}
    # kept: the new version and the one it replaced; the killed run's unlinked one is gone
    versions = sorted(p.name for p in (tmp_path / ".out.retain" / "versions").iterdir())
    assert versions == ["000001", "000003"]


@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused_while_the_first_completes(
    tmp_path: Path, data_path: Path, artifact: Path, cli: typer.Typer
) -> None:
    out = tmp_path / "out"
    first = _score_process(data_path, out, artifact, AS_OF, pause="scores:writing")
    wait_for_pause(first)
    second = _score_process(data_path, out, artifact, LATER)
    assert second.wait(timeout=300) == 2
    message = second.stderr.read() if second.stderr else ""
    assert f"is being written by another run (pid {first.pid}" in message
    assert message.count("\n") == 1 and "Traceback" not in message
    assert first.stdin is not None
    first.stdin.write("\n")  # let the first run go on
    first.stdin.close()
    assert first.wait(timeout=300) == 0
    got = read_scores(out)
    assert set(got["as_of"]) == {pd.Timestamp(AS_OF, tz="UTC")}


@pytest.mark.slow
def test_files_retain_did_not_write_are_never_removed(
    tmp_path: Path, data_path: Path, artifact: Path, cli: typer.Typer
) -> None:
    # a plain directory with someone's parts: refused, left exactly as it was
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "part-00000.parquet").write_bytes(b"not retain's")
    refused = _score_cli(cli, data_path, theirs, "--model-uri", str(artifact))
    assert refused.exit_code == 2
    assert "holding files retain did not publish (part-00000.parquet)" in refused.output
    assert [p.name for p in theirs.iterdir()] == ["part-00000.parquet"]
    assert (theirs / "part-00000.parquet").read_bytes() == b"not retain's"

    # a file dropped into a published output survives every later run
    out = tmp_path / "out"
    args = ("--model-uri", str(artifact), "--chunk-customers", "100")
    assert _score_cli(cli, data_path, out, *args).exit_code == 0
    (out / "notes.txt").write_text("mine")
    first_version = (out / "notes.txt").resolve().parent
    for _ in range(3):  # the version holding it falls out of the kept ones after two runs
        result = _score_cli(cli, data_path, out, *args)
        assert result.exit_code == 0, result.output
    assert (first_version / "notes.txt").read_text() == "mine"
    assert "retain did not write" in result.output
    # retain's files of that version are gone; its manifest now records none
    assert sorted(p.name for p in first_version.iterdir()) == ["_manifest.json", "notes.txt"]
    assert json.loads((first_version / "_manifest.json").read_text()) == {"files": {}}
    # retain's own old versions are gone but the current and the previous one
    versions = sorted(p.name for p in (tmp_path / ".out.retain" / "versions").iterdir())
    assert versions == ["000001", "000003", "000004"]


@pytest.mark.slow
def test_features_out_inside_out_is_refused(
    tmp_path: Path, data_path: Path, artifact: Path, cli: typer.Typer
) -> None:
    out = tmp_path / "out"
    extra = ("--model-uri", str(artifact), "--features-out", str(out / "features"))
    result = _score_cli(cli, data_path, out, *extra)
    assert result.exit_code == 2
    assert "must not be the same directory or one inside the other" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_a_plain_output_of_an_earlier_retain_is_adopted_then_pruned(
    tmp_path: Path, data_path: Path, artifact: Path, cli: typer.Typer
) -> None:
    """Before versioning, --out was a plain directory of parts + _summary.json + _SUCCESS."""
    args = ("--model-uri", str(artifact), "--chunk-customers", "100")
    assert _score_cli(cli, data_path, tmp_path / "new", *args).exit_code == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in (tmp_path / "new").iterdir():
        if path.name != "_manifest.json":  # the earlier layout had none
            (plain / path.name).write_bytes(path.read_bytes())
    before = sha256s(plain)
    tampered = tmp_path / "tampered"
    shutil.copytree(plain, tampered)
    (tampered / "part-00001.parquet").write_bytes(b"someone else's")
    refused = _score_cli(cli, data_path, tampered, *args)
    assert refused.exit_code == 2
    assert sha256s(tampered)["part-00001.parquet"] == hashlib.sha256(b"someone else's").hexdigest()

    assert _score_cli(cli, data_path, plain, *args).exit_code == 0
    assert plain.is_symlink() and sha256s(plain) == before  # same inputs, same bytes
    versions = tmp_path / ".plain.retain" / "versions"
    assert sorted(p.name for p in versions.iterdir()) == ["000001", "000002"]
    assert sha256s(versions / "000001") == before  # the adopted directory, whole
    for _ in range(2):
        assert _score_cli(cli, data_path, plain, *args).exit_code == 0
    assert sorted(p.name for p in versions.iterdir()) == ["000003", "000004"]
