"""A Dask client for ``--dask ADDRESS`` / ``--dask-local N``, with one-line errors.

Shared by every command that runs on a cluster (it lives in ``features`` because both
``training`` and ``serving`` may import it). distributed's own client retries an unreachable
scheduler for its whole timeout and logs a traceback per attempt; one TCP connect says the
same in one line, in seconds, before any data is read.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from features.errors import UserError

CONNECT_SECONDS = 10.0
DEFAULT_SCHEDULER_PORT = 8786


class ClusterError(UserError, RuntimeError):
    """The Dask scheduler cannot be reached, or the cluster options are unusable."""


def check_scheduler(address: str, seconds: float = CONNECT_SECONDS) -> None:
    """A ``tcp://`` scheduler that refuses or does not answer: :class:`ClusterError` at once."""
    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = parts.hostname, parts.port or DEFAULT_SCHEDULER_PORT
    except ValueError as exc:
        raise ClusterError(f"--dask {address!r} is not a scheduler address: {exc}") from None
    if parts.scheme != "tcp" or host is None:
        return  # tls://, inproc:// ...: left to distributed
    try:
        with socket.create_connection((host, port), timeout=seconds):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(
            f"--dask {address}: no Dask scheduler answers there ({reason})"
        ) from None


@contextlib.contextmanager
def dask_client(address: str | None = None, local_workers: int | None = None) -> Iterator[Any]:
    """A client on ``address``, or on a fresh ``LocalCluster`` of ``local_workers`` processes."""
    from distributed import Client, LocalCluster

    if (address is None) == (local_workers is None):
        raise ClusterError("give one of --dask ADDRESS and --dask-local N, not both")
    if address is not None:
        check_scheduler(address)
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except OSError as exc:
            raise ClusterError(f"--dask {address}: {exc}") from None
        with client:
            yield client
        return
    assert local_workers is not None
    if local_workers < 1:
        raise ClusterError(f"--dask-local needs at least 1 worker, got {local_workers}")
    with (
        LocalCluster(
            n_workers=local_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
