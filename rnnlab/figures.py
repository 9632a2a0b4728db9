"""Matplotlib figures in one paper style, headless, saved as PNG + PDF: shared by
`rnnlab.aggregate` and `rnnlab.diagnostics.plots`.

Style: every figure is sized for a paper (`COLUMN_WIDTH_IN` for one column of a two-column
paper, `PAGE_WIDTH_IN` for the full text width), drawn with `STYLE` (serif-free 8 pt text that
stays legible at print size, light grid, no top/right spines, vector fonts embedded as TrueType
in the PDF) and the Okabe–Ito colour-blind-safe palette, each colour paired with its own marker
and dash (`line_style(i)`) so overlapping variants stay distinguishable in grey print.

Backend policy: every figure is made by `figure`, on its own Agg canvas, never through pyplot's
global backend. Plots are drawn without a display, and importing rnnlab never switches the
backend of the caller (a notebook's inline one, which `matplotlib.use` would close figures of).
The style is applied per figure (`matplotlib.rc_context` while it is drawn and saved), never to
the caller's global `rcParams`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 200
FORMATS = ("png", "pdf")
COLUMN_WIDTH_IN = 3.3
"""One column of a two-column paper (ICML/NeurIPS/ACL-style: 3.25-3.33 in)."""
PAGE_WIDTH_IN = 6.75
"""The full text width of a two-column paper (one-column papers: about 5.5-6.5 in)."""
Width = Literal["column", "page"]
WIDTHS: dict[str, float] = {"column": COLUMN_WIDTH_IN, "page": PAGE_WIDTH_IN}

PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: faint on white)
)
"""Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms of
colour blindness."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)))
BASELINE_STYLE: dict[str, Any] = {"color": "0.35", "linestyle": ":", "linewidth": 1.0}
"""A task's reference level (e.g. predicting the mean): grey dotted, labelled in the legend."""

STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "image.cmap": "viridis",
    "pdf.fonttype": 42,  # TrueType: text stays text in the PDF (editable, searchable)
    "ps.fonttype": 42,
    "savefig.dpi": DPI,
}


def line_style(index: int) -> dict[str, Any]:
    """Colour, marker and dash of the `index`-th line (cycling): pass as `**line_style(i)` to
    `Axes.plot`. Markers are spaced along the line (`markevery`) so dense curves stay lines."""
    return {
        "color": PALETTE[index % len(PALETTE)],
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": DASHES[index % len(DASHES)],
        "markevery": 0.1,
    }


def figure_size(
    width: Width = "column", aspect: float = 0.62, rows: int = 1
) -> tuple[float, float]:
    """`(width, height)` in inches: a paper width and `aspect` (height / width) per row."""
    inches = WIDTHS[width]
    return inches, inches * aspect * rows


def figure(
    width: Width | None = None, aspect: float = 0.62, rows: int = 1, **kwargs: Any
) -> Figure:
    """A `matplotlib.figure.Figure` on an Agg canvas, in `STYLE` (use `.subplots`/`.add_subplot`).

    Args:
        width: "column" or "page" sizes the figure for a paper (`figure_size`); None leaves
            `figsize` to `kwargs`.
        aspect: height / width of one row of panels.
        rows: rows of panels (the height grows with them).
        **kwargs: passed to `Figure` (`layout="constrained"` is the default).
    """
    if width is not None:
        kwargs.setdefault("figsize", figure_size(width, aspect, rows))
    kwargs.setdefault("layout", "constrained")
    with matplotlib.rc_context(STYLE):
        fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """`STYLE` while axes are drawn: axes, lines, ticks and legends read rcParams when made."""
    with matplotlib.rc_context(STYLE):
        yield


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Writes `<stem>.png` (`DPI`) and `<stem>.pdf`, cropped to what is drawn (bbox "tight"),
    creating the folder; returns both paths. The extension is appended, never substituted, so a
    stem with dots (`vs_task.length_valid-mse`, `gates_stack.layer_0`) keeps its whole name."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in FORMATS]
    with matplotlib.rc_context(STYLE):
        for path in paths:
            fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=_metadata(path))
    return paths


def _metadata(path: Path) -> dict[str, Any]:
    """Reproducible files: no creation date in the PDF, no software version in either."""
    if path.suffix == ".pdf":
        return {"CreationDate": None, "Creator": None, "Producer": None}
    return {"Software": None}
