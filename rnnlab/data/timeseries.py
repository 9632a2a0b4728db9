"""Long-horizon forecasting on ETT (Electricity Transformer Temperature).

Follows Informer (Zhou et al., "Informer: Beyond Efficient Transformer for Long Sequence
Time-Series Forecasting", AAAI 2021), `Dataset_ETT_hour`: 12/4/4 months of 30 days for
train/val/test, val and test slices starting `input_len` rows early so that their first
*target* rows are 8640 and 11520, z-scoring with train-split statistics, and stride-1 windows.
MSE/MAE are reported on the normalized scale.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence

import numpy as np

from rnnlab.data.errors import StrPath, read_text

ETT_COLUMNS = ("date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
ETTH_TRAIN_ROWS = 12 * 30 * 24
ETTH_VAL_ROWS = 4 * 30 * 24
ETTH_TEST_ROWS = 4 * 30 * 24
_ETT_HINT = "download ETTh1.csv from github.com/zhouhaoyi/ETDataset (ETT-small/)"


@dataclasses.dataclass(frozen=True)
class ForecastData:
    """Normalized splits of a multivariate series.

    Attributes:
        train: `[n_train, f]` float32, z-scored with the train statistics.
        valid: `[n_valid, f]` float32; its first `input_len` rows overlap the end of train.
        test: `[n_test, f]` float32; its first `input_len` rows overlap the end of valid.
        mean: `[f]` float64 train mean of the raw columns.
        std: `[f]` float64 train population std (ddof=0; 1 where a column is constant).
        columns: the `f` column names, in feature order.
        target_index: feature index of the forecast target, or None when every feature is a
            target (`features="M"`).
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    columns: tuple[str, ...]
    target_index: int | None

    @property
    def num_features(self) -> int:
        """`f`, the input width."""
        return len(self.columns)

    @property
    def num_targets(self) -> int:
        """Width of the target, 1 or `f`."""
        return self.num_features if self.target_index is None else 1


def ett_borders(
    input_len: int,
    train_rows: int = ETTH_TRAIN_ROWS,
    val_rows: int = ETTH_VAL_ROWS,
    test_rows: int = ETTH_TEST_ROWS,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Row ranges `[start, stop)` of train, val and test, as Informer's `Dataset_ETT_hour`.

    `border1s = [0, train - input_len, train + val - input_len]`,
    `border2s = [train, train + val, train + val + test]` (Informer calls `input_len` `seq_len`).
    The defaults are the hourly files': train [0, 8640), val [8640 - input_len, 11520),
    test [11520 - input_len, 14400).
    """
    if not 0 < input_len <= train_rows:
        raise ValueError(f"input_len must be in [1, {train_rows}], got {input_len}")
    b2 = (train_rows, train_rows + val_rows, train_rows + val_rows + test_rows)
    return (0, b2[0]), (b2[0] - input_len, b2[1]), (b2[1] - input_len, b2[2])


def read_numeric_csv(
    path: StrPath, config_key: str = "task.path", hint: str | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Numeric columns of a CSV with a header row; a `date` column is dropped.

    Returns:
        `(values [n, f] float64, column names)`.

    Raises:
        DataNotFoundError: the file does not exist.
        ValueError: empty file, no data rows, ragged rows or non-numeric values.
    """
    rows = list(csv.reader(read_text(path, config_key, hint).splitlines()))
    rows = [row for row in rows if row]
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if not body:
        raise ValueError(f"{path} has a header but no data rows")
    keep = [i for i, name in enumerate(header) if name.lower() != "date"]
    values = np.empty((len(body), len(keep)), dtype=np.float64)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(
                f"{path} line {r + 2} has {len(row)} fields, the header has {len(header)}"
            )
        try:
            values[r] = [float(row[i]) for i in keep]
        except ValueError:
            raise ValueError(f"{path} line {r + 2} has a non-numeric value: {row}") from None
    return values, tuple(header[i] for i in keep)


def load_ett(
    path: StrPath,
    input_len: int,
    target: str = "OT",
    features: str = "S",
    train_rows: int = ETTH_TRAIN_ROWS,
    val_rows: int = ETTH_VAL_ROWS,
    test_rows: int = ETTH_TEST_ROWS,
    config_key: str = "task.path",
) -> ForecastData:
    """An ETT CSV (`date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT`) split and z-scored as Informer.

    Args:
        path: the CSV file, e.g. `ETTh1.csv` (17,420 rows; rows from 14,400 on are unused).
        input_len: encoder length (Informer's `seq_len`); val/test start this many rows early.
        target: the column to forecast.
        features: `"S"` univariate (the target only, `f = 1`); `"M"` every numeric column in
            and out, target last; `"MS"` every column in, the target alone out.
        train_rows, val_rows, test_rows: split sizes (defaults: hourly ETT, 12/4/4 months).
        config_key: config key named in the error if the file is missing.

    Returns:
        A `ForecastData`; mean/std are fitted on the train rows only (`StandardScaler`).

    Raises:
        DataNotFoundError: the file does not exist.
        ValueError: malformed CSV, unknown target or `features`, or too few rows.
    """
    if features not in ("S", "M", "MS"):
        raise ValueError(f"features must be 'S', 'M' or 'MS', got {features!r}")
    values, columns = read_numeric_csv(path, config_key, _ETT_HINT)
    if target not in columns:
        raise ValueError(f"{path} has no target column {target!r}; columns: {columns}")
    t = columns.index(target)
    order = [t] if features == "S" else [i for i in range(len(columns)) if i != t] + [t]
    values, columns = values[:, order], tuple(columns[i] for i in order)
    (tr0, tr1), (va0, va1), (te0, te1) = ett_borders(input_len, train_rows, val_rows, test_rows)
    if len(values) < te1:
        raise ValueError(f"{path} has {len(values)} rows; the split needs {te1}")
    mean, std = fit_standardizer(values[tr0:tr1])
    scaled = normalize(values, mean, std)
    return ForecastData(
        train=scaled[tr0:tr1],
        valid=scaled[va0:va1],
        test=scaled[te0:te1],
        mean=mean,
        std=std,
        columns=columns,
        target_index=None if features == "M" else len(columns) - 1,
    )


def fit_standardizer(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and population std (ddof=0) of `[n, f]` values, as sklearn's `StandardScaler`.

    A zero std becomes 1 so that constant columns map to 0.

    Returns:
        `(mean [f], std [f])` float64.
    """
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0)
    return values.mean(axis=0), np.where(std == 0.0, 1.0, std)


def normalize(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """`(values - mean) / std` as float32; `values` `[..., f]`."""
    return ((np.asarray(values, dtype=np.float64) - mean) / std).astype(np.float32)


def denormalize(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Inverse of `normalize`; pass `mean[i:i+1]`, `std[i:i+1]` for a single target column."""
    return (np.asarray(values, dtype=np.float64) * std + mean).astype(np.float32)


def forecast_windows(series: np.ndarray, input_len: int, horizon: int) -> int:
    """Number of stride-1 windows of `input_len` inputs and `horizon` targets in `[n, f]` data."""
    return max(0, len(series) - input_len - horizon + 1)


def forecast_batch(
    series: np.ndarray,
    starts: Sequence[int] | np.ndarray,
    input_len: int,
    horizon: int,
    target_index: int | None = None,
) -> dict[str, np.ndarray]:
    """Windows starting at rows `starts`: `input_len` rows in, the next `horizon` rows out.

    Args:
        series: `[n, f]` normalized split (e.g. `ForecastData.train`).
        starts: `[b]` window starts in `[0, forecast_windows(series, input_len, horizon))`.
        input_len: `t_in`.
        horizon: `t_out`.
        target_index: target feature, or None for every feature.

    Returns:
        `inputs` `[b, t_in, f]` and `targets` `[b, t_out, n_targets]` (`n_targets` 1 or `f`).
    """
    starts = np.asarray(starts, dtype=np.int64)
    num = forecast_windows(series, input_len, horizon)
    if starts.size and (starts.min() < 0 or starts.max() >= num):
        raise IndexError(f"window starts must be in [0, {num}), got {starts.min()}..{starts.max()}")
    inputs = series[starts[:, None] + np.arange(input_len)]
    targets = series[starts[:, None] + input_len + np.arange(horizon)]
    if target_index is not None:
        targets = targets[..., target_index : target_index + 1]
    return {"inputs": inputs, "targets": targets}
