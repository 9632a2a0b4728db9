"""Long-horizon forecasting on ETT with an encoder-decoder RNN (Informer's protocol).

Data as Informer (Zhou et al., AAAI 2021) `Dataset_ETT_hour`: 12/4/4 months train/valid/test,
z-scored with training statistics, stride-1 windows of `input_len` inputs and `horizon` targets;
MSE and MAE are reported on that normalised scale (`rnnlab.data.timeseries`).

Model: `Seq2Seq(output_size=n_targets)`. The encoder reads the `[b, input_len, f]` window; the
decoder is non-autoregressive, like Informer's decoder with its placeholder tokens: starting
from the encoder's final state it reads one known covariate per future step, the lead time
`(i + 1) / horizon` (a clock, so its input weights learn something, unlike all-zero
placeholders), attends over the encoder states when the model's `attention` is set, and emits
all `horizon` steps at once. Loss: MSE.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from rnnlab.cells.base import Cell
from rnnlab.data import batching, timeseries
from rnnlab.models import Seq2Seq
from rnnlab.tasks.base import Batch, Task, dropout_rngs, make_model, regression_sums
from rnnlab.typing import Array, Carry, Params, PRNGKey


class ETTTask(Task):
    """ETT forecasting (see the module docstring).

    Args:
        seed: run seed (initialisation, dropout, order of training windows).
        batch_size: training batch size.
        path: an ETT CSV (e.g. `ETTh1.csv`); config key `task.path`.
        input_len: encoder window (Informer's `seq_len`).
        horizon: forecast length (Informer's `pred_len`: 24, 48, 168, 336, 720).
        features: "S" (target only), "M" (all in, all out) or "MS" (all in, target out).
        target: target column.
        train_rows, val_rows, test_rows: split sizes (defaults: hourly ETT 12/4/4 months).
        eval_batch_size: evaluation batch size.
        eval_max_batches: evaluate only the first batches of a split (speed); None for all.
        residual: the model predicts the change from the last observed target value, and the
            forecast is that value plus the model's output (persistence plus a learnt
            correction; the "subtract the last value" normalisation of NLinear, Zeng et al.
            2023). Off by default; on ETTh1 the persistence forecast alone already beats the
            published LSTMa numbers (see `baselines`).
    """

    name = "ett"
    monitor = "valid/mse"

    def __init__(
        self,
        seed: int,
        batch_size: int,
        path: str,
        input_len: int = 96,
        horizon: int = 24,
        features: str = "S",
        target: str = "OT",
        train_rows: int = timeseries.ETTH_TRAIN_ROWS,
        val_rows: int = timeseries.ETTH_VAL_ROWS,
        test_rows: int = timeseries.ETTH_TEST_ROWS,
        eval_batch_size: int = 256,
        eval_max_batches: int | None = None,
        residual: bool = False,
    ):
        super().__init__(seed, batch_size)
        self.path = Path(path).expanduser().absolute()
        self.input_len = input_len
        self.horizon = horizon
        self.features = features
        self.target = target
        self.rows = (train_rows, val_rows, test_rows)
        self.eval_batch_size = eval_batch_size
        self.eval_max_batches = eval_max_batches
        self.residual = residual

    @functools.cached_property
    def data(self) -> timeseries.ForecastData:
        return timeseries.load_ett(
            self.path,
            self.input_len,
            self.target,
            self.features,
            *self.rows,
            config_key="task.path",
        )

    def _series(self, split: str) -> np.ndarray:
        return {"train": self.data.train, "valid": self.data.valid, "test": self.data.test}[split]

    def _num_windows(self, split: str) -> int:
        count = timeseries.forecast_windows(self._series(split), self.input_len, self.horizon)
        if count < 1:
            raise ValueError(
                f"the {split} split of {self.path} is too short for task.input_len="
                f"{self.input_len} + task.horizon={self.horizon}"
            )
        return count

    @property
    def splits(self) -> tuple[str, ...]:
        return ("valid", "test")

    @property
    def steps_per_epoch(self) -> int:
        return batching.batches_per_epoch(self._num_windows("train"), self.batch_size)

    def build_model(self, cell: Cell, backbone: Mapping[str, Any]) -> nn.Module:
        return make_model(Seq2Seq, cell, backbone, output_size=self.data.num_targets)

    def _batch(self, split: str, starts: np.ndarray) -> Batch:
        return timeseries.forecast_batch(
            self._series(split), starts, self.input_len, self.horizon, self.data.target_index
        )

    def train_batch(self, step: int) -> Batch:
        starts, _ = batching.shuffled_batch_indices(
            self.seed, step, self._num_windows("train"), self.batch_size
        )
        return self._batch("train", starts)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        batches = batching.sequential_batches(self._num_windows(split), self.eval_batch_size)
        if self.eval_max_batches is not None:
            batches = batches[: self.eval_max_batches]
        for starts in batches:
            yield self._batch(split, starts)

    def _decoder_inputs(self, inputs: Array) -> Array:
        """The decoder's inputs `[b, horizon, 1]`: the lead time `(i + 1) / horizon` of step i."""
        lead = (jnp.arange(self.horizon, dtype=inputs.dtype) + 1) / self.horizon
        return jnp.broadcast_to(lead[None, :, None], (inputs.shape[0], self.horizon, 1))

    def model_args(self, batch: Batch, carry: Carry) -> tuple[Any, ...]:
        return (batch["inputs"], None, self._decoder_inputs(batch["inputs"]))

    def apply(
        self, model: nn.Module, params: Params, batch: Batch, carry: Carry, key: PRNGKey | None
    ) -> tuple[dict[str, tuple[Array, Array]], Array, Carry]:
        outputs = model.apply(
            {"params": params},
            batch["inputs"],
            None,
            self._decoder_inputs(batch["inputs"]),
            train=key is not None,
            rngs=dropout_rngs(key),
        )
        if self.residual:
            outputs = outputs + self._last_value(batch["inputs"])
        sums, loss = regression_sums(outputs, batch["targets"])
        return sums, loss, None

    def _last_value(self, inputs: Array) -> Array:
        """The last observed value of the target column(s), `[b, 1, n_targets]`."""
        t = self.data.target_index
        return inputs[:, -1:, :] if t is None else inputs[:, -1:, t : t + 1]

    def tokens(self, batch: Batch) -> int:
        return int(batch["inputs"].shape[0] * (self.input_len + self.horizon))

    def baselines(self) -> dict[str, float]:
        """Repeat-the-last-value forecast on the test split (a naive reference)."""
        totals = np.zeros(2)
        count = 0
        for batch in self.eval_batches("test"):
            error = batch["targets"] - self._last_value(batch["inputs"])
            totals += [np.sum(error**2), np.sum(np.abs(error))]
            count += error.size
        return {"baseline/test_mse": totals[0] / count, "baseline/test_mae": totals[1] / count}

    def describe(self) -> dict[str, Any]:
        return {
            "columns": list(self.data.columns),
            "train_windows": self._num_windows("train"),
            "steps_per_epoch": self.steps_per_epoch,
        }
