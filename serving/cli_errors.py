"""The CLI's one error layer: user errors print one line and exit 2, bugs keep a traceback.

Every ``retain`` sub-command runs inside :class:`RetainGroup.invoke`, so commands raise and
never format errors themselves. An exception is a *user error* when it is a
:class:`features.errors.UserError` (``PurchaseLogError``, ``BatchError``, ``InputError``...),
one of the library errors in :data:`USER_ERROR_TYPES` (bad config, model or registry), or a
file the user named that cannot be read or written. It is printed as ``error: <message>`` on
one line on stderr, exit code 2. Anything else is a bug: Python's traceback, exit code 1.
``retain --debug CMD`` prints the traceback of user errors too (and still exits 2).
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import typer
from typer.core import TyperGroup

from features.errors import UserError
from features.redaction import redact

__all__ = ["DEBUG_KEY", "USER_ERROR_TYPES", "RetainGroup", "user_error_message"]

DEBUG_KEY = "retain.debug"
"""``typer.Context.meta`` key set by the root ``--debug`` option."""
EXIT_USER_ERROR = 2

USER_ERROR_TYPES: tuple[tuple[str, str], ...] = (
    ("features.config_file", "LogConfigError"),
    ("training.artifact", "ArtifactError"),
    ("training.registry", "RegistryError"),
    ("training.tracking_store", "TrackingStoreError"),
    ("serving.model_source", "ModelResolutionError"),
    ("serving.offers.policy", "OfferPolicyError"),
    ("serving.offers.inputs", "ScoresError"),
    ("pydantic", "ValidationError"),
    ("yaml", "YAMLError"),
)
"""(module, class) of errors other packages raise for input a user can fix. Looked up in
``sys.modules`` only: an exception of a class whose module was never imported cannot occur,
so classifying one never imports MLflow or pydantic."""

_FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _library_types() -> Iterator[type[BaseException]]:
    for module_name, class_name in USER_ERROR_TYPES:
        module = sys.modules.get(module_name)
        found = getattr(module, class_name, None) if module is not None else None
        if isinstance(found, type) and issubclass(found, BaseException):
            yield found


def _is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, (UserError, *_FILE_ERRORS)):
        return True
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    return any(isinstance(exc, kind) for kind in _library_types())


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
