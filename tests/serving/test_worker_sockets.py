"""Both BentoML workers take connections: `retain serve`'s command on 127.0.0.1, 2 workers.

The server is the one ``retain serve`` starts (:func:`serving.http.serve.serve_command`);
many keep-alive clients connect at once from one event loop, as an async client pool or a
benchmark does, and the access log says which worker served each connection.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from features.synthetic.synth import generate_purchase_log
from serving.http.serve import serve_command
from tests.serving.conftest import free_port
from tests.serving.server_artifact import server_artifact

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 240.0
CLIENTS = 64
REQUESTS_PER_CLIENT = 3
# "[entry_service:retain:2] 127.0.0.1:36496 (... path=/noop ..."
READY = re.compile(r"\[entry_service:[^:\]]+:(\d+)\] Service retain initialized")
ACCESS = re.compile(r"\[entry_service:[^:\]]+:(\d+)\] 127\.0\.0\.1:(\d+) \([^)]*path=/noop,")


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = generate_purchase_log(200, seed=5, start="2023-01-01", end="2024-06-30").log
    return server_artifact(tmp_path_factory.mktemp("artifact") / "retain-artifact", raw)


@pytest.fixture(scope="module")
def two_workers(
    artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """(URL, access log) of `retain serve`'s server with 2 workers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    command, env = serve_command(str(artifact_dir), "127.0.0.1", port, workers=2)
    env.update({"RETAIN_API_KEY": "", "RETAIN_FEATURE_SNAPSHOT": ""})
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while len(set(READY.findall(log_path.read_text()))) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start 2 workers:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url, log_path
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


async def _keep_alive_clients(port: int, clients: int, requests: int) -> list[int]:
    """``clients`` connections opened at once from one event loop (as an async client pool
    does), each sending ``requests`` keep-alive ``POST /noop``; the status codes."""
    body = b'{"customers":[]}'
    request = (
        f"POST /noop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def client() -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        statuses = []
        try:
            for _ in range(requests):
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                statuses.append(int(head.split(b" ", 2)[1]))
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
        finally:
            writer.close()
        return statuses

    results = await asyncio.gather(*(client() for _ in range(clients)))
    return [status for statuses in results for status in statuses]


def test_keep_alive_connections_are_spread_over_both_workers(
    two_workers: tuple[str, Path],
) -> None:
    url, log_path = two_workers
    port = int(url.rsplit(":", 1)[1])
    statuses = asyncio.run(_keep_alive_clients(port, CLIENTS, REQUESTS_PER_CLIENT))
    assert statuses == [200] * (CLIENTS * REQUESTS_PER_CLIENT)
    time.sleep(1.0)  # the access log is written after the response
    served = ACCESS.findall(log_path.read_text())
    assert len(served) == CLIENTS * REQUESTS_PER_CLIENT
    connections: dict[str, set[str]] = {}
    for worker, client_port in served:
        connections.setdefault(worker, set()).add(client_port)
    counts = {worker: len(ports) for worker, ports in connections.items()}
    assert sum(counts.values()) == CLIENTS, counts
    # a connection stays with the worker that accepted it: each must have taken a share
    assert len(counts) == 2 and min(counts.values()) >= CLIENTS // 5, counts


@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "another-retain-server"])
def test_a_port_in_use_stops_the_server_with_one_line(
    capsys: pytest.CaptureFixture[str], reuseport: bool
) -> None:
    from serving.http.worker_sockets import main as worker_sockets_main

    with socket.socket() as taken:
        if reuseport:  # as another server's worker socket: it must not be shared
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = worker_sockets_main(["serve", "x:Y", "--host", "127.0.0.1", "--port", str(port)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"retain serve: error: cannot listen on 127.0.0.1:{port}:"), err
    assert "\n" not in err
