"""Carry a long study's finished runs from one machine to the next through git.

A study longer than one working session (the MR nested search: 10 folds x 24 trials) outlives
the machine it started on, and only what is committed reaches the next one. `save` packs what a
study needs to go on and to be reported, without the checkpoints (tens of MB a run): the
completed runs (`results.json` status completed: configs, metrics, results, logs, event files)
and the sweep's own files (Optuna's `optuna.db`, `optimization_results.yaml`). Runs that did not
complete are left out: the study reruns them from the start (an Optuna trial left RUNNING is
rerun in its own directory by `hydra/sweeper=optuna_resumable`). `restore` unpacks every archive
whose directory this machine does not have yet; `scripts/run_studies.sh` calls it first.

    python scripts/carry_runs.py save multirun/mr_optuna/fold_0 [...]  # -> results/runs/...tar.gz
    python scripts/carry_runs.py restore                              # <- results/runs/

Archives hold paths relative to the repository root (`multirun/...`), so `rnnlab-results`
collects restored runs as it collects runs made here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rnnlab.rundir import CHECKPOINT_DIR, find_run_dirs, load_run  # noqa: E402

ARCHIVE_DIR = Path("results") / "runs"
"""Where the archives live, relative to the repository root (committed)."""


def archive_path(directory: Path) -> Path:
    """`multirun/mr_optuna/fold_0` -> `results/runs/mr_optuna/fold_0.tar.gz`."""
    parts = directory.parts[1:] if directory.parts[:1] == ("multirun",) else directory.parts
    return ARCHIVE_DIR.joinpath(*parts).with_name(parts[-1] + ".tar.gz")


def directory_of(archive_file: Path) -> Path:
    """`results/runs/mr_optuna/fold_0.tar.gz` -> `multirun/mr_optuna/fold_0` (`archive_path`'s
    inverse)."""
    relative = archive_file.relative_to(ARCHIVE_DIR)
    return Path("multirun", *relative.parts[:-1], relative.name.removesuffix(".tar.gz"))


def files_to_carry(directory: Path) -> list[Path]:
    """The files of `directory` that `save` packs, relative to the repository root: everything
    but checkpoints and the runs that did not complete."""
    runs = find_run_dirs([directory])
    unfinished = [run for run in runs if not load_run(run).completed]
    kept = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        absolute = path.resolve()
        if any(absolute.is_relative_to(run) for run in unfinished):
            continue
        if CHECKPOINT_DIR in path.relative_to(directory).parts:
            continue
        kept.append(path)
    return kept


def consistent_copy(database: Path, scratch: Path) -> Path:
    """A copy of the SQLite file `database` (Optuna's study) taken through SQLite's backup API,
    which waits for a writer's transaction to end: copying the file itself while a sweep writes
    to it could pack half a transaction."""
    copy = scratch / database.name
    with contextlib.closing(sqlite3.connect(database)) as source:
        with contextlib.closing(sqlite3.connect(copy)) as target:
            source.backup(target)
    return copy


def save(directories: list[Path]) -> None:
    for directory in directories:
        if not directory.is_dir():
            sys.exit(f"carry_runs: {directory} is not a directory (give a sweep or run directory)")
        if directory.is_absolute() or directory.parts[:1] != ("multirun",):
            sys.exit(f"carry_runs: give {directory} relative to the repository root: multirun/...")
        files = files_to_carry(directory)
        target = archive_path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".tmp")
        with tempfile.TemporaryDirectory() as scratch, tarfile.open(partial, "w:gz") as archive:
            for path in files:
                source = consistent_copy(path, Path(scratch)) if path.suffix == ".db" else path
                archive.add(source, arcname=str(path), recursive=False)
        partial.replace(target)
        runs = sum(1 for p in files if p.name == "results.json")
        print(f"carry_runs: {target}: {runs} completed runs, {len(files)} files")


def restore() -> None:
    for archive_file in sorted(ARCHIVE_DIR.rglob("*.tar.gz")):
        directory = directory_of(archive_file)
        if directory.exists():
            print(f"carry_runs: {directory} is already here; {archive_file} left packed")
            continue
        with tarfile.open(archive_file) as archive:
            outside = [n for n in archive.getnames() if not Path(n).is_relative_to(directory)]
            if outside:
                sys.exit(f"carry_runs: {archive_file} holds {outside[0]}, outside {directory}")
            archive.extractall(".", filter="data")
        print(f"carry_runs: {directory} restored from {archive_file}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("save", help="pack directories under multirun/").add_argument(
        "directories", nargs="+", type=Path
    )
    sub.add_parser("restore", help="unpack the archives whose directories are absent")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    save(args.directories) if args.command == "save" else restore()


if __name__ == "__main__":
    main()
