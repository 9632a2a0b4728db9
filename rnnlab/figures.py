"""Matplotlib figures, headless, saved as PNG + PDF: shared by `rnnlab.aggregate` and
`rnnlab.diagnostics.plots`.

Backend policy: every figure is made by `figure`, on its own Agg canvas, never through pyplot's
global backend. Plots are drawn without a display, and importing rnnlab never switches the
backend of the caller (a notebook's inline one, which `matplotlib.use` would close figures of).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 150
FORMATS = ("png", "pdf")


def figure(**kwargs: Any) -> Figure:
    """`matplotlib.figure.Figure(**kwargs)` on an Agg canvas (use `.subplots`/`.add_subplot`)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Writes `<stem>.png` (150 dpi) and `<stem>.pdf`, cropped to what is drawn (bbox "tight"),
    creating the folder; returns both paths. The extension is appended, never substituted, so a
    stem with dots (`vs_task.length_valid-mse`, `gates_stack.layer_0`) keeps its whole name."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in FORMATS]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return paths
