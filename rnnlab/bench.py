"""Side-by-side throughput benchmark: rnnlab layers vs torch.nn.LSTM/GRU/RNN and flax.linen.RNN.

Every implementation of one configuration is built, compiled and then timed *round-robin* in the
same process (one step of each, repeated), so a noisy machine slows all of them alike and the
ratios stay meaningful. A training step is: forward over the whole sequence, MSE loss on all
outputs, backward, Adam update. Inference is the forward pass alone. Tokens/s = batch x time /
step seconds (median over repetitions, compile and warm-up excluded).

Achieved GFLOP/s counts only the matmuls (`2 G h (d + h)` per token per layer and direction for
the forward, three times that for a training step) and is compared with a large square matmul
measured in the same run.

Torch and Flax are optional: an implementation whose framework is missing is skipped (with a note;
one named in `--impls` is an error saying what to install).

Cells are `conf/cell/<name>.yaml` configs (`--cells lstm,gru`, `--configs rnn_tanh:...`), and the
reference each framework times for a cell is the one the cell declares (`torch_module`,
`flax_cell`; see `rnnlab.cells.base`); a cell without one is timed without that framework.
`agreement` checks that the timed models compute the same function with the same weights.

`--grid scan` (`scan_grid`) times the associative scan against the sequential one for every cell
that declares `linear_recurrence`, at t = 64..8192, next to a PyTorch minGRU written from the
paper's equations in both of its modes (`torch_mingru_class`), and ends the report with the
ratio, the memory of each and the length from which the associative scan wins
(`scan_crossover`). An implementation that cannot run a configuration is listed with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnnlab import argcheck
from rnnlab.errors import ConfigError, UserError, report_user_errors

MODES = ("train", "infer")


def cell_names() -> list[str]:
    """The cells the benchmark can run: every `conf/cell/<name>.yaml` (rnnlab's config directory,
    as `rnnlab-train` finds it; no list to keep here)."""
    from rnnlab.cli import cell_names as names

    return names()


@functools.cache
def make_cell(name: str, hidden: int) -> Any:
    """`conf/cell/<name>.yaml` with `hidden` units.

    Raises:
        ConfigError: an unknown cell, or settings the cell refuses at this size."""
    from hydra.utils import instantiate

    from rnnlab.cli import cell_config

    known = cell_names()
    if name not in known:
        raise ConfigError(f"unknown cell {name!r}; choose from: {', '.join(known)}")
    cfg = cell_config(name)
    cfg.hidden_size = hidden
    try:
        return instantiate(cfg)
    except Exception as err:  # noqa: BLE001 - the cell's own validation, e.g. proj_size >= hidden
        message = " ".join(str(err).split())
        raise ConfigError(f"cell {name!r} with hidden size {hidden}: {message}") from err


@functools.cache
def _matrix_sizes(cell: Any, input_size: int) -> int:
    """Entries of every weight matrix of one layer/direction (each is one product per token)."""
    import jax

    shapes = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), input_size))
    return sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes) if len(s.shape) == 2)


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmark shape.

    Attributes:
        cell: a cell config, `conf/cell/<cell>.yaml` ("lstm", "gru", "rnn_tanh", ...).
        batch, time, input, hidden: b, t, d, h.
        layers: stacked layers.
        directions: 1, or 2 for bidirectional (concatenated outputs).
    """

    cell: str
    batch: int
    time: int
    input: int
    hidden: int
    layers: int = 1
    directions: int = 1

    @property
    def name(self) -> str:
        kind = ("bi" if self.directions == 2 else "") + self.cell
        stack = f"{self.layers}x" if self.layers > 1 else ""
        return f"{stack}{kind} b{self.batch} t{self.time} d{self.input} h{self.hidden}"

    @property
    def tokens(self) -> int:
        return self.batch * self.time

    def make_cell(self) -> Any:
        """The rnnlab cell of this configuration."""
        return make_cell(self.cell, self.hidden)

    @property
    def output_width(self) -> int:
        """Width of the last layer's outputs (both directions)."""
        return self.make_cell().output_size * self.directions

    def flops(self, mode: str) -> float:
        """Matmul FLOPs of one step (forward: every weight matrix once per token, layer and
        direction, i.e. `2 G h (d + h)` for the input and recurrent projections of a cell with
        G gates; train: x3)."""
        cell = self.make_cell()
        total = 0.0
        size = self.input
        for _ in range(self.layers):
            total += self.directions * 2 * _matrix_sizes(cell, size) * self.tokens
            size = cell.output_size * self.directions
        return total * (3 if mode == "train" else 1)


BASE_SHAPES = ((32, 128, 64, 256), (32, 128, 64, 512), (8, 512, 64, 256), (128, 64, 128, 128))
VARIANTS = {"single": (1, 1), "2-layer": (2, 1), "bi": (1, 2)}


def default_grid(
    cells: Sequence[str] = ("lstm", "gru"), variants: Sequence[str] = tuple(VARIANTS)
) -> list[Config]:
    """The issue's four shapes for each cell (`conf/cell/` names), single-layer, 2-layer and
    bidirectional."""
    return [
        Config(cell, *shape, *VARIANTS[variant])
        for cell in cells
        for variant in variants
        for shape in BASE_SHAPES
    ]


def tiny_grid() -> list[Config]:
    """A grid that runs in seconds (for tests)."""
    return [Config("lstm", 2, 5, 3, 4), Config("gru", 2, 5, 3, 4, layers=2, directions=2)]


def scaling_grid(cell: str = "lstm") -> list[Config]:
    """Step time vs sequence length (64..2048) at b=32, and vs batch (8..256) at t=128."""
    times = [Config(cell, 32, t, 64, 256) for t in (64, 128, 256, 512, 1024, 2048)]
    batches = [Config(cell, b, 128, 64, 256) for b in (8, 16, 64, 128, 256)]
    return times + batches


def linear_recurrence_cells() -> list[str]:
    """The `conf/cell/` cells whose class declares `linear_recurrence` (`rnnlab.cells.base
    .declared`), i.e. those the associative scan runs; each built at its config's own size."""
    from rnnlab.cells.base import declared
    from rnnlab.cli import cell_config

    return [
        name
        for name in cell_names()
        if declared(make_cell(name, cell_config(name).hidden_size), "linear_recurrence")
    ]


TORCH_MINGRU = {"torch-mingru-seq": "sequential", "torch-mingru-log": "log"}
"""The PyTorch minGRU reference's implementations (`torch_mingru_class`): name -> its `scan`."""


SCAN_LENGTHS = (64, 256, 1024, 4096, 8192)
SCAN_SHAPE = (8, 64, 256)
"""The scan grid's batch, input width and hidden units: b 8 x t 8192 is 65k tokens a step, and
a training step of the associative scan there needs ~1.2 GiB (XLA's estimate)."""
SCAN_IMPLS = ("rnnlab-xla", "rnnlab-associative", *TORCH_MINGRU)
"""What the scan grid times by default: the sequential XLA scan (what `backend="auto"` runs for
these cells), the associative scan, and the PyTorch minGRU reference in both modes."""


def scan_grid(
    cells: Sequence[str] | None = None,
    lengths: Sequence[int] = SCAN_LENGTHS,
    batch: int = SCAN_SHAPE[0],
    input_size: int = SCAN_SHAPE[1],
    hidden: int = SCAN_SHAPE[2],
) -> list[Config]:
    """Associative vs sequential scan: each cell (default: `linear_recurrence_cells()`) at each
    sequence length, single layer; time with `SCAN_IMPLS`."""
    cells = linear_recurrence_cells() if cells is None else cells
    return [Config(cell, batch, t, input_size, hidden) for cell in cells for t in lengths]


# ----------------------------------------------------------------------------- machine


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pin_threads() -> int:
    """Use exactly the cores this process may run on, in every framework."""
    cores = available_cores()
    try:
        import torch

        torch.set_num_threads(cores)
        torch.set_num_interop_threads(1)
    except (ImportError, RuntimeError):
        pass
    return cores


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an `n^3` float32 matmul in each framework present, and under "jax-bf16" of
    JAX's with bfloat16 operands summed in float32 (the peak for the `BF16_IMPLS` rows)."""
    import jax
    import jax.numpy as jnp

    def best(run: Callable[[], Any]) -> float:
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return 2 * n**3 / min(times) / 1e9

    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    peaks = {"jax": best(lambda: mm(a, a).block_until_ready())}
    a16 = a.astype(jnp.bfloat16)
    mm16 = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    peaks["jax-bf16"] = best(lambda: mm16(a16, a16).block_until_ready())
    torch = _optional("torch")
    if torch is not None:
        device = torch_device()
        x = torch.ones(n, n, device=device)

        def torch_mm() -> None:
            x @ x
            _torch_sync(device)

        peaks["torch"] = best(torch_mm)
    return peaks


BF16_PEAK = "jax-bf16"
"""The `matmul_peak` entry the bfloat16 rows are compared with; the others take the largest
float32 one."""


def row_peak(peaks: dict[str, float], impl: str) -> float:
    """The matmul peak (GFLOP/s) an implementation's achieved GFLOP/s is a fraction of."""
    if impl in BF16_IMPLS:
        return peaks[BF16_PEAK]
    return max(v for k, v in peaks.items() if k != BF16_PEAK)


def torch_device() -> str:
    """Where torch runs: on CUDA when JAX runs on a GPU (and torch can), else on the CPU, so that
    both sides of every ratio use the same device."""
    import jax

    torch = _optional("torch")
    gpu = jax.default_backend() == "gpu" and torch is not None and torch.cuda.is_available()
    return "cuda" if gpu else "cpu"


def _torch_sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def devices() -> dict[str, Any]:
    """The devices the timings ran on, and the float32 matmul modes that decide GPU speed."""
    import jax

    info: dict[str, Any] = {
        "jax": f"{jax.default_backend()}: {jax.devices()[0].device_kind}",
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
    }
    torch = _optional("torch")
    if torch is not None:
        device = torch_device()
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        info["torch"] = f"{device}: {name}"
        if device == "cuda":
            info["torch_tf32"] = {
                "cudnn": torch.backends.cudnn.allow_tf32,
                "matmul": torch.backends.cuda.matmul.allow_tf32,
            }
    return info


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


# ----------------------------------------------------------------------------- implementations


@dataclasses.dataclass
class Built:
    """A ready-to-time step: `run()` executes one step and waits for it.

    Attributes:
        run: one step, waited for.
        compile_s: compile time (JAX), or None.
        memory: bytes by kind (`_memory` for a compiled JAX step: `memory_bytes`, `temp_bytes`,
            `peak_bytes`; `_saved_bytes` for a PyTorch training step: `temp_bytes`), or empty.
    """

    run: Callable[[], Any]
    compile_s: float | None = None
    memory: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """What a builder returns for a configuration its implementation cannot run, and why."""

    reason: str


def _data(config: Config, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((config.batch, config.time, config.input)).astype(np.float32)
    target = rng.standard_normal((config.batch, config.time, config.output_width))
    return xs, target.astype(np.float32)


def _jax_step(apply: Callable[[Any, Any], Any], params: Any, config: Config, mode: str) -> Built:
    """Jit a train or inference step of `apply(params, xs) -> ys [b, t, o]` and compile it."""
    import jax
    import jax.numpy as jnp
    import optax

    xs, target = (jnp.asarray(a) for a in _data(config))
    if mode == "infer":
        fn = jax.jit(apply)
        start = time.perf_counter()
        compiled = fn.lower(params, xs).compile()
        compile_s = time.perf_counter() - start
        return Built(lambda: compiled(params, xs).block_until_ready(), compile_s, _memory(compiled))

    optimizer = optax.adam(1e-3)

    def train_step(params, opt_state, xs, target):
        def loss_fn(p):
            return jnp.mean(jnp.square(apply(p, xs) - target))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, optimizer.init(params)]
    fn = jax.jit(train_step, donate_argnums=(0, 1))
    start = time.perf_counter()
    compiled = fn.lower(state[0], state[1], xs, target).compile()
    compile_s = time.perf_counter() - start

    def run() -> Any:
        state[0], state[1], loss = compiled(state[0], state[1], xs, target)
        return loss.block_until_ready()

    return Built(run, compile_s, _memory(compiled))


def _memory(compiled: Any) -> dict[str, int]:
    """XLA's own account of the compiled step's memory (`compiled.memory_analysis()`):

        memory_bytes  arguments + outputs + temporaries - aliased (donated) buffers
        temp_bytes    temporaries alone: the activations kept for the backward pass, the
                      scan's work buffers; what grows with the sequence length
        peak_bytes    XLA's `peak_memory_in_bytes`, where the backend reports one; on CPU
                      (jax 0.10) it follows the arguments and outputs and leaves the
                      temporaries out (80 MiB for a minGRU training step at b 8, t 8192,
                      h 256 whose temporaries are 528 MiB), so compare `temp_bytes`

    Empty where the backend reports nothing."""
    try:
        stats = compiled.memory_analysis()
        memory = {
            "memory_bytes": int(
                stats.argument_size_in_bytes
                + stats.output_size_in_bytes
                + stats.temp_size_in_bytes
                - stats.alias_size_in_bytes
            ),
            "temp_bytes": int(stats.temp_size_in_bytes),
        }
    except Exception:  # noqa: BLE001 - not every backend reports it
        return {}
    peak = getattr(stats, "peak_memory_in_bytes", None)
    if peak:
        memory["peak_bytes"] = int(peak)
    return memory


def rnnlab_model(config: Config, vjp: str = "custom", **options: Any) -> tuple[Any, Any]:
    """`(apply, params)`: rnnlab's `run_stack` for `config`, `apply(params, xs) -> ys [b, t, o]`."""
    import jax

    from rnnlab import recurrence

    cell = config.make_cell()
    bidirectional = config.directions == 2
    params = recurrence.init_stack(
        cell, jax.random.PRNGKey(0), config.input, config.layers, bidirectional
    )
    opts = recurrence.RecurrentOptions(vjp=vjp, **options)

    def apply(params, xs):
        return recurrence.run_stack(cell, params, xs, bidirectional=bidirectional, options=opts)[1]

    return apply, params


def build_rnnlab(config: Config, mode: str, vjp: str = "custom", **options: Any) -> Built:
    """rnnlab's `run_stack` (`vjp` custom or autodiff; `backend="auto"` by default, so the
    native CPU kernel where it is built, see `rnnlab.kernels`; "rnnlab-xla" forces the scan)."""
    apply, params = rnnlab_model(config, vjp, **options)
    return _jax_step(apply, params, config, mode)


def _build_parallel(config: Config, mode: str, backend: str) -> Built | Skipped:
    """rnnlab with a backend only some cells have (`associative`: linear recurrences;
    `log_space`: minGRU / minLSTM with the positive candidate; `chunkwise`: mLSTM; `cudnn`: a
    plain LSTM, on CUDA), skipped with the dispatch's own reason for any other cell."""
    import jax
    import jax.numpy as jnp

    from rnnlab.recurrence import backends
    from rnnlab.recurrence.step import StepAux

    cell = config.make_cell()
    params = cell.init(jax.random.PRNGKey(0), config.input)
    probe = jnp.zeros((1, 1, config.input), jnp.float32)
    request = backends.Request(cell, params, probe, None, None, StepAux(), None)
    reason = backends.BACKENDS[backend].unsupported(request)
    if reason is not None:
        return Skipped(reason)
    return build_rnnlab(config, mode, backend=backend)


def flax_model(config: Config) -> tuple[Any, Any] | None:
    """`(module, variables)`: `flax.linen.RNN` over the Flax cell the rnnlab cell declares
    (`flax_cell`: `OptimizedLSTMCell`, `GRUCell`, `SimpleCell`, ...), `Bidirectional` and
    stacked; the cell of layer l and direction d is named `layer{l}_{d}`. None when the cell
    declares no Flax equivalent."""
    import flax.linen as nn
    import jax

    from rnnlab.cells.base import declared

    reference = declared(config.make_cell(), "flax_cell")
    if reference is None:
        return None
    name, kwargs = reference
    cell_type = getattr(nn, name)

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, xs):
            for layer in range(config.layers):

                def rnn(direction, layer=layer):
                    scope = f"layer{layer}_{direction}"
                    return nn.RNN(cell_type(config.hidden, name=scope, **kwargs))

                if config.directions == 2:
                    xs = nn.Bidirectional(rnn("forward"), rnn("backward"))(xs)
                else:
                    xs = rnn("forward")(xs)
            return xs

    module = Stack()
    xs, _ = _data(config)
    return module, module.init(jax.random.PRNGKey(0), xs)


def build_flax(config: Config, mode: str) -> Built | Skipped:
    """`flax_model` timed (skipped when the cell has no Flax equivalent)."""
    made = flax_model(config)
    if made is None:
        return Skipped(f"{type(config.make_cell()).__name__} declares no flax_cell")
    module, params = made
    return _jax_step(module.apply, params, config, mode)


def torch_model(config: Config, device: str = "cpu") -> Any:
    """The `torch.nn` module the rnnlab cell declares (`torch_module`: `LSTM`, `GRU`, `RNN`
    with its options) for `config`, time-major, seeded; None when the cell has none."""
    import torch

    from rnnlab.cells.base import declared

    reference = declared(config.make_cell(), "torch_module")
    if reference is None:
        return None
    name, kwargs = reference
    torch.manual_seed(0)
    module = getattr(torch.nn, name)(
        config.input,
        config.hidden,
        num_layers=config.layers,
        bidirectional=config.directions == 2,
        **kwargs,
    )
    return module.to(device)


def build_torch(config: Config, mode: str, autocast: bool = False) -> Built | Skipped:
    """`torch_model` (time-major, its native layout), eager, Adam for training; on CUDA (cuDNN)
    when JAX runs on a GPU. Skipped when the cell has no PyTorch equivalent. `autocast`: the
    forward under `torch.autocast(dtype=torch.bfloat16)` (bfloat16 matmuls, float32 params),
    outputs cast back to float32 for the loss."""
    import torch

    device = torch_device()
    module = torch_model(config, device)
    if module is None:
        return Skipped(f"{type(config.make_cell()).__name__} declares no torch_module")
    xs, target = (
        torch.from_numpy(np.ascontiguousarray(a.swapaxes(0, 1))).to(device) for a in _data(config)
    )
    if not autocast:
        return _torch_step(lambda: module(xs)[0], module, target, mode, device)

    def forward() -> Any:
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            ys = module(xs)[0]
        return ys.float()

    return _torch_step(forward, module, target, mode, device)


def _torch_step(
    forward: Callable[[], Any], module: Any, target: Any, mode: str, device: str
) -> Built:
    """A train (MSE on all outputs, backward, Adam) or inference step of `forward() -> ys`, the
    outputs of `module`; a training step reports the bytes autograd saves for its backward."""
    import torch

    if mode == "infer":

        def run_infer() -> Any:
            with torch.no_grad():
                ys = forward()
            _torch_sync(device)
            return ys

        return Built(run_infer)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

    def run_train() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.mean(torch.square(forward() - target))
        loss.backward()
        optimizer.step()
        _torch_sync(device)
        return loss

    return Built(run_train, memory={"temp_bytes": _saved_bytes(forward)})


def _saved_bytes(forward: Callable[[], Any]) -> int:
    """Bytes of the distinct storages autograd saves for the backward pass of `forward()`: the
    PyTorch counterpart of XLA's temporaries of a training step (what grows with the length)."""
    import torch

    storages: dict[int, int] = {}

    def pack(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


# ----------------------------------------------------------------------------- minGRU in PyTorch


@functools.cache
def torch_mingru_class() -> type:
    """`TorchMinGRU`, minGRU written in PyTorch from Feng et al. 2024 ("Were RNNs All We
    Needed?", arXiv:2410.01201), Appendix B, in its two modes:

        sequential:  z_t = sigma(W_z x_t + b_z),  h~_t = g(W_h x_t + b_h),
                     h_t = (1 - z_t) * h_(t-1) + z_t * h~_t           (a Python loop over t)
        log:         log z_t = -softplus(-k_t),  log(1 - z_t) = -softplus(k_t)  (k = W_z x + b_z),
                     log h~_t = log_g(W_h x_t + b_h), and all h_t at once by Heinsen's (2023,
                     "Efficient Parallelization of a Ubiquitous Sequential Computation") log-space
                     scan: a* = cumsum(log(1 - z)), h = exp(a* + logcumsumexp(log b - a*))

    with the paper's `g(x) = x + 0.5` for x >= 0, `sigmoid(x)` below, and `log_g` its log. The
    input projections of the sequential mode are taken over all steps at once (the same
    products as the paper's per-step `linear_z(x_t)`, hoisted as rnnlab and torch.nn.GRU do), so
    the loop holds the recurrence alone. Batch-first `[b, t, d]` as in the paper; `h_0`
    `[b, 1, h]` (zeros when omitted; the log mode takes `log h_0`, so `h_0 >= 0`). Written
    here, not copied from the authors' code."""
    import torch
    import torch.nn.functional as F

    def g(x: Any) -> Any:
        return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))

    def log_g(x: Any) -> Any:
        return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))

    def parallel_scan_log(log_coeffs: Any, log_values: Any) -> Any:
        """`h_1..h_t` of `h_t = a_t h_(t-1) + b_t` from `log a: [b, t, h]` and
        `[log h_0, log b_1..log b_t]: [b, t + 1, h]`."""
        a_star = F.pad(torch.cumsum(log_coeffs, dim=1), (0, 0, 1, 0))
        log_h0_plus_b_star = torch.logcumsumexp(log_values - a_star, dim=1)
        return torch.exp(a_star + log_h0_plus_b_star)[:, 1:]

    class TorchMinGRU(torch.nn.Module):
        def __init__(self, input_size: int, hidden_size: int) -> None:
            super().__init__()
            self.linear_z = torch.nn.Linear(input_size, hidden_size)
            self.linear_h = torch.nn.Linear(input_size, hidden_size)

        def forward(self, x: Any, h_0: Any = None, scan: str = "sequential") -> Any:
            """`[b, t, h]` hidden states for `x: [b, t, d]`."""
            if h_0 is None:
                h_0 = x.new_zeros(x.shape[0], 1, self.linear_z.out_features)
            if scan == "log":
                k = self.linear_z(x)
                log_z = -F.softplus(-k)
                log_coeffs = -F.softplus(k)
                log_tilde_h = log_g(self.linear_h(x))
                log_values = torch.cat([torch.log(h_0), log_z + log_tilde_h], dim=1)
                return parallel_scan_log(log_coeffs, log_values)
            # unbind, not z[:, t]: one backward node for all steps (a slice's backward writes
            # a gradient the size of all of z, which makes the loop's backward O(t^2))
            zs = torch.sigmoid(self.linear_z(x)).unbind(dim=1)
            h_tildes = g(self.linear_h(x)).unbind(dim=1)
            h = h_0[:, 0]
            hs = []
            for z, h_tilde in zip(zs, h_tildes, strict=True):
                h = (1 - z) * h + z * h_tilde
                hs.append(h)
            return torch.stack(hs, dim=1)

    return TorchMinGRU


def torch_mingru_unsupported(config: Config, scan: str) -> str | None:
    """Why the PyTorch minGRU reference cannot stand for rnnlab at `config`, or None."""
    from rnnlab.cells.minimal import MinGRUCell

    cell = config.make_cell()
    if type(cell) is not MinGRUCell:
        return f"the PyTorch minGRU reference computes minGRU, not {type(cell).__name__}"
    if config.layers != 1 or config.directions != 1:
        return "the PyTorch minGRU reference is one unidirectional layer"
    if scan == "log" and not cell.positive_candidate:
        return "the log-space scan needs a positive candidate (positive_candidate=True)"
    return None


def torch_mingru_model(config: Config, device: str) -> Any:
    """The seeded `TorchMinGRU` of `config` on `device`."""
    import torch

    torch.manual_seed(0)
    return torch_mingru_class()(config.input, config.hidden).to(device)


def mingru_params_from_torch(module: Any) -> dict[str, np.ndarray]:
    """A `MinGRUCell`'s params (`w_ih: [2h, d]`, `b: [2h]`, gate order z, h~) from a
    `TorchMinGRU`."""
    z, h = module.linear_z, module.linear_h
    return {
        "w_ih": np.concatenate([z.weight.detach().cpu().numpy(), h.weight.detach().cpu().numpy()]),
        "b": np.concatenate([z.bias.detach().cpu().numpy(), h.bias.detach().cpu().numpy()]),
    }


def build_torch_mingru(config: Config, mode: str, scan: str) -> Built | Skipped:
    """`TorchMinGRU` with `scan` ("sequential" or "log"), eager, batch-first, timed like
    `build_torch`; skipped for any cell but minGRU."""
    import torch

    reason = torch_mingru_unsupported(config, scan)
    if reason is not None:
        return Skipped(reason)
    device = torch_device()
    module = torch_mingru_model(config, device)
    xs, target = (torch.from_numpy(a).to(device) for a in _data(config))
    return _torch_step(lambda: module(xs, scan=scan), module, target, mode, device)


IMPLEMENTATIONS: dict[str, tuple[str | None, Callable[[Config, str], Built | Skipped]]] = {
    "rnnlab": (None, build_rnnlab),
    "rnnlab-xla": (None, lambda c, m: build_rnnlab(c, m, backend="xla")),
    **{
        f"rnnlab-{backend.replace('_', '-')}": (
            None,
            functools.partial(_build_parallel, backend=backend),
        )
        for backend in ("cudnn", "associative", "log_space", "chunkwise")
    },
    "rnnlab-bf16": (None, lambda c, m: build_rnnlab(c, m, matmul_dtype="bfloat16")),
    "rnnlab-autodiff": (None, lambda c, m: build_rnnlab(c, m, vjp="autodiff")),
    "rnnlab-per-step": (None, lambda c, m: build_rnnlab(c, m, input_projection="per_step")),
    "flax": ("flax", build_flax),
    "torch": ("torch", build_torch),
    "torch-bf16": ("torch", functools.partial(build_torch, autocast=True)),
    **{
        name: ("torch", functools.partial(build_torch_mingru, scan=scan))
        for name, scan in TORCH_MINGRU.items()
    },
}
"""name -> (optional framework it needs, builder; a builder returns `Skipped(reason)` for a
config it cannot run, e.g. cuDNN for GRU, torch and flax for a cell that declares no equivalent
there, the associative scan for a cell that is not a linear recurrence)."""

BF16_IMPLS = ("rnnlab-bf16", "torch-bf16")
"""Implementations whose matmuls take bfloat16 operands (rnnlab's `matmul_dtype="bfloat16"`,
PyTorch under `torch.autocast(dtype=torch.bfloat16)`); float32 parameters and loss."""

REFERENCES = ("torch", "flax", *TORCH_MINGRU)
"""What `agreement` compares rnnlab with."""

RATIO_BASES = ("torch", "flax", "rnnlab-xla", "torch-bf16")
"""Every row's tokens/s is also given as a ratio to each of these (`vs_<name>`) in its group."""


def agreement(config: Config, references: Sequence[str] = REFERENCES) -> dict[str, float]:
    """Largest |difference| between each reference's outputs (`torch_model`, `flax_model`: the
    models the benchmark times) and rnnlab's (`rnnlab_model`, `backend="auto"`) with the
    reference's weights copied in through `rnnlab.interop`, on the benchmark's inputs for
    `config`. References whose framework is missing or that have no such cell are left out.
    The PyTorch minGRU reference (`TorchMinGRU`) is compared in both its modes.

    Flax's zero biases are perturbed first (all its params + 0.1), so the bias mapping counts."""
    import jax
    import jax.numpy as jnp

    from rnnlab import interop

    cell = config.make_cell()
    apply, _ = rnnlab_model(config)
    xs, _ = _data(config)
    bidirectional = config.directions == 2
    found: dict[str, float] = {}
    if "flax" in references and _framework_present("flax"):
        made = flax_model(config)
        if made is not None:
            module, variables = made
            variables = jax.tree_util.tree_map(lambda p: p + 0.1, variables)
            expected = module.apply(variables, jnp.asarray(xs))
            cells = variables["params"]
            layers = []
            for layer in range(config.layers):
                by_dir = {
                    d: interop.params_from_flax(cell, cells[f"layer{layer}_{d}"])
                    for d in (("forward", "backward") if bidirectional else ("forward",))
                }
                layers.append(by_dir if bidirectional else by_dir["forward"])
            found["flax"] = float(jnp.max(jnp.abs(apply(layers, jnp.asarray(xs)) - expected)))
    if "torch" in references and _framework_present("torch"):
        import torch

        module = torch_model(config, "cpu")
        if module is not None:
            with torch.no_grad():
                expected = module(torch.from_numpy(np.ascontiguousarray(xs.swapaxes(0, 1))))[0]
            expected = expected.numpy().swapaxes(0, 1)
            layers = interop.stack_from_torch(
                cell, module.state_dict(), config.layers, bidirectional
            )
            found["torch"] = float(np.max(np.abs(np.asarray(apply(layers, xs)) - expected)))
    for name, scan in TORCH_MINGRU.items():
        if name in references and _framework_present("torch"):
            if torch_mingru_unsupported(config, scan) is None:
                import torch

                module = torch_mingru_model(config, "cpu")
                with torch.no_grad():
                    expected = module(torch.from_numpy(xs), scan=scan).numpy()
                layers = [mingru_params_from_torch(module)]
                found[name] = float(np.max(np.abs(np.asarray(apply(layers, xs)) - expected)))
    return found


# ----------------------------------------------------------------------------- timing


SETTLE_S = 0.05
"""Untimed pause before each timed step. Worker threads spin for a while after a parallel
region before they sleep (PyTorch's libgomp, XLA's pool), and on a 2-core machine they take a
core from the step timed next: back to back, the PyTorch minGRU's training step at b 8, t 64 ran
at 1-2k tokens/s after rnnlab's, and at 47-63k with a 10-50 ms pause."""


def time_round_robin(
    built: dict[str, Built],
    repeats: int,
    warmup: int,
    min_seconds: float = 0.0,
    settle_s: float = SETTLE_S,
) -> dict[str, list[float]]:
    """Seconds per step of each implementation, interleaved: one step of each per round, each
    after an untimed `settle_s` pause (`SETTLE_S`).

    Rounds go on past `repeats` until every implementation has run `min_seconds` in total."""
    for item in built.values():
        for _ in range(warmup):
            item.run()
    times: dict[str, list[float]] = {name: [] for name in built}
    rounds = 0
    while rounds < repeats or min(sum(v) for v in times.values()) < min_seconds:
        for name, item in built.items():
            if settle_s:
                time.sleep(settle_s)
            start = time.perf_counter()
            item.run()
            times[name].append(time.perf_counter() - start)
        rounds += 1
        if rounds >= 10 * max(repeats, 1):
            break
    return times


def benchmark(
    configs: Sequence[Config],
    implementations: Sequence[str] = tuple(IMPLEMENTATIONS),
    modes: Sequence[str] = MODES,
    repeats: int = 10,
    warmup: int = 2,
    min_seconds: float = 0.0,
    peak_size: int = 2048,
    settle_s: float = SETTLE_S,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the grid; returns a JSON-serialisable dict with machine info, one row per
    (config, mode, implementation) timed, and under `skipped` one entry per (config,
    implementation) that could not run it, with the reason."""
    cores = pin_threads()
    load_before = _load()
    present = [name for name in implementations if _framework_present(IMPLEMENTATIONS[name][0])]
    peaks = matmul_peak(peak_size)
    rows: list[dict[str, Any]] = []
    skipped: dict[tuple[str, str], str] = {}
    for config in configs:
        for mode in modes:
            built = {}
            for name in present:
                step = IMPLEMENTATIONS[name][1](config, mode)
                if isinstance(step, Skipped):
                    skipped.setdefault((config.name, name), step.reason)
                else:
                    built[name] = step
            if not built:
                continue
            times = time_round_robin(built, repeats, warmup, min_seconds, settle_s)
            for name, seconds in times.items():
                median = statistics.median(seconds)
                rows.append(
                    {
                        "config": dataclasses.asdict(config),
                        "name": config.name,
                        "mode": mode,
                        "impl": name,
                        "median_s": median,
                        "min_s": min(seconds),
                        "max_s": max(seconds),
                        "iqr_s": _iqr(seconds),
                        "repeats": len(seconds),
                        "tokens_per_s": config.tokens / median,
                        "gflops": config.flops(mode) / median / 1e9,
                        "peak_fraction": config.flops(mode) / median / 1e9 / row_peak(peaks, name),
                        "compile_s": built[name].compile_s,
                        "memory_bytes": built[name].memory.get("memory_bytes"),
                        "temp_bytes": built[name].memory.get("temp_bytes"),
                        "peak_bytes": built[name].memory.get("peak_bytes"),
                    }
                )
            _add_ratios(rows, config.name, mode)
            if log is not None:
                log(_one_line(rows, config.name, mode))
            del built
            gc.collect()
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cores": cores,
            "cpu": cpu_summary(),
            "devices": devices(),
            "matmul_peak_gflops": peaks,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "load_average": {"before": load_before, "after": _load()},
            "versions": _versions(),
        },
        "settings": {
            "repeats": repeats,
            "warmup": warmup,
            "min_seconds": min_seconds,
            "settle_s": settle_s,
        },
        "rows": rows,
        "skipped": [
            {"name": name, "impl": impl, "reason": reason}
            for (name, impl), reason in skipped.items()
        ],
    }


LSCPU_FIELDS = (
    "Model name",
    "CPU(s)",
    "Thread(s) per core",
    "Core(s) per socket",
    "Socket(s)",
    "L2 cache",
    "L3 cache",
    "Hypervisor vendor",
)
"""What `cpu_summary` keeps of `lscpu`: the processor, how many cores, caches, a VM or not."""


def cpu_summary() -> dict[str, str]:
    """The `LSCPU_FIELDS` of `lscpu` (Linux), plus whether the CPU has AVX-512; on a machine
    without `lscpu`, `platform.processor()` as the model name."""
    import subprocess

    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"Model name": platform.processor() or platform.machine()}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    summary = {key: fields[key] for key in LSCPU_FIELDS if key in fields}
    if "Flags" in fields:
        summary["AVX-512"] = "yes" if "avx512f" in fields["Flags"].split() else "no"
    return summary


def _load() -> list[float] | None:
    """The 1/5/15-minute load average: other processes on the machine skew every timing."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _framework_present(name: str | None) -> bool:
    return name is None or _optional(name) is not None


def _iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def _add_ratios(rows: list[dict[str, Any]], name: str, mode: str) -> None:
    group = [r for r in rows if r["name"] == name and r["mode"] == mode]
    by_impl = {r["impl"]: r for r in group}
    for row in group:
        for ref in RATIO_BASES:
            if ref in by_impl:
                row[f"vs_{ref}"] = row["tokens_per_s"] / by_impl[ref]["tokens_per_s"]


def _one_line(rows: list[dict[str, Any]], name: str, mode: str) -> str:
    parts = [f"{name:<28} {mode:<5}"]
    for row in rows:
        if row["name"] == name and row["mode"] == mode:
            ratios = [
                f"{row[f'vs_{ref}']:.2f}x {ref}"
                for ref in RATIO_BASES
                if ref != row["impl"] and f"vs_{ref}" in row
            ]
            ratio = f" ({', '.join(ratios)})" if ratios else ""
            parts.append(f"{row['impl']}={row['tokens_per_s'] / 1e3:.1f}k{ratio}")
    return "  ".join(parts)


def _versions() -> dict[str, str]:
    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "torch", "numpy"):
        module = _optional(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    return versions


# ----------------------------------------------------------------------------- reports


def markdown(result: dict[str, Any]) -> str:
    """A Markdown report: machine header, one table row per (config, mode, implementation),
    what was not timed and why, and (`scan_table`) the associative vs sequential scan summary
    where both were timed."""
    machine = result["machine"]
    rows = result["rows"]
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine["matmul_peak_gflops"].items())
    lines = [
        f"Machine: {machine['platform']}, {machine['cores']} cores, "
        f"load average {machine.get('load_average')}; "
        f"2048^3 matmul peak GFLOP/s: {peaks}; XLA_FLAGS={machine['xla_flags']!r}",
    ]
    if machine.get("cpu"):
        lines.append("CPU (lscpu): " + "; ".join(f"{k}: {v}" for k, v in machine["cpu"].items()))
    ratios = [ref for ref in RATIO_BASES if any(f"vs_{ref}" in row for row in rows)]
    lines += [
        f"Devices: {machine.get('devices')}",
        f"Versions: {machine['versions']}",
        f"Settings: {result['settings']}",
        "",
        "| config | mode | impl | tok/s | "
        + "".join(f"vs {ref} | " for ref in ratios)
        + "spread (IQR/median) | GFLOP/s | % peak | compile s | memory MiB | temp MiB |",
        "| --- | --- | --- | ---: |" + " ---: |" * (len(ratios) + 6),
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['mode']} | {row['impl']} "
            f"| {row['tokens_per_s'] / 1e3:.1f}k "
            + "".join(f"| {_fmt(row.get(f'vs_{ref}'), '{:.2f}x')} " for ref in ratios)
            + f"| {100 * row['iqr_s'] / row['median_s']:.0f}% "
            f"| {row['gflops']:.1f} | {100 * row['peak_fraction']:.0f}% "
            f"| {_fmt(row['compile_s'], '{:.2f}')} "
            f"| {_mib(row.get('memory_bytes'))} | {_mib(row.get('temp_bytes'))} |"
        )
    lines += [
        "",
        f"% peak: of the largest float32 matmul peak; the {', '.join(BF16_IMPLS)} rows of the "
        f"{BF16_PEAK} peak (bfloat16 operands, float32 sums).",
        "memory MiB: XLA's arguments + outputs + temporaries of the compiled step, less donated "
        "buffers; temp MiB: its temporaries alone (for a PyTorch training step: the tensors "
        "autograd saved for the backward pass).",
    ]
    skipped: dict[tuple[str, str], list[str]] = {}
    for item in result.get("skipped", []):
        skipped.setdefault((item["impl"], item["reason"]), []).append(item["name"])
    if skipped:
        lines += ["", "Not timed:", ""]
        lines += [
            f"- {impl} for {', '.join(names)}: {reason}"
            for (impl, reason), names in skipped.items()
        ]
    scan = scan_table(result)
    if scan:
        lines += ["", "Associative vs sequential scan:", "", scan]
    return "\n".join(lines) + "\n"


def _mib(value: int | None) -> str:
    return _fmt(value and value / 2**20, "{:.1f}")


SCAN_COLUMNS = {
    "rnnlab-xla": "sequential",
    "rnnlab-associative": "associative",
    "rnnlab-log-space": "log-space",
    "torch-mingru-seq": "torch sequential",
    "torch-mingru-log": "torch log-space",
}
"""The implementations `scan_table` sets side by side, and their column titles."""


def scan_frame(result: dict[str, Any]) -> Any:
    """`result`'s rows of `SCAN_COLUMNS` implementations as a DataFrame, one row per
    (config, mode), a `tok/s <title>` and `temp <title>` column per implementation, and
    `ratio` = associative / sequential tokens/s; None unless both scans were timed."""
    import pandas as pd

    rows = [r for r in result["rows"] if r["impl"] in SCAN_COLUMNS]
    if not {"rnnlab-xla", "rnnlab-associative"} <= {r["impl"] for r in rows}:
        return None
    frame = pd.DataFrame(
        {
            "name": r["name"],
            "shape": r["name"].replace(f" t{r['config']['time']} ", " "),
            "time": r["config"]["time"],
            "mode": r["mode"],
            "impl": SCAN_COLUMNS[r["impl"]],
            "tok/s": r["tokens_per_s"],
            "temp": r.get("temp_bytes"),
        }
        for r in rows
    )
    wide = frame.pivot_table(
        index=["shape", "name", "time", "mode"],
        columns="impl",
        values=["tok/s", "temp"],
        aggfunc="first",
        dropna=False,
    )
    wide.columns = [f"{value} {impl}" for value, impl in wide.columns]
    wide = wide.reset_index().sort_values(
        ["shape", "mode", "time"],
        key=lambda column: column.map(MODES.index) if column.name == "mode" else column,
        kind="stable",
    )
    wide["ratio"] = wide["tok/s associative"] / wide["tok/s sequential"]
    return wide.dropna(subset=["ratio"]).reset_index(drop=True)


def scan_crossover(result: dict[str, Any]) -> dict[tuple[str, str], int | None]:
    """For each (shape, mode) of `scan_frame` (shape: the config's name less its length, e.g.
    "mingru b8 d64 h256"): the shortest sequence length from which the
    associative scan was faster than the sequential one at every longer length measured, or
    None where it was not faster at the longest (the measurement `backend="auto"` could pick
    by)."""
    frame = scan_frame(result)
    found: dict[tuple[str, str], int | None] = {}
    if frame is None:
        return found
    for (shape, mode), group in frame.groupby(["shape", "mode"], sort=False):
        wins = group.sort_values("time")
        since = None
        for time_, ratio in zip(wins["time"], wins["ratio"], strict=True):
            since = (since or int(time_)) if ratio > 1.0 else None
        found[(shape, mode)] = since
    return found


def scan_table(result: dict[str, Any]) -> str:
    """The associative vs sequential scan summary: tokens/s of each, their ratio, the PyTorch
    minGRU reference's tokens/s where timed, and temporaries (XLA's; autograd's saved tensors
    for PyTorch training), then `scan_crossover`; empty unless both scans were timed."""
    frame = scan_frame(result)
    if frame is None:
        return ""
    present = [t for t in SCAN_COLUMNS.values() if f"tok/s {t}" in frame]
    lines = [
        "| config | mode | "
        + "".join(f"{t} tok/s | " for t in present)
        + "associative / sequential | "
        + " | ".join(f"{t} temp MiB" for t in present)
        + " |",
        "| --- | --- |" + " ---: |" * (2 * len(present) + 1),
    ]
    for _, row in frame.iterrows():
        speeds = "".join(f"| {_fmt(row[f'tok/s {t}'] / 1e3, '{:.1f}k')} " for t in present)
        temps = "".join(f"| {_mib(_int(row.get(f'temp {t}')))} " for t in present)
        lines.append(f"| {row['name']} | {row['mode']} {speeds}| {row['ratio']:.2f}x {temps}|")
    lines += ["", "The associative scan is faster (ratio > 1) from this length on:", ""]
    lines += [
        f"- {shape}, {mode}: {'never, up to the longest measured' if t is None else f't >= {t}'}"
        for (shape, mode), t in scan_crossover(result).items()
    ]
    return "\n".join(lines)


def _int(value: Any) -> int | None:
    return None if value is None or value != value else int(value)


def _fmt(value: float | None, pattern: str) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (pattern.format(value))
    )


def write(result: dict[str, Any], out_dir: str, stem: str = "benchmark") -> tuple[str, str]:
    """Write `<stem>.json` and `<stem>.md` under `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{stem}.json")
    md_path = os.path.join(out_dir, f"{stem}.md")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    with open(md_path, "w") as f:
        f.write(markdown(result))
    return json_path, md_path


# ----------------------------------------------------------------------------- command line


PROG = "rnnlab-benchmark"
GRID_FORMAT = "cell:batch,time,input,hidden[,layers[,directions]], e.g. lstm:32,128,64,256"
PIP_NAMES = {"torch": "torch", "flax": "flax"}
"""The package that installs each optional framework."""


def parse_grid(text: str) -> list[Config]:
    """`cell:b,t,d,h[,layers[,directions]]` items separated by `;`, e.g. `lstm:32,128,64,256`.

    Raises:
        ConfigError (a ValueError): an item that is not of that form, an unknown cell (not a
            `conf/cell/<name>.yaml`) or one it cannot build at that hidden size, a size below 1,
            directions other than 1 or 2, or no item.
    """
    known = cell_names()
    configs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        cell, _, dims = item.partition(":")
        cell = cell.strip()
        where = f"--configs item {item!r}"
        if cell not in known:
            raise ConfigError(f"{where}: unknown cell {cell!r}; choose from: {', '.join(known)}")
        try:
            sizes = [int(v) for v in dims.split(",")]
        except ValueError:
            raise ConfigError(f"{where}: sizes must be integers: {GRID_FORMAT}") from None
        if not 4 <= len(sizes) <= 6:
            raise ConfigError(f"{where}: give 4 to 6 sizes, got {len(sizes)}: {GRID_FORMAT}")
        if min(sizes) < 1:
            raise ConfigError(f"{where}: every size must be >= 1, got {min(sizes)}")
        if len(sizes) == 6 and sizes[5] not in (1, 2):
            raise ConfigError(f"{where}: directions must be 1 or 2, got {sizes[5]}")
        try:
            make_cell(cell, sizes[3])
        except ConfigError as err:  # e.g. a projection at least as wide as the hidden size
            raise ConfigError(f"{where}: {err}") from None
        configs.append(Config(cell, *sizes))
    if not configs:
        raise ConfigError(f"--configs holds no configuration: {GRID_FORMAT}")
    return configs


def _cells_arg(text: str) -> list[str]:
    """`--cells`: names out of `conf/cell/`."""
    try:
        known = cell_names()
    except UserError as err:  # no conf/ directory to find the cells in
        raise argparse.ArgumentTypeError(str(err)) from None
    return argcheck.name_list(known, "cell")(text)


def _grid_arg(text: str) -> list[Config]:
    try:
        return parse_grid(text)
    except (ValueError, UserError) as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--configs ")) from None


def _lengths_arg(text: str) -> list[int]:
    """`--lengths`: comma-separated sequence lengths, each >= 1."""
    parse = argcheck.int_at_least(1)
    lengths = [parse(part.strip()) for part in text.split(",") if part.strip()]
    if not lengths:
        raise argparse.ArgumentTypeError("give at least one sequence length, e.g. 64,256")
    return lengths


def _stem_arg(text: str) -> str:
    if not text or any(sep and sep in text for sep in (os.sep, os.altsep)):
        raise argparse.ArgumentTypeError(
            f"must be a file name without a directory, got {text!r}; give the folder with --out"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The `rnnlab-benchmark` command line (every value is checked as it is parsed)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--grid",
        choices=("default", "tiny", "scaling", "scan"),
        default="default",
        help="scan: associative vs sequential scan of the linear-recurrence cells (conf/cell/ "
        "cells declaring linear_recurrence) at --lengths, b,d,h = "
        + ",".join(map(str, SCAN_SHAPE))
        + ", with "
        + ",".join(SCAN_IMPLS),
    )
    parser.add_argument("--scaling", action="store_true", help="same as --grid scaling")
    parser.add_argument(
        "--configs",
        type=_grid_arg,
        help="explicit grid, e.g. 'lstm:32,128,64,256;gru:8,512,64,256,2,2'",
    )
    parser.add_argument(
        "--peak-size",
        type=argcheck.int_at_least(1),
        default=2048,
        help="n of the n^3 peak matmul",
    )
    parser.add_argument(
        "--cells",
        type=_cells_arg,
        help="cells of the default/scaling/scan grid (conf/cell/<name>.yaml; default: lstm,gru, "
        "and for the scan grid the cells declaring linear_recurrence)",
    )
    parser.add_argument(
        "--lengths",
        type=_lengths_arg,
        default=",".join(map(str, SCAN_LENGTHS)),
        help="sequence lengths of the scan grid",
    )
    parser.add_argument(
        "--variants",
        type=argcheck.name_list(tuple(VARIANTS), "variant"),
        default=",".join(VARIANTS),
        help="single,2-layer,bi",
    )
    parser.add_argument(
        "--impls",
        type=argcheck.name_list(tuple(IMPLEMENTATIONS), "implementation"),
        help=f"implementations (default: {','.join(IMPLEMENTATIONS)}, those whose framework is "
        "installed)",
    )
    parser.add_argument("--modes", type=argcheck.name_list(MODES, "mode"), default=",".join(MODES))
    parser.add_argument("--repeats", type=argcheck.int_at_least(1), default=10)
    parser.add_argument("--warmup", type=argcheck.int_at_least(0), default=2)
    parser.add_argument("--min-seconds", type=argcheck.float_at_least(0.0), default=0.0)
    parser.add_argument(
        "--settle-ms",
        type=argcheck.float_at_least(0.0),
        default=SETTLE_S * 1e3,
        help="untimed pause before each timed step, so one framework's spinning threads do not "
        "slow the next one's step",
    )
    parser.add_argument("--out", type=argcheck.output_dir, default="benchmark_results")
    parser.add_argument(
        "--stem", type=_stem_arg, default=None, help="output file stem (default: the grid name)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error in your input"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rnnlab-benchmark` and `scripts/benchmark.py`; writes JSON and Markdown.

    A mistake in the arguments (an unknown cell or implementation, a size or count below its
    minimum, an output path that cannot be written, an implementation asked for whose framework
    is not installed) is one line on stderr and exit status 2, before anything is timed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return report_user_errors(PROG, _main, args, argv, debug=args.debug)


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    grid = "scaling" if args.scaling else args.grid
    scan = grid == "scan" and not args.configs
    impls = args.impls or list(SCAN_IMPLS if scan else IMPLEMENTATIONS)
    missing: dict[str, list[str]] = {}
    for name in impls:
        framework = IMPLEMENTATIONS[name][0]
        if not _framework_present(framework):
            missing.setdefault(str(framework), []).append(name)
    for framework, names in missing.items():
        install = f"pip install {PIP_NAMES.get(framework, framework)}"
        if args.impls is not None:
            raise UserError(
                f"--impls {','.join(names)} needs {framework}, which is not installed: "
                f"{install}, or leave {','.join(names)} out of --impls"
            )
        for name in names:
            print(
                f"{PROG}: note: {framework} is not installed, so {name} is skipped "
                f"({install} to include it)",
                file=sys.stderr,
            )

    cells = args.cells or ["lstm", "gru"]
    if args.configs:
        configs, grid = args.configs, "custom"
    elif grid == "tiny":
        configs = tiny_grid()
    elif grid == "scaling":
        configs = [c for cell in cells for c in scaling_grid(cell)]
    elif grid == "scan":
        configs = scan_grid(args.cells, args.lengths)
    else:
        configs = default_grid(cells, args.variants)
    stem = args.stem or grid
    for ext in ("json", "md"):
        path = args.out / f"{stem}.{ext}"
        if path.is_dir():
            raise UserError(
                f"{path} is a directory, so the report cannot be written there; "
                "give another --stem or --out"
            )
    result = benchmark(
        configs,
        implementations=impls,
        modes=args.modes,
        repeats=args.repeats,
        warmup=args.warmup,
        min_seconds=args.min_seconds,
        settle_s=args.settle_ms / 1e3,
        peak_size=args.peak_size,
    )
    result["command"] = " ".join(["rnnlab-benchmark", *argv])
    json_path, md_path = write(result, str(args.out), stem)
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return 0
