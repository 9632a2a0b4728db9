"""Data parallelism with `jax.sharding`: one mesh axis "data" over every device.

Parameters, optimiser state and the PRNG key are replicated; each batch (and the truncated-BPTT
carry, whose rows are the batch's) is split along its first axis. `jax.jit` then inserts the
gradient all-reduce itself; nothing here launches processes or reduces by hand.

Batches are pure functions of `(seed, step)`, so every process can build the whole global batch
and hand each of its devices its own slice (`jax.make_array_from_callback`); the same code runs on
one device, on several local devices and across hosts.

Multi-host: `maybe_initialize("auto")` calls `jax.distributed.initialize()` when the environment
names a cluster of more than one process: SLURM (e.g. under Hydra's submitit launcher with
`tasks_per_node > 1`) or Open MPI, whose cluster auto-detection fills in the coordinator, process
count and id; or, by hand, `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`
(`tests/test_distributed.py` runs the trainer as two processes on one machine that way).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODES = ("auto", "off")


def cluster_size_from_env(env: dict[str, str] | None = None) -> int:
    """Number of processes the environment describes (1 when it describes no cluster)."""
    env = dict(os.environ if env is None else env)
    explicit = explicit_cluster(env)
    if explicit is not None:
        return explicit["num_processes"]
    for key in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if key in env:
            try:
                return int(env[key])
            except ValueError:
                continue
    return 1


def explicit_cluster(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """`jax.distributed.initialize`'s arguments from `JAX_COORDINATOR_ADDRESS`,
    `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (a job launched by hand, e.g. two processes on one
    machine), or None where the environment does not name the coordinator (then JAX's cluster
    auto-detection fills them in: SLURM, Open MPI, ...). JAX reads only the address itself.

    Raises:
        ValueError: the address is set without a valid process count and id.
    """
    env = dict(os.environ if env is None else env)
    if "JAX_COORDINATOR_ADDRESS" not in env:
        return None
    try:
        count, index = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
    except (KeyError, ValueError):
        raise ValueError(
            "JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID must be "
            "integers too (every process: the same count, its own id from 0)"
        ) from None
    if not 0 <= index < count:
        raise ValueError(f"JAX_PROCESS_ID={index} must be in [0, JAX_NUM_PROCESSES={count})")
    return {
        "coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
        "num_processes": count,
        "process_id": index,
    }


def maybe_initialize(mode: str) -> bool:
    """Joins a multi-process JAX job if `mode == "auto"` and the environment names one.

    Must run before any JAX computation. CPU devices of different processes exchange gradients
    through Gloo (`jax_cpu_collectives_implementation`; the CPU backend has no cross-process
    collectives otherwise). Returns True when `jax.distributed` was initialised.
    """
    if mode not in MODES:
        raise ValueError(f"trainer.distributed must be one of {list(MODES)}, got {mode!r}")
    if mode == "off" or cluster_size_from_env() <= 1:
        return False
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**(explicit_cluster() or {}))
    return True


def is_main_process() -> bool:
    """True on the process that writes logs and results."""
    return jax.process_index() == 0


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process, axis name "data"."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the "data" axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "trainer.batch_size") -> None:
    """Raise a ValueError unless `batch_size` splits evenly over the mesh's devices."""
    devices = mesh.devices.size
    if batch_size % devices:
        raise ValueError(
            f"{what}={batch_size} must be a multiple of the {devices} devices it is split over "
            f"(data parallelism); use e.g. {what}={max(devices, batch_size // devices * devices)}"
        )


def leaf_sharding(x: Any, mesh: Mesh, batch_size: int | None) -> NamedSharding:
    """Batch-sharded if `x`'s leading axis is the batch and divides over the devices, else
    replicated (scalars, odd-sized evaluation remainders)."""
    shape = np.shape(x)
    devices = mesh.devices.size
    if batch_size is not None and shape and shape[0] == batch_size and batch_size % devices == 0:
        return batch_sharded(mesh)
    return replicated(mesh)


def put_global(x: Any, sharding: NamedSharding) -> jax.Array:
    """A global `jax.Array` from a host array every process holds in full."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_tree(tree: Any, mesh: Mesh, batch_size: int | None) -> Any:
    """Every leaf of `tree` placed on the mesh (batch-sharded where its leading axis is the
    batch, else replicated), each in a buffer of its own (so the result can be donated even if
    the input repeats a leaf). Leaves that are already global multi-host arrays are resharded
    on device."""

    def place(x: Any) -> jax.Array:
        sharding = leaf_sharding(x, mesh, batch_size)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        return put_global(np.asarray(x), sharding)

    return jax.tree_util.tree_map(place, tree)


def shardings_of(tree: Any) -> Any:
    """The sharding of every leaf of a tree of `jax.Array`s."""
    return jax.tree_util.tree_map(lambda x: x.sharding, tree)
