"""`rnnlab-data`: list, download and verify the registered datasets (`rnnlab.data.registry`).

    rnnlab-data list                      what is registered, and what the cache holds
    rnnlab-data download [NAME ...]       fetch all (or the named) datasets into the cache
    rnnlab-data verify [NAME ...]         check the sizes and sha256 of the files there

`--root DIR` works on another data root (e.g. `--root ../shared/data`); the default is the
cache, `$RNNLAB_DATA` or `~/.cache/rnnlab/data`. `download --mirror URL` fetches
`URL/<folder>/<file>` instead of the registered URLs (as `RNNLAB_DATA_MIRROR` does).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rnnlab.data import registry
from rnnlab.errors import report_user_errors
from rnnlab.rundir import timestamp

PROG = "rnnlab-data"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="List, download and verify the datasets of rnnlab's presets."
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data root to work on (default: $RNNLAB_DATA, else ~/.cache/rnnlab/data)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="registered datasets, their sizes, and whether they are here")
    download = commands.add_parser("download", help="download all (or the named) datasets")
    download.add_argument("names", nargs="*", metavar="NAME", help="datasets (default: all)")
    download.add_argument(
        "--mirror", default=None, help="base URL serving <folder>/<file> (default: the sources)"
    )
    download.add_argument("--no-progress", action="store_true", help="no progress bars")
    check = commands.add_parser("verify", help="check the size and sha256 of the files there")
    check.add_argument("names", nargs="*", metavar="NAME", help="datasets (default: all)")
    return parser


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def list_datasets(root: Path) -> str:
    """One line per registered file: dataset, file, size, tasks, and whether `root` has it."""
    rows = [("dataset", "file", "size", "tasks", "status")]
    for dataset in registry.select():
        for file in dataset.files:
            here = (root / file.path).is_file()
            status = "cached" if here else "not downloaded"
            rows.append(
                (dataset.name, file.name, _size(file.size), ",".join(dataset.tasks), status)
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join([f"data root: {root}", *lines])


def download_datasets(
    root: Path, names: Sequence[str], mirror: str | None, progress: bool
) -> list[str]:
    """Downloads the named datasets' files that `root` lacks or holds damaged (a damaged file is
    kept aside as `<name>.corrupt-<time>` first); returns one report line per file."""
    lines = []
    for dataset in registry.select(names):
        for file in dataset.files:
            path = root / file.path
            problem = registry.verify(file, root)
            if problem is None:
                lines.append(f"{file.path}: ok, already at {path}")
                continue
            if problem != "missing":
                aside = path.with_name(f"{file.name}.corrupt-{timestamp()}")
                os.replace(path, aside)
                lines.append(f"{file.path}: {problem}; kept aside as {aside}")
            registry.download(file, root, mirror=mirror, progress=progress)
            lines.append(f"{file.path}: downloaded and verified, {path}")
    return lines


def verify_datasets(root: Path, names: Sequence[str]) -> tuple[list[str], bool]:
    """Checks the files of the named datasets (all if none) under `root`: report lines, and
    whether all is well (no damaged file; no missing one among datasets named explicitly)."""
    lines, good = [], True
    for dataset in registry.select(names):
        for file in dataset.files:
            problem = registry.verify(file, root)
            lines.append(f"{file.path}: {problem or 'ok'}")
            if problem is not None and (problem != "missing" or names):
                good = False
    return lines, good


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: warning: %(message)s")
    root = (args.root or registry.cache_dir()).expanduser().resolve()
    if args.command == "list":
        print(list_datasets(root))
        return 0
    if args.command == "download":
        for line in download_datasets(root, args.names, args.mirror, not args.no_progress):
            print(line)
        return 0
    lines, good = verify_datasets(root, args.names)
    print(f"data root: {root}")
    print("\n".join(lines))
    return 0 if good else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rnnlab-data`."""
    args = build_parser().parse_args(argv)
    return report_user_errors(PROG, _main, args, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
