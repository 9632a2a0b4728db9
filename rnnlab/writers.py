"""What a run writes: TensorBoard events, `metrics.jsonl`, `results.json`.

Every scalar goes to both sinks under the same `split/metric` name: learning curves `train/loss`,
`valid/bpc`; the selected (best) checkpoint scored at the end, `valid/bpc_best` and `test/bpc`;
wall-clock measurements `wall/tokens_per_s`, `wall/step_ms`, `wall/eval_s`, `wall/compile_s`
(they differ between identical runs; everything else is reproducible). The names are chosen for
TensorBoard's SCALARS page, which sorts categories by name and opens the first two: `train` and
`valid` come first (then `wall`; `test` sorts before them where a task has a test split). Its
CUSTOM SCALARS page (`scalar_layout`) puts each metric's train and valid curves in one chart,
then the best checkpoint's scores, then the timings.

Everything is written into the run directory itself, hparams included:
`tensorboardX.SummaryWriter.add_hparams` would open a separate sub-run, so the three hparams
summaries (`tensorboardX.summary.hparams`) go through the run's own file writer instead, and
`tensorboard --logdir <sweep dir>` shows one run per job, named by its directory.

A resumed run truncates what was logged after its checkpoint: `metrics.jsonl` keeps the lines up
to the restored step, and the event writer is opened with `purge_step`, which makes TensorBoard
drop the older events from that step on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rnnlab.checks import check_float, check_int
from rnnlab.rundir import METRICS_FILE, RESULTS_FILE, read_json, read_jsonl, write_json, write_jsonl

NOT_HPARAMS = (
    "data_dir",
    "task.path",
    "trainer.quiet",
    "trainer.compilation_cache_dir",
    "trainer.skip_finished",
)
"""Overrides that say where, how verbosely or how tested, not what: left out of TensorBoard's
hparams and of sweep job directory names (`hydra.job.config.override_dirname.exclude_keys` in
conf/train.yaml lists the same keys, and a test checks that they agree)."""


@dataclasses.dataclass
class LoggerConfig:
    """Logging settings (schema of `conf/logger/`).

    Attributes:
        tensorboard: write TensorBoard event files into the run directory.
        jsonl: write `metrics.jsonl`, one JSON object per log event.
        log_every: steps between training-metric log events.
        text_samples: log generated text for language models at every evaluation.
        flush_secs: TensorBoard flush interval.
        progress_every_s: without a progress bar (output to a file, a scheduler's log, CI), a
            compact progress line (step, steps/s, ETA, last training loss) at this wall-clock
            interval in seconds.
    """

    tensorboard: bool = True
    jsonl: bool = True
    log_every: int = 50
    text_samples: bool = True
    flush_secs: int = 30
    progress_every_s: float = 30.0

    def __post_init__(self) -> None:
        check_int("logger.log_every", self.log_every, 1)
        check_int("logger.flush_secs", self.flush_secs, 1)
        check_float("logger.progress_every_s", self.progress_every_s, 0.0, low_open=True)


WALL = "wall"
"""The namespace of wall-clock measurements (throughput and timings)."""


def final_score_names(scored: Mapping[str, Any], monitored_split: str) -> dict[str, Any]:
    """The names the best checkpoint's scores are logged under: the monitored split's metrics
    as `valid/<metric>_best` (its plain names hold the learning curve; the suffix sorts each
    score's chart right after its curve's), the other splits' (a test set, scored only here) as
    they are.

        >>> final_score_names({"valid/loss": 0.5, "test/loss": 0.6}, "valid")
        {'valid/loss_best': 0.5, 'test/loss': 0.6}
    """
    names = {}
    for name, value in scored.items():
        split = name.split("/", 1)[0]
        names[f"{name}_best" if split == monitored_split else name] = value
    return names


def scalar_layout(metrics: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard's CUSTOM SCALARS layout for the evaluation metrics `metrics` (`valid/loss`,
    ...): categories in reading order, each chart a regular expression over tags, so one chart
    shows every run's train and valid curve of a metric side by side.

    Returns:
        `{category: {chart title: ["Multiline", [tag regex]]}}` (`tensorboardX`'s form).
    """
    names = sorted({name.split("/", 1)[1] for name in metrics if "/" in name})
    chart = lambda pattern: ["Multiline", [pattern]]  # noqa: E731
    return {
        "learning curves: train and valid": {
            name: chart(rf"^(train|valid)/{re.escape(name)}$") for name in names
        },
        "optimisation": {
            "gradient norm": chart(r"^train/grad_norm$"),
            "learning rate": chart(r"^train/learning_rate$"),
        },
        "best checkpoint: valid and test": {
            name: chart(rf"^(valid/{re.escape(name)}_best|test/{re.escape(name)})$")
            for name in names
        },
        "wall clock": {
            "tokens per second (training)": chart(rf"^{WALL}/tokens_per_s$"),
            "ms per training step": chart(rf"^{WALL}/step_ms$"),
            "evaluation seconds": chart(rf"^{WALL}/eval_s$"),
        },
    }


def _plain(value: Any) -> Any:
    """A JSON-friendly version of a scalar (numpy and JAX scalars become Python numbers)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def truncate_jsonl(path: str | os.PathLike[str], last_step: int) -> None:
    """Drops the events of `path` logged after `last_step` (a resumed run logs them again), and
    a torn last line (a run killed while logging), with a warning naming the file."""
    if Path(path).is_file():
        write_jsonl(path, [e for e in read_jsonl(path) if e.get("step", 0) <= last_step])


def write_results(run_dir: str | os.PathLike[str], results: Mapping[str, Any]) -> Path:
    """Writes `results.json`; an earlier attempt's file is kept under the key `previous` (a
    damaged one is moved aside, not overwritten)."""
    path = Path(run_dir) / RESULTS_FILE
    data = dict(results)
    previous = read_json(path, set_aside_damaged=True)
    if previous is not None:
        previous.pop("previous", None)
        data.setdefault("previous", previous)
    write_json(path, data)
    return path


def hparam_value(value: Any) -> bool | int | float | str:
    """A value TensorBoard's hparams plugin accepts (bool, number or string)."""
    value = _plain(value)
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


class RunWriter:
    """Writes scalars, text and hparams of one run to TensorBoard and `metrics.jsonl`.

    Args:
        run_dir: the run directory (created if missing).
        config: which sinks to use.
        purge_step: on resume, the first step that is logged again (older events from this step
            on are dropped); None for a fresh run.
        enabled: False on every process but the first of a multi-host job.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        config: LoggerConfig,
        purge_step: int | None = None,
        enabled: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.config = config
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        self._layout_written = False
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config.jsonl:
            path = self.run_dir / METRICS_FILE
            if purge_step is not None:
                truncate_jsonl(path, purge_step - 1)
            self._jsonl = path.open("a", encoding="utf-8")
        if config.tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(
                logdir=str(self.run_dir), purge_step=purge_step, flush_secs=config.flush_secs
            )

    def scalars(self, step: int, metrics: Mapping[str, Any]) -> None:
        """One log event: `metrics` maps `split/metric` names to numbers."""
        if not self.enabled or not metrics:
            return
        values = {k: _plain(v) for k, v in metrics.items()}
        if self._jsonl is not None:
            event = {"step": int(step), "time": round(time.time(), 3), **values}
            self._jsonl.write(json.dumps(event) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for name, value in values.items():
                if isinstance(value, int | float):
                    self._tb.add_scalar(name, value, int(step))

    def layout(self, metrics: Iterable[str]) -> None:
        """Writes the CUSTOM SCALARS layout (`scalar_layout`) once per attempt; TensorBoard
        merges the copies of every run and attempt by category and chart title."""
        if not self.enabled or self._tb is None or self._layout_written:
            return
        self._tb.add_custom_scalars(scalar_layout(metrics))
        self._layout_written = True

    def text(self, step: int, tag: str, text: str) -> None:
        """A text sample (TensorBoard's text tab renders markdown: wrap it in a code block)."""
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_text(tag, "```\n" + text + "\n```", int(step))
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": int(step), tag: text}) + "\n")
            self._jsonl.flush()

    def hparams(self, step: int, hparams: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """The run's hyperparameters with its final metrics, in this run's own event file.

        The hparams plugin reads each metric's value from the run's scalar events under the same
        tag, so log every metric with `scalars` as well (`step` is then the step used there).
        """
        if not self.enabled or self._tb is None:
            return
        from tensorboardX.summary import hparams as hparams_summary

        numbers = {k: float(v) for k, v in metrics.items() if isinstance(_plain(v), int | float)}
        clean = {k: hparam_value(v) for k, v in hparams.items()}
        experiment, start, end = hparams_summary(clean, numbers)
        file_writer = self._tb._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary, int(step))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

    def close(self) -> None:
        """Flushes and closes both sinks."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
