"""Training-step time of one residual block of each xLSTM/Hawk kind (forward and backward).

    python scripts/benchmark_blocks.py [--widths 128,256,512] [--batch 8] [--time 128]

One block per kind at each residual width: `mlstm` (inner width 2 x width, 4 heads), `slstm`
(4 heads), `hawk` (RG-LRU width 4/3 x width, 4 heads); random inputs `[batch, time, width]`,
the loss the mean square of the outputs. Prints the median of `--repeats` timed steps after one
compiling step, and `lscpu`'s model name. To compare two versions of `rnnlab/blocks.py`, run it
on each (e.g. `git stash` / `git checkout <commit> -- rnnlab/blocks.py`) back to back.
"""

from __future__ import annotations

import argparse
import subprocess
import time

import jax
import jax.numpy as jnp

from rnnlab.blocks import BlockStack
from rnnlab.cells.mlstm import MLSTMCell
from rnnlab.cells.rglru import RGLRUCell
from rnnlab.cells.slstm import SLSTMCell


def stacks(width: int) -> dict[str, BlockStack]:
    """One block of each kind at residual width `width`."""
    lru = width * 4 // 3 // 4 * 4
    common = {"num_blocks": 1, "width": width, "num_heads": 4}
    return {
        "mlstm": BlockStack(cell=MLSTMCell(2 * width, num_heads=4), block="mlstm", **common),
        "slstm": BlockStack(cell=SLSTMCell(width, num_heads=4), block="slstm", **common),
        "hawk": BlockStack(cell=RGLRUCell(lru), block="hawk", **common),
    }


def step_seconds(stack: BlockStack, xs: jax.Array, repeats: int) -> float:
    """Median seconds of a jitted value-and-grad step of `stack` on `xs`."""
    params = stack.init(jax.random.PRNGKey(1), xs)["params"]

    def loss(p):
        out = stack.apply({"params": p}, xs)
        ys = out[1] if isinstance(out, tuple) else out
        return jnp.mean(ys**2)

    step = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(step(params))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(params))
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="128,256,512")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((line for line in cpu.splitlines() if line.startswith("Model name")), "")
    print(f"{model.strip()}; batch {args.batch}, time {args.time}")
    for width in (int(w) for w in args.widths.split(",")):
        xs = jax.random.normal(jax.random.PRNGKey(0), (args.batch, args.time, width))
        for name, stack in stacks(width).items():
            ms = 1e3 * step_seconds(stack, xs, args.repeats)
            print(f"width {width} {name}: {ms:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
