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
    """GFLOP/s of an `n^3` float32 matmul in each framework present."""
    import jax
    import jax.numpy as jnp

    peaks = {}
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    peaks["jax"] = 2 * n**3 / min(times) / 1e9
    torch = _optional("torch")
    if torch is not None:
        device = torch_device()
        x = torch.ones(n, n, device=device)
        x @ x
        _torch_sync(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x @ x
            _torch_sync(device)
            times.append(time.perf_counter() - start)
        peaks["torch"] = 2 * n**3 / min(times) / 1e9
    return peaks


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
    """A ready-to-time step: `run()` executes one step and waits for it."""

    run: Callable[[], Any]
    compile_s: float | None = None
    memory_bytes: int | None = None


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


def _memory(compiled: Any) -> int | None:
    """XLA's own account of the step's memory: arguments, outputs and temporaries."""
    try:
        stats = compiled.memory_analysis()
        return int(
            stats.argument_size_in_bytes
            + stats.output_size_in_bytes
            + stats.temp_size_in_bytes
            - stats.alias_size_in_bytes
        )
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


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


def _build_cudnn(config: Config, mode: str) -> Built | None:
    """rnnlab with `backend="cudnn"`: where cuDNN runs the cell (plain LSTM, CUDA), else None."""
    import jax.numpy as jnp

    from rnnlab.kernels import cudnn

    reason = cudnn.unsupported_reason(
        config.make_cell(),
        jnp.zeros((1, 1, config.input), jnp.float32),
        resets=None,
        recurrent_mask=None,
        zoneout_keep=None,
        vjp="custom",
        input_projection="hoisted",
    )
    if reason is not None:
        return None
    return build_rnnlab(config, mode, backend="cudnn")


def _build_associative(config: Config, mode: str) -> Built | None:
    """rnnlab with `backend="associative"`: for a linear recurrence (a cell declaring
    `linear_recurrence`), else None."""
    from rnnlab.cells.base import declared

    if not declared(config.make_cell(), "linear_recurrence"):
        return None
    return build_rnnlab(config, mode, backend="associative")


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


def build_flax(config: Config, mode: str) -> Built | None:
    """`flax_model` timed (None when the cell has no Flax equivalent)."""
    made = flax_model(config)
    if made is None:
        return None
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


def build_torch(config: Config, mode: str) -> Built | None:
    """`torch_model` (time-major, its native layout), eager, Adam for training; on CUDA (cuDNN)
    when JAX runs on a GPU. None when the cell has no PyTorch equivalent."""
    import torch

    device = torch_device()
    module = torch_model(config, device)
    if module is None:
        return None
    xs, target = (
        torch.from_numpy(np.ascontiguousarray(a.swapaxes(0, 1))).to(device) for a in _data(config)
    )
    if mode == "infer":

        def run_infer() -> Any:
            with torch.no_grad():
                ys = module(xs)[0]
            _torch_sync(device)
            return ys

        return Built(run_infer)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

    def run_train() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.mean(torch.square(module(xs)[0] - target))
        loss.backward()
        optimizer.step()
        _torch_sync(device)
        return loss

    return Built(run_train)


IMPLEMENTATIONS: dict[str, tuple[str | None, Callable[[Config, str], Built | None]]] = {
    "rnnlab": (None, build_rnnlab),
    "rnnlab-xla": (None, lambda c, m: build_rnnlab(c, m, backend="xla")),
    "rnnlab-cudnn": (None, _build_cudnn),
    "rnnlab-associative": (None, _build_associative),
    "rnnlab-autodiff": (None, lambda c, m: build_rnnlab(c, m, vjp="autodiff")),
    "rnnlab-per-step": (None, lambda c, m: build_rnnlab(c, m, input_projection="per_step")),
    "flax": ("flax", build_flax),
    "torch": ("torch", build_torch),
}
"""name -> (optional framework it needs, builder; a builder returns None for a config it lacks,
e.g. cuDNN for GRU, torch and flax for a cell that declares no equivalent there)."""

REFERENCES = ("torch", "flax")


def agreement(config: Config, references: Sequence[str] = REFERENCES) -> dict[str, float]:
    """Largest |difference| between each reference's outputs (`torch_model`, `flax_model`: the
    models the benchmark times) and rnnlab's (`rnnlab_model`, `backend="auto"`) with the
    reference's weights copied in through `rnnlab.interop`, on the benchmark's inputs for
    `config`. References whose framework is missing or that have no such cell are left out.

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
    return found


# ----------------------------------------------------------------------------- timing


def time_round_robin(
    built: dict[str, Built], repeats: int, warmup: int, min_seconds: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per step of each implementation, interleaved: one step of each per round.

    Rounds go on past `repeats` until every implementation has run `min_seconds` in total."""
    for item in built.values():
        for _ in range(warmup):
            item.run()
    times: dict[str, list[float]] = {name: [] for name in built}
    rounds = 0
    while rounds < repeats or min(sum(v) for v in times.values()) < min_seconds:
        for name, item in built.items():
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
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the grid; returns a JSON-serialisable dict with machine info and one row per
    (config, mode, implementation)."""
    cores = pin_threads()
    load_before = _load()
    present = [name for name in implementations if _framework_present(IMPLEMENTATIONS[name][0])]
    peaks = matmul_peak(peak_size)
    peak = max(peaks.values())
    rows = []
    for config in configs:
        for mode in modes:
            built = {}
            for name in present:
                step = IMPLEMENTATIONS[name][1](config, mode)
                if step is not None:  # None: this implementation has no such config
                    built[name] = step
            if not built:
                continue
            times = time_round_robin(built, repeats, warmup, min_seconds)
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
                        "peak_fraction": config.flops(mode) / median / 1e9 / peak,
                        "compile_s": built[name].compile_s,
                        "memory_bytes": built[name].memory_bytes,
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
            "devices": devices(),
            "matmul_peak_gflops": peaks,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "load_average": {"before": load_before, "after": _load()},
            "versions": _versions(),
        },
        "settings": {"repeats": repeats, "warmup": warmup, "min_seconds": min_seconds},
        "rows": rows,
    }


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
        for ref in REFERENCES:
            if ref in by_impl:
                row[f"vs_{ref}"] = row["tokens_per_s"] / by_impl[ref]["tokens_per_s"]


def _one_line(rows: list[dict[str, Any]], name: str, mode: str) -> str:
    parts = [f"{name:<28} {mode:<5}"]
    for row in rows:
        if row["name"] == name and row["mode"] == mode:
            ratio = f" ({row['vs_torch']:.2f}x torch)" if "vs_torch" in row else ""
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
    """A Markdown report: machine header and one table row per (config, mode, implementation)."""
    machine = result["machine"]
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine["matmul_peak_gflops"].items())
    lines = [
        f"Machine: {machine['platform']}, {machine['cores']} cores, "
        f"load average {machine.get('load_average')}; "
        f"2048^3 matmul peak GFLOP/s: {peaks}; XLA_FLAGS={machine['xla_flags']!r}",
        f"Devices: {machine.get('devices')}",
        f"Versions: {machine['versions']}",
        f"Settings: {result['settings']}",
        "",
        "| config | mode | impl | tok/s | vs torch | vs flax | spread (IQR/median) "
        "| GFLOP/s | % peak | compile s | memory MiB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['name']} | {row['mode']} | {row['impl']} "
            f"| {row['tokens_per_s'] / 1e3:.1f}k "
            f"| {_fmt(row.get('vs_torch'), '{:.2f}x')} | {_fmt(row.get('vs_flax'), '{:.2f}x')} "
            f"| {100 * row['iqr_s'] / row['median_s']:.0f}% "
            f"| {row['gflops']:.1f} | {100 * row['peak_fraction']:.0f}% "
            f"| {_fmt(row['compile_s'], '{:.2f}')} "
            f"| {_fmt(row['memory_bytes'] and row['memory_bytes'] / 2**20, '{:.1f}')} |"
        )
    return "\n".join(lines) + "\n"


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


def _stem_arg(text: str) -> str:
    if not text or any(sep and sep in text for sep in (os.sep, os.altsep)):
        raise argparse.ArgumentTypeError(
            f"must be a file name without a directory, got {text!r}; give the folder with --out"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The `rnnlab-benchmark` command line (every value is checked as it is parsed)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=("default", "tiny", "scaling"), default="default")
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
        default="lstm,gru",
        help="cells of the default/scaling grid (conf/cell/<name>.yaml)",
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
    impls = args.impls or list(IMPLEMENTATIONS)
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
        print(
            f"{PROG}: note: {framework} is not installed, so {','.join(names)} is skipped "
            f"({install} to include it)",
            file=sys.stderr,
        )

    grid = "scaling" if args.scaling else args.grid
    if args.configs:
        configs, grid = args.configs, "custom"
    elif grid == "tiny":
        configs = tiny_grid()
    elif grid == "scaling":
        configs = [c for cell in args.cells for c in scaling_grid(cell)]
    else:
        configs = default_grid(args.cells, args.variants)
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
        peak_size=args.peak_size,
    )
    result["command"] = " ".join(["rnnlab-benchmark", *argv])
    json_path, md_path = write(result, str(args.out), stem)
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return 0
