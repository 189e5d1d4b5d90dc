"""The CLI's one error layer: user errors print one line and exit 2, bugs keep a traceback.

Every ``retain`` sub-command runs inside :class:`RetainGroup.invoke`, so commands raise and
never format errors themselves. An exception is a *user error* when it is a
:class:`features.errors.UserError` (every error retain raises for something the user can fix
subclasses it: ``PurchaseLogError``, ``ArtifactError``, ``RegistryError``...), one of the two
library errors about a user's values (pydantic's ``ValidationError``, PyYAML's
``YAMLError``), or a file the user named that cannot be read or written. It is printed as ``error: <message>`` on
one line on stderr, exit code 2. Anything else is a bug: Python's traceback, exit code 1.
``retain --debug CMD`` prints the traceback of user errors too (and still exits 2).
"""

from __future__ import annotations

import errno
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from features.errors import UserError
from features.redaction import redact

__all__ = ["DEBUG_KEY", "RetainGroup", "user_error_message"]

DEBUG_KEY = "retain.debug"
"""``typer.Context.meta`` key set by the root ``--debug`` option."""
EXIT_USER_ERROR = 2

_FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, (UserError, *_FILE_ERRORS)):
        return True
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    # imported here, on the error path only: `retain --help` loads neither
    import yaml
    from pydantic import ValidationError

    return isinstance(exc, (ValidationError, yaml.YAMLError))


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user error, or None when ``exc`` is a bug."""
    if not _is_user_error(exc):
        return None
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ == "ValidationError" and callable(errors):  # pydantic
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in errors()
        )
        return _one_line(f"invalid {getattr(exc, 'title', 'input')}: {problems}")
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return _one_line(f"{exc.filename}: {exc.strerror}")
    return _one_line(str(exc)) or type(exc).__name__


class RetainGroup(TyperGroup):
    """The root command group: runs a sub-command and maps its errors (see the module doc)."""

    # typer builds every context as typer.Context (click's, vendored privately, in the stubs)
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):  # usage errors, exits: typer's
            raise
        except Exception as exc:
            message = user_error_message(exc)
            if message is None:
                raise
            if ctx.meta.get(DEBUG_KEY, False):
                traceback.print_exception(exc, file=sys.stderr)
            typer.echo(f"error: {redact(message)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
