"""Long-horizon forecasting on ETT (Electricity Transformer Temperature).

Follows Informer (Zhou et al., "Informer: Beyond Efficient Transformer for Long Sequence
Time-Series Forecasting", AAAI 2021), `Dataset_ETT_hour`: 12/4/4 months of 30 days for
train/val/test, val and test slices starting `input_len` rows early so that their first
*target* rows are 8640 and 11520, z-scoring with train-split statistics, and stride-1 windows.
MSE/MAE are reported on the normalized scale.

Any other CSV series loads the same way (`load_forecast_csv`): a header row, an optional time
column (`time_column`, skipped; `date` for ETT, e.g. `Month` for the airline-passengers series),
the numeric columns to read by name (`columns`), and split sizes as row counts or as fractions of
the rows (`resolve_split_rows`).

Reading a CSV (`parse_numeric_csv`) is strict: a cell that is not a number, an infinity
(`inf`, or a number too large for float64) or a ragged row is a `DataError` naming the file,
the 1-based line and the column. A *missing* value, an empty cell or `nan` (any case), is
handled by an explicit policy (`fill_missing`, config key `task.missing`):

- `error` (the default): a missing value is a `DataError` naming its line and column;
- `drop`: rows with a missing value are removed before the split, so the split sizes count the
  remaining rows;
- `ffill`: a missing value takes the last number above it in its column; a missing value
  before a column's first number cannot be filled and is an error;
- `interpolate`: linear interpolation in the row position between the numbers above and below
  (the ETT rows are evenly spaced in time); a missing value before a column's first number or
  after its last is an error.

Infinity is never "missing": it is an error under every policy, as is any other text. The
policy applies to the columns the task reads (`features`); the other columns are only checked
for text and infinities. A file without missing values loads identically under every policy.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rnnlab.checks import check_choice
from rnnlab.data.errors import ConfigError, DataError, StrPath, read_text

ETT_COLUMNS = ("date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
ETTH_TRAIN_ROWS = 12 * 30 * 24
ETTH_VAL_ROWS = 4 * 30 * 24
ETTH_TEST_ROWS = 4 * 30 * 24
_ETT_HINT = "download ETTh1.csv from github.com/zhouhaoyi/ETDataset (ETT-small/)"
MISSING_POLICIES = ("error", "drop", "ffill", "interpolate")
"""Choices of `task.missing` (see the module docstring)."""
MISSING_KEY = "task.missing"
TIME_KEY = "task.time_column"
COLUMNS_KEY = "task.columns"
SPLIT_KEYS = ("task.train_rows", "task.val_rows", "task.test_rows")
SplitSize = int | float
"""A split size: a row count (an int >= 0) or a fraction of the rows (a float in (0, 1))."""


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

    Raises:
        ConfigError: `input_len` is not in `[1, train_rows]`, or a split size is negative.
    """
    for key, rows in (("train_rows", train_rows), ("val_rows", val_rows), ("test_rows", test_rows)):
        if rows < 0:
            raise ConfigError(f"task.{key} must be >= 0, got {rows}")
    if not 0 < input_len <= train_rows:
        raise ConfigError(
            f"task.input_len must be in [1, task.train_rows={train_rows}], got {input_len}"
        )
    b2 = (train_rows, train_rows + val_rows, train_rows + val_rows + test_rows)
    return (0, b2[0]), (b2[0] - input_len, b2[1]), (b2[1] - input_len, b2[2])


@dataclasses.dataclass(frozen=True)
class NumericTable:
    """The numeric columns of a CSV file as read, before a missing-value policy.

    Attributes:
        path: the file.
        values: `[n, f]` float64; NaN where a cell is missing (empty or `nan`).
        columns: the `f` column names.
        fields: the 1-based position of each column in the file's rows.
        lines: `[n]` int64, the 1-based line of each row in the file.
        missing: the text of each missing cell, by `(line, field)` (an empty string for an
            empty cell).
    """

    path: Path
    values: np.ndarray
    columns: tuple[str, ...]
    fields: tuple[int, ...]
    lines: np.ndarray
    missing: Mapping[tuple[int, int], str]

    def where(self, row: int, col: int) -> str:
        """`"<file> line L, column 'NAME' (field F)"` for a cell, in error messages."""
        return (
            f"{self.path} line {int(self.lines[row])}, column {self.columns[col]!r} "
            f"(field {self.fields[col]})"
        )

    def missing_text(self, row: int, col: int) -> str:
        """How a missing cell reads: `empty cell` or its text, e.g. `'NaN'`."""
        text = self.missing.get((int(self.lines[row]), self.fields[col]), "")
        return "empty cell" if not text.strip() else repr(text)

    def select(self, order: Sequence[int]) -> NumericTable:
        """The table with columns `order` (indices into `columns`), in that order."""
        return dataclasses.replace(
            self,
            values=self.values[:, list(order)],
            columns=tuple(self.columns[i] for i in order),
            fields=tuple(self.fields[i] for i in order),
        )

    def take_rows(self, keep: np.ndarray) -> NumericTable:
        """The table with the rows where the boolean `keep` `[n]` is true."""
        return dataclasses.replace(self, values=self.values[keep], lines=self.lines[keep])


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _first(mask: np.ndarray) -> tuple[int, int]:
    """`(row, col)` of the first true entry of a `[n, f]` mask in file order (row-major)."""
    flat = int(np.argmax(mask.reshape(-1)))
    return divmod(flat, mask.shape[1])


def parse_numeric_csv(
    path: StrPath,
    config_key: str = "task.path",
    hint: str | None = None,
    time_column: str | None = "date",
    columns: Sequence[str] | None = None,
) -> NumericTable:
    """The numeric columns of a CSV with a header row; the time column is dropped.

    Blank lines are skipped. Missing values (an empty cell, `nan`) become NaN, for
    `fill_missing` to handle.

    Args:
        path: the CSV file.
        config_key: config key of the path, named in the errors.
        hint: where to get the file, for the error if it is missing.
        time_column: the column of time stamps, left out (`date` for ETT; matched ignoring
            case); None when the file has none. Config key `task.time_column`.
        columns: the columns to read, in file order; None for every column but the time
            column. Config key `task.columns`; the others are not read at all.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: the file is empty, not UTF-8 or has no data rows; a row has a different
            number of fields than the header; the header repeats a column name; a cell is
            not a number or is infinite (the message names the line and the column, and for
            a column of text the key that leaves it out).
        ConfigError: `time_column` or a name in `columns` is not a column of the file.
    """
    text = read_text(path, config_key, hint)
    path = Path(path)
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    body: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if _is_blank(row):
            continue
        if header is None:
            header = [name.strip() for name in row]
            continue
        if len(row) != len(header):
            raise DataError(
                f"{path} line {reader.line_num} has {len(row)} fields, the header (line 1) has "
                f"{len(header)}: fix the row (a missing value is an empty field between commas)"
            )
        body.append(row)
        lines.append(reader.line_num)
    assert header is not None  # read_text refuses a blank file
    if not body:
        raise DataError(f"{path} has a header but no data rows: give {config_key} a file with data")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path} line 1: the header names column {name!r} twice; rename one")
        seen.add(name)
    keep = _columns_to_read(path, header, time_column, columns)
    table = NumericTable(
        path=path,
        values=np.empty((len(body), len(keep)), dtype=np.float64),
        columns=tuple(header[i] for i in keep),
        fields=tuple(i + 1 for i in keep),
        lines=np.asarray(lines, dtype=np.int64),
        missing={},
    )
    values = table.values
    for r, row in enumerate(body):
        try:
            values[r] = [float(row[i]) for i in keep]
        except ValueError:
            values[r] = [
                _parse_cell(table, r, c, row[i], values[:r], time_column)
                for c, i in enumerate(keep)
            ]
    infinite = np.isinf(values)
    if infinite.any():
        raise _infinite(table, body, keep, *_first(infinite))
    missing = {(lines[r], keep[c] + 1): body[r][keep[c]] for r, c in np.argwhere(np.isnan(values))}
    return dataclasses.replace(table, missing=missing) if missing else table


def _columns_to_read(
    path: Path, header: Sequence[str], time_column: str | None, columns: Sequence[str] | None
) -> list[int]:
    """Header positions of the columns to read (see `parse_numeric_csv`), in file order."""
    names = ", ".join(header)
    if time_column is not None:
        found = [name for name in header if name.lower() == time_column.lower()]
        if not found:
            raise ConfigError(
                f"{TIME_KEY}={time_column!r} is not a column of {path} (its columns: {names}); "
                f"set {TIME_KEY} to the column of time stamps, or to null if there is none"
            )
        time_column = found[0]
    if columns is None:
        return [i for i, name in enumerate(header) if name != time_column]
    for name in columns:
        if name not in header or name == time_column:
            why = "is the time column" if name == time_column else "is not a column of"
            raise ConfigError(
                f"{COLUMNS_KEY} names {name!r}, which {why} {path} (its columns: {names}); "
                f"list the numeric columns to read in {COLUMNS_KEY}, or set it to null for all"
            )
    return [i for i, name in enumerate(header) if name in columns]


def _parse_cell(
    table: NumericTable,
    row: int,
    col: int,
    text: str,
    above: np.ndarray,
    time_column: str | None = None,
) -> float:
    """One cell of a row that did not parse as a whole: NaN if missing, else the number."""
    if not text.strip():
        return float("nan")
    try:
        return float(text)
    except ValueError:
        pass
    infinite = np.isinf(above)  # report the first bad cell of the file
    if infinite.any():
        r, c = _first(infinite)
        number = repr(f"{above[r, c]:g}")
        raise DataError(f"{table.where(r, c)}: {number} is not a finite number; {_INF_FIX}")
    name = table.columns[col]
    if row == 0:  # text from the first row on: a column of time stamps or labels, not a typo
        now = "none" if time_column is None else repr(time_column)
        raise DataError(
            f"{table.where(row, col)}: {text!r} is non-numeric text, so column {name!r} is not "
            f"a numeric series: if it holds the time stamps, set {TIME_KEY}={name} (now {now}); "
            f"otherwise leave it out by listing the columns to read in {COLUMNS_KEY}"
        )
    raise DataError(
        f"{table.where(row, col)}: {text!r} is non-numeric text; every cell of a numeric column "
        f"must be a number (a missing value is an empty cell or nan, see {MISSING_KEY}): fix the "
        "cell or remove the row"
    )


_INF_FIX = (
    f"infinity is not a missing value under any {MISSING_KEY} policy: fix the cell or remove the "
    "row"
)


def _infinite(
    table: NumericTable, body: list[list[str]], keep: list[int], r: int, c: int
) -> DataError:
    return DataError(
        f"{table.where(r, c)}: {body[r][keep[c]]!r} is not a finite number; {_INF_FIX}"
    )


def fill_missing(
    table: NumericTable, missing: str = "error", config_key: str = MISSING_KEY
) -> NumericTable:
    """Applies a missing-value policy (see the module docstring) to every column of `table`.

    Args:
        table: from `parse_numeric_csv` (restrict it to the columns used with `select` first).
        missing: "error", "drop", "ffill" or "interpolate".
        config_key: config key of the policy, named in the messages.

    Returns:
        A table without NaN (`table` itself if it had none).

    Raises:
        ConfigError: unknown policy.
        DataError: a missing value under "error"; one that "ffill" or "interpolate" cannot fill
            (before the first number of its column, or after the last for "interpolate"); no
            row left after "drop".
    """
    check_choice(config_key, missing, MISSING_POLICIES)
    mask = np.isnan(table.values)
    if not mask.any():
        return table
    others = ", ".join(p for p in MISSING_POLICIES if p != "error")
    if missing == "error":
        r, c = _first(mask)
        raise DataError(
            f"{table.where(r, c)}: missing value ({table.missing_text(r, c)}); set "
            f"{config_key}=drop, ffill or interpolate to handle missing values, or fill the cell"
        )
    if missing == "drop":
        keep = ~mask.any(axis=1)
        if not keep.any():
            raise DataError(
                f"{table.path}: every row has a missing value in the columns {table.columns}, so "
                f"{config_key}=drop leaves no data: fill the cells or use another policy ({others})"
            )
        return table.take_rows(keep)
    values = table.values.copy()
    rows = np.arange(len(values))
    for c in range(values.shape[1]):
        gaps = mask[:, c]
        if not gaps.any():
            continue
        known = rows[~gaps]
        if known.size == 0:
            raise DataError(
                f"{table.where(0, c)}: column {table.columns[c]!r} has no numbers at all, so "
                f"{config_key}={missing} cannot fill it: fill the column or choose other columns "
                "(task.features, task.target)"
            )
        if known[0] > 0:
            raise DataError(
                f"{table.where(0, c)}: missing value ({table.missing_text(0, c)}) before the "
                f"first number of column {table.columns[c]!r}, which {config_key}={missing} "
                f"cannot fill: set {config_key}=drop, or fill the cell"
            )
        if missing == "ffill":
            last = np.maximum.accumulate(np.where(gaps, 0, rows))
            values[:, c] = values[last, c]
            continue
        if gaps[known[-1] + 1 :].any():
            r = int(known[-1]) + 1
            raise DataError(
                f"{table.where(r, c)}: missing value ({table.missing_text(r, c)}) after the last "
                f"number of column {table.columns[c]!r}, which {config_key}=interpolate cannot "
                f"fill (it needs a number on each side): set {config_key}=drop or ffill, or fill "
                "the cell"
            )
        values[gaps, c] = np.interp(rows[gaps], known, values[known, c])
    return dataclasses.replace(table, values=values)


def read_numeric_csv(
    path: StrPath,
    config_key: str = "task.path",
    hint: str | None = None,
    missing: str = "error",
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Numeric columns of a CSV with a header row; a `date` column is dropped.

    Args:
        path: the CSV file.
        config_key: config key of the path, named in the errors.
        hint: where to get the file, for the error if it is missing.
        missing: missing-value policy over every numeric column (see `fill_missing`).

    Returns:
        `(values [n, f] float64, column names)`.

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: empty file, no data rows, ragged rows, non-numeric or infinite values, or
            missing values the policy refuses (see `parse_numeric_csv`, `fill_missing`).
        ConfigError: unknown `missing` policy.
    """
    check_choice(MISSING_KEY, missing, MISSING_POLICIES)
    table = fill_missing(parse_numeric_csv(path, config_key, hint), missing)
    return table.values, table.columns


def resolve_split_rows(rows: int, sizes: Sequence[SplitSize]) -> tuple[int, int, int]:
    """Train/valid/test row counts from split sizes given as counts or fractions.

    A count (an int) is used as it is; a fraction `f` (a float in (0, 1)) becomes
    `floor(rows * f)`. When all three are fractions that add up to 1, the test split takes the
    rows the rounding leaves, so every row is used (70/10/20 of 144 rows: 100/14/30).

    Args:
        rows: the number of rows in the file (after `task.missing=drop`).
        sizes: `(train, valid, test)` sizes.

    Raises:
        ConfigError: a size is neither an int >= 0 nor a float in (0, 1) (named by its key
            `task.train_rows`, `task.val_rows` or `task.test_rows`).
    """
    counts = []
    for key, size in zip(SPLIT_KEYS, sizes, strict=True):
        counts.append(check_split_size(key, size, minimum=0))
        if isinstance(size, float):
            counts[-1] = math.floor(rows * size + 1e-9)
    if all(isinstance(size, float) for size in sizes) and math.isclose(sum(sizes), 1.0):
        counts[2] = rows - counts[0] - counts[1]
    return counts[0], counts[1], counts[2]


def check_split_size(key: str, size: SplitSize, minimum: int = 1) -> SplitSize:
    """`size` if it is a row count `>= minimum` (an int) or a fraction (a float in (0, 1)), else
    `ConfigError` naming `key`."""
    fraction = "a fraction of the file's rows is a number in (0, 1), e.g. 0.7"
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        if size < minimum:
            raise ConfigError(f"{key} must be >= {minimum}, got {size} ({fraction})")
        return size
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or not 0.0 < size < 1.0:
        raise ConfigError(
            f"{key} must be a row count (an integer >= {minimum}) or a fraction of the file's "
            f"rows (a number in (0, 1), e.g. 0.7), got {size!r}"
        )
    return size


def load_forecast_csv(
    path: StrPath,
    input_len: int,
    target: str,
    features: str = "S",
    train_rows: SplitSize = 0.7,
    val_rows: SplitSize = 0.1,
    test_rows: SplitSize = 0.2,
    config_key: str = "task.path",
    missing: str = "error",
    time_column: str | None = None,
    columns: Sequence[str] | None = None,
    hint: str | None = None,
) -> ForecastData:
    """A CSV series with a header row, split in time and z-scored with the train statistics.

    The splits are consecutive row ranges as Informer's `Dataset_ETT_hour` (`ett_borders`):
    train first, then valid, then test; valid and test start `input_len` rows early so that
    their first target rows follow the previous split.

    Args:
        path: the CSV file, e.g. `ETTh1.csv` or `airline-passengers.csv`.
        input_len: encoder length (Informer's `seq_len`); val/test start this many rows early.
        target: the column to forecast.
        features: `"S"` univariate (the target only, `f = 1`); `"M"` every column read in
            and out, target last; `"MS"` every column read in, the target alone out.
        train_rows, val_rows, test_rows: split sizes, row counts or fractions of the rows
            (`resolve_split_rows`).
        config_key: config key named in the error if the file is missing.
        missing: policy for missing values in the columns used (`task.missing`: "error",
            "drop", "ffill" or "interpolate"; see the module docstring). Filled values enter
            the train statistics like any other.
        time_column: the column of time stamps, left out; None if the file has none.
        columns: the numeric columns to read (the target among them); None for all but the
            time column.
        hint: where to get the file, for the error if it is missing.

    Returns:
        A `ForecastData`; mean/std are fitted on the train rows only (`StandardScaler`).

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: malformed CSV (see `parse_numeric_csv`), or missing values the policy
            refuses (see `fill_missing`).
        ConfigError: unknown target, time column, column, `features` or `missing`, a split
            size that is neither a count nor a fraction, or a file with fewer rows than the
            split needs.
    """
    check_choice("task.features", features, ("S", "M", "MS"))
    check_choice(MISSING_KEY, missing, MISSING_POLICIES)
    table = parse_numeric_csv(path, config_key, hint, time_column=time_column, columns=columns)
    columns = table.columns
    if target not in columns:
        raise ConfigError(
            f"task.target={target!r} is not a numeric column of {path}; its columns: "
            f"{', '.join(columns)}"
        )
    t = columns.index(target)
    order = [t] if features == "S" else [i for i in range(len(columns)) if i != t] + [t]
    selected = table.select(order)
    table = fill_missing(selected, missing)
    values, columns = table.values, table.columns
    sizes = (train_rows, val_rows, test_rows)
    train_rows, val_rows, test_rows = resolve_split_rows(len(values), sizes)
    (tr0, tr1), (va0, va1), (te0, te1) = ett_borders(input_len, train_rows, val_rows, test_rows)
    if len(values) < te1:
        dropped = len(selected.values) - len(values)
        after = f" ({dropped} dropped by {MISSING_KEY}=drop)" if dropped else ""
        raise ConfigError(
            f"{path} has {len(values)} data rows{after}; task.train_rows + task.val_rows + "
            f"task.test_rows = {train_rows} + {val_rows} + {test_rows} = {te1} rows do not fit: "
            "lower them, give them as fractions of the rows (e.g. 0.7, 0.1, 0.2), or use a "
            "longer file"
        )
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


def load_ett(
    path: StrPath,
    input_len: int,
    target: str = "OT",
    features: str = "S",
    train_rows: int = ETTH_TRAIN_ROWS,
    val_rows: int = ETTH_VAL_ROWS,
    test_rows: int = ETTH_TEST_ROWS,
    config_key: str = "task.path",
    missing: str = "error",
) -> ForecastData:
    """An ETT CSV (`date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT`) split and z-scored as Informer.

    `load_forecast_csv` with ETT's time column (`date`), target (`OT`) and split (hourly ETT:
    12/4/4 months of 30 days; ETTh1.csv has 17,420 rows, rows from 14,400 on are unused).
    """
    return load_forecast_csv(
        path,
        input_len,
        target,
        features,
        train_rows,
        val_rows,
        test_rows,
        config_key,
        missing,
        time_column="date",
        hint=_ETT_HINT,
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
