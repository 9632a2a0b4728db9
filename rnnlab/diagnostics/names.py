"""Human names for what the diagnostics compute: legends, titles, console lines and TensorBoard
tags read like the paper's equations, never like module paths.

    series_label("stack/layer_0/h")          -> "layer 1, $h_t$"      (plain=True: "layer 1, h_t")
    series_label("stack/input")              -> "input $x_t$"
    layer_label("encoder/layer_1/backward")  -> "encoder layer 2 (backward)"
    ordered_gates(["update", "candidate", "reset"]) -> ["reset", "update", "candidate"]
    gate_label("candidate", ["reset", ...])  -> "candidate $n_t$"    (GRU: n; LSTM: g)
    attention_label("attention_weights")     -> "attention pooling"

Layers are numbered from 1 as in papers (the params and logs name them `layer_0`, ...); the
stack of a one-stack model (`stack`) is left out, a Seq2Seq model's `encoder`/`decoder` is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

LSTM_GATES = ("input", "forget", "candidate", "output")
"""The LSTM's gates in the order of its equations (Hochreiter & Schmidhuber 1997; Gers et al.
2000): `i_t, f_t, g_t, o_t`."""
GRU_GATES = ("reset", "update", "candidate")
"""The GRU's gates in the order of its equations (Cho et al. 2014): `r_t, z_t, n_t`."""
GATE_LETTERS = {"input": "i", "forget": "f", "output": "o", "reset": "r", "update": "z"}
STATE_NAMES = {"h": "hidden state", "c": "cell state", "y": "output"}
DEFAULT_STACK = "stack"


def _math(symbol: str, plain: bool) -> str:
    return symbol if plain else f"${symbol}$"


def _candidate_letter(gates: Iterable[str]) -> str:
    """`n` for the GRU (its candidate is `n_t`), `g` for the LSTM and anything else."""
    return "n" if "reset" in set(gates) else "g"


def ordered_gates(names: Iterable[str]) -> list[str]:
    """Gate names in the order of the cell's equations (LSTM `i f g o`, GRU `r z n`), whatever
    order they come in (a jitted dict comes back sorted by key); other names keep theirs, after."""
    names = list(names)
    order = GRU_GATES if "reset" in names else LSTM_GATES
    known = [g for g in order if g in names]
    return known + [n for n in names if n not in known]


def gate_label(name: str, gates: Iterable[str] = (), plain: bool = False) -> str:
    """`forget $f_t$`, `candidate $n_t$` (GRU) / `candidate $g_t$` (LSTM); a state leaf:
    `cell state $c_t$`; any other name as it is.

    Args:
        name: a gate or carry-leaf name of `traces.gate_trace`.
        gates: every gate name of the cell (tells the GRU's candidate from the LSTM's).
        plain: `f_t` instead of mathtext `$f_t$` (console, TensorBoard).
    """
    if name == "candidate":
        return f"candidate {_math(_candidate_letter(gates) + '_t', plain)}"
    if name in GATE_LETTERS:
        return f"{name} {_math(GATE_LETTERS[name] + '_t', plain)}"
    if name in STATE_NAMES:
        return f"{STATE_NAMES[name]} {_math(name + '_t', plain)}"
    return name


def layer_label(path: str) -> str:
    """`stack/layer_0` -> `layer 1`; `stack/layer_0/backward` -> `layer 1 (backward)`;
    `encoder/layer_1` -> `encoder layer 2`; a path without a layer part stays as it is."""
    parts = path.split("/")
    words = []
    for part in parts:
        if part.startswith("layer_") and part[6:].isdigit():
            words.append(f"layer {int(part[6:]) + 1}")
        elif part == "backward":
            words.append("(backward)")
        elif part != DEFAULT_STACK:
            words.append(part.replace("_", " "))
    return " ".join(words) or path


def series_label(name: str, plain: bool = False) -> str:
    """A gradient-flow series (`gradflow.GradFlow` key) as a legend entry: `input $x_t$`,
    `layer 1, $h_t$`, `layer 1 (backward), $c_t$`, `encoder layer 1, $h_t$`; `cell_grad_flow`'s
    `x`/`h`/`c` as `input $x_t$`/`$h_t$`/`$c_t$`."""
    *path, leaf = name.split("/")
    if leaf in ("input", "x"):
        where = layer_label("/".join(path)) if path and path != [DEFAULT_STACK] else ""
        return f"{where + ' ' if where else ''}input {_math('x_t', plain)}"
    symbol = _math(f"{leaf}_t", plain)
    return f"{layer_label('/'.join(path))}, {symbol}" if path else symbol


def is_input_series(name: str) -> bool:
    """Whether a gradient-flow series is `||dL/dx_t||` (a stack's input) rather than a carry."""
    leaf = name.split("/")[-1]
    return leaf in ("input", "x")


ATTENTION_NAMES = {
    "attention_weights": "attention pooling",
    "self_attention_weights": "self-attention",
}


def attention_label(name: str) -> str:
    """A sown attention name as a title: `attention_weights` -> `attention pooling`,
    `decoder_cell/attention_weights` -> `decoder cross-attention`, `self_attention_weights` ->
    `self-attention`."""
    *path, leaf = name.split("/")
    what = ATTENTION_NAMES.get(leaf, leaf.replace("_", " "))
    if path:
        where = " ".join(p.replace("_cell", "").replace("_", " ") for p in path)
        if leaf == "attention_weights":
            what = "cross-attention"
        return f"{where} {what}"
    return what


def slug(text: str) -> str:
    """A file- and tag-safe name: `layer 1 (backward)` -> `layer_1_backward`."""
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in text)
    while "__" in safe:
        safe = safe.replace("__", "_")
    return safe.strip("_")
