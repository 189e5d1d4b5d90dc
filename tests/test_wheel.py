"""retain installed from its wheel trains and builds a bento, outside the checkout.

The wheel is built from this checkout (``pip wheel``: the version from git through
setuptools-scm), installed with ``--no-deps`` into a fresh virtualenv, and run by its own
``retain`` script from a directory outside the checkout with no ``PYTHONPATH``. Its
dependencies come from the checkout's environment through a ``.pth`` line placed after the
venv's own site-packages: nothing is downloaded, and ``retain`` itself can only come from
the wheel (an editable install's ``.pth`` hook is not run for a directory a ``.pth`` adds).

Before the pins and the bento recipe were package data this failed: ``retain train`` and
``retain bento`` read ``constraints.txt`` and ``bentofile.yaml`` from the repository root,
which an installed retain does not have.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from features.synthetic.synth import generate_purchase_log
from tests.serving.conftest import isolated_env

pytestmark = [pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
NOT_COPIED = (
    ".venv", "build", "dist", "*.egg-info", "_version.py", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".hypothesis", "mlruns", "mlartifacts", "demo_out", "notebook_out",
    "bentoml_home",
)  # fmt: skip


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=900,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str | None]:
    """(the venv's bin directory, the wheel's version, the checkout's HEAD when it was built)
    for retain installed from its wheel."""
    env = isolated_env()  # PYTHONPATH would show pip the checkout's retain.egg-info
    head = run("git", "-C", REPO_ROOT, "rev-parse", "HEAD")
    root = tmp_path_factory.mktemp("wheel")
    # pip builds a local directory in place (build/, *.egg-info, training/_version.py): a copy
    # (git metadata included, for the version) keeps the checkout as it was, and a stale
    # build/ of the checkout out of the wheel
    src = root / "src"
    shutil.copytree(REPO_ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*NOT_COPIED))
    dist = root / "dist"
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    if run("git", "-C", REPO_ROOT, "rev-parse", "HEAD").stdout != head.stdout:
        head.returncode = -1  # a commit landed while the wheel was built: no single HEAD
    (wheel,) = dist.glob("retain-*.whl")
    version = wheel.name.split("-")[1]
    venv = root / "env"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv, env=env).returncode == 0
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python]
    done = run(*pip, "install", "-q", "--no-deps", "--no-index", "--no-compile", wheel, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", env=env)
    deps = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (Path(site.stdout.strip()) / "zz_test_dependencies.pth").write_text("\n".join(deps) + "\n")
    return venv / "bin", version, head.stdout.strip() if head.returncode == 0 else None


def test_installed_wheel_trains_and_builds_a_bento_outside_the_checkout(
    installed: tuple[Path, str, str | None], tmp_path: Path
) -> None:
    bin_dir, version, head = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = isolated_env(tmp_path / "bentoml")  # no PYTHONPATH: the checkout is out of reach
    where = run(
        bin_dir / "python",
        "-c",
        "import features, training, serving; print(training.__file__, serving.__file__)",
        cwd=work,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    assert str(bin_dir.parent) in where.stdout and str(REPO_ROOT) not in where.stdout

    generate_purchase_log(300, seed=4, start="2023-01-01", end="2024-06-30").log.to_parquet(
        work / "log.parquet"
    )
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = run(
        bin_dir / "retain", "train", "--data", "log.parquet", "--as-of", "2024-03-01",
        "--horizon", "60", "--tracking-uri", tracking, "--artifact-out", "artifact",
        "--threads", "1", cwd=work, env=env,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-4000:]
    assert "registered 'retain' version 1 as challenger" in trained.stdout

    manifest = json.loads((work / "artifact" / "retain_artifact.json").read_text())
    assert manifest["retain_version"] == version
    commit = manifest["retain_commit"]  # the short hash the wheel was built at
    if (REPO_ROOT / ".git").exists():
        known = run("git", "-C", REPO_ROOT, "rev-parse", "--verify", f"{commit}^{{commit}}")
        assert len(commit) >= 7 and known.returncode == 0, commit  # a commit of this repo
        assert head is None or head.startswith(commit)
    else:  # a source tree without git: the fallback version, no commit
        assert commit == "unknown"

    bento = run(
        bin_dir / "retain", "bento", "--model-uri", "models:/retain@challenger",
        "--tracking-uri", tracking, cwd=work, env=env,
    )  # fmt: skip
    assert bento.returncode == 0, bento.stderr[-4000:]
    tag = bento.stdout.strip().splitlines()[-1]
    assert tag.startswith("retain:")
    name, tag_version = tag.split(":")
    src = tmp_path / "bentoml" / "bentos" / name / tag_version / "src"
    assert (src / "features" / "log" / "log_arrays.py").is_file()
    assert (src / "training" / "constraints.txt").is_file()
    requirements = (src.parent / "env" / "python" / "requirements.txt").read_text()
    assert "lightgbm==" in requirements and "pandas==" in requirements
