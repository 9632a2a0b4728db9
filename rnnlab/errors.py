"""User errors and the one way every console script reports them.

A *user error* is a mistake in what the user gave — a config value, a data file, a command-line
argument, a run directory — as opposed to a bug in rnnlab. Every console script (`rnnlab-train`,
`-sample`, `-diagnose`, `-aggregate`, `-benchmark`) runs its main function under
`report_user_errors`, which prints a user error as one line naming the key, file or argument and
the fix, exits with status 2 and shows no traceback; a programming error keeps its traceback.
`RNNLAB_DEBUG=1` (or Hydra's `HYDRA_FULL_ERROR=1`, or `--debug` where a script has it) shows the
traceback of user errors too.

What counts as a user error (`user_message`):
- `UserError` and its subclasses (`ConfigError`, `DataError`, `RunDirError`), raised where the
  input enters: config dataclasses, task constructors, data loaders, the trainer's run-directory
  checks, argument parsing;
- an `OSError` that names a file (permission denied, a file where a directory is needed, a
  missing path, a full disk): the environment, not the code;
- Hydra's and OmegaConf's config errors (unknown key, wrong type, unparsable override, missing
  config group option), and a `_target_` that Hydra could not call because of the arguments the
  config gave it.
The chain of causes is followed, so a user error wrapped by a library (e.g. `logging.config`
wrapping a `PermissionError`, Hydra wrapping a task's `ConfigError`) is still recognised.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

DEBUG_ENV = "RNNLAB_DEBUG"
"""Set to 1 to see the traceback of a user error."""
USER_ERROR_EXIT = 2
"""Exit status of a console script stopped by a user error (argparse uses 2 as well)."""

T = TypeVar("T")


class UserError(Exception):
    """A mistake in the user's input; its message names the key, file or argument and the fix."""


class ConfigError(UserError, ValueError):
    """A config value is invalid (the message names the dotted key, e.g. `optim.grad_clip_norm`)."""


class DataError(UserError, ValueError):
    """A data file's content cannot be used (the message names the file, line and column)."""


class RunDirError(UserError):
    """The run directory cannot take this run (a refused re-run); nothing in it was changed."""


class RunNotFoundError(UserError, FileNotFoundError):
    """A path given as a run directory is not one, or lacks what was asked of it (its config,
    a checkpoint)."""


def env_flag_value(value: str | None) -> bool:
    """Whether an environment variable's value turns a flag on (set, and not 0/false/no)."""
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def debug_requested() -> bool:
    """Whether the user asked for tracebacks (`RNNLAB_DEBUG` set)."""
    return env_flag_value(os.environ.get(DEBUG_ENV))


_OS_FIXES = {
    errno.EACCES: "make it writable (or readable) or choose another path",
    errno.EPERM: "make it writable (or readable) or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.EEXIST: "a file stands where a directory is needed: move it away or choose another path",
    errno.ENOTDIR: "a file stands where a directory is needed: move it away or choose another path",
    errno.EISDIR: "a directory stands where a file is needed: give the path of a file",
    errno.ENOENT: "check the path",
    errno.ENOSPC: "free some disk space, then re-run the same command",
}


def _os_message(err: OSError) -> str:
    if type(err).__str__ is not OSError.__str__:  # a subclass with its own message
        return str(err)
    where = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
    fix = _OS_FIXES.get(err.errno or 0, "check the path")
    return f"cannot use {where}: {err.strerror or err}; {fix}"


def _causes(err: BaseException) -> Iterator[BaseException]:
    """`err`, then its causes and contexts, each once."""
    seen: set[int] = set()
    node: BaseException | None = err
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__


HYDRA_MODE_CLASH = "Only one of --run, --multirun, --cfg"
"""How Hydra's own refusal of two run modes at once (`-m --cfg job`) begins: a ValueError."""


def _config_error_types() -> tuple[type[BaseException], ...]:
    """Hydra's and OmegaConf's user-facing config errors, where those libraries are loaded."""
    types: list[type[BaseException]] = []
    if "omegaconf" in sys.modules:
        from omegaconf import errors as oc_errors

        types += [
            oc_errors.ValidationError,
            oc_errors.ConfigKeyError,
            oc_errors.ConfigAttributeError,
            oc_errors.ConfigTypeError,
            oc_errors.ConfigValueError,
            oc_errors.MissingMandatoryValue,
            oc_errors.InterpolationResolutionError,
            oc_errors.GrammarParseError,
        ]
    if "hydra" in sys.modules:
        from hydra import errors as hydra_errors

        types += [
            hydra_errors.ConfigCompositionException,
            hydra_errors.MissingConfigException,
            hydra_errors.OverrideParseException,
            hydra_errors.SearchPathException,
        ]
    return tuple(types)


def user_message(err: BaseException) -> str | None:
    """The one-line message to print for `err` if it is a user error (see the module
    docstring), else None (a programming error: keep the traceback)."""
    config_errors = _config_error_types()
    for node in _causes(err):
        if isinstance(node, UserError):
            return str(node)
        if isinstance(node, ValueError) and str(node).startswith(HYDRA_MODE_CLASH):
            return (
                f"{node}: --cfg prints the config without running, so leave out -m (a swept "
                "preset prints its first job's config)"
            )
        if isinstance(node, OSError) and node.filename is not None:
            return _os_message(node)
        if config_errors and isinstance(node, config_errors):
            message = " ".join(str(node).split())
            override = getattr(node, "override", None)  # Hydra's OverrideParseException
            if override:
                return f"cannot parse the override {override!r}: {message}"
            cause = node.__cause__
            if isinstance(cause, config_errors):  # e.g. "Could not override" <- "Key not in"
                message += f" ({str(cause).strip().splitlines()[0]})"
            return message
    if "hydra" in sys.modules:
        from hydra.errors import InstantiationException

        if isinstance(err, InstantiationException) and isinstance(err.__cause__, TypeError):
            return " ".join(str(err).split())  # the config gave arguments the target does not take
    return None


def fail(prog: str, message: str) -> NoReturn:
    """Prints `prog: error: message` to stderr and exits with `USER_ERROR_EXIT`."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


def report_user_errors(
    prog: str, main: Callable[..., T], *args: Any, debug: bool = False, **kwargs: Any
) -> T:
    """Runs `main(*args, **kwargs)`; a user error becomes one line on stderr and exit status 2.

    Args:
        prog: the console script's name, printed before the message.
        main: the script's main function.
        debug: show the traceback of user errors too (as `RNNLAB_DEBUG=1` does).
    """
    try:
        return main(*args, **kwargs)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        message = user_message(err)
        if message is None:
            raise
        if debug or debug_requested():
            traceback.print_exc()
            fail(prog, message)
        fail(prog, message + f" (set {DEBUG_ENV}=1 for the traceback)")
