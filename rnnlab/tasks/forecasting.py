"""Long-horizon forecasting of any CSV series with an encoder-decoder RNN (Informer's protocol).

Data as Informer (Zhou et al., AAAI 2021) `Dataset_ETT_hour`: consecutive train/valid/test rows
(ETT: 12/4/4 months; any file: row counts or fractions such as 0.7/0.1/0.2), z-scored with
training statistics, stride-1 windows of `input_len` inputs and `horizon` targets
(`rnnlab.data.timeseries`). The file's time column and the columns to read are named in the
config (`task.time_column`, `task.target`, `task.columns`). MSE and MAE are reported on the
normalised scale (`valid/mse`, the published ETT numbers) and in the file's own units
(`valid/mse_original`, `valid/mae_original`: the error times the target's train std).

Model: `Seq2Seq(output_size=n_targets)`. The encoder reads the `[b, input_len, f]` window; the
decoder is non-autoregressive, like Informer's decoder with its placeholder tokens: starting
from the encoder's final state it reads one known covariate per future step, the lead time
`(i + 1) / horizon` (a clock, so its input weights learn something, unlike all-zero
placeholders), attends over the encoder states when the model's `attention` is set, and emits
all `horizon` steps at once. Loss: MSE.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnlab.checks import check_bool, check_choice, check_int, check_path
from rnnlab.data import batching, registry, timeseries
from rnnlab.errors import ConfigError
from rnnlab.models import Seq2Seq
from rnnlab.tasks.base import Batch, Sums, Task, regression_sums
from rnnlab.typing import Array, Carry


class ForecastTask(Task):
    """Forecasting a CSV series, ETT or any other (see the module docstring).

    Every setting is checked at construction: a bad one raises `ConfigError` naming its key
    (`task.horizon must be >= 1, got 0`), as do row-count splits that leave no window (or, for
    training, fewer windows than `trainer.batch_size`). The file is read when the data is
    first used (at start-up: the trainer asks for `steps_per_epoch` as soon as the task is
    built; reading it in the constructor would let Hydra wrap a missing file's
    `DataNotFoundError`): bad content raises `DataError` naming the line and column (a column
    of text names the key that leaves it out), and a file shorter than the three splits, or
    fractions that leave a split without a window, `ConfigError`.

    Args:
        seed: run seed (initialisation, dropout, order of training windows).
        batch_size: training batch size, at most the number of training windows
            (`train_rows - input_len - horizon + 1`).
        path: a CSV file with a header row (e.g. `ETTh1.csv`); config key `task.path`.
        input_len: encoder window (Informer's `seq_len`), in `[1, train_rows - horizon]`.
        horizon: forecast length (Informer's `pred_len`: 24, 48, 168, 336, 720), >= 1 and at
            most `val_rows` and `test_rows`.
        features: "S" (target only), "M" (all in, all out) or "MS" (all in, target out).
        target: target column (a numeric column of the file).
        train_rows, val_rows, test_rows: split sizes, consecutive in time: a row count (an
            int >= 1; defaults: hourly ETT 12/4/4 months) or a fraction of the file's rows (a
            number in (0, 1), e.g. 0.7, 0.1, 0.2; see `timeseries.resolve_split_rows`).
            Together at most the file's rows (after `missing=drop`).
        time_column: the column of time stamps, left out of the features (ETT: `date`;
            matched ignoring case); null when the file has none.
        columns: the numeric columns to read, by name (the target among them); null for every
            column but the time column. Columns not listed are not read (text is fine there).
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

    name = "forecast"
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
        train_rows: int | float = timeseries.ETTH_TRAIN_ROWS,
        val_rows: int | float = timeseries.ETTH_VAL_ROWS,
        test_rows: int | float = timeseries.ETTH_TEST_ROWS,
        time_column: str | None = "date",
        columns: Sequence[str] | None = None,
        eval_batch_size: int = 256,
        eval_max_batches: int | None = None,
        residual: bool = False,
        missing: str = "error",
    ):
        super().__init__(seed, batch_size)
        self.path = check_path("task.path", path)
        sizes = {"train_rows": train_rows, "val_rows": val_rows, "test_rows": test_rows}
        self.rows = tuple(timeseries.check_split_size(f"task.{k}", v) for k, v in sizes.items())
        self.horizon = check_int("task.horizon", horizon, 1)
        self.input_len = check_int("task.input_len", input_len, 1)
        self.features = check_choice("task.features", features, ("S", "M", "MS"))
        if not isinstance(target, str) or not target:
            raise ConfigError(f"task.target must be a column name, got {target!r}")
        self.target = target
        if time_column is not None and (not isinstance(time_column, str) or not time_column):
            raise ConfigError(
                f"task.time_column must be a column name or null, got {time_column!r}"
            )
        self.time_column = time_column
        self.columns = _column_names(columns)
        self.eval_batch_size = check_int("task.eval_batch_size", eval_batch_size, 1)
        self.eval_max_batches = check_int(
            "task.eval_max_batches", eval_max_batches, 1, optional=True
        )
        self.residual = check_bool("task.residual", residual)
        self.missing = check_choice("task.missing", missing, timeseries.MISSING_POLICIES)
        if all(isinstance(size, int) for size in self.rows):  # counts: check before reading
            self._check_windows(*self.rows)

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
        data = timeseries.load_forecast_csv(
            registry.ensure(self.path),
            self.input_len,
            self.target,
            self.features,
            *self.rows,
            config_key="task.path",
            missing=self.missing,
            time_column=self.time_column,
            columns=self.columns,
        )
        self._check_windows(*_split_rows(data, self.input_len))
        return data

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

    @functools.cached_property
    def _target_std(self) -> np.ndarray:
        """`[n_targets]` float32 train std of the target column(s): normalised -> file units."""
        t = self.data.target_index
        std = self.data.std if t is None else self.data.std[t : t + 1]
        return std.astype(np.float32)

    def objective(self, outputs: Array, batch: Batch) -> tuple[Sums, Array]:
        if self.residual:
            outputs = outputs + self._last_value(batch["inputs"])
        sums, loss = regression_sums(outputs, batch["targets"])
        return {**sums, **_original_units(outputs - batch["targets"], self._target_std)}, loss

    def _last_value(self, inputs: Array) -> Array:
        """The last observed value of the target column(s), `[b, 1, n_targets]`."""
        t = self.data.target_index
        return inputs[:, -1:, :] if t is None else inputs[:, -1:, t : t + 1]

    def tokens(self, batch: Batch) -> int:
        return int(batch["inputs"].shape[0] * (self.input_len + self.horizon))

    def baselines(self) -> dict[str, float]:
        """Repeat-the-last-value forecast on the test split (a naive reference), normalised and
        in the file's units."""
        totals = np.zeros(4)
        count = 0
        for batch in self.eval_batches("test"):
            error = batch["targets"] - self._last_value(batch["inputs"])
            original = error * self._target_std
            totals[:2] += [np.sum(error**2), np.sum(np.abs(error))]
            totals[2:] += [np.sum(original**2), np.sum(np.abs(original))]
            count += error.size
        names = ("test_mse", "test_mae", "test_mse_original", "test_mae_original")
        return {
            f"baseline/{name}": total / count for name, total in zip(names, totals, strict=True)
        }

    def describe(self) -> dict[str, Any]:
        train_rows, val_rows, test_rows = _split_rows(self.data, self.input_len)
        return {
            "columns": list(self.data.columns),
            "target": self.target,
            "time_column": self.time_column,
            "rows": {"train": train_rows, "valid": val_rows, "test": test_rows},
            "train_windows": self._num_windows("train"),
            "steps_per_epoch": self.steps_per_epoch,
        }


ETTTask = ForecastTask
"""`ForecastTask` as configs saved before it read any CSV name it (`rnnlab.tasks.ETTTask`)."""


def _column_names(columns: Sequence[str] | None) -> list[str] | None:
    """`task.columns` as a list of names, or None; `ConfigError` unless names."""
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) and c for c in columns):
        raise ConfigError(
            f"task.columns must be a list of column names (e.g. [HUFL, OT]) or null, got "
            f"{columns!r}"
        )
    if not columns:
        raise ConfigError("task.columns must name at least the target column, or be null for all")
    return list(columns)


def _split_rows(data: timeseries.ForecastData, input_len: int) -> tuple[int, int, int]:
    """The train/valid/test row counts of loaded data (valid and test start `input_len` early)."""
    return len(data.train), len(data.valid) - input_len, len(data.test) - input_len


def _original_units(error: Array, std: np.ndarray) -> Sums:
    """MSE and MAE sums of a normalised error `[b, horizon, n_targets]` in the file's units
    (the error times the target's train std `[n_targets]`; the mean cancels)."""
    original = error.astype(jnp.float32) * std.reshape((1,) * (error.ndim - 1) + (-1,))
    count = jnp.asarray(original.size, jnp.float32)
    return {
        "mse_original": (jnp.sum(jnp.square(original)), count),
        "mae_original": (jnp.sum(jnp.abs(original)), count),
    }
