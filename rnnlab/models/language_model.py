"""Recurrent language model (Mikolov et al. 2010; Zaremba et al. 2014) and sampling from it."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlab.models.common import Backbone, as_variables, check_inputs
from rnnlab.typing import Array, Carry, Params, PRNGKey


class LanguageModel(Backbone, kw_only=True):
    """Next-token logits from a unidirectional recurrent stack, with a carry for truncated BPTT.

        x_t = Dropout(E[w_t])                                   [b, t, embed_dim]
        h_t, carry = RNN(x_t, carry)                            [b, t, d]
        logits_t = W Dropout(h_t) + b                           [b, t, v]

    With `tie_weights` the output matrix is the embedding (Press & Wolf 2017; Inan et al. 2017):
    `logits_t = E P h_t + b`, where `P` (`tie_projection`, a Dense to `embed_dim`) exists only
    when `d != embed_dim`. The params then hold no separate output kernel, only `output_bias`.

    The carry returned by one call and passed to the next continues the sequence exactly: running
    `[b, 2t]` equals running two `[b, t]` halves with the carry threaded (what truncated BPTT
    relies on; stop its gradient between batches). `resets: [b, t]` restarts the carry where a new
    document begins inside a row.

    Only `attention="none"`: attention over the past would not survive across truncated-BPTT
    segments nor step-by-step generation without a cache. `bidirectional=True` raises
    (a bidirectional model sees the tokens it should predict).

    Attributes:
        vocab_size: `v`.
        tie_weights: share the embedding as the output matrix.
        init_scale: when set, the embedding and the output layer's kernel and bias start
            U(-init_scale, init_scale), as every parameter in Zaremba et al. (2014) (0.1 small,
            0.05 medium, 0.04 large); None keeps Flax's defaults (normal embedding, LeCun
            output kernel, zero bias). The cell's own params follow its `input_init` /
            `recurrent_init`.
    """

    ATTENTION: ClassVar[tuple[str, ...]] = ("none",)

    vocab_size: int
    tie_weights: bool = False
    init_scale: float | None = None

    def __post_init__(self) -> None:
        if self.bidirectional:
            raise ValueError(
                "LanguageModel cannot be bidirectional: the backward direction would read the "
                "tokens it has to predict; set bidirectional=False"
            )
        if self.init_scale is not None and not self.init_scale > 0:
            raise ValueError(f"LanguageModel.init_scale must be > 0 or None, got {self.init_scale}")
        super().__post_init__()

    @nn.nowrap
    def _init(self, default: Any) -> Any:
        """`default`, or U(-init_scale, init_scale) when `init_scale` is set."""
        if self.init_scale is None:
            return default
        scale = self.init_scale
        return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
            key, shape, dtype, -scale, scale
        )

    @nn.nowrap
    def zero_carry(self, batch_size: int, dtype: Any = None) -> list[Carry]:
        """Zero carries, one per layer, for the first batch of an epoch. Needs no params."""
        return self.make_stack(parent=None).zero_carry(batch_size, dtype)

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        carry: list[Carry] | None = None,
        resets: Array | None = None,
        train: bool = False,
    ) -> tuple[Array, list[Carry]]:
        """Logits for the next token at every step.

        Args:
            tokens: `[b, t]` int token ids.
            carry: one carry per layer (from `zero_carry` or the previous call); zeros if None.
            resets: `[b, t]` bool, True where a new sequence starts (the carry restarts from zero
                before that step).
            train: apply dropout (needs a `dropout` RNG when any rate is > 0).

        Returns:
            (`logits: [b, t, v]`, final carry per layer).
        """
        embed = nn.Embed(
            self.vocab_size,
            self.embed_dim,
            embedding_init=self._init(nn.linear.default_embed_init),
            name="embed",
        )
        check_inputs(type(self).__name__, tokens, self.vocab_size)
        xs = self.drop(self.drop_words(embed(tokens), train), train)
        carry, states = self.make_stack(name="stack")(
            xs, resets=resets, initial_carry=carry, train=train
        )
        states = self.drop(states, train)
        if not self.tie_weights:
            output = nn.Dense(
                self.vocab_size,
                kernel_init=self._init(nn.linear.default_kernel_init),
                bias_init=self._init(nn.initializers.zeros_init()),
                name="output",
            )
            return output(states), carry
        if states.shape[-1] != self.embed_dim:
            states = nn.Dense(self.embed_dim, name="tie_projection")(states)
        bias = self.param(
            "output_bias", self._init(nn.initializers.zeros_init()), (self.vocab_size,)
        )
        return embed.attend(states) + bias[None, None, :], carry


def sample_logits(key: PRNGKey, logits: Array, temperature: float = 1.0, top_k: int = 0) -> Array:
    """Sample token ids from `logits: [b, v]` with a temperature and top-k truncation.

    Args:
        key: PRNG key.
        logits: `[b, v]` unnormalised log-probabilities.
        temperature: divides the logits; `0` means greedy (argmax).
        top_k: keep only the `top_k` largest logits per row (Fan et al. 2018); 0 keeps all.

    Returns:
        `[b]` int32 token ids.
    """
    if temperature == 0 or top_k == 1:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if top_k > 0:
        kth_largest = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "num_tokens", "temperature", "top_k"))
def generate(
    model: LanguageModel,
    params: Params,
    prompt: Array,
    num_tokens: int,
    key: PRNGKey,
    temperature: float = 1.0,
    top_k: int = 0,
) -> Array:
    """Continue `prompt` by sampling `num_tokens` tokens, carrying the RNN state (jitted).

    The prompt is read in one call; then each step samples a token from the last logits and feeds
    it back with the carry (a `lax.scan` over single-step applies), so generation costs one cell
    step per token.

    Args:
        model: the `LanguageModel` (static).
        params: its params (`variables["params"]`) or the whole variables dict.
        prompt: `[b, t0]` int token ids, `t0 >= 1`.
        num_tokens: tokens to generate (static).
        key: PRNG key; the same key gives the same tokens.
        temperature: sampling temperature (static); 0 is greedy.
        top_k: sample among the `top_k` most likely tokens (static); 0 means all, 1 is greedy.

    Returns:
        `[b, num_tokens]` int32 generated tokens (the prompt excluded).
    """
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be [b, t0] with t0 >= 1, got shape {tuple(prompt.shape)}")
    variables = as_variables(params)
    logits, carry = model.apply(variables, prompt)

    def step(state: tuple[Array, list[Carry]], step_key: PRNGKey) -> tuple[Any, Array]:
        last_logits, carry = state
        token = sample_logits(step_key, last_logits, temperature, top_k)
        logits, carry = model.apply(variables, token[:, None], carry)
        return (logits[:, -1], carry), token

    _, tokens = jax.lax.scan(step, (logits[:, -1], carry), jax.random.split(key, num_tokens))
    return tokens.T
