"""Errors raised by the data loaders, and the checks of task settings.

A missing file raises `DataNotFoundError` (a `FileNotFoundError`) whose message names the path
and the config key that points to it, so a user can fix a run from the message alone.
Unusable content (empty file, bytes that are not UTF-8, a NUL byte, a cell that is not a
number, a ragged CSV row) raises `rnnlab.errors.DataError` naming the file and the place in it
(byte offset, or line and column). A setting out of range raises `rnnlab.errors.ConfigError`
naming the dotted config key (`task.horizon must be >= 1, got 0`; the checks are in
`rnnlab.checks`). Both subclass `ValueError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from rnnlab.errors import ConfigError, DataError

StrPath = str | os.PathLike[str]

__all__ = [
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "StrPath",
    "read_text",
    "require_dir",
    "require_file",
]


class DataNotFoundError(FileNotFoundError):
    """A data file or directory is missing.

    Attributes:
        path: the missing path (also `filename`, as for any `OSError`).
        config_key: the config key that holds the path, e.g. `task.path`.
    """

    def __init__(self, path: StrPath, config_key: str, hint: str | None = None):
        self.path = Path(path)
        self.config_key = config_key
        self.hint = hint
        where = hint or "download it"
        message = (
            f"Data not found: {self.path}. {where[0].upper()}{where[1:]}, "
            f"or set {config_key}=/path/to/file (config key `{config_key}`)."
        )
        super().__init__(message)
        self.filename = str(self.path)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:  # pickled whole (e.g. by Hydra's joblib launcher)
        return type(self), (self.path, self.config_key, self.hint)


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


def _line_and_column(raw: bytes, offset: int) -> tuple[int, int]:
    """1-based line and byte column of byte `offset` of `raw`."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _not_utf8(path: Path, config_key: str, err: UnicodeDecodeError) -> DataError:
    """The `DataError` for a file whose bytes are not UTF-8; `err` from decoding all of it."""
    raw = err.object if isinstance(err.object, bytes) else bytes(err.object)
    line, column = _line_and_column(raw, err.start)
    bad = raw[err.start : err.end].hex(" ")
    return DataError(
        f"{path} is not UTF-8 text: byte offset {err.start} (line {line}, byte {column} of "
        f"the line) holds 0x{bad}, which UTF-8 cannot decode ({err.reason}). If it is text in "
        f"another encoding, convert it (e.g. `iconv -f latin1 -t utf-8`); if it is not a text "
        f"file, set {config_key} to the right file (config key `{config_key}`)."
    )


def read_text(path: StrPath, config_key: str, hint: str | None = None) -> str:
    """Reads a UTF-8 text file (universal newlines, as `Path.read_text`).

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: the file is blank, is not UTF-8 (the message gives the byte offset and line of
            the first undecodable byte) or holds a NUL byte (a binary file).
    """
    path = require_file(path, config_key, hint)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        # Decode the raw bytes again so that the offset is the file's, whatever chunks the text
        # reader decoded (only on failure: a good file is read once, exactly as before).
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise _not_utf8(path, config_key, err) from None
        raise  # pragma: no cover - the two decoders agree on what is UTF-8
    if not text.strip():
        raise DataError(
            f"Data file {path} is empty (config key `{config_key}`): it has no text; set "
            f"{config_key} to a file with data."
        )
    nul = text.find("\0")
    if nul >= 0:
        raw = path.read_bytes()
        offset = raw.find(b"\0")
        line, column = _line_and_column(raw, offset)
        raise DataError(
            f"{path} holds a NUL byte at byte offset {offset} (line {line}, byte {column} of the "
            f"line): it looks like a binary file, not text; set {config_key} to a text file "
            f"(config key `{config_key}`)."
        )
    return text
