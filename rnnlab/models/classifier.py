"""Sequence-to-vector (classification, regression) and sequence-to-sequence-of-labels models.

Both read token ids (embedded) or float features with a recurrent stack; the classifier pools the
states into one vector, the tagger labels every step. A linear head gives logits or regression
outputs; the losses (and their masks) live in `rnnlab.losses`.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from rnnlab import attention as att
from rnnlab.cells.base import Cell
from rnnlab.models.common import Backbone, check_choice
from rnnlab.recurrence import merge_directions
from rnnlab.typing import Array, Carry

_query_init = nn.initializers.normal(stddev=0.1)


class SequenceClassifier(Backbone, kw_only=True):
    """RNN states pooled into one vector, then a linear head: `[b, t] -> [b, num_outputs]`.

        states = Dropout(RNN(Dropout(Embed(x))))              [b, t, d]
        states = LayerNorm(states + MHA(states))              if attention == "self"
        pooled = pool(states)                                 [b, d]
        outputs = W pooled + b                                [b, num_outputs]

    Pooling (all ignore padded steps, so a padded batch gives each sequence's own result):
        "last": the output at each sequence's last valid step. When bidirectional (and without
            self-attention) it is the two directions' final states merged, PyTorch's `h_n`:
            the forward state after the last step and the backward state after the first, each
            of which has read the whole sequence (the backward output at the last step has read
            one token). Under zoneout the final state is the zoned-out carry.
        "mean", "max": over valid steps.
        "attention": `sum_t a_t h_t` with `a = softmax_t(u^T tanh(W h_t + b))` (Yang et al. 2016).

    Attention:
        "none": pooling as chosen.
        "additive", "dot", "scaled_dot", "general": attention pooling with that score function
            and a learned query vector `u` (the "context vector" of Yang et al. 2016):
            `a = softmax_t(score(u, h_t))` (see `rnnlab.attention.cross_attention`); overrides
            `pooling`. Additive is Yang et al.'s form; dot is `u . h_t`.
        "self": a multi-head self-attention block (residual + layer norm) over the states before
            pooling (Lin et al. 2017 use attention over BiLSTM states in the same place).

    Attention-pooling weights `[b, t]` are sown as `intermediates/attention_weights`,
    self-attention weights `[b, num_heads, t, t]` as `intermediates/self_attention_weights`.

    Attributes:
        num_outputs: classes (logits) or regression targets (e.g. 1 for the adding problem).
        vocab_size: embed `[b, t]` int inputs when set; otherwise inputs are `[b, t, d]` floats.
        pooling: one of `rnnlab.attention.POOLING_KINDS`.
    """

    num_outputs: int
    vocab_size: int | None = None
    pooling: str = "last"

    def __post_init__(self) -> None:
        check_choice("pooling", self.pooling, att.POOLING_KINDS, type(self).__name__)
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: Array, lengths: Array | None = None, train: bool = False) -> Array:
        """Classify or regress each sequence.

        Args:
            inputs: `[b, t]` int token ids (with `vocab_size`) or `[b, t, d]` floats.
            lengths: `[b]` valid steps per sequence; None means all `t`.
            train: apply dropout (needs a `dropout` RNG when any rate is > 0).

        Returns:
            `[b, num_outputs]` logits or regression outputs.
        """
        carries, states = self.encode_sequence(inputs, lengths, train, self.vocab_size)
        if self.attention == "self":
            states = self.self_attend(states, lengths, train)
        pooled = self.pool(states, carries, lengths)
        return nn.Dense(self.num_outputs, name="head")(pooled)

    def pool(self, states: Array, carries: list[Carry], lengths: Array | None) -> Array:
        """`states: [b, t, d]` -> `[b, d]` as the `pooling`/`attention` fields say."""
        size = states.shape[-1]
        if self.attention in att.CROSS_ATTENTION_KINDS:
            params = self.param(
                "attention_pooling",
                lambda key: att.init_cross_attention(
                    self.attention, key, size, size, self.attention_size
                ),
            )
            query = self.param("attention_query", _query_init, (size,))
            queries = jnp.broadcast_to(query, (states.shape[0], 1, size))
            context, weights = att.cross_attention(
                self.attention, params, queries, states, states, lengths
            )
            self.sow("intermediates", "attention_weights", weights[:, 0])
            return context[:, 0]
        if self.pooling == "attention":
            params = self.param(
                "attention_pooling",
                lambda key: att.init_attention_pooling(key, size, self.attention_size),
            )
            pooled, weights = att.attention_pooling(params, states, lengths)
            self.sow("intermediates", "attention_weights", weights)
            return pooled
        if self.pooling == "last" and self.bidirectional and self.attention != "self":
            return final_state(self.cell, carries[-1], self.merge)
        pooled, _ = att.pool(self.pooling, {}, states, lengths)
        return pooled


def final_state(cell: Cell, carry: Carry, merge: str) -> Array:
    """The output-sized summary of a bidirectional layer's final `(forward, backward)` carries.

    Args:
        cell: the layer's cell (`cell.feedback(carry)` is the state `h` it outputs).
        carry: `(forward, backward)` final carries.
        merge: "concat" or "sum".

    Returns:
        `[b, o]` or `[b, 2o]`.
    """
    forward, backward = carry
    return merge_directions(cell.feedback(forward), cell.feedback(backward), merge)


class SequenceTagger(Backbone, kw_only=True):
    """One output per step: `[b, t] -> [b, t, num_outputs]` (tagging, per-step regression, copy).

        states = Dropout(RNN(Dropout(Embed(x))))              [b, t, d]
        states = LayerNorm(states + MHA(states))              if attention == "self"
        outputs = W states_t + b                              [b, t, num_outputs]

    Attention: "none" or "self" (non-causal multi-head self-attention over all valid steps,
    residual + layer norm; weights sown as `intermediates/self_attention_weights`).
    Outputs at padded steps are not meaningful; the losses mask them.

    Attributes:
        num_outputs: tags (logits) or per-step regression targets.
        vocab_size: embed `[b, t]` int inputs when set; otherwise inputs are `[b, t, d]` floats.
    """

    ATTENTION: ClassVar[tuple[str, ...]] = ("none", "self")

    num_outputs: int
    vocab_size: int | None = None

    @nn.compact
    def __call__(self, inputs: Array, lengths: Array | None = None, train: bool = False) -> Array:
        """Label every step.

        Args:
            inputs: `[b, t]` int token ids (with `vocab_size`) or `[b, t, d]` floats.
            lengths: `[b]` valid steps per sequence; None means all `t`.
            train: apply dropout (needs a `dropout` RNG when any rate is > 0).

        Returns:
            `[b, t, num_outputs]`.
        """
        _, states = self.encode_sequence(inputs, lengths, train, self.vocab_size)
        if self.attention == "self":
            states = self.self_attend(states, lengths, train)
        return nn.Dense(self.num_outputs, name="head")(states)
