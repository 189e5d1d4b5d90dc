"""Secrets out of messages and logs: the one place that knows how to hide a URI's password.

Tracking URIs carry credentials in their authority part (``http://alice:secret@host``,
``postgresql://user:pw@db/mlflow``), and MLflow, SQLAlchemy and urllib3 repeat the URI in
their exceptions and log records. Every message retain builds from a URI goes through
:func:`redact`; :class:`RedactingFilter` does the same for records other libraries log, and
:func:`redacting_excepthook` for an uncaught exception's traceback. The user name and host
stay visible (they say *which* server), only the password is replaced. A libpq-style
``password=...`` parameter (``postgresql://db/x?password=pw``, ``host=db password=pw``) is
masked the same way.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from types import TracebackType

MASK = "***"
# scheme://user:password@ or scheme://token@  (no '/' or space before the '@')
_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s'\"]*)(?::(?P<password>[^/\s'\"]*))?@"
)

# password=VALUE as a URI query parameter or a libpq keyword (quoted or bare)
_PASSWORD_PARAMETER = re.compile(
    r"(?i)(?P<key>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^&\s'\"]+)"
)


# Schemes whose lone userinfo is a user name (postgresql://alice@db), not a token.
_USER_NAME_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb")


def _mask(match: re.Match[str]) -> str:
    # A user part without a password is itself a token (https://TOKEN@host): mask it whole,
    # except where the scheme says it is a database user name.
    if match["password"] is None:
        scheme = match["scheme"][:-3].lower().split("+")[0]
        if scheme in _USER_NAME_SCHEMES:
            return match[0]
        return f"{match['scheme']}{MASK}@"
    return f"{match['scheme']}{match['user']}:{MASK}@"


def redact(text: object) -> str:
    """``text`` with every URI userinfo password (or lone token) and ``password=`` value masked."""
    masked = _CREDENTIALS.sub(_mask, str(text))
    return _PASSWORD_PARAMETER.sub(lambda match: f"{match['key']}{MASK}", masked)


class RedactingFilter(logging.Filter):
    """A handler filter that masks URI passwords in the message and the formatted traceback.

    Put on handlers (not loggers): records from every library propagate to the root's
    handlers, while a logger's own filters only see that logger's records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = redact(message)
        if safe != message:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger``.

    Without ``logger``: every handler configured so far, the root's and those of loggers that
    do not propagate (BentoML gives its own loggers handlers in each worker).
    """
    if logger is not None:
        loggers = [logger]
    else:
        known = logging.Logger.manager.loggerDict.values()
        loggers = [logging.getLogger(), *(x for x in known if isinstance(x, logging.Logger))]
    for each in loggers:
        for handler in each.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def redacting_excepthook(
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
) -> None:
    """``sys.excepthook`` that prints the usual traceback with URI passwords masked."""
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(redact(text))
