"""Training threads follow the cores this process may use; the trees do not depend on them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from tests.training.conftest import simulate_log
from training.models.boosters import BoostConfig
from training.models.bundle import RetainModels
from training.threads import (
    available_cores,
    booster_threads,
    cgroup_cores,
    quota_cores,
    single_thread_blas,
)

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_a_process_pinned_to_one_core_trains_on_one_thread() -> None:
    """Pinned to one CPU (as ``taskset`` or a cpuset does), LightGBM gets one thread, where
    ``os.cpu_count()`` says every core of the machine."""
    code = (
        "import os, json\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from training.models.boosters import BoostConfig\n"
        "from training.threads import available_cores\n"
        "print(json.dumps([available_cores(), os.cpu_count(),\n"
        "    BoostConfig({}).params('binary')['num_threads']]))\n"
    )
    cores, machine, lgb_threads = json.loads(_run(code))
    assert cores == 1 and lgb_threads == 1
    assert machine >= 1


def test_cgroup_v2_quota_is_the_smallest_on_the_path(tmp_path: Path) -> None:
    (tmp_path / "job" / "step").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "job" / "step" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cores(tmp_path, "0::/job/step\n") == pytest.approx(1.5)
    (tmp_path / "job" / "step" / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cores(tmp_path, "0::/job/step\n") == pytest.approx(0.5)
    assert cgroup_cores(tmp_path, "0::/\n") is None  # root: no quota


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    group = tmp_path / "cpu" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("250000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    membership = "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n"
    assert cgroup_cores(tmp_path, membership) == pytest.approx(2.5)
    (group / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cores(tmp_path, membership) is None


def test_quota_lines() -> None:
    assert quota_cores("200000 100000") == pytest.approx(2.0)
    assert quota_cores("max 100000") is None
    assert quota_cores("") is None
    assert quota_cores("garbage here") is None


def test_threads_follow_cores_and_request() -> None:
    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1)
    assert booster_threads() == cores
    assert booster_threads(3) == 3  # --threads wins
    with pytest.raises(ValueError, match="threads must be >= 1"):
        booster_threads(0)
    assert BoostConfig({}, num_threads=1).params("binary")["num_threads"] == 1


def test_openmp_waits_passively_unless_the_user_says_otherwise() -> None:
    code = "import os, training; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "PASSIVE"
    assert _run(code, {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_blas_runs_on_one_thread_inside_and_is_restored() -> None:
    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    with single_thread_blas():
        assert blas_threads() and set(blas_threads()) == {1}
    assert blas_threads() == before


def test_saved_trees_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    """One and two threads train the same trees: the saved texts differ only in the
    ``[num_threads: N]`` parameter line, so ``--threads`` never changes a prediction."""
    log = simulate_log(1500, seed=5)
    params = {"horizon_days": 90, "n_snapshots": 3, "num_boost_round": 30, "baseline_sample": 400}
    texts = []
    for threads in (1, 2):
        out = (
            RetainModels(**params, num_threads=threads)
            .fit(log, "2024-09-01")
            .save(tmp_path / f"t{threads}")
        )
        assert f"[num_threads: {threads}]" in (out / "churn.lgb.txt").read_text()
        texts.append(
            {
                p.name: re.sub(r"\[num_threads: \d\]", "", p.read_text())
                for p in sorted(out.glob("*.lgb.txt"))
            }
        )
    assert len(texts[0]) == 5 and texts[0] == texts[1]


def test_threads_option_rejects_zero(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from serving.cli import app

    data = tmp_path / "log.csv"
    data.write_text("customer_id,timestamp,amount\nc1,2024-01-01,5\n")
    for command in ("evaluate", "train"):
        result = CliRunner().invoke(
            app, [command, "--data", str(data), "--as-of", "2024-01-01", "--threads", "0"]
        )
        assert result.exit_code == 2, result.output
        assert "--threads" in result.output
