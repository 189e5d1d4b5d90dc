"""``bentoml serve`` with one listening socket per worker, so both workers get connections.

BentoML 1.4 (``_bentoml_impl.server.serving.serve_http``) binds one listening socket in
its circus arbiter and every worker inherits that one file descriptor. Each worker serves
it through uvicorn on asyncio, whose accept handler takes up to ``backlog`` (BentoML passes
2048) pending connections per wake-up. Keep-alive clients connect in a burst, the worker
that wakes first accepts the whole burst, and the connections stay with it: in a soak one
worker served 91% of the requests while the other idled.

Circus can bind a ``SO_REUSEPORT`` socket per worker process instead (a socket with
``so_reuseport`` is bound at each spawn, ``circus.process.Process._get_sockets_fds``), and
Linux then hashes every new connection to one of the workers' sockets. BentoML exposes
neither option, so ``python -m serving.http.worker_sockets serve ...`` (what ``retain serve``
runs) is BentoML's own command line with one adjustment made before it starts: the API
server's TCP socket asks circus for ``so_reuseport``, and the watchers that use it carry
their arguments in ``cmd``, where circus looks for the socket it must bind per worker.
Unix sockets (a service's dependencies) are left shared. Where the platform has no
``SO_REUSEPORT`` the command is plain ``bentoml serve``.

The port is checked before the server starts: circus never binds a per-worker socket in
the arbiter, so a port already in use would otherwise fail each worker's spawn, and a
port held by another server's ``SO_REUSEPORT`` sockets would be shared with it.
"""

from __future__ import annotations

import shlex
import socket
import sys
from collections.abc import Sequence
from typing import Any

SERVE_MODULE = "serving.http.worker_sockets"


def reuseport_supported() -> bool:
    """Whether each worker can listen on its own socket of one port (Linux, BSDs)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def check_port_free(host: str, port: int) -> None:
    """Raise OSError when a socket is bound to (host, port) already.

    The probe does not ask for ``SO_REUSEPORT``, so it fails on another server's per-worker
    sockets too: a second ``retain serve`` on a port in use stops instead of sharing it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def install() -> None:
    """Make BentoML's HTTP server give each worker its own ``SO_REUSEPORT`` socket.

    BentoML builds its circus arbiter with ``create_standalone_arbiter`` (imported when it
    serves); the wrapper rebuilds each TCP socket with ``so_reuseport`` and moves the
    arguments of the watchers that use it into their command line.
    """
    import bentoml._internal.utils.circus as bentoml_circus

    create_arbiter = bentoml_circus.create_standalone_arbiter

    def arbiter_with_worker_sockets(watchers: list[Any], **kwargs: Any) -> Any:  # circus (untyped)
        kwargs["sockets"] = [_per_worker(sock, watchers) for sock in kwargs.get("sockets") or []]
        return create_arbiter(watchers, **kwargs)

    bentoml_circus.create_standalone_arbiter = arbiter_with_worker_sockets


def _per_worker(sock: Any, watchers: list[Any]) -> Any:  # circus (untyped) objects
    """``sock`` as a socket circus binds once per worker, for a TCP socket; else ``sock``."""
    from circus.sockets import CircusSocket

    if sock.is_unix:
        return sock
    config = {
        "name": sock.name,
        "host": sock.host,
        "port": str(sock.port),
        "family": "AF_INET6" if sock.family == socket.AF_INET6 else "AF_INET",
        "backlog": str(sock.backlog),
        "so_reuseport": True,
    }
    reference = f"$(circus.sockets.{sock.name})"
    for watcher in watchers:
        args = watcher.args if isinstance(watcher.args, list) else []
        if reference in args:  # circus looks for it in ``cmd`` only
            watcher.cmd = " ".join([watcher.cmd, *(shlex.quote(arg) for arg in args)])
            watcher.args = None
    sock.close()
    return CircusSocket.load_from_config(config)


def _option(argv: Sequence[str], name: str, default: str) -> str:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return default


def main(argv: Sequence[str] | None = None) -> int:
    """``bentoml`` with the arguments given (``serve ...``), per-worker sockets installed."""
    args = list(sys.argv[1:] if argv is None else argv)
    if reuseport_supported() and args[:1] == ["serve"]:
        host, port = _option(args, "--host", "0.0.0.0"), int(_option(args, "--port", "3000"))
        try:
            check_port_free(host, port)
        except OSError as exc:
            print(f"retain serve: error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 2
        install()
    from bentoml_cli.cli import cli

    return int(cli.main(args=args, prog_name="bentoml", standalone_mode=True) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
