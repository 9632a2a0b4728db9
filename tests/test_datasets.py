"""The dataset registry, download cache and `rnnlab-data` (`rnnlab.data.registry`, `.cli`).

Nothing here touches the internet or ../shared/data: a local `http.server` on 127.0.0.1 serves
tiny generated files whose sizes and hashes the tests register in place of the real datasets
(`registry.DATASETS` monkeypatched), and each test has its own empty cache.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from rnnlab import cli
from rnnlab.data import DataNotFoundError, registry
from rnnlab.data import cli as data_cli
from rnnlab.errors import DataError
from tests.test_experiments import SHRINK
from tests.test_train import FAST, TASK_OVERRIDES, compose_train, train_losses

_WORDS = "the cat sat on a mat and dog ran to big red house with my old friend".split()
TEXT = (
    "ROMEO:\n"
    + "\n".join(" ".join(np.random.default_rng(0).choice(_WORDS, size=8)) for _ in range(60))
    + "\n"
).encode()
"""A tiny stand-in for tinyshakespeare/input.txt (enough for a char_lm run of two steps)."""
LABELS = {"pos": b"a good film\nfine acting\n", "neg": b"a bad film\ndull plot\n"}


def _file(path: str, body: bytes) -> registry.DataFile:
    return registry.DataFile(path, len(body), hashlib.sha256(body).hexdigest(), "unused")


def _dataset(name: str, files: tuple[registry.DataFile, ...]) -> registry.Dataset:
    return registry.Dataset(name, files, ("char_lm",), "test data", "none", "generated")


class Server:
    """A local HTTP server of `routes`: URL path -> (body, declared Content-Length)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, int]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path not in server.routes:
                    self.send_error(404)
                    return
                body, length = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)  # fewer bytes than declared: the connection just ends
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def serve(self, file: registry.DataFile, body: bytes, length: int | None = None) -> None:
        self.routes[f"/{file.path}"] = (body, len(body) if length is None else length)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def shakespeare(monkeypatch: pytest.MonkeyPatch) -> registry.DataFile:
    """Registers the tiny TEXT as `tinyshakespeare/input.txt` and a two-file `rt-polarity`, in
    place of the real datasets; no download configuration leaks in from the environment."""
    file = _file("tinyshakespeare/input.txt", TEXT)
    polarity = tuple(_file(f"rt-polarity/rt-polarity.{k}", v) for k, v in LABELS.items())
    monkeypatch.setattr(
        registry,
        "DATASETS",
        {
            "tinyshakespeare": _dataset("tinyshakespeare", (file,)),
            "rt-polarity": _dataset("rt-polarity", polarity),
        },
    )
    for env in (registry.DATA_ENV, registry.MIRROR_ENV, registry.OFFLINE_ENV):
        monkeypatch.delenv(env, raising=False)
    return file


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_download_is_atomic_verified_and_shows_progress(
    tmp_path: Path,
    server: Server,
    shakespeare: registry.DataFile,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.serve(shakespeare, TEXT)
    cache, asked = tmp_path / "cache", tmp_path / "root" / "tinyshakespeare" / "input.txt"
    target = cache / shakespeare.path
    renames: list[tuple[str, bool]] = []
    replace = os.replace

    def watched(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((Path(src).name, Path(dst).exists()))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", watched)
    assert registry.ensure(asked, cache=cache, mirror=server.url) == target
    assert target.read_bytes() == TEXT
    # One rename of a complete temporary file onto a target that did not exist before.
    ((src, existed),) = renames
    assert src.endswith(".part") and not existed and _leftovers(target.parent) == []
    assert "tinyshakespeare/input.txt" in capsys.readouterr().err  # the tqdm bar
    # Now cached: no second request; a path that exists is used as it is.
    assert registry.ensure(asked, cache=cache, mirror=server.url) == target
    assert registry.ensure(target, cache=tmp_path / "other") == target
    assert server.requests == ["/tinyshakespeare/input.txt"]
    # A missing path the registry does not know is returned for the loader to report.
    assert registry.ensure(tmp_path / "mine.txt", cache=cache) == tmp_path / "mine.txt"


def test_damaged_cached_copy_is_set_aside_and_fetched_again(
    tmp_path: Path, server: Server, shakespeare: registry.DataFile
) -> None:
    server.serve(shakespeare, TEXT)
    cache, asked = tmp_path / "cache", tmp_path / "nowhere" / "tinyshakespeare" / "input.txt"
    target = registry.ensure(asked, cache=cache, mirror=server.url)
    target.write_bytes(TEXT[:-3])  # truncated on disk after it was verified
    assert registry.ensure(asked, cache=cache, mirror=server.url) == target
    assert target.read_bytes() == TEXT and len(server.requests) == 2
    (aside,) = target.parent.glob("input.txt.corrupt-*")
    assert aside.read_bytes() == TEXT[:-3]


def test_dataset_folder_fetches_every_file(
    tmp_path: Path, server: Server, shakespeare: registry.DataFile
) -> None:
    for file in registry.DATASETS["rt-polarity"].files:
        server.serve(file, LABELS[file.path.rsplit(".", 1)[1]])
    folder = registry.ensure(
        tmp_path / "nowhere" / "rt-polarity", cache=tmp_path / "c", mirror=server.url
    )
    assert folder == tmp_path / "c" / "rt-polarity"
    assert (folder / "rt-polarity.neg").read_bytes() == LABELS["neg"]
    assert (folder / "rt-polarity.pos").read_bytes() == LABELS["pos"]


def test_corrupted_download_is_kept_aside(
    tmp_path: Path, server: Server, shakespeare: registry.DataFile
) -> None:
    bad = TEXT.replace(b"cat", b"bat")
    server.serve(shakespeare, bad)
    with pytest.raises(DataError) as info:
        registry.ensure(
            tmp_path / "tinyshakespeare" / "input.txt", cache=tmp_path, mirror=server.url
        )
    message = str(info.value)
    assert shakespeare.sha256 in message and hashlib.sha256(bad).hexdigest() in message
    assert "input.txt" in message and server.url in message
    folder = tmp_path / "tinyshakespeare"
    (aside,) = folder.glob("input.txt.corrupt-*")
    assert aside.read_bytes() == bad and str(aside) in message
    assert not (folder / "input.txt").exists() and _leftovers(folder) == []


def test_truncated_download_saves_nothing(
    tmp_path: Path, server: Server, shakespeare: registry.DataFile
) -> None:
    server.serve(shakespeare, TEXT[:100], length=len(TEXT))
    with pytest.raises(DataError, match=rf"cut short: 100 of {len(TEXT):,} bytes"):
        registry.ensure(
            tmp_path / "tinyshakespeare" / "input.txt", cache=tmp_path, mirror=server.url
        )
    assert list((tmp_path / "tinyshakespeare").iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_names_the_url_and_where_to_put_the_file(
    tmp_path: Path, shakespeare: registry.DataFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = f"http://127.0.0.1:{_closed_port()}"
    asked = tmp_path / "data" / "tinyshakespeare" / "input.txt"
    target = tmp_path / "cache" / "tinyshakespeare" / "input.txt"
    monkeypatch.setenv(registry.MIRROR_ENV, mirror)
    monkeypatch.setenv(registry.DATA_ENV, str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as info:
        registry.ensure(asked)
    message = str(info.value)
    for fragment in (str(asked), "task.path", "connection refused", str(target)):
        assert fragment in message
    assert f"{mirror}/tinyshakespeare/input.txt" in message
    monkeypatch.setenv(registry.OFFLINE_ENV, "1")
    with pytest.raises(DataNotFoundError, match=registry.OFFLINE_ENV) as info:
        registry.ensure(asked)
    assert str(target) in str(info.value)
    assert not target.parent.exists()


def test_rnnlab_data_list_download_verify(
    tmp_path: Path,
    server: Server,
    shakespeare: registry.DataFile,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for file in registry.DATASETS["rt-polarity"].files:
        server.serve(file, LABELS[file.path.rsplit(".", 1)[1]])
    server.serve(shakespeare, TEXT)
    root = ["--root", str(tmp_path)]
    assert data_cli.main([*root, "list"]) == 0
    out = capsys.readouterr().out
    assert f"data root: {tmp_path}" in out
    assert out.count("not downloaded") == 3 and "input.txt" in out
    assert data_cli.main([*root, "verify"]) == 0  # nothing there yet: missing, not damaged
    assert data_cli.main([*root, "verify", "tinyshakespeare"]) == 1  # named: must be there
    capsys.readouterr()

    assert data_cli.main([*root, "download", "tinyshakespeare", "--mirror", server.url]) == 0
    assert "tinyshakespeare/input.txt: downloaded and verified" in capsys.readouterr().out
    assert server.requests == ["/tinyshakespeare/input.txt"]
    assert data_cli.main([*root, "list"]) == 0
    assert capsys.readouterr().out.count("not downloaded") == 2

    (tmp_path / "tinyshakespeare" / "input.txt").write_bytes(TEXT.upper())
    assert data_cli.main([*root, "verify"]) == 1
    out = capsys.readouterr().out
    assert f"tinyshakespeare/input.txt: sha256 {hashlib.sha256(TEXT.upper()).hexdigest()}" in out
    assert "rt-polarity/rt-polarity.pos: missing" in out

    with pytest.raises(SystemExit) as info:
        data_cli.main([*root, "download", "nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "rnnlab-data: error: unknown dataset 'nope'" in err and "tinyshakespeare" in err


def test_char_lm_preset_fetches_its_data_into_an_empty_cache(
    tmp_path: Path,
    server: Server,
    shakespeare: registry.DataFile,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`rnnlab-train experiment=char_lm_shakespeare` from a folder without ../shared/data and
    an empty cache: the default data_dir misses the file, so it comes from the mirror."""
    server.serve(shakespeare, TEXT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(registry.MIRROR_ENV, server.url)
    overrides = [*FAST, "experiment=char_lm_shakespeare", *TASK_OVERRIDES["char_lm"], *SHRINK]
    cfg = compose_train(overrides)
    assert not (tmp_path / cfg.task.path).exists()
    results = cli.train_from_config(cfg, tmp_path / "run")
    assert results["status"] == "completed", results
    assert all(np.isfinite(train_losses(tmp_path / "run")))
    cached = tmp_path / "xdg" / "rnnlab" / "data" / "tinyshakespeare" / "input.txt"
    assert cached.read_bytes() == TEXT
    assert server.requests == ["/tinyshakespeare/input.txt"]


@pytest.mark.parametrize("dataset", list(registry.DATASETS.values()), ids=lambda d: d.name)
def test_registered_datasets_are_where_their_tasks_look(dataset: registry.Dataset) -> None:
    """Each task a dataset names reads `${data_dir}/<a registered file or folder>`, so a
    missing file of that task's default path is found in (or fetched into) the cache."""
    assert all(f.path.split("/")[0] == dataset.name for f in dataset.files)
    assert all(
        len(f.sha256) == 64 and f.size > 0 and f.url.startswith("https://") for f in dataset.files
    )
    conf = Path(__file__).resolve().parents[1] / "conf" / "task"
    for task in dataset.tasks:
        path = yaml.safe_load((conf / f"{task}.yaml").read_text())["path"]
        assert path.startswith("${data_dir}/"), path
        relative = path.removeprefix("${data_dir}/")
        assert relative == dataset.name or relative in {f.path for f in dataset.files}
