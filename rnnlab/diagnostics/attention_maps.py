"""Attention weights of a model on a batch, read from the values the models `sow`.

Every attention model in `rnnlab.models` sows its weights into the `intermediates` collection
(no model change needed): `attention_weights` (`[b, t]` for attention pooling in
`SequenceClassifier`, `[b, t_out, s]` for `Seq2Seq` cross-attention) and
`self_attention_weights` (`[b, num_heads, t, t]`). `attention_weights` re-runs the model's
forward pass with `mutable=["intermediates"]` on the task's own model arguments.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from rnnlab.tasks.base import Batch, Task
from rnnlab.typing import Params

ATTENTION_KEYS = ("attention_weights", "self_attention_weights")


def _path_name(path: tuple) -> str:
    parts = []
    for entry in path:
        key = getattr(entry, "key", getattr(entry, "idx", entry))
        parts.append(str(key))
    return "/".join(parts)


def attention_weights(
    task: Task, model: nn.Module, params: Params, batch: Batch
) -> dict[str, np.ndarray]:
    """The attention weights a model sows on `batch` (evaluation mode).

    Args:
        task: the task (its `model_args` give the model's inputs for a batch).
        model: its model.
        params: the model's params.
        batch: a batch of the task.

    Returns:
        Sown name (module path included, e.g. `"attention_weights"`,
        `"decoder_cell/attention_weights"`) -> weights: `[b, t]` (attention pooling, weights over
        time steps), `[b, t_out, s]` (target x source) or `[b, heads, t, t]` (self-attention).
        Empty for a model without attention.
    """
    batch_size = int(np.shape(batch["inputs"])[0])
    args = task.model_args(batch, task.zero_carry(model, batch_size))
    _, state = model.apply({"params": params}, *args, mutable=["intermediates"])
    found = {}
    leaves = jax.tree_util.tree_flatten_with_path(state.get("intermediates", {}))[0]
    for path, value in leaves:
        name = _path_name(path)
        parts = name.split("/")
        # `sow` keeps a tuple per name: drop the tuple index, keep the module path.
        if parts[-1].isdigit():
            parts = parts[:-1]
        if parts and parts[-1] in ATTENTION_KEYS:
            found["/".join(parts)] = np.asarray(value)
    return found


def lengths_of(batch: Batch) -> np.ndarray | None:
    """`[b]` valid steps of a batch when it has them (`lengths`), else None."""
    lengths = batch.get("lengths")
    return None if lengths is None else np.asarray(lengths)
