"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` OS processes.

Every process is its own interpreter started from the command line on 127.0.0.1 (free ports
picked by the scheduler, found through its scheduler file), with the repository on its
``PYTHONPATH`` so the workers import the code under test, and its working directory in a
temporary directory: nothing is shared with the test process but the network. Under
``CI=true`` a missing ``dask`` command fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 120.0


def _dask_command() -> Path:
    exe = Path(sys.executable).with_name("dask")
    if not exe.exists():
        message = f"the dask command is not installed next to {sys.executable}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return exe


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()  # ours; never left running past the test
            process.wait()


def _scheduler_address(path: Path, scheduler: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            raise RuntimeError(f"dask scheduler exited: {log.read_text()[-2000:]}")
        try:
            return str(json.loads(path.read_text())["address"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    raise RuntimeError(f"dask scheduler did not start in {START_SECONDS:.0f} s")


@contextmanager
def dask_cluster_processes(workdir: Path, n_workers: int = 2) -> Iterator[str]:
    """Start a scheduler and ``n_workers`` single-threaded workers; yield the address."""
    exe = _dask_command()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler_file = workdir / "scheduler.json"
    with ExitStack() as stack:

        def start(name: str, *args: str) -> subprocess.Popen[bytes]:
            log = stack.enter_context((workdir / f"{name}.log").open("wb"))
            process = subprocess.Popen(
                [str(exe), *args], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            stack.callback(_stop, process)
            return process

        scheduler = start(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        )
        address = _scheduler_address(scheduler_file, scheduler, workdir / "scheduler.log")
        for i in range(n_workers):
            start(
                f"worker-{i}",
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--memory-limit",
                "0",
                "--local-directory",
                str(workdir / f"worker-{i}"),
            )
        from distributed import Client

        with Client(address, timeout=START_SECONDS) as client:
            client.wait_for_workers(n_workers, timeout=START_SECONDS)
        yield address
