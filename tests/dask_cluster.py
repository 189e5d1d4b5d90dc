"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` as separate processes.

Nothing is shared with the test process but the loopback network and the file system: the
workers import this checkout's code (``PYTHONPATH``) in their own interpreters, so a test
against :attr:`DaskCluster.address` exercises what a remote cluster does. Ports are free
ones chosen by the scheduler (``--port 0``, address read back from ``--scheduler-file``).
Workers run without a nanny, so the pid a test kills (:meth:`DaskCluster.kill_worker`) is the
worker itself, and it stays dead.

The session fixture ``dask_cluster`` (``tests/conftest.py``) shares one cluster; a test that
kills workers starts its own ``with DaskCluster() as cluster:``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parents[1]
START_SECONDS = 60.0


class DaskUnavailable(RuntimeError):
    """No ``dask`` command (the distributed package) in this environment."""


def dask_command() -> str:
    beside = Path(sys.executable).parent / "dask"
    found = str(beside) if beside.exists() else shutil.which("dask")
    if found is None:
        raise DaskUnavailable("the `dask` command (package distributed) is not installed")
    return found


class DaskCluster:
    """A scheduler and ``workers`` single-threaded worker processes on 127.0.0.1."""

    def __init__(self, workers: int = 2, memory_limit: str = "2GiB") -> None:
        self.command = dask_command()
        self.n_workers = workers
        self.memory_limit = memory_limit
        self.address = ""
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="retain-dask-cluster-")
        self.dir = Path(self._tmp.name)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
        return env

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("wb")
        return subprocess.Popen(
            [self.command, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env(),
            cwd=self.dir,
        )

    def __enter__(self) -> DaskCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        file = self.dir / "scheduler.json"
        self.scheduler = self._spawn(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
            ],
            "scheduler",
        )
        deadline = time.monotonic() + START_SECONDS
        while not file.exists():
            self._check_alive(self.scheduler, "scheduler", deadline)
            time.sleep(0.1)
        self.address = json.loads(file.read_text())["address"]
        for i in range(self.n_workers):
            self.add_worker(f"w{i}")
        self.wait_for_workers(self.n_workers, deadline)

    def add_worker(self, name: str) -> None:
        self.workers.append(
            self._spawn(
                [
                    "worker",
                    self.address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--memory-limit",
                    self.memory_limit,
                    "--name",
                    name,
                    "--local-directory",
                    str(self.dir / name),
                ],
                name,
            )
        )

    def _check_alive(self, process: subprocess.Popen[bytes], name: str, deadline: float) -> None:
        if process.poll() is not None or time.monotonic() > deadline:
            log = (self.dir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dask {name} did not start (exit {process.poll()}):\n{log}")

    def wait_for_workers(self, n: int, deadline: float | None = None) -> None:
        from distributed import Client

        with Client(self.address, timeout=START_SECONDS) as client:
            client.wait_for_workers(n, timeout=START_SECONDS)

    def kill_worker(self, index: int = 0) -> int:
        """SIGKILL one worker process (no goodbye to the scheduler); return its pid."""
        process = self.workers[index]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        return process.pid

    def stop(self) -> None:
        for process in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._tmp.cleanup()
