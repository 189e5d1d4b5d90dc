"""What the HTTP service reads from its environment, read and checked once per process.

A bad value is a :class:`SettingsError` naming the variable, so ``retain serve`` can refuse
to start with that one line and a worker started by ``bentoml serve`` can answer 503 with it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from serving.model_source import default_model_uri

SERVICE_LOGGER = "retain.service"
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_CUSTOMERS = 1000
DEFAULT_BATCH_WINDOW_MS = 0.0
"""How long a ``/score`` batch waits for company in the micro-batcher; 0 (the default)
waits no fixed time: the batch takes the requests the worker has already received (event-loop
turns until two bring nothing new; ``serving.http.batching``), so a worker never idles while a
request is queued and a lone request is scored at once. A fixed window idles the worker once
the requests it waits for are in (``benchmarks/http.py`` at c=8, one sitting, three runs each:
one-customer ``/score`` 65%, 61%, 61% of ``/noop`` at 0 against 56%, 54%, 50% at 1 ms)."""
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0


class SettingsError(ValueError):
    """A setting in the service's environment that cannot be used (one line naming it)."""


Value = TypeVar("Value")


def _setting(
    name: str, environ: Mapping[str, str] | None, parse: Callable[[str], Value], what: str
) -> tuple[str, Value | None]:
    """(text, parsed value) of ``name`` in ``environ`` (default: this process's); the value
    is None when unset."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return raw, None
    try:
        return raw, parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {what}") from None


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """A whole number > 0 from ``environ`` (default: this process's), else ``default``."""
    raw, value = _setting(name, environ, int, "a whole number")
    if value is None:
        return default
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be > 0")
    return int(value)


def env_float(
    name: str, default: float, environ: Mapping[str, str] | None = None, *, positive: bool = False
) -> float:
    """A finite number >= 0 (> 0 when ``positive``) from ``environ``, else ``default``."""
    raw, value = _setting(name, environ, float, "a number")
    if value is None:
        return default
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise SettingsError(f"{name}={raw!r} must be a number {'>' if positive else '>='} 0")
    return float(value)


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service reads from the environment, read once per process."""

    model_uri: str
    registered_model: str = "retain"
    tracking_uri: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_customers: int = DEFAULT_MAX_CUSTOMERS
    api_key: str | None = None
    feature_snapshot: str | None = None
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS
    history_url: str | None = None
    history_table: str | None = None
    history_query: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Read and check every setting; :class:`SettingsError` names the first bad one.

        ``environ`` defaults to this process's; ``retain serve`` passes the environment it
        is about to start BentoML with, so a bad value stops it before any worker starts.
        """
        env = os.environ if environ is None else environ
        name = env.get("RETAIN_REGISTERED_MODEL", "").strip() or "retain"
        return cls(
            model_uri=env.get("RETAIN_MODEL_URI", "").strip() or default_model_uri(name),
            registered_model=name,
            tracking_uri=env.get("MLFLOW_TRACKING_URI", "").strip() or None,
            max_body_bytes=env_int("RETAIN_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, env),
            max_customers=env_int("RETAIN_MAX_CUSTOMERS", DEFAULT_MAX_CUSTOMERS, env),
            api_key=env.get("RETAIN_API_KEY") or None,
            feature_snapshot=env.get("RETAIN_FEATURE_SNAPSHOT", "").strip() or None,
            batch_window_ms=env_float("RETAIN_BATCH_WINDOW_MS", DEFAULT_BATCH_WINDOW_MS, env),
            body_timeout_seconds=env_float(
                "RETAIN_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT_SECONDS, env, positive=True
            ),
            **history_settings(env),
        )


def history_settings(env: Mapping[str, str]) -> dict[str, str | None]:
    """``RETAIN_HISTORY_URL`` with exactly one of ``RETAIN_HISTORY_TABLE`` and
    ``RETAIN_HISTORY_QUERY`` (``/score/ids`` reads histories from the database), or none
    of the three. The snapshot and the database are two sources of one thing: not both."""
    url, table, query = (
        env.get(f"RETAIN_HISTORY_{name}", "").strip() or None for name in ("URL", "TABLE", "QUERY")
    )
    if url is None:
        if table or query:
            which = "RETAIN_HISTORY_TABLE" if table else "RETAIN_HISTORY_QUERY"
            raise SettingsError(f"{which} is set but RETAIN_HISTORY_URL is not")
        return {}
    if (table is None) == (query is None):
        raise SettingsError(
            "RETAIN_HISTORY_URL needs exactly one of RETAIN_HISTORY_TABLE and RETAIN_HISTORY_QUERY"
        )
    from features.sources.database import DatabaseError, parse_url

    try:
        parsed = parse_url(url, option="RETAIN_HISTORY_URL", password_ok=True)
    except DatabaseError as exc:
        raise SettingsError(str(exc)) from None
    if parsed.dialect != "postgresql":
        raise SettingsError(
            f"RETAIN_HISTORY_URL={parsed.redacted!r}: /score/ids reads histories from "
            "PostgreSQL only (postgresql://user@host:port/db)"
        )
    if env.get("RETAIN_FEATURE_SNAPSHOT", "").strip():
        raise SettingsError(
            "RETAIN_HISTORY_URL and RETAIN_FEATURE_SNAPSHOT are both set: /score/ids reads "
            "one source; unset one"
        )
    return {"history_url": url, "history_table": table, "history_query": query}


def configure_process_env() -> None:
    """Telemetry opt-outs, and one OpenMP thread: per-request LightGBM calls are tiny and
    OpenMP's thread pool costs more than it saves on a busy machine.

    BentoML's worker logging passes WARNING and up only; retain's own logger passes INFO,
    so the start-up line saying which model and snapshot were loaded is shown.
    """
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    own = logging.getLogger("retain")
    if own.level == logging.NOTSET:
        own.setLevel(logging.INFO)
    # BentoML's dictConfig disables loggers created before it
    logging.getLogger(SERVICE_LOGGER).disabled = False
