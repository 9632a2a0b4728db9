"""Diagnostics figures as a reader sees them: labels in the README's notation, gates in the order
of the equations, panels on one time axis, human legends and titles, paper sizes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from rnnlab.diagnostics import plots, summarize
from rnnlab.diagnostics.names import (
    attention_label,
    gate_label,
    layer_label,
    ordered_gates,
    series_label,
)
from rnnlab.figures import COLUMN_WIDTH_IN, PAGE_WIDTH_IN

T, H = 7, 5
RNG = np.random.default_rng(0)


def trace_of(gates: list[str], state: str = "h") -> dict[str, np.ndarray]:
    """A gate trace as a jitted dict comes back: keys sorted (`candidate` before `reset`)."""
    names = sorted([*gates, "h", state, "y"])
    return {name: RNG.uniform(0.05, 0.95, (T, H)) for name in names}


def is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def data_axes(fig: Figure) -> list:
    """The axes that hold data (not colour bars), top to bottom."""
    axes = [ax for ax in fig.axes if not is_colorbar(ax)]
    return sorted(axes, key=lambda ax: -ax.get_position().y0)


def legend_texts(fig: Figure) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes] + list(fig.legends)
    return [t.get_text() for legend in legends if legend for t in legend.get_texts()]


def test_names_are_the_papers() -> None:
    assert series_label("stack/input") == "input $x_t$"
    assert series_label("stack/layer_0/h") == "layer 1, $h_t$"
    assert series_label("stack/layer_1/backward/c", plain=True) == "layer 2 (backward), c_t"
    assert series_label("encoder/layer_0/h", plain=True) == "encoder layer 1, h_t"
    assert series_label("x") == "input $x_t$" and series_label("c", plain=True) == "c_t"
    assert layer_label("decoder/layer_2") == "decoder layer 3"
    assert ordered_gates(["candidate", "reset", "update"]) == ["reset", "update", "candidate"]
    assert ordered_gates(["output", "candidate", "forget", "input"]) == list(
        ("input", "forget", "candidate", "output")
    )
    assert gate_label("candidate", ["reset", "update", "candidate"]) == "candidate $n_t$"
    assert gate_label("candidate", ["input", "forget", "candidate"]) == "candidate $g_t$"
    assert gate_label("update", plain=True) == "update z_t"
    assert gate_label("c") == "cell state $c_t$"
    assert attention_label("attention_weights") == "attention pooling"
    assert attention_label("decoder_cell/attention_weights") == "decoder cross-attention"


@pytest.mark.parametrize(
    ("gates", "state", "labels"),
    [
        (["candidate", "reset", "update"], "h", ["reset $r_t$", "update $z_t$", "candidate $n_t$"]),
        (
            ["candidate", "forget", "input", "output"],
            "c",
            ["input $i_t$", "forget $f_t$", "candidate $g_t$", "output $o_t$"],
        ),
        ([], "h", ["hidden state $h_t$"]),
    ],
    ids=["gru", "lstm", "elman"],
)
def test_gate_figure_panels_share_one_time_axis(
    gates: list[str], state: str, labels: list[str]
) -> None:
    fig = plots.plot_gates(trace_of(gates, state), title="Gates of layer 1")
    fig.canvas.draw()
    axes = data_axes(fig)
    assert len(axes) == len(labels) + 1  # the heatmaps, then the state trajectories
    ylabels = [ax.get_ylabel().split("\n")[0] for ax in axes]
    assert ylabels[:-1] == labels
    state_label = "cell state $c_t$" if state == "c" else "hidden state $h_t$"
    assert ylabels[-1] == state_label
    bottom = axes[-1]
    assert bottom.get_xlabel() == "time step $t$"
    ticks = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
    assert ticks and all(t.lstrip("−-").isdigit() for t in ticks), ticks  # integer steps
    for ax in axes:
        assert ax.get_shared_x_axes().joined(ax, bottom)
        assert ax.get_xlim() == pytest.approx((-0.5, T - 0.5))
        # The colour bars take no width from the heatmaps: every panel spans the same x range.
        assert ax.get_position().x0 == pytest.approx(bottom.get_position().x0, abs=1e-3)
        assert ax.get_position().x1 == pytest.approx(bottom.get_position().x1, abs=1e-3)
    for ax in axes[:-1]:
        image = ax.get_images()[0]
        assert image.get_extent() == pytest.approx((-0.5, T - 0.5, H - 0.5, -0.5))
    colorbars = [ax for ax in fig.axes if is_colorbar(ax)]
    assert len(colorbars) == len(labels)
    assert fig._suptitle.get_text() == "Gates of layer 1"
    assert fig.get_figwidth() == pytest.approx(PAGE_WIDTH_IN)


def test_grad_flow_figure_says_h_t_and_shows_human_legends() -> None:
    series = {
        "stack/input": np.linspace(1, 2, T),
        "stack/layer_0/c": np.r_[np.linspace(1, 2, T - 1), 0.0],
        "stack/layer_0/h": np.linspace(1, 3, T),
    }
    fig = plots.plot_grad_flow(series, "Gradient flow through time (lstm, step 3)")
    left, right = data_axes(fig)[:1] + data_axes(fig)[1:]
    assert left.get_ylabel() == r"$\|\partial L / \partial x_t\|$"
    assert r"\partial h_t" in right.get_ylabel() and r"\partial c_t" in right.get_ylabel()
    assert "s_t" not in left.get_ylabel() + right.get_ylabel()
    assert legend_texts(fig) == ["input $x_t$", "layer 1, $c_t$", "layer 1, $h_t$"]
    assert len(fig.legends) == 1  # one legend under both panels, over no line
    assert all(ax.get_xlabel() == "time step $t$" for ax in (left, right))
    assert left.get_yscale() == "log"
    assert fig._suptitle.get_text() == "Gradient flow through time (lstm, step 3)"
    assert fig.get_figwidth() == pytest.approx(PAGE_WIDTH_IN)


def test_comparison_figure_one_legend_of_runs_under_the_panels() -> None:
    runs = {
        "rnn": {
            "stack/input": np.geomspace(1e-6, 1, T),
            "stack/layer_0/h": np.geomspace(1e-7, 1, T),
        },
        "lstm": {
            "stack/input": np.ones(T),
            "stack/layer_0/c": np.r_[np.ones(T - 1), 0.0],
            "stack/layer_0/h": np.ones(T),
        },
    }
    fig = plots.plot_grad_flow_comparison(runs, title="Gradient flow through time, 2 runs")
    inputs, states = data_axes(fig)
    assert [ax.get_title() for ax in (inputs, states)] == ["input $x_t$", "layer 1, $h_t$"]
    assert r"\partial h_t" in states.get_ylabel() and r"h_{T-1}" in states.get_ylabel()
    assert legend_texts(fig) == ["rnn", "lstm"]  # one figure legend, no per-panel ones
    assert inputs.get_legend() is None and len(fig.legends) == 1
    # Normalised at the last step: every line ends at 1.
    for ax in (inputs, states):
        for line in ax.get_lines():
            assert line.get_ydata()[-1] == pytest.approx(1.0)


def test_attention_figure_has_a_title_and_the_inputs_on_its_time_axis() -> None:
    weights = np.full(T, 1 / T)
    inputs = RNG.uniform(size=(T, 2))
    fig = plots.plot_attention(weights, "Attention pooling weights\nlstm, step 3", inputs)
    top, bottom = data_axes(fig)
    assert fig._suptitle.get_text().startswith("Attention pooling weights")
    assert top.get_ylabel() == r"weight $\alpha_t$" and bottom.get_ylabel() == r"input $x_t$"
    assert legend_texts(fig) == ["$x_{t,1}$", "$x_{t,2}$"]
    assert top.get_shared_x_axes().joined(top, bottom)
    assert bottom.get_xlim() == pytest.approx((-0.5, T - 0.5))
    assert fig.get_figwidth() == pytest.approx(COLUMN_WIDTH_IN)


def test_saved_figures_keep_the_paper_width(tmp_path) -> None:
    """Titles and legends stay inside: the cropped PNG is no wider than the paper width."""
    from matplotlib.image import imread

    fig = plots.plot_attention(
        np.full(T, 1 / T), "A title\nlabel, step 3", RNG.uniform(size=(T, 2))
    )
    png, pdf = plots.save_figure(fig, tmp_path / "attention")
    assert pdf.stat().st_size > 0
    width_in = imread(png).shape[1] / 200
    assert width_in <= COLUMN_WIDTH_IN + 0.2, width_in  # + the 0.1 in padding of bbox "tight"


def test_summary_ratio_has_a_reference_even_where_the_last_norm_is_zero() -> None:
    summary = summarize(
        {
            "stack/layer_0/c": np.array([2.0, 1.5, 1.0, 0.0]),
            "stack/layer_0/backward/h": np.array([3.0, 1.0, 2.0, 0.5]),
            "stack/dead": np.zeros(4),
        }
    )
    c = summary["stack/layer_0/c"]
    assert c["last_step"] == 2 and c["ratio_first_last"] == pytest.approx(2.0)
    backward = summary["stack/layer_0/backward/h"]  # runs from t = 3 to t = 0
    assert backward["first_step"] == 3 and backward["last_step"] == 0
    assert backward["ratio_first_last"] == pytest.approx(0.5 / 3.0)
    assert summary["stack/dead"]["ratio_first_last"] is None
