"""One writer at a time for a registered model's aliases and champion history.

MLflow has no compare-and-set on an alias or a tag, so ``promote`` and ``rollback`` running
at once could each read the aliases, both "succeed", and leave a history that no longer says
what was served. The one atomic operation every MLflow store offers is creating a
registered model: the name is unique, so of two processes creating ``<name>.registry-lock``
exactly one succeeds. That model is the lock; it is deleted on release.

A holder records its host, process id and start time as tags. A lock whose holder ran on
this host and no longer exists (a ``kill -9`` mid-promotion) is stale and is taken over;
one held from another host is waited for, and taken over only once it is older than
:data:`STALE_AFTER_S` (a holder only keeps it for a few registry writes).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

LOCK_SUFFIX = ".registry-lock"
HOLDER_TAG = "retain.lock_holder"
STALE_AFTER_S = 600.0
POLL_S = 0.2


class RegistryLockTimeout(RuntimeError):
    """Another live process kept the registry lock for longer than the caller would wait."""


def lock_name(name: str) -> str:
    """The registered model that is ``name``'s lock while it exists."""
    return name + LOCK_SUFFIX


def _holder(operation: str) -> dict[str, object]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "operation": operation,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "nonce": os.urandom(8).hex(),
    }


def _read_holder(c: MlflowClient, lock: str) -> dict[str, object] | None:
    """The current holder's record, or None when the lock is gone (or unreadable)."""
    try:
        raw = c.get_registered_model(lock).tags.get(HOLDER_TAG)
    except MlflowException:
        return None
    try:
        holder = json.loads(raw) if raw else {}
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(holder: dict[str, object], created_ms: int | None) -> bool:
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        return pid != os.getpid() and not _pid_alive(pid)
    age_s = time.time() - (created_ms or 0) / 1000
    return age_s > STALE_AFTER_S


def _describe(holder: dict[str, object] | None) -> str:
    if not holder:
        return "another process"
    return (
        f"{holder.get('operation', '?')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {holder.get('since', '?')})"
    )


@contextmanager
def registry_lock(
    c: MlflowClient, name: str, operation: str, timeout_s: float = 120.0
) -> Iterator[None]:
    """Hold ``name``'s registry lock for the ``with`` block; wait up to ``timeout_s``.

    Raises :class:`RegistryLockTimeout` naming the holder when a live process keeps it.
    """
    lock = lock_name(name)
    mine = _holder(operation)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            c.create_registered_model(
                lock,
                tags={HOLDER_TAG: json.dumps(mine)},
                description=f"retain: {operation} of {name!r} in progress; deleted when done",
            )
            break
        except MlflowException as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            created = c.get_registered_model(lock).creation_timestamp
        except MlflowException:
            continue  # released meanwhile: try again at once
        holder = _read_holder(c, lock)
        if holder is not None and _is_stale(holder, created):
            # re-read right before deleting: only the record judged stale is removed
            if _read_holder(c, lock) == holder:
                with suppress(MlflowException):  # someone else took it over first
                    c.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise RegistryLockTimeout(
                f"registered model {name!r} is being changed by {_describe(holder)}; "
                f"waited {timeout_s:.0f} s. If that process is gone, delete the registered "
                f"model {lock!r} and retry"
            )
        time.sleep(POLL_S)
    try:
        yield
    finally:
        if _read_holder(c, lock) == mine:
            with suppress(MlflowException):  # taken over as stale: nothing of ours to remove
                c.delete_registered_model(lock)
