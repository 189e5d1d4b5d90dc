"""One WARNING line, without body contents, for each request BentoML refuses with a 4xx.

BentoML logs every refused request at ERROR with a ~30-line traceback that quotes parts of
the body; the filter here rewrites those records. Server errors (5xx, bugs) keep their
traceback.
"""

from __future__ import annotations

import logging

from serving.http.schemas import (
    PURCHASE_FIELDS,
    CustomerIn,
    IdsRequest,
    NoopRequest,
    ScoreRequest,
)

_REQUEST_FIELDS: frozenset[str] = frozenset(
    [
        *(
            name
            for model in (ScoreRequest, CustomerIn, IdsRequest, NoopRequest)
            for name in model.model_fields
        ),
        *PURCHASE_FIELDS,
    ]
)
_BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"


def client_error_summary(exc: BaseException) -> str | None:
    """One line for a request BentoML refused with a 4xx; None for a server error.

    Only field names this API defines, list indices and pydantic's error types are shown:
    nothing the client sent (an unknown key shows as ``?``).
    """
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        shown = []
        for error in exc.errors(include_url=False, include_context=False, include_input=False):
            loc = ".".join(
                str(part) if isinstance(part, int) or part in _REQUEST_FIELDS else "?"
                for part in error["loc"]
            )
            shown.append(f"{loc or '(body)'} {error['type']}")
        more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
        return f"{exc.error_count()} validation error(s): {'; '.join(shown[:3])}{more}"
    if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
        return f"{type(exc).__name__} ({int(exc.error_code)})"
    return None


class ClientErrorLogFilter(logging.Filter):
    """Turns BentoML's ERROR record of a 4xx into one WARNING line without body contents."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        summary = None if exc is None else client_error_summary(exc)
        if summary is not None:
            args = record.args if isinstance(record.args, tuple) else ()
            path, method = (*args, "?", "?")[:2]
            record.msg = "refused %s [%s]: %s"
            record.args = (path, method, summary)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Install :class:`ClientErrorLogFilter` on BentoML's error logger (once per process)."""
    target = logging.getLogger(_BENTOML_ERROR_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in target.filters):
        target.addFilter(ClientErrorLogFilter())
