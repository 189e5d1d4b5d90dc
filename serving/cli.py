"""The root ``retain`` command: one sub-command per job.

Logging, telemetry opt-outs and warnings are configured here, at start-up, never at import.
Errors of every sub-command are mapped in one place, :mod:`serving.cli_errors`: a user error
is one ``error:`` line and exit code 2, a bug a traceback; ``--debug`` shows tracebacks of
user errors too.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

import typer

from features.redaction import install_log_redaction, redacting_excepthook
from serving.cli_errors import DEBUG_KEY, RetainGroup
from training.lifecycle_commands import SERVING_PARTS_KEY

if TYPE_CHECKING:
    from training.lifecycle import ServingParts

app = typer.Typer(
    cls=RetainGroup,
    name="retain",
    help="Predict churn and next purchases, and turn the scores into offers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def configure_runtime(verbose: bool = False) -> None:
    """Opt out of telemetry and set up logging (URI passwords masked) for a CLI or service."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_redaction()
    sys.excepthook = redacting_excepthook


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of errors in the input too (they exit 2)."
    ),
) -> None:
    ctx.meta[DEBUG_KEY] = debug
    ctx.meta[SERVING_PARTS_KEY] = _serving_parts
    configure_runtime(verbose)


def _serving_parts() -> ServingParts:
    """The serving parts ``train`` and ``promote`` run with, loaded when one of them runs."""
    from serving.lifecycle_wiring import SERVING_PARTS

    return SERVING_PARTS


def _register_all() -> None:
    from features import cli as features_cli
    from serving.batch import commands as batch_commands
    from serving.http import bento, serve
    from serving.lift import commands as lift_commands
    from serving.lift import uplift_commands
    from serving.report import commands as report_commands
    from training import cli as training_cli
    from training import lifecycle_commands

    features_cli.register(app)
    training_cli.register(app)
    lifecycle_commands.register(app)
    serve.register(app)
    bento.register(app)
    batch_commands.register(app)
    report_commands.register(app)
    lift_commands.register(app)
    uplift_commands.register(app)


_register_all()


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
