"""Errors raised by the data loaders.

A missing file raises `DataNotFoundError` (a `FileNotFoundError`) whose message names the path
and the config key that points to it, so a user can fix a run from the message alone.
Malformed content (empty file, missing column, unparsable number) raises `ValueError`.
"""

from __future__ import annotations

import os
from pathlib import Path

StrPath = str | os.PathLike[str]


class DataNotFoundError(FileNotFoundError):
    """A data file or directory is missing.

    Attributes:
        path: the missing path (also `filename`, as for any `OSError`).
        config_key: the config key that holds the path, e.g. `task.path`.
    """

    def __init__(self, path: StrPath, config_key: str, hint: str | None = None):
        self.path = Path(path)
        self.config_key = config_key
        where = hint or "download it"
        message = (
            f"Data not found: {self.path}. {where[0].upper()}{where[1:]}, "
            f"or set {config_key}=/path/to/file (config key `{config_key}`)."
        )
        super().__init__(message)
        self.filename = str(self.path)

    def __str__(self) -> str:
        return str(self.args[0])


def require_file(path: StrPath, config_key: str, hint: str | None = None) -> Path:
    """Returns `path` as a `Path` if it is an existing file, else raises `DataNotFoundError`.

    Args:
        path: the file to check.
        config_key: config key named in the error message, e.g. `task.path`.
        hint: where to get the file, e.g. "download input.txt from karpathy/char-rnn".
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(path, config_key, hint)
    return path


def require_dir(path: StrPath, config_key: str, hint: str | None = None) -> Path:
    """Returns `path` as a `Path` if it is an existing directory, else `DataNotFoundError`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(path, config_key, hint)
    return path


def read_text(path: StrPath, config_key: str, hint: str | None = None) -> str:
    """Reads a UTF-8 file: `DataNotFoundError` if missing, `ValueError` if blank.

    Undecodable bytes raise `UnicodeDecodeError`, which is a `ValueError`.
    """
    path = require_file(path, config_key, hint)
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"Data file {path} is empty (config key `{config_key}`).")
    return text
