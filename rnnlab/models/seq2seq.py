"""Encoder-decoder with global attention (Sutskever et al. 2014; Luong, Pham & Manning 2015)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlab import attention as att
from rnnlab.models.common import Backbone, as_variables, check_inputs
from rnnlab.typing import Array, Carry, Params


class Memory(NamedTuple):
    """What the decoder reads from the encoder, computed once per source batch.

    Attributes:
        values: `[b, s, d_enc]` encoder states (zero at padded steps); the context weighs them.
        keys: `[b, s, d_k]` the states the scores compare against: `values`, or their projection
            to the decoder's width for "dot"/"scaled_dot" when the widths differ.
        lengths: `[b]` valid source steps, or None.
    """

    values: Array
    keys: Array
    lengths: Array | None


class Seq2Seq(Backbone, kw_only=True):
    """RNN encoder, RNN decoder started from the encoder's final state, global attention.

        enc, carry_enc = Encoder(Dropout(Embed(source)))                    [b, s, d_enc]
        h, carry = Decoder(Dropout(Embed(decoder_inputs)), bridge(carry_enc))   [b, t_out, h]
        c_i, a_i = attend(score(h_i, enc_j)) over valid j                  (attention != "none")
        h~_i = tanh(W_c [c_i; h_i])                                        Luong et al. (2015)
        y_i = W_o h~_i + b_o                                               [b, t_out, output_size]

    The encoder follows all backbone fields; the decoder is the same stack but unidirectional.
    Attention is applied after the decoder RNN, without Luong's input feeding, so with teacher
    forcing (or non-autoregressive float inputs, e.g. forecasting with known covariates or zeros
    as in Informer's decoder) the whole decoder is one scan.

    Attention ("none" or a `rnnlab.attention.CROSS_ATTENTION_KINDS` score): "none" decodes from
    the encoder's final carry only (Sutskever et al. 2014; Cho et al. 2014). With a bidirectional,
    concatenating encoder the "dot"/"scaled_dot" keys are projected to the decoder's width
    (`key_projection`). Weights `[b, t_out, s]` are sown as `intermediates/attention_weights`.

    Bridge: a unidirectional encoder's final carries (one per layer) start the decoder as they
    are. For a bidirectional encoder each decoder layer starts from
    `tanh(W [carry_fw; carry_bw] + b)`, one Dense per layer and carry leaf (`bridge_{l}_{leaf}`),
    generalising Bahdanau et al.'s (2015) `tanh(W_s h_1_backward)` to both directions.

    Attributes:
        output_size: width of the outputs (target vocabulary for token targets).
        source_vocab_size: embed `[b, s]` int sources when set; else sources are `[b, s, d]` floats.
        target_vocab_size: embed `[b, t_out]` int decoder inputs when set; else they are floats.
    """

    ATTENTION: ClassVar[tuple[str, ...]] = ("none", *att.CROSS_ATTENTION_KINDS)

    output_size: int
    source_vocab_size: int | None = None
    target_vocab_size: int | None = None

    def setup(self) -> None:
        if self.source_vocab_size is not None:
            self.source_embed = nn.Embed(self.source_vocab_size, self.embed_dim)
        if self.target_vocab_size is not None:
            self.target_embed = nn.Embed(self.target_vocab_size, self.embed_dim)
        self.encoder = self.make_stack()
        self.decoder = self.make_stack(bidirectional=False)
        if self.dropout > 0:
            self.dropout_layer = nn.Dropout(self.dropout)
        if self.bidirectional:
            leaves = jax.tree_util.tree_leaves(self.cell.initial_carry(1))
            self.bridge = [
                [nn.Dense(leaf.shape[-1]) for leaf in leaves] for _ in range(self.num_layers)
            ]
        query_size, key_size = self.cell.output_size, self.state_size
        self.key_projection = None
        if self.attention in ("dot", "scaled_dot") and key_size != query_size:
            self.key_projection = nn.Dense(query_size, use_bias=False)
            key_size = query_size
        if self.attention != "none":
            self.attention_params = self.param(
                "attention",
                lambda key: att.init_cross_attention(
                    self.attention, key, query_size, key_size, self.attention_size
                ),
            )
            self.attention_combine = nn.Dense(query_size, use_bias=False)
        self.head = nn.Dense(self.output_size)

    def drop(self, xs: Array, train: bool) -> Array:
        """`Backbone.drop` through the one Dropout layer made in `setup`."""
        if self.dropout == 0.0:
            return xs
        return self.dropout_layer(xs, deterministic=not train)

    def __call__(
        self,
        source: Array,
        source_lengths: Array | None,
        decoder_inputs: Array,
        target_lengths: Array | None = None,
        train: bool = False,
    ) -> Array:
        """Encode the source, decode all target steps at once.

        Args:
            source: `[b, s]` int ids (with `source_vocab_size`) or `[b, s, d]` floats.
            source_lengths: `[b]` valid source steps, or None for all.
            decoder_inputs: `[b, t_out]` int ids (teacher forcing: the targets shifted right
                behind a start token) or `[b, t_out, d]` floats.
            target_lengths: `[b]` valid target steps, or None.
            train: apply dropout (needs a `dropout` RNG when any rate is > 0).

        Returns:
            `[b, t_out, output_size]`.
        """
        memory, carry = self.encode(source, source_lengths, train)
        outputs, _ = self.decode(memory, decoder_inputs, carry, target_lengths, train)
        return outputs

    def encode(
        self, source: Array, source_lengths: Array | None = None, train: bool = False
    ) -> tuple[Memory, list[Carry]]:
        """Run the encoder once: (`Memory` for attention, the decoder's initial carries)."""
        check_inputs(f"{type(self).__name__} source", source, self.source_vocab_size)
        xs = source
        if self.source_vocab_size is not None:
            xs = self.drop(self.drop_words(self.source_embed(source), train), train)
        carries, states = self.encoder(xs, lengths=source_lengths, train=train)
        states = self.drop(states, train)
        keys = states if self.key_projection is None else self.key_projection(states)
        return Memory(states, keys, source_lengths), self.bridge_carries(carries)

    def bridge_carries(self, carries: list[Carry]) -> list[Carry]:
        """The encoder's final carries as the decoder's initial carries (see the class doc)."""
        if not self.bidirectional:
            return carries
        bridged = []
        for layer, (forward, backward) in zip(self.bridge, carries, strict=True):
            leaves_fw, treedef = jax.tree_util.tree_flatten(forward)
            leaves = [
                jnp.tanh(dense(jnp.concatenate([fw, bw], axis=-1)))
                for dense, fw, bw in zip(
                    layer, leaves_fw, jax.tree_util.tree_leaves(backward), strict=True
                )
            ]
            bridged.append(jax.tree_util.tree_unflatten(treedef, leaves))
        return bridged

    def decode(
        self,
        memory: Memory,
        decoder_inputs: Array,
        carry: list[Carry],
        target_lengths: Array | None = None,
        train: bool = False,
    ) -> tuple[Array, list[Carry]]:
        """Decode `t_out` steps from `carry` (all at once, or one at a time with `t_out = 1`).

        Returns:
            (`outputs: [b, t_out, output_size]`, the decoder's carries after the last step).
        """
        check_inputs(
            f"{type(self).__name__} decoder_inputs", decoder_inputs, self.target_vocab_size
        )
        ys = decoder_inputs
        if self.target_vocab_size is not None:
            ys = self.drop(self.drop_words(self.target_embed(decoder_inputs), train), train)
        carry, states = self.decoder(ys, lengths=target_lengths, initial_carry=carry, train=train)
        states = self.drop(states, train)
        if self.attention == "none":
            return self.head(states), carry
        context, weights = att.cross_attention(
            self.attention,
            self.attention_params,
            states,
            memory.keys,
            memory.values,
            memory.lengths,
        )
        self.sow("intermediates", "attention_weights", weights)
        attentional = jnp.tanh(self.attention_combine(jnp.concatenate([context, states], -1)))
        return self.head(attentional), carry


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def greedy_decode(
    model: Seq2Seq,
    params: Params,
    source: Array,
    source_lengths: Array | None,
    start_token: int | Array,
    max_len: int,
) -> Array:
    """Decode token targets greedily, one step at a time with the decoder's carry (jitted).

    The source is encoded once; each step feeds the previous argmax token (the start token first).
    Tokens after an end-of-sequence token are whatever the model emits; truncate them outside.

    Args:
        model: a `Seq2Seq` with `target_vocab_size` set (static).
        params: its params (`variables["params"]`) or the whole variables dict.
        source: `[b, s]` int ids or `[b, s, d]` floats.
        source_lengths: `[b]` valid source steps, or None.
        start_token: the id fed at the first step.
        max_len: steps to decode (static).

    Returns:
        `[b, max_len]` int32 tokens (the start token excluded).
    """
    if model.target_vocab_size is None:
        raise ValueError("greedy_decode needs a Seq2Seq with target_vocab_size (token targets)")
    variables = as_variables(params)
    memory, carry = model.apply(variables, source, source_lengths, method=Seq2Seq.encode)

    def step(state: tuple[Array, list[Carry]], _: Any) -> tuple[Any, Array]:
        token, carry = state
        outputs, carry = model.apply(
            variables, memory, token[:, None], carry, method=Seq2Seq.decode
        )
        token = jnp.argmax(outputs[:, 0], axis=-1).astype(jnp.int32)
        return (token, carry), token

    start = jnp.full((source.shape[0],), start_token, jnp.int32)
    _, tokens = jax.lax.scan(step, (start, carry), None, length=max_len)
    return tokens.T
