"""`bentoml build` from bentofile.yaml: the bento holds everything the service imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BENTOML = Path(sys.executable).with_name("bentoml")


def test_bento_builds_and_its_sources_import_on_their_own(tmp_path: Path) -> None:
    home = tmp_path / "bentoml-home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    built = subprocess.run(
        [str(BENTOML), "build"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stdout + built.stderr
    bentos = [p for p in (home / "bentos" / "retain").iterdir() if p.name != "latest"]
    assert len(bentos) == 1
    src = bentos[0] / "src"
    # the narrow include list: no tests, notebooks, benchmarks or local stores
    assert not (src / "tests").exists() and not (src / "notebooks").exists()
    assert not list(src.rglob("*.db"))
    # the bento's own sources (first on sys.path) import the service: nothing it needs is
    # missing from the include list (serving/model_source.py once was)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import serving.service, serving.scorer, serving.model_source, training.models; "
        "print(serving.service.__file__); print(serving.model_source.__file__)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code, str(src)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    for line in imported.stdout.strip().splitlines():
        assert line.startswith(str(src)), line
    requirements = (bentos[0] / "env" / "python" / "requirements.txt").read_text()
    for pin in ("lightgbm==4.7.0", "lleaves==1.3.0", "llvmlite==0.44.0", "bentoml==1.4.39"):
        assert pin in requirements, pin
