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
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnlab.checks import check_bool, check_choice, check_int, check_path
from rnnlab.data import batching, timeseries
from rnnlab.errors import ConfigError
from rnnlab.models import Seq2Seq
from rnnlab.tasks.base import Batch, Sums, Task, regression_sums
from rnnlab.typing import Array, Carry


class ETTTask(Task):
    """ETT forecasting (see the module docstring).

    Every setting is checked at construction: a bad one raises `ConfigError` naming its key
    (`task.horizon must be >= 1, got 0`), as do splits that leave no window (or, for training,
    fewer windows than `trainer.batch_size`). The file is read when the data is first used
    (at start-up: the trainer asks for `steps_per_epoch` as soon as the task is built; reading
    it in the constructor would let Hydra wrap a missing file's `DataNotFoundError`): bad
    content raises `DataError` naming the line and column, and a file shorter than the three
    splits `ConfigError`.

    Args:
        seed: run seed (initialisation, dropout, order of training windows).
        batch_size: training batch size, at most the number of training windows
            (`train_rows - input_len - horizon + 1`).
        path: an ETT CSV (e.g. `ETTh1.csv`); config key `task.path`.
        input_len: encoder window (Informer's `seq_len`), in `[1, train_rows - horizon]`.
        horizon: forecast length (Informer's `pred_len`: 24, 48, 168, 336, 720), >= 1 and at
            most `val_rows` and `test_rows`.
        features: "S" (target only), "M" (all in, all out) or "MS" (all in, target out).
        target: target column (a numeric column of the file).
        train_rows, val_rows, test_rows: split sizes (defaults: hourly ETT 12/4/4 months),
            each >= 1; together at most the file's rows (after `missing=drop`).
        eval_batch_size: evaluation batch size, >= 1.
        eval_max_batches: evaluate only the first batches of a split (speed), >= 1; None for
            all.
        residual: the model predicts the change from the last observed target value, and the
            forecast is that value plus the model's output (persistence plus a learnt
            correction; the "subtract the last value" normalisation of NLinear, Zeng et al.
            2023). Off by default; on ETTh1 the persistence forecast alone already beats the
            published LSTMa numbers (see `baselines`).
        missing: what to do with missing values (an empty cell or `nan`) in the columns used,
            config key `task.missing`:
            "error" (default): stop with the file, line and column of the first one;
            "drop": remove those rows before the split (the split sizes count the rows left);
            "ffill": repeat the last number above in the column;
            "interpolate": linear interpolation between the numbers above and below.
            A missing value that the policy cannot fill (before a column's first number, or
            after its last for "interpolate") is an error. Infinity (`inf`, an overflowing
            number) is not a missing value: it is an error under every policy, as is any other
            text. A file without missing values loads identically under every policy.
    """

    name = "ett"
    model_class = Seq2Seq
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
        missing: str = "error",
    ):
        super().__init__(seed, batch_size)
        self.path = check_path("task.path", path)
        rows = {
            "train_rows": check_int("task.train_rows", train_rows, 1),
            "val_rows": check_int("task.val_rows", val_rows, 1),
            "test_rows": check_int("task.test_rows", test_rows, 1),
        }
        self.rows = tuple(rows.values())
        self.horizon = check_int("task.horizon", horizon, 1)
        self.input_len = check_int("task.input_len", input_len, 1)
        self.features = check_choice("task.features", features, ("S", "M", "MS"))
        if not isinstance(target, str) or not target:
            raise ConfigError(f"task.target must be a column name, got {target!r}")
        self.target = target
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)
        self.eval_max_batches = check_int(
            "task.eval_max_batches", eval_max_batches, 1, optional=True
        )
        self.residual = check_bool("task.residual", residual)
        self.missing = check_choice("task.missing", missing, timeseries.MISSING_POLICIES)
        self._check_windows(**rows)

    def _check_windows(self, train_rows: int, val_rows: int, test_rows: int) -> None:
        """`ConfigError` unless every split has a window and training has a full batch."""
        span = self.input_len + self.horizon
        if span > train_rows:
            raise ConfigError(
                f"task.input_len={self.input_len} + task.horizon={self.horizon} = {span} rows "
                f"do not fit in task.train_rows={train_rows}: a training window needs "
                "input_len + horizon rows; lower task.input_len or task.horizon, or raise "
                "task.train_rows"
            )
        for key, rows in (("val_rows", val_rows), ("test_rows", test_rows)):
            if self.horizon > rows:
                raise ConfigError(
                    f"task.horizon={self.horizon} is longer than task.{key}={rows}: that split "
                    f"has no window to forecast; lower task.horizon or raise task.{key}"
                )
        windows = train_rows - span + 1
        if windows < self.batch_size:
            raise ConfigError(
                f"trainer.batch_size={self.batch_size} is more than the {windows} training "
                f"windows (task.train_rows - task.input_len - task.horizon + 1 = {train_rows} - "
                f"{self.input_len} - {self.horizon} + 1): lower trainer.batch_size, task.input_len "
                "or task.horizon, or raise task.train_rows"
            )

    @functools.cached_property
    def data(self) -> timeseries.ForecastData:
        return timeseries.load_ett(
            self.path,
            self.input_len,
            self.target,
            self.features,
            *self.rows,
            config_key="task.path",
            missing=self.missing,
        )

    def _series(self, split: str) -> np.ndarray:
        return {"train": self.data.train, "valid": self.data.valid, "test": self.data.test}[split]

    def _num_windows(self, split: str) -> int:
        count = timeseries.forecast_windows(self._series(split), self.input_len, self.horizon)
        if count < 1:
            raise ConfigError(
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

    def model_fields(self) -> dict[str, Any]:
        return {"output_size": self.data.num_targets}

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

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        if self.residual:
            outputs = outputs + self._last_value(batch["inputs"])
        return regression_sums(outputs, batch["targets"])

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
