"""What every model shares: backbone fields, the embed -> RNN -> dropout encoder, self-attention.

One `model/*.yaml` describes a backbone (cell, depth, direction, regularisation, attention) and
combines with any task; the task picks the model class and adds its own fields. So the backbone
fields are declared once, on `Backbone`, and the models subclass it. All models are keyword-only
(`SequenceClassifier(cell=..., num_outputs=2)`), which is how Hydra builds them anyway and which
lets task fields without defaults follow backbone fields with defaults.

Dropout follows Zaremba, Sutskever & Vinyals (2014), "Recurrent Neural Network Regularization":
on the embedding output, between stacked layers and on the last layer's output, never on the
recurrent edges (those have `recurrent_dropout` and `zoneout`).

With `block` set (`rnnlab.blocks.BLOCK_KINDS`), the recurrent layers are residual blocks instead
(Hawk, xLSTM's mLSTM/sLSTM blocks, a generic pre-norm block, Feng et al.'s minGRU/minLSTM
block): `make_stack` returns a `rnnlab.blocks.BlockStack` with the same call and carry
contract, so every model takes them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlab import attention as att
from rnnlab import blocks, recurrence
from rnnlab.cells.base import Cell
from rnnlab.nn import RecurrentStack
from rnnlab.typing import Array, Carry, Params

ATTENTION_KINDS = ("none", *att.CROSS_ATTENTION_KINDS, "self")
"""Every value of the `attention` field; each model accepts a subset (`Backbone.ATTENTION`)."""


def check_choice(field: str, value: Any, options: tuple[Any, ...], owner: str = "") -> None:
    """Raise a ValueError naming the options if `value` is not one of them."""
    if value not in options:
        where = f"{owner}." if owner else ""
        raise ValueError(f"unknown {where}{field} {value!r}; choose one of {list(options)}")


def count_params(params: Any) -> int:
    """Number of scalars in a pytree of arrays (e.g. `variables["params"]`)."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params))


def as_variables(params: Params) -> dict[str, Any]:
    """`{"params": params}` unless `params` already is a Flax variables dict."""
    return params if "params" in params else {"params": params}


def mask_padding(xs: Array, lengths: Array | None) -> Array:
    """Zero `xs: [b, t, ...]` at steps `>= lengths`, as the recurrence leaves its outputs."""
    if lengths is None:
        return xs
    valid = att.lengths_to_mask(lengths, xs.shape[1])
    valid = valid.reshape(valid.shape + (1,) * (xs.ndim - 2))
    return jnp.where(valid, xs, jnp.zeros_like(xs))


def check_inputs(owner: str, inputs: Array, vocab_size: int | None) -> None:
    """Raise a ValueError unless `inputs` are int ids `[b, t]` (with a vocabulary) or float
    features `[b, t, d]` (without)."""
    if vocab_size is None:
        if inputs.ndim != 3 or not jnp.issubdtype(inputs.dtype, jnp.floating):
            raise ValueError(
                f"{owner} without a vocabulary takes float features [b, t, d]; got "
                f"{inputs.dtype} of shape {tuple(inputs.shape)} (set the vocab size for ids)"
            )
    elif inputs.ndim != 2 or not jnp.issubdtype(inputs.dtype, jnp.integer):
        raise ValueError(
            f"{owner} with vocab size {vocab_size} takes int token ids [b, t]; got "
            f"{inputs.dtype} of shape {tuple(inputs.shape)}"
        )


class Backbone(nn.Module, kw_only=True):
    """The fields every model shares, and the layers built from them.

    Attributes:
        cell: the recurrent cell (a frozen dataclass from `rnnlab.cells`).
        num_layers: stacked recurrent layers.
        bidirectional: also run each sequence back to front (within its length).
        merge: "concat" or "sum" for the two directions' outputs.
        dropout: rate on the embedding output, between layers and on the last layer's output.
        word_dropout: rate at which a token's whole embedding is zeroed during training (the
            kept ones scaled by 1 / (1 - rate)): word dropout (Iyyer et al. 2015; Dai & Le
            2015 drop input words), before `dropout`; only where the model embeds token ids.
        recurrent_dropout: variational dropout on the fed-back state (Gal & Ghahramani 2016).
        zoneout: zoneout rate on every carry leaf (Krueger et al. 2017).
        unroll: `lax.scan` unroll factor.
        vjp: "custom" (hand-written reverse pass) or "autodiff".
        input_projection: "hoisted" (one matmul over all steps) or "per_step".
        backend: "auto", "native", "associative", "log_space", "chunkwise", "xla" or "cudnn" (see
            `rnnlab.recurrence.run`).
        matmul_dtype: "float32" or "bfloat16": the operands of the recurrent layers' matmuls
            (input projection, recurrent product and their gradients), summed in float32 (see
            `rnnlab.recurrence.run`); params, gate math and the optimizer stay float32.
        attention: one of `ATTENTION_KINDS`; which ones a model accepts and what they mean is
            documented per model (`ATTENTION` lists them).
        attention_size: hidden size of additive attention and attention pooling.
        num_heads: heads of multi-head self-attention (`attention="self"`).
        embed_dim: embedding width, used only when the model embeds token ids; with `block`
            set, the width of the residual stream (float features are projected to it).
        block: "none" (the plain stack of `num_layers` recurrent layers) or a residual block
            kind of `rnnlab.blocks.BLOCK_KINDS` ("hawk", "mlstm", "slstm", "xlstm", "prenorm",
            "minrnn"): then `num_layers` counts blocks, `dropout` falls on every residual
            branch (minrnn: the MLP's only) and the embedding and output, as before, and
            `bidirectional` is refused.
        conv_width: taps of the blocks' causal convolution (hawk, mlstm, slstm, minrnn; 4 in
            the papers; minrnn: 1 for none).
        mlp_expansion: the blocks' MLP width over `embed_dim`; None: each paper's (3 for hawk
            and prenorm, 4/3 for sLSTM, none for mLSTM, 4 for minrnn); 0: no MLP.
        slstm_at: with `block="xlstm"`, the indices of the sLSTM blocks among mLSTM ones.
    """

    ATTENTION: ClassVar[tuple[str, ...]] = ATTENTION_KINDS

    cell: Cell
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout: float = 0.0
    word_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    unroll: int = 1
    vjp: str = "custom"
    input_projection: str = "hoisted"
    backend: str = "auto"
    matmul_dtype: str = "float32"
    attention: str = "none"
    attention_size: int = 64
    num_heads: int = 4
    embed_dim: int = 64
    block: str = "none"
    conv_width: int = 4
    mlp_expansion: float | None = None
    slstm_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        owner = type(self).__name__
        # A YAML list arrives as a list (unhashable; models are `jit` static arguments).
        object.__setattr__(self, "slstm_at", tuple(self.slstm_at))
        blocks.check_blocks(
            owner,
            block=self.block,
            cell=self.cell,
            width=self.embed_dim,
            num_blocks=self.num_layers,
            conv_width=self.conv_width,
            mlp_expansion=self.mlp_expansion,
            num_heads=self.num_heads,
            slstm_at=self.slstm_at,
            bidirectional=self.bidirectional,
        )
        self._check_block_fits(owner)
        check_choice("attention", self.attention, self.ATTENTION, owner)
        check_choice("merge", self.merge, recurrence.MERGES, owner)
        check_choice("vjp", self.vjp, recurrence.VJPS, owner)
        check_choice("input_projection", self.input_projection, recurrence.INPUT_PROJECTIONS, owner)
        check_choice("backend", self.backend, recurrence.BACKEND_CHOICES, owner)
        check_choice("matmul_dtype", self.matmul_dtype, recurrence.MATMUL_DTYPES, owner)
        if self.backend == "native":  # an explicit choice that cannot be honoured stops here
            reason = recurrence.native_unsupported_options(
                self.cell, self.vjp, self.input_projection, self.matmul_dtype
            )
            if reason is not None:
                raise ValueError(f'{owner}.backend="native" is not possible: {reason}')
        if self.num_layers < 1:
            raise ValueError(f"{owner}.num_layers must be >= 1, got {self.num_layers}")
        for name in ("dropout", "word_dropout", "recurrent_dropout", "zoneout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{owner}.{name} must be in [0, 1), got {rate}")
        super().__post_init__()

    def _check_block_fits(self, owner: str) -> None:
        """Refuse a block stack where a model reads the cell's width as its states' width."""
        from rnnlab.models.seq2seq import Seq2Seq  # imports this module

        if (
            self.block != "none"
            and isinstance(self, Seq2Seq)
            and self.attention != "none"
            and self.cell.output_size != self.embed_dim
        ):
            raise ValueError(
                f"{owner} with block={self.block!r} and attention={self.attention!r}: the "
                f"attention's queries are cell.hidden_size={self.cell.output_size} wide but the "
                f"blocks output embed_dim={self.embed_dim}; set attention=none or make them equal"
            )

    @property
    def state_size(self) -> int:
        """Width of the recurrent stack's outputs (doubled when bidirectional and concatenated;
        `embed_dim` for a block stack)."""
        if self.block != "none":
            return self.embed_dim
        both = self.bidirectional and self.merge == "concat"
        return self.cell.output_size * (2 if both else 1)

    @property
    def options(self) -> recurrence.RecurrentOptions:
        """The recurrence options these fields set, as the one object every layer receives."""
        return recurrence.RecurrentOptions(
            **{name: getattr(self, name) for name in recurrence.RecurrentOptions._fields}
        )

    @nn.nowrap
    def make_stack(
        self, bidirectional: bool | None = None, **module_kwargs: Any
    ) -> RecurrentStack | blocks.BlockStack:
        """The `RecurrentStack` the backbone fields describe (`bidirectional` may be overridden),
        or the `rnnlab.blocks.BlockStack` when `block` is set (always unidirectional)."""
        if self.block != "none":
            return blocks.BlockStack(
                cell=self.cell,
                block=self.block,
                num_blocks=self.num_layers,
                width=self.embed_dim,
                conv_width=self.conv_width,
                mlp_expansion=self.mlp_expansion,
                num_heads=self.num_heads,
                slstm_at=self.slstm_at,
                dropout=self.dropout,
                options=self.options,
                **module_kwargs,
            )
        return RecurrentStack(
            cell=self.cell,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional if bidirectional is None else bidirectional,
            merge=self.merge,
            options=self.options,
            **module_kwargs,
        )

    def drop(self, xs: Array, train: bool) -> Array:
        """Inverted dropout at rate `dropout` (needs a `dropout` RNG when training)."""
        if self.dropout == 0.0:
            return xs
        return nn.Dropout(self.dropout)(xs, deterministic=not train)

    def drop_words(self, xs: Array, train: bool) -> Array:
        """Word dropout on embedded tokens `[b, t, d]`: each token's vector zeroed with
        probability `word_dropout` (one draw per token, shared by its d features), the kept ones
        scaled by 1 / (1 - rate); identity in evaluation. Needs a `dropout` RNG when training."""
        if self.word_dropout == 0.0 or not train:
            return xs
        keep = jax.random.bernoulli(
            self.make_rng("dropout"), 1.0 - self.word_dropout, xs.shape[:-1]
        )
        return jnp.where(keep[..., None], xs / (1.0 - self.word_dropout), 0.0).astype(xs.dtype)

    def embed_inputs(self, inputs: Array, vocab_size: int | None, name: str = "embed") -> Array:
        """Token ids `[b, t]` -> `[b, t, embed_dim]` with an `nn.Embed`, or features `[b, t, d]`
        unchanged when `vocab_size` is None."""
        check_inputs(type(self).__name__, inputs, vocab_size)
        if vocab_size is None:
            return inputs
        return nn.Embed(vocab_size, self.embed_dim, name=name)(inputs)

    def encode_sequence(
        self,
        inputs: Array,
        lengths: Array | None,
        train: bool,
        vocab_size: int | None,
    ) -> tuple[list[Carry], Array]:
        """Embed (or take features), dropout, the recurrent (or block) stack, dropout.

        Args:
            inputs: `[b, t]` token ids (with `vocab_size`) or `[b, t, d]` features.
            lengths: `[b]` valid steps, or None for all.
            train: sample dropout masks (needs a `dropout` RNG when any rate is > 0).
            vocab_size: embed the inputs when set.

        Returns:
            (final carries per layer, `states: [b, t, state_size]`, zero at padded steps).
        """
        xs = self.embed_inputs(inputs, vocab_size)
        if vocab_size is not None:
            xs = self.drop(self.drop_words(xs, train), train)
        carries, states = self.make_stack(name="stack")(xs, lengths=lengths, train=train)
        return carries, self.drop(states, train)

    def self_attend(
        self, states: Array, lengths: Array | None, train: bool, causal: bool = False
    ) -> Array:
        """A post-norm multi-head self-attention block over the RNN states.

        `y = LayerNorm(x + Dropout(MHA(x)))` (Vaswani et al. 2017) with `num_heads` heads of width
        `state_size / num_heads`; padded steps are neither attended to nor returned (zeros). The
        weights `[b, num_heads, t, t]` are sown as `intermediates/self_attention_weights`.

        Args:
            states: `[b, t, d]`.
            lengths: `[b]` valid steps, or None.
            train: apply dropout.
            causal: step i attends only to steps <= i.

        Returns:
            `[b, t, d]`.
        """
        size = states.shape[-1]
        params = self.param(
            "self_attention",
            lambda key: att.init_multi_head(key, size, size, self.num_heads),
        )
        attended, weights = att.multi_head_self_attention(
            params, states, lengths, self.num_heads, causal
        )
        self.sow("intermediates", "self_attention_weights", weights)
        outputs = nn.LayerNorm(name="self_attention_norm")(states + self.drop(attended, train))
        return mask_padding(outputs, lengths)
