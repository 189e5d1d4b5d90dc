"""Feature-side sub-commands of ``retain``: synth, kpis, features, segments."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root app."""
