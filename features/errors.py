"""The one base class of errors a user can fix, so the CLI can tell them from bugs.

``retain``'s root command (:mod:`serving.cli_errors`) prints a :class:`UserError` as one
``error:`` line and exits with code 2; any other exception is a bug and keeps its traceback.
Modules raise a subclass named for what went wrong (``PurchaseLogError``, ``BatchError``...);
the message names the option, file, column, row or value to change.
"""

from __future__ import annotations

__all__ = ["InputError", "UserError"]


class UserError(Exception):
    """Something the user can fix (input, options, files); the message says what."""


class InputError(UserError, ValueError):
    """A bad value given on the command line or in a file, e.g. a date out of range."""
