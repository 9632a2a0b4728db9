"""Matplotlib figures of the diagnostics, saved as PNG and PDF (`rnnlab.figures`: headless, on an
Agg canvas of their own; pyplot's backend is never touched)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from rnnlab.figures import figure, save_figure  # noqa: F401  (save_figure: re-exported)

GATE_ORDER = ("input", "forget", "candidate", "output", "reset", "update")


def _positive(values: np.ndarray) -> np.ndarray:
    """Zeros (and negatives) as NaN, so a log axis leaves a gap instead of failing."""
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def plot_grad_flow(series: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """`||d loss / d x_t||` and `||d loss / d h_t||` against t on a log axis, one line per series.

    Args:
        series: name -> `[t]` norms (`gradflow.model_grad_flow` or `cell_grad_flow`).
        title: figure title.
    """
    inputs = {k: v for k, v in series.items() if k == "x" or k.endswith("/input")}
    states = {k: v for k, v in series.items() if k not in inputs}
    panels = [
        (r"$\|\partial L / \partial x_t\|$", inputs),
        (r"$\|\partial L / \partial s_t\|$", states),
    ]
    panels = [(label, group) for label, group in panels if group]
    fig = figure(figsize=(5.5 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (label, group) in zip(axes[0], panels, strict=True):
        for name, values in group.items():
            ax.plot(np.arange(len(values)), _positive(values), label=name, linewidth=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "gradient flow through time")
    fig.tight_layout()
    return fig


def plot_grad_flow_comparison(
    runs: Mapping[str, Mapping[str, np.ndarray]],
    keys: Sequence[str] = ("input", "h"),
    normalize: bool = True,
    title: str = "",
) -> Figure:
    """Several runs (or cells) on one plot: one panel per series kind, one line per run.

    Args:
        runs: label (e.g. "rnn", "lstm", "gru") -> its grad-flow series.
        keys: series kinds to compare, matched against the *end* of each series name; a run
            contributes its first matching series (e.g. `"input"` -> `"stack/input"` or `"x"`,
            `"h"` -> `"stack/layer_0/h"`).
        normalize: divide each line by its value at the last step (the shape of the decay,
            whatever the scale of the loss).
        title: figure title.
    """
    aliases = {"input": ("input", "x")}
    fig = figure(figsize=(5.5 * len(keys), 3.8))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        names = aliases.get(key, (key,))
        for label, series in runs.items():
            match = [k for k in series if k.split("/")[-1] in names]
            if not match:
                continue
            values = np.asarray(series[match[0]], dtype=float)
            if normalize and values[-1] > 0:
                values = values / values[-1]
            ax.plot(np.arange(len(values)), _positive(values), label=label, linewidth=1.3)
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        what = "x_t" if key == "input" else f"{key}_t"
        norm = r" / (value at $t = T - 1$)" if normalize else ""
        ax.set_ylabel(rf"$\|\partial L / \partial {what}\|${norm}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "gradient flow through time")
    fig.tight_layout()
    return fig


def plot_gates(
    trace: Mapping[str, np.ndarray], title: str = "", units: int = 6, max_hidden: int = 64
) -> Figure:
    """Gate heatmaps (hidden unit x time) and state trajectories for one example.

    Args:
        trace: name -> `[t, h]` (`traces.gate_trace` for one example).
        title: figure title.
        units: how many units' cell state `c_t` (LSTM) or hidden state `h_t` to draw as lines.
        max_hidden: show at most this many units in the heatmaps.
    """
    gates = [g for g in GATE_ORDER if g in trace]
    heatmaps = gates or ["h"]
    state = "c" if "c" in trace else "h"
    rows = len(heatmaps) + 1
    fig = figure(figsize=(9, 1.9 * rows + 0.6))
    axes = fig.subplots(rows, 1, squeeze=False)
    for ax, name in zip(axes[:-1, 0], heatmaps, strict=True):
        values = np.asarray(trace[name])[:, :max_hidden].T
        signed = name in ("candidate", "h")
        image = ax.imshow(
            values,
            aspect="auto",
            interpolation="nearest",
            cmap="RdBu_r" if signed else "viridis",
            vmin=-1 if signed else 0,
            vmax=1,
        )
        ax.set_ylabel(f"{name}\nunit")
        fig.colorbar(image, ax=ax, pad=0.01)
    ax = axes[-1, 0]
    values = np.asarray(trace[state])
    for unit in range(min(units, values.shape[1])):
        ax.plot(values[:, unit], linewidth=1.0, label=f"unit {unit}")
    ax.set_ylabel(f"{state}_t" + (" (cell state)" if state == "c" else ""))
    ax.set_xlabel("time step t")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=min(units, 6))
    fig.suptitle(title or "gate activations")
    fig.tight_layout()
    return fig


def plot_attention(
    weights: np.ndarray, title: str = "", inputs: np.ndarray | None = None, heads: int = 4
) -> Figure:
    """One example's attention weights.

    Args:
        weights: `[t]` (attention pooling: a weight per time step), `[t_out, s]` (target x
            source) or `[heads, t, t]` (self-attention; the first `heads` heads are drawn).
        title: figure title.
        inputs: `[t, d]` float features of the example (d <= 8) drawn under pooling weights, e.g.
            the adding problem's values and markers.
        heads: most self-attention heads to draw.
    """
    weights = np.asarray(weights)
    if weights.ndim == 1:
        rows = 2 if inputs is not None else 1
        fig = figure(figsize=(9, 2.4 * rows))
        axes = fig.subplots(rows, 1, sharex=True, squeeze=False)
        axes[0, 0].bar(np.arange(len(weights)), weights, width=1.0)
        axes[0, 0].set_ylabel("attention weight")
        if inputs is not None:
            for channel in range(inputs.shape[-1]):
                axes[1, 0].plot(inputs[:, channel], linewidth=1.0, label=f"input {channel}")
            axes[1, 0].legend(fontsize=7)
        axes[-1, 0].set_xlabel("time step t")
    else:
        maps = weights[None] if weights.ndim == 2 else weights[:heads]
        fig = figure(figsize=(4.2 * len(maps), 3.8))
        axes = fig.subplots(1, len(maps), squeeze=False)
        for index, (ax, values) in enumerate(zip(axes[0], maps, strict=True)):
            image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis")
            ax.set_xlabel("source step")
            ax.set_ylabel("target step")
            if weights.ndim == 3:
                ax.set_title(f"head {index}", fontsize=9)
            fig.colorbar(image, ax=ax, pad=0.01)
    fig.suptitle(title or "attention weights")
    fig.tight_layout()
    return fig
