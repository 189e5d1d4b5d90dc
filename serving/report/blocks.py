"""The building blocks of the report page: a titled section, inline figures, tables and notes.

Every plot is a PNG inlined as a ``data:`` URI (matplotlib Agg, no pyplot state), so the page
fetches nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Section:
    """One titled block of the page: HTML body (tables, figures, notes)."""

    id: str
    title: str
    body: str


def new_figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 3.6), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def inline_png(fig: Figure, alt: str) -> str:
    """The figure as an inline PNG (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(frame: pd.DataFrame, float_format: str = "{:,.2f}") -> str:
    return frame.to_html(
        border=0, float_format=lambda v: float_format.format(v), na_rep="-", escape=True
    )


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'
