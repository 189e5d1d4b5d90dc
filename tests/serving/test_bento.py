"""``retain bento``: one bento that carries its model and runs outside the checkout.

The bento is built from the registry by the command users run, then served by
``bentoml serve`` from a virtualenv that holds only the bento's own requirements (no retain,
``python -I``, working directory outside the checkout, no tracking server). Its ``/score``
must equal in-process scoring. Before whole-package sources, this failed: the bento missed
``features/log/log_arrays.py`` and only the checkout's editable install hid it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from features.log.purchase_log import canonicalize
from serving.http.bento import BENTO_MODEL_NAME, bento_model_version
from serving.model_source import DIGEST_KEY, MLFLOW_NAME_KEY, MLFLOW_VERSION_KEY, ModelSource
from serving.scorer import NUMBER_COLUMNS, ScoringModel, score
from tests.retain_cli import retain
from tests.serving.conftest import RegisteredModel, free_port, isolated_env
from tests.serving.history_checks import (
    assert_fresh_after_purchase,
    assert_matches,
    expected_record,
    score_ids,
    write_orders,
)
from training.artifact import manifest_sha256

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
AS_OF = "2024-06-01T00:00:00Z"
STARTUP_SECONDS = 240.0


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, registered_model: RegisteredModel
) -> tuple[Path, str]:
    """(BENTOML_HOME, bento tag) after ``retain bento --model-uri models:/retain@challenger``."""
    home = tmp_path_factory.mktemp("bentoml-home")
    workdir = tmp_path_factory.mktemp("build-cwd")
    env = {"BENTOML_HOME": str(home)}
    uri = "models:/retain@challenger"
    result = retain(
        "bento", "--model-uri", uri, "--tracking-uri", registered_model.tracking_uri,
        env=env, cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    tag = result.stdout.strip().splitlines()[-1]
    assert tag.startswith("retain:"), result.stdout
    return home, tag


def bento_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "bentos" / name / version


def test_bento_sources_are_whole_packages_and_nothing_else(built: tuple[Path, str]) -> None:
    home, tag = built
    src = bento_dir(home, tag) / "src"
    for package in ("features", "training", "serving"):
        shipped = {p.name for p in (src / package).glob("*.py")}
        in_checkout = {p.name for p in (REPO_ROOT / package).glob("*.py")}
        assert shipped == in_checkout, package
    assert (src / "features" / "log" / "log_arrays.py").is_file()
    assert (src / "serving" / "offer_policy.yaml").is_file()
    assert not (src / "tests").exists() and not (src / "notebooks").exists()
    assert not list(src.rglob("*.db")) and not list(src.rglob("__pycache__"))


def test_bento_carries_the_model_with_its_mlflow_version_and_digest(
    built: tuple[Path, str], registered_model: RegisteredModel
) -> None:
    home, tag = built
    info = yaml.safe_load((bento_dir(home, tag) / "bento.yaml").read_text())
    digest = manifest_sha256(registered_model.artifact)
    source = ModelSource("retain", registered_model.version, "")
    model_tag = f"{BENTO_MODEL_NAME}:{bento_model_version(source, digest)}"
    assert [(m["tag"], m["alias"]) for m in info["models"]] == [(model_tag, "retain")]
    assert info["labels"][DIGEST_KEY] == digest
    model_dir = home / "models" / BENTO_MODEL_NAME / model_tag.split(":")[1]
    meta = yaml.safe_load((model_dir / "model.yaml").read_text())["metadata"]
    assert meta == {
        MLFLOW_NAME_KEY: "retain",
        MLFLOW_VERSION_KEY: registered_model.version,
        DIGEST_KEY: digest,
    }
    assert manifest_sha256(model_dir / "retain") == digest


@contextlib.contextmanager
def serving_bento(
    home: Path, tag: str, python: Path, cwd: Path, settings: Mapping[str, str] | None = None
) -> Iterator[str]:
    """``bentoml serve <tag>`` with ``python`` from ``cwd``, outside the checkout; its URL
    once ``/readyz`` answers 200. ``settings`` are the service's environment variables, as
    a deployment sets them (the environment has no tracking URI and no PYTHONPATH)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = cwd / "serve.log"
    command = [str(python), "-I", "-m", "bentoml", "serve", tag, "--host", "127.0.0.1"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=cwd,
            env={**isolated_env(home), **(settings or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bento did not get ready:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def bento_python(built: tuple[Path, str], isolated_venv: Callable[[Path], Path]) -> Path:
    """The python of the virtualenv holding only the bento's own requirements."""
    home, tag = built
    return isolated_venv(bento_dir(home, tag) / "env" / "python" / "requirements.txt")


@pytest.fixture(scope="module")
def bento_service(
    built: tuple[Path, str],
    isolated_venv: Callable[[Path], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """``bentoml serve <tag>`` from the bento's own requirements, outside the checkout."""
    home, tag = built
    python = bento_python(built, isolated_venv)
    with serving_bento(home, tag, python, tmp_path_factory.mktemp("serve-cwd")) as url:
        yield url


def history_of(raw: pd.DataFrame, customer_id: str) -> list[dict[str, Any]]:
    rows = raw[raw["customer_id"] == customer_id].drop(columns=["customer_id"])
    return [
        {
            k: (v.isoformat() if isinstance(v, pd.Timestamp) else v.item() if hasattr(v, "item") else v)
            for k, v in record.items()
            if not (v is None or (not isinstance(v, str) and pd.isna(v)))
        }
        for record in rows.to_dict(orient="records")
    ]  # fmt: skip


def test_bento_serves_its_own_model_outside_the_checkout(
    bento_service: str, registered_model: RegisteredModel
) -> None:
    ready = httpx.get(f"{bento_service}/readyz", timeout=10).json()
    assert ready["model"]["name"] == "retain"
    assert ready["model"]["version"] == registered_model.version
    assert ready["model"]["uri"].startswith(f"bentoml:{BENTO_MODEL_NAME}:")

    raw = registered_model.raw_log
    ids = sorted(raw["customer_id"].unique())[:25]
    body = {"customers": [{"customer_id": c, "as_of": AS_OF, "history": history_of(raw, c)} for c in ids]}  # fmt: skip
    response = httpx.post(f"{bento_service}/score", json=body, timeout=120)
    assert response.status_code == 200, response.text
    results = {r["customer_id"]: r for r in response.json()["results"]}

    log = canonicalize(raw[raw["customer_id"].isin(ids)].reset_index(drop=True)).log
    expected = score(ScoringModel.load(registered_model.artifact), log, AS_OF)
    assert len(expected) > 10
    for row in expected.to_dict(orient="records"):
        got = results[row["customer_id"]]
        assert got["status"] == "scored"
        compared = [name for name in NUMBER_COLUMNS if name in got]
        assert len(compared) >= 5, sorted(got)
        for name in compared:
            if pd.isna(row[name]):  # e.g. uplift without an uplift model: JSON null
                assert got[name] is None, name
                continue
            assert got[name] == pytest.approx(row[name], rel=1e-9, abs=1e-12), name
        assert got["segment"] == row["segment"]
        assert got["risk_band"] == row["risk_band"]
        assert got["offer"]["code"] == row["offer"]


def test_the_bento_scores_ids_from_histories_in_postgresql_fresh_after_a_purchase(
    built: tuple[Path, str],
    isolated_venv: Callable[[Path], Path],
    registered_model: RegisteredModel,
    postgres_db: str,
    tmp_path: Path,
) -> None:
    """A deployment on a machine without the checkout: the bento, only its requirements,
    ``RETAIN_HISTORY_URL`` in the environment (trust auth, so no password anywhere). A
    purchase inserted while it runs changes the next ``/score/ids`` to in-process scoring
    of the full history."""
    home, tag = built
    raw = registered_model.raw_log
    write_orders(postgres_db, "orders", raw, index=True)
    settings = {"RETAIN_HISTORY_URL": postgres_db, "RETAIN_HISTORY_TABLE": "orders"}
    python = bento_python(built, isolated_venv)
    with serving_bento(home, tag, python, tmp_path, settings) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
        assert ready["features_source"] == "database"
        assert ready["history"] == {"url": postgres_db, "table": "orders", "checked": True}
        assert ready["model"]["version"] == registered_model.version

        model = ScoringModel.load(registered_model.artifact)
        cid = str(raw["customer_id"].iloc[0])
        before = score_ids(url, [cid])
        assert before.status_code == 200, before.text
        (first,) = before.json()["results"]
        assert_matches(first, expected_record(model, raw, cid, str(first["as_of"])))

        got = assert_fresh_after_purchase(url, postgres_db, "orders", model, raw, cid)
        numbers = ("churn_probability", "p_purchase_30d", "expected_next_purchase_date")
        assert [got[c] for c in numbers] != [first[c] for c in numbers]


def test_a_tampered_bento_model_is_refused_at_start(
    built: tuple[Path, str], isolated_venv: Callable[[Path], Path], tmp_path: Path
) -> None:
    """The digest recorded at build time is checked when the service loads the model."""
    home, tag = built
    python = bento_python(built, isolated_venv)
    copy = tmp_path / "home"
    shutil.copytree(home, copy, symlinks=True)
    info = yaml.safe_load((bento_dir(copy, tag) / "bento.yaml").read_text())
    name, version = info["models"][0]["tag"].split(":")
    manifest = copy / "models" / name / version / "retain" / "retain_artifact.json"
    data = json.loads(manifest.read_text())
    data["horizon_days"] = int(data["horizon_days"]) + 1
    manifest.write_text(json.dumps(data))
    code = (
        "import bentoml, sys\n"
        "svc = bentoml.load(sys.argv[1])\n"
        "sys.path.insert(0, sys.argv[2])  # as a serving worker keeps it\n"
        "service = svc.inner()  # a worker that cannot load stays up, not ready, with why\n"
        "print('ready:', service.ready)\n"
        "print('refused:', service.failure)\n"
    )
    result = subprocess.run(
        [str(python), "-I", "-c", code, tag, str(bento_dir(copy, tag) / "src")],
        cwd=tmp_path,
        env=isolated_env(copy),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "ready: False" in result.stdout, result.stderr[-3000:]
    assert "ModelResolutionError" in result.stdout, result.stdout
    assert "does not match the digest recorded at build time" in result.stdout


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/retain@no-such-alias", "no-such-alias"),
        ("no/such/directory", "neither models:/... nor an artifact directory"),
    ],
)
def test_a_model_that_cannot_be_resolved_is_one_line_and_exit_2(
    registered_model: RegisteredModel, tmp_path: Path, uri: str, message: str
) -> None:
    env = {"BENTOML_HOME": str(tmp_path / "home")}
    result = retain(
        "bento", "--model-uri", uri, "--tracking-uri", registered_model.tracking_uri,
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("retain bento:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "bentos").exists() or not any(
        (tmp_path / "home" / "bentos").iterdir()
    )


def test_outside_a_bento_the_service_defaults_to_the_registry_champion() -> None:
    from serving.model_source import default_model_uri

    assert default_model_uri("retain") == "models:/retain@champion"
