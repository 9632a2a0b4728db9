"""Checks of config values where they enter (task constructors, optimiser and trainer schemas).

Each returns the value, converted, or raises `rnnlab.errors.ConfigError` naming the dotted config
key and the allowed values (`task.horizon must be >= 1, got 0`), which the console scripts print
as one line.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from rnnlab.errors import ConfigError


def in_range(
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> bool:
    """Whether `value` lies within the bounds (None: unbounded; open: the bound excluded)."""
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    return not (below or above)


def range_text(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    spec: str = "",
) -> str:
    """The bounds as every range message says them: `>= 1`, `< 1`, `in [0, 1)` (`spec`: the
    numbers' format spec, e.g. "g"); at least one bound is given."""
    if low is not None and high is not None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        return f"in {left}{low:{spec}}, {high:{spec}}{right}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:{spec}}"
    return f"{'<' if high_open else '<='} {high:{spec}}"


def check_path(key: str, value: Any) -> Path:
    """`value` as an absolute `Path`; `ConfigError` if it is not a path (e.g. null)."""
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ConfigError(f"{key} must be a file or directory path, got {value!r}; set {key}=...")
    return Path(value).expanduser().absolute()


def check_int(
    key: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool = False,
    why: str = "",
) -> int | None:
    """`value` as an `int` in `[minimum, maximum]`, else `ConfigError` naming `key`.

    Args:
        key: the dotted config key, e.g. `task.horizon`.
        value: the setting; a bool or a float is refused (`task.horizon=1.5`).
        minimum, maximum: the inclusive range (None: unbounded).
        optional: None is allowed (and returned).
        why: appended to the message (e.g. the constraint that sets the maximum).
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        allowed = "an integer or null" if optional else "an integer"
        raise ConfigError(f"{key} must be {allowed}, got {value!r}{why}")
    value = int(value)
    if not in_range(value, minimum, maximum):
        raise ConfigError(f"{key} must be {range_text(minimum, maximum)}, got {value}{why}")
    return value


def check_float(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> float | None:
    """`value` as a finite `float` in the range given, else `ConfigError` naming `key`.

    Args:
        key: the dotted config key, e.g. `task.valid_fraction`.
        value: the setting (an int is accepted; a bool, a string or nan/inf is refused).
        low, high: the bounds (None: unbounded).
        low_open, high_open: exclude the bound, e.g. `(0, 1)` for a fraction.
        optional: None is allowed (and returned).
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        allowed = "a number or null" if optional else "a number"
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")
    value = float(value)
    bounds = {"low_open": low_open, "high_open": high_open}
    if not math.isfinite(value) or not in_range(value, low, high, **bounds):
        if low is None and high is None:
            raise ConfigError(f"{key} must be a finite number, got {value:g}")
        allowed = range_text(low, high, **bounds, spec="g")
        raise ConfigError(f"{key} must be {allowed}, got {value:g}")
    return value


def check_choice(key: str, value: Any, choices: Collection[Any]) -> Any:
    """`value` if it is one of `choices`, else `ConfigError` naming `key` and the choices."""
    if isinstance(value, bool) or value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{key} must be one of {listed}; got {value!r}")
    return value


def check_bool(key: str, value: Any) -> bool:
    """`value` if it is a bool (`true`/`false` in YAML), else `ConfigError` naming `key`."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value
