"""Matplotlib figures of the diagnostics in the paper style of `rnnlab.figures` (page or column
width, 8 pt text, a colour, marker and dash per line), saved as PNG and PDF; headless, on an Agg
canvas of their own (pyplot's backend is never touched).

    plot_grad_flow             one run: ||dL/dx_t|| and ||dL/dh_t|| (||dL/dc_t||) against t
    plot_grad_flow_comparison  several runs or cells, normalised at their last step
    plot_gates                 gate heatmaps (unit x t) over the state trajectories, one time axis
    plot_attention             attention pooling weights over t, or target x source maps

Notation is the README's: `h_t` the hidden state, `c_t` the LSTM's cell state, `x_t` the input of
a recurrent stack; gates by the letters of their equations (`rnnlab.diagnostics.names`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rnnlab.diagnostics.gradflow import last_positive
from rnnlab.diagnostics.names import (
    gate_label,
    is_input_series,
    ordered_gates,
    series_label,
)
from rnnlab.figures import STYLE, figure, line_style, save_figure, styled

__all__ = [
    "GRAD_X",
    "GRAD_H",
    "plot_attention",
    "plot_gates",
    "plot_grad_flow",
    "plot_grad_flow_comparison",
    "save_figure",
]

GRAD_X = r"$\|\partial L / \partial x_t\|$"
GRAD_H = r"$\|\partial L / \partial h_t\|$"
GRAD_C = r"$\|\partial L / \partial c_t\|$"
TIME = "time step $t$"
SIGNED = ("candidate", "h", "y", "c")
"""Trace entries in [-1, 1] (tanh) drawn on a diverging scale; gates (sigmoids) on [0, 1]."""


def _positive(values: np.ndarray) -> np.ndarray:
    """Zeros (and negatives) as NaN, so a log axis leaves a gap instead of failing."""
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def _suptitle(fig: Figure, title: str) -> None:
    """The figure's title at the size of axes titles (`figures.STYLE`), so a column-wide figure
    is not widened by it; a long title goes on two lines (`"what\\nrun, step"`)."""
    fig.suptitle(title, fontsize=STYLE["axes.titlesize"])


def _figure_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for all panels, under them, where it never hides a line."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    ncol = len(labels) if len(labels) <= 5 else (len(labels) + 1) // 2
    fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, 5))


def _time_axis(ax: Axes, steps: int) -> None:
    """x from -0.5 to T - 0.5 (a heatmap's pixel centred on each step), integer ticks."""
    ax.set_xlim(-0.5, steps - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(TIME)


def plot_grad_flow(series: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """One run's gradient flow: `||dL/dx_t||` (left) and `||dL/dh_t||`, `||dL/dc_t||` (right)
    against t on a log axis, one line per stack input or layer state (page width).

    Args:
        series: name -> `[t]` norms (`gradflow.model_grad_flow` or `cell_grad_flow`).
        title: figure title.
    """
    inputs = {k: v for k, v in series.items() if is_input_series(k)}
    states = {k: v for k, v in series.items() if k not in inputs}
    leaves = {k.split("/")[-1] for k in states}
    state_label = GRAD_H + (", " + GRAD_C if "c" in leaves else "")
    panels = [(GRAD_X, inputs), (state_label, states)]
    panels = [(label, group) for label, group in panels if group]
    fig = figure("page", aspect=0.36)
    with styled():
        axes = fig.subplots(1, len(panels), squeeze=False, sharex=True)[0]
        index = 0
        for ax, (label, group) in zip(axes, panels, strict=True):
            for name, values in group.items():
                ax.plot(_positive(values), label=series_label(name), **line_style(index))
                index += 1
            ax.set_yscale("log")
            _time_axis(ax, max(len(v) for v in group.values()))
            ax.set_ylabel(label)
            ax.grid(True, which="major")
        _figure_legend(fig, axes)
        _suptitle(fig, title or "Gradient flow through time")
    return fig


def plot_grad_flow_comparison(
    runs: Mapping[str, Mapping[str, np.ndarray]],
    keys: Sequence[str] = ("input", "h"),
    normalize: bool = True,
    title: str = "",
) -> Figure:
    """Several runs (or cells) on one figure: one panel per series kind, one line per run
    (page width, one legend).

    Args:
        runs: label (e.g. "rnn", "lstm", "gru") -> its grad-flow series.
        keys: series kinds to compare, matched against the *end* of each series name; a run
            contributes its first matching series (`"input"` -> `"stack/input"` or `"x"`,
            `"h"` -> `"stack/layer_0/h"`: the first layer's forward direction).
        normalize: divide each line by its value at the last step where it is positive (the
            shape of the decay, whatever the scale of the loss).
        title: figure title.
    """
    aliases = {"input": ("input", "x")}
    fig = figure("page", aspect=0.36)
    with styled():
        axes = fig.subplots(1, len(keys), squeeze=False)[0]
        for ax, key in zip(axes, keys, strict=True):
            names = aliases.get(key, (key,))
            steps = 1
            for index, (label, series) in enumerate(runs.items()):
                match = [k for k in series if k.split("/")[-1] in names]
                if not match:
                    continue
                values = np.asarray(series[match[0]], dtype=float)
                reference = last_positive(values)
                if normalize and reference is not None:
                    values = values / values[reference]
                ax.plot(_positive(values), label=label, **line_style(index))
                steps = max(steps, len(values))
            ax.set_yscale("log")
            _time_axis(ax, steps)
            what = "x_t" if key == "input" else f"{key}_t"
            last = "x_{T-1}" if key == "input" else f"{key}_{{T-1}}"
            if normalize:
                ax.set_ylabel(
                    rf"$\|\partial L / \partial {what}\| \,/\, \|\partial L / \partial {last}\|$"
                )
            else:
                ax.set_ylabel(rf"$\|\partial L / \partial {what}\|$")
            ax.set_title(f"input ${what}$" if key == "input" else f"layer 1, ${what}$")
        _figure_legend(fig, axes)
        _suptitle(fig, title or "Gradient flow through time")
    return fig


def plot_gates(
    trace: Mapping[str, np.ndarray], title: str = "", units: int = 6, max_hidden: int = 64
) -> Figure:
    """Gate heatmaps (hidden unit x time step) above the state trajectories, for one example:
    every panel on one time axis (shared, pixel centres at integer t), colour bars in a column of
    their own so no panel is narrower than another (page width).

    Args:
        trace: name -> `[t, h]` (`traces.gate_trace` for one example): gates in any order
            (drawn in the order of the cell's equations: LSTM `i f g o`, GRU `r z n`).
        title: figure title.
        units: how many units' cell state `c_t` (LSTM) or hidden state `h_t` to draw as lines.
        max_hidden: show at most this many units in the heatmaps.
    """
    carry_leaves = {"c", "h", "y"}
    gates = ordered_gates(k for k in trace if k not in carry_leaves)
    heatmaps = gates or ["h"]
    state = "c" if "c" in trace else "h"
    steps = int(np.shape(trace[state])[0])
    rows = len(heatmaps) + 1
    fig = figure("page", aspect=0.13, rows=rows + 0.6)
    with styled():
        grid = fig.add_gridspec(rows, 2, width_ratios=(1, 0.018), height_ratios=[1] * rows)
        main = fig.add_subplot(grid[-1, 0])
        for row, name in enumerate(heatmaps):
            ax = fig.add_subplot(grid[row, 0], sharex=main)
            values = np.asarray(trace[name])[:, :max_hidden].T
            signed = name in SIGNED
            image = ax.imshow(
                values,
                aspect="auto",
                interpolation="nearest",
                cmap="RdBu_r" if signed else "viridis",
                vmin=-1 if signed else 0,
                vmax=1,
                extent=(-0.5, steps - 0.5, values.shape[0] - 0.5, -0.5),
            )
            ax.grid(False)
            ax.set_ylabel(f"{gate_label(name, gates)}\nunit")
            ax.tick_params(labelbottom=False)
            fig.colorbar(image, cax=fig.add_subplot(grid[row, 1]))
        values = np.asarray(trace[state])
        for unit in range(min(units, values.shape[1])):
            style = line_style(unit) | {"marker": None}
            main.plot(np.arange(steps), values[:, unit], label=f"unit {unit}", **style)
        shown = min(units, values.shape[1])
        main.set_ylabel(f"{gate_label(state, gates)}\nunits 0-{shown - 1}")
        _time_axis(main, steps)
        _suptitle(fig, title or "Gate activations")
    return fig


def plot_attention(
    weights: np.ndarray, title: str = "", inputs: np.ndarray | None = None, heads: int = 4
) -> Figure:
    """One example's attention weights.

    Args:
        weights: `[t]` (attention pooling: a weight per time step), `[t_out, s]` (target x
            source) or `[heads, t, t]` (self-attention; the first `heads` heads are drawn).
        title: figure title.
        inputs: `[t, d]` float features of the example (d <= 8) drawn under pooling weights on
            the same time axis, e.g. the adding problem's values and markers.
        heads: most self-attention heads to draw.
    """
    weights = np.asarray(weights)
    if weights.ndim == 1:
        rows = 2 if inputs is not None else 1
        fig = figure("column", aspect=0.42, rows=rows)
        with styled():
            axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
            axes[0].bar(np.arange(len(weights)), weights, width=0.9, color=line_style(0)["color"])
            axes[0].set_ylabel(r"weight $\alpha_t$")
            if inputs is not None:
                for channel in range(inputs.shape[-1]):
                    axes[1].plot(
                        inputs[:, channel],
                        label=rf"$x_{{t,{channel + 1}}}$",
                        **line_style(channel) | {"marker": None},
                    )
                axes[1].set_ylabel(r"input $x_t$")
                axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
            for ax in axes[:-1]:
                ax.tick_params(labelbottom=False)
            _time_axis(axes[-1], len(weights))
            _suptitle(fig, title or "Attention weights")
        return fig
    maps = weights[None] if weights.ndim == 2 else weights[:heads]
    fig = figure("page" if len(maps) > 1 else "column", aspect=0.8 / max(1, len(maps) - 1))
    with styled():
        axes = fig.subplots(1, len(maps), squeeze=False)[0]
        for index, (ax, values) in enumerate(zip(axes, maps, strict=True)):
            image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis")
            ax.grid(False)
            ax.set_xlabel("source step $s$")
            ax.set_ylabel("target step $t$")
            if weights.ndim == 3:
                ax.set_title(f"head {index + 1}")
        fig.colorbar(image, ax=list(axes), label=r"weight $\alpha_{t,s}$")
        _suptitle(fig, title or "Attention weights")
    return fig
