"""A paper's results table, regenerated from the run directories by one command.

    rnnlab-results                # collect the runs, update the snapshots, rewrite the table
    rnnlab-results --check        # the README's table is what the snapshots render (no runs needed)
    rnnlab-results --only ptb_small_seeds --no-write   # print one row, write nothing

Three files make the table (paths are options; these are the repository's):
- `results/studies.yaml`, the manifest (hand-written): one entry per row: what the study is
  (`study`, `metric`), its run directories (`runs`, globs relative to `--root`), the numbers
  taken from them (`values`), the templates that write them into the row (`text`, `wall`), the
  published reference and the command. `MANIFEST_HELP` lists every field.
- `results/<id>.json`, a snapshot per row, written by collection: every number with the run
  directory and seed it came from, mean, sample std and count; each run's wall time; the
  machines and commits. Snapshots are committed, so the table renders on a machine that holds
  none of the runs; collection rewrites a row's snapshot only from the run directories it finds
  (a study run elsewhere keeps its snapshot).
- README.md between `BEGIN` and `END`: the rendered Markdown table.

A row never collected (its runs predate this command or live on another machine) renders its
`recorded` text and says so. A study still running renders what has finished and "n of N"
(`expect`). Values come from `results.json` through `rnnlab.rundir`: the best-validation
checkpoint's metrics (`kind: best`) or the final state's (`kind: final`); only completed runs
count. `select` does nested model selection: per group (e.g. `task.fold`) the run with the best
`by` metric (e.g. the inner validation accuracy), then that run's value (e.g. its test accuracy),
so the test data never chooses; with `complete: N` a group counts only once N of its runs have
finished (its search's budget), and the groups still searching are named in the row.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import statistics
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any

import yaml

from rnnlab import rundir
from rnnlab.aggregate import metric_mode, metric_value, wall_seconds
from rnnlab.errors import ConfigError, report_user_errors
from rnnlab.progress import format_duration
from rnnlab.rundir import INCOMPLETE, Run, find_run_dirs, load_run

PROG = "rnnlab-results"
BEGIN = "<!-- results:begin (rnnlab-results writes this table; edit results/studies.yaml) -->"
END = "<!-- results:end -->"
COLUMNS = ("study", "metric", "rnnlab", "published", "wall time", "command")
KINDS = ("best", "final")
ROW_KEYS = {"id", "study", "metric", "runs", "values", "text", "wall", "published", "command",
            "expect", "recorded"}  # fmt: skip
VALUE_KEYS = {"metric", "kind", "minus", "where", "select", "scale", "digits"}
SELECT_KEYS = {"per", "by", "kind", "mode", "complete"}
MANIFEST_HELP = """\
id: file name of the snapshot (results/<id>.json); letters, digits, _ and -
study, metric, published, command: the row's text (Markdown)
runs: run directories or sweep directories, globs relative to --root
values: NAME -> {metric: valid/loss, kind: best|final, minus: METRIC, where: {KEY: VALUE},
  scale: 100, digits: 2, select: {per: task.fold, by: valid/accuracy, kind: best, mode: max,
  complete: 24 (a group counts once it holds this many finished runs: its search's budget)}}
text: the rnnlab cell: {NAME} (mean +- std), {NAME.values}, {NAME.min}, {NAME.max}, {runs}
wall: the wall-time cell (default "{wall} per run, {machine}"): also {wall_total}
expect: how many runs (or selected groups) the finished study has
recorded: the rnnlab and wall cells of a row never collected: {rnnlab: ..., wall: ...}"""


@dataclass(frozen=True)
class Value:
    """One named number of a row over its runs (or selected groups), ready for a template:
    `{name}` is "mean ± std" (the value alone for one run), `{name.values}` each run's."""

    numbers: tuple[float, ...]
    digits: int

    def _fmt(self, x: float) -> str:
        return f"{x:.{self.digits}f}"

    @property
    def n(self) -> int:
        return len(self.numbers)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.numbers) if self.numbers else math.nan

    @property
    def std(self) -> float:
        """The sample standard deviation (n - 1), 0 for one number."""
        return statistics.stdev(self.numbers) if len(self.numbers) > 1 else 0.0

    def __format__(self, spec: str) -> str:
        if not self.numbers:
            return "—"
        if self.n == 1:
            return self._fmt(self.numbers[0])
        return f"{self._fmt(self.mean)} ± {self._fmt(self.std)}"

    def __getattr__(self, name: str) -> str:  # {name.values}, {name.min}, {name.max}
        if name in ("min", "max") and self.numbers:
            return self._fmt(min(self.numbers) if name == "min" else max(self.numbers))
        if name == "values":
            return ", ".join(self._fmt(x) for x in self.numbers) or "—"
        raise AttributeError(name)


# ---- the manifest -----------------------------------------------------------------------------


def _check_keys(where: str, given: Mapping[str, Any], allowed: set[str], path: Path) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(
            f"{path}: {where} has unknown key(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(sorted(allowed))}"
        )


def load_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a manifest, checked: every key known, every id unique and a file name, each
    row with `runs` and `values` and `text`, or with `recorded` text. ConfigError names the row
    and key otherwise."""
    path = Path(path)
    try:
        rows = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; give the manifest with --manifest") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"{path}: expected a list of rows (mappings); fields:\n{MANIFEST_HELP}")
    seen: set[str] = set()
    for i, row in enumerate(rows):
        rid = str(row.get("id", ""))
        where = f"row {i} ({rid or 'no id'})"
        _check_keys(where, row, ROW_KEYS, path)
        if not rid or not all(c.isalnum() or c in "_-" for c in rid) or rid in seen:
            raise ConfigError(
                f"{path}: {where}: `id` must be a unique name of letters, digits, _, -"
            )
        seen.add(rid)
        for key in ("study", "metric", "published", "command"):
            if not isinstance(row.get(key), str):
                raise ConfigError(f"{path}: {where}: `{key}` (text) is missing")
        if "runs" not in row and "recorded" not in row:
            raise ConfigError(f"{path}: {where}: give `runs` (with `values`, `text`) or `recorded`")
        if "runs" in row:
            for key in ("values", "text"):
                if key not in row:
                    raise ConfigError(f"{path}: {where}: `runs` needs `{key}`")
            if isinstance(row["runs"], str):
                row["runs"] = [row["runs"]]
            for name, spec in row["values"].items():
                _check_value(f"{where}: values.{name}", spec, path)
            _check_template(row, path, where)
    return rows


def _check_value(where: str, spec: Any, path: Path) -> None:
    if not isinstance(spec, dict) or "metric" not in spec:
        raise ConfigError(f"{path}: {where} needs `metric` (e.g. valid/loss)")
    _check_keys(where, spec, VALUE_KEYS, path)
    if spec.get("kind", "best") not in KINDS:
        raise ConfigError(f"{path}: {where}.kind must be one of {', '.join(KINDS)}")
    if "select" in spec:
        select = spec["select"]
        if not isinstance(select, dict) or not {"per", "by"} <= set(select):
            raise ConfigError(f"{path}: {where}.select needs `per` (a key) and `by` (a metric)")
        _check_keys(f"{where}.select", select, SELECT_KEYS, path)
        complete = select.get("complete", 1)
        if not isinstance(complete, int) or isinstance(complete, bool) or complete < 1:
            raise ConfigError(f"{path}: {where}.select.complete must be a positive integer")


def _check_template(row: Mapping[str, Any], path: Path, where: str) -> None:
    names = {*row["values"], "runs"}
    for key, extra in (("text", set()), ("wall", {"wall", "wall_total", "machine"})):
        template = row.get(key) or ""
        for _, field, _, _ in Formatter().parse(template):
            if field is not None and field.partition(".")[0] not in names | extra:
                raise ConfigError(
                    f"{path}: {where}: `{key}` uses {{{field}}}, which is not a value of the row "
                    f"(values: {', '.join(sorted(names | extra))})"
                )


# ---- collection: run directories -> snapshot --------------------------------------------------


def _matches(run: Run, where: Mapping[str, Any]) -> bool:
    return all(str(run.value(k)) == str(v) for k, v in where.items())


def _number(run: Run, spec: Mapping[str, Any]) -> float | None:
    kind = spec.get("kind", "best")
    value = metric_value(run, spec["metric"], kind)
    if value is not None and spec.get("minus"):
        other = metric_value(run, spec["minus"], kind)
        value = None if other is None else value - other
    return None if value is None else value * float(spec.get("scale", 1))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def collect_value(runs: Sequence[Run], spec: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """One value's entries over the completed `runs` (filtered by `where`): each with its run
    directory and seed, or with `select`, one entry per group: the group's best run by `by`."""
    matching = [r for r in runs if _matches(r, spec.get("where") or {})]
    runs = [r for r in matching if r.completed]
    entries = []
    searching: dict[str, int] = {}
    if "select" in spec:
        select = spec["select"]
        by, kind = select["by"], select.get("kind", "best")
        sign = -1.0 if select.get("mode", metric_mode(by)) == "min" else 1.0
        groups: dict[str, list[Run]] = {}
        for run in runs:
            groups.setdefault(str(run.value(select["per"])), []).append(run)
        finished = Counter(str(r.value(select["per"])) for r in matching if r.status != INCOMPLETE)
        for group, members in sorted(groups.items()):
            if finished[group] < select.get("complete", 0):  # its search is still running
                searching[group] = finished[group]
                continue
            scored = [(metric_value(r, by, kind), r) for r in members]
            scored = [(s, r) for s, r in scored if s is not None]
            if not scored:
                continue
            score, best = max(scored, key=lambda item: sign * item[0])
            entries.append({
                "group": group, "run": _relative(best.path, root), "seed": best.seed,
                "by": score, "candidates": len(members), "value": _number(best, spec),
            })  # fmt: skip
    else:
        for run in runs:
            entries.append(
                {"run": _relative(run.path, root), "seed": run.seed, "value": _number(run, spec)}
            )
    value = {"spec": dict(spec), "entries": [e for e in entries if e["value"] is not None]}
    return {**value, "searching": searching} if searching else value


def machine(run: Run) -> str:
    """The run's machine in words (its provenance): "2-core CPU (AMD EPYC, AVX2)" (the vector
    instruction set where recorded), "1 x NVIDIA H100"."""
    attempts = run.provenance.get("attempts") or [{}]
    last = attempts[-1]
    devices = last.get("devices") or {}
    if devices.get("backend") not in (None, "cpu"):
        return (
            f"{devices.get('device_count', 1)} x {devices.get('device_kind', devices['backend'])}"
        )
    cores = last.get("cpu_count")
    text = f"{cores}-core CPU" if cores else "CPU"
    about = ", ".join(filter(None, (last.get("cpu"), last.get("cpu_isa"))))
    return f"{text} ({about})" if about else text


def collect_row(row: Mapping[str, Any], root: Path) -> dict[str, Any] | None:
    """A row's snapshot from the run directories its `runs` globs find under `root`; None if
    they find none (the row keeps its previous snapshot)."""
    roots = sorted({p for pattern in row["runs"] for p in glob.glob(str(root / pattern))})
    paths = find_run_dirs(roots) if roots else []
    if not paths:
        return None
    runs = [load_run(p) for p in paths]
    done = [r for r in runs if r.completed]
    return {
        "id": row["id"],
        "collected_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": {"completed": len(done), "other": {_relative(r.path, root): r.status
                 for r in runs if not r.completed}},  # fmt: skip
        "values": {name: collect_value(runs, spec, root) for name, spec in row["values"].items()},
        "wall_s": {_relative(r.path, root): wall_seconds(r) for r in done},
        "machines": sorted({machine(r) for r in done}),
        "commits": sorted({(r.provenance.get("attempts") or [{}])[-1].get("git", {}).get(
            "describe") or "unknown" for r in done}),
    }  # fmt: skip


def snapshot_path(directory: Path, row_id: str) -> Path:
    return directory / f"{row_id}.json"


def _changed(snapshot: Mapping[str, Any], path: Path) -> bool:
    """Whether `snapshot` differs from the one saved at `path` in more than its time (so
    collecting again rewrites only the rows whose runs changed)."""
    old = rundir.read_json(path) if path.is_file() else None
    strip = lambda d: {k: v for k, v in d.items() if k != "collected_at"}  # noqa: E731
    return old is None or strip(old) != json.loads(json.dumps(strip(snapshot)))


# ---- rendering: manifest + snapshots -> Markdown ----------------------------------------------


def _cells(row: Mapping[str, Any], snapshot: Mapping[str, Any] | None) -> tuple[str, str]:
    """The row's rnnlab and wall-time cells."""
    expect = row.get("expect")
    if snapshot is None and "recorded" in row:
        recorded = row["recorded"]
        note = " (recorded; its run directories were not collected)"
        return str(recorded.get("rnnlab", "—")) + note, str(recorded.get("wall", "—"))
    if snapshot is None or not snapshot["runs"]["completed"]:
        started = "started, no run finished yet" if snapshot else "not run yet"
        return started + (f" (0 of {expect})" if expect else ""), "—"
    values = {}
    for name, spec in row["values"].items():
        entries = (snapshot["values"].get(name) or {}).get("entries") or []
        values[name] = Value(tuple(e["value"] for e in entries), int(spec.get("digits", 4)))
    selected = [values[n].n for n, spec in row["values"].items() if "select" in spec]
    done = max(selected) if selected else snapshot["runs"]["completed"]
    walls = [w for w in snapshot["wall_s"].values() if w is not None]
    low, high = (format_duration(min(walls)), format_duration(max(walls))) if walls else ("—",) * 2
    span = low if low == high else f"{low} – {high}"
    fields = {
        **values,
        "runs": str(snapshot["runs"]["completed"]),
        "wall": span,
        "wall_total": format_duration(sum(walls)) if walls else "—",
        "machine": ", ".join(snapshot["machines"]) or "unknown machine",
    }
    text = row["text"].format_map(fields)
    if expect and done < expect:
        running = f"the study is still running{_searching(row, snapshot)}"
        text += f" (**{done} of {expect} so far**; {running})"
    wall = (row.get("wall") or "{wall} per run, {machine}").format_map(fields)
    return text, wall


def _searching(row: Mapping[str, Any], snapshot: Mapping[str, Any]) -> str:
    """ "; task.fold 2 at 5 of 24 runs": the groups a `select` with `complete` left out, with
    their finished runs ("" where none)."""
    for name, spec in row["values"].items():
        select = spec.get("select") or {}
        groups = (snapshot["values"].get(name) or {}).get("searching") or {}
        if groups and "complete" in select:
            listed = ", ".join(f"{g} at {n}" for g, n in sorted(groups.items()))
            return f"; {select['per']} {listed} of {select['complete']} runs"
    return ""


def _escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_table(rows: Sequence[Mapping[str, Any]], snapshots: Mapping[str, Any]) -> str:
    """The Markdown table of `rows`, numbers from `snapshots` (by row id)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    for row in rows:
        rnnlab, wall = _cells(row, snapshots.get(row["id"]))
        cells = (row["study"], row["metric"], rnnlab, row["published"], wall, row["command"])
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, table: str, path: Path) -> str:
    """`text` with the part between `BEGIN` and `END` replaced by `table`."""
    start = text.find(BEGIN)
    end = text.find(END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ConfigError(
            f"{path} has no results block; add the two lines\n{BEGIN}\n{END}\nwhere the table goes"
        )
    return text[: start + len(BEGIN)] + "\n" + table + text[end:]


# ---- the command ------------------------------------------------------------------------------


def run(
    manifest: Path,
    snapshots_dir: Path,
    readme: Path | None,
    root: Path,
    collect: bool = True,
    only: Sequence[str] = (),
    check: bool = False,
    write: bool = True,
) -> tuple[str, list[str], bool]:
    """Collect (unless `collect` is False), render, and write the snapshots and `readme` (if
    `write`; `check` compares `readme` instead).

    Returns the table, what was done (one line per file written), and whether `readme` is up to
    date (True when it was written or not given)."""
    rows = load_manifest(manifest)
    if unknown := sorted(set(only) - {r["id"] for r in rows}):
        raise ConfigError(f"--only: no row {', '.join(unknown)} in {manifest}")
    done = []
    snapshots: dict[str, Any] = {}
    for row in rows:
        path = snapshot_path(snapshots_dir, row["id"])
        snapshot = None
        if collect and "runs" in row and (not only or row["id"] in only):
            snapshot = collect_row(row, root)
            if snapshot is not None and write and _changed(snapshot, path):
                snapshots_dir.mkdir(parents=True, exist_ok=True)
                rundir.write_json(path, snapshot)
                done.append(
                    f"{row['id']}: {snapshot['runs']['completed']} completed runs -> {path}"
                )
        if snapshot is None and "runs" in row and path.is_file():
            snapshot = rundir.read_json(path)
            if snapshot is None:
                raise ConfigError(f"{path} is damaged (not JSON); collect it again or restore it")
        if snapshot is not None:
            snapshots[row["id"]] = snapshot
    shown = [r for r in rows if not only or r["id"] in only]
    table = render_table(shown, snapshots)
    if readme is None or not (write or check):
        return table, done, True
    text = readme.read_text()
    updated = replace_block(text, render_table(rows, snapshots), readme)
    if check:
        return table, done, updated == text
    if updated != text:
        readme.write_text(updated)
        done.append(f"rewrote the table in {readme}")
    return table, done, True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Regenerate the results table from the run directories: collect each "
        "study's runs into a snapshot, render the table, write it into the README.",
        epilog="Manifest fields:\n" + MANIFEST_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--manifest", type=Path, default=Path("results/studies.yaml"), help="the rows")
    add("--snapshots", type=Path, default=None, help="snapshot directory (default: the manifest's)")
    add("--readme", type=Path, default=Path("README.md"), help="file holding the results block")
    add("--root", type=Path, default=Path("."), help="where the manifest's `runs` globs start")
    add("--only", default="", help="comma-separated row ids: collect and print these only")
    add("--no-collect", action="store_false", dest="collect", help="render the snapshots only")
    add("--no-write", action="store_true", help="print the table; write no file")
    add(
        "--check",
        action="store_true",
        help="exit 1 if the README's table differs from what the snapshots render (writes nothing)",
    )
    add("--debug", action="store_true", help="show the traceback of an error in your input")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rnnlab-results`."""
    args = build_parser().parse_args(argv)
    return report_user_errors(PROG, _main, args, debug=args.debug)


def _main(args: argparse.Namespace) -> int:
    only = [s for s in args.only.split(",") if s]
    check = args.check
    table, done, current = run(
        args.manifest,
        args.snapshots or args.manifest.parent,
        args.readme,
        args.root,
        collect=args.collect and not check,
        only=only,
        check=check,
        write=not (args.no_write or check),
    )
    print(table, end="")
    for line in done:
        print(f"{PROG}: {line}", file=sys.stderr)
    if not current:
        print(
            f"{PROG}: {args.readme}'s results table differs from what {args.manifest} and its "
            f"snapshots render; run `{PROG}` (`--no-collect`: from the committed snapshots only) "
            "and commit the README and results/",
            file=sys.stderr,
        )
        return 1
    return 0
