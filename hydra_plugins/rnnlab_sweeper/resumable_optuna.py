"""Hydra's Optuna sweeper with a study that survives interruption: `hydra/sweeper:
optuna_resumable` (conf/hydra/sweeper/optuna_resumable.yaml; every conf/hparams_search/ preset).

Hydra's own sweeper, run again on a stored study (`hydra.sweeper.storage`), asks for
`n_trials` *more* trials and numbers its jobs from 0 again, so a sweep whose job directories are
named by number (`trial_${hydra.job.num}`) sends new trials into finished trials' directories,
and the trial that was running when the sweep was killed stays RUNNING in the study forever.
This one makes `n_trials` the study's budget and a second run of the same command its resume:

- a trial left RUNNING by an interrupted sweep is run again with its own values and job number
  (same directory, same config: the run continues from its last checkpoint, or starts afresh
  where none was kept) and its value told to the study;
- then only the rest of the budget is asked for (`n_trials` minus the trials already finished,
  failed ones included), numbered after the study's trials: job `k` is Optuna's trial `k`.

A seeded sampler (`sampler.seed`) resumes with seed + the number of trials the study holds:
Optuna does not store its random state, and the same seed again would ask for the first trials'
values again (TPE's random start-up trials). A resumed search is therefore reproducible for the
point it resumed from, but asks for other values than an uninterrupted one would have.
One sweep at a time may use a study: a RUNNING trial is taken to be an interrupted one.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

try:  # the `launchers` extra; without it this module defines nothing (and Hydra warns nothing)
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # pragma: no cover - exercised only without hydra-optuna-sweeper
    OptunaSweeper = None

UNFINISHED = ("RUNNING", "WAITING")
"""Optuna trial states that do not spend the budget (a WAITING trial is an enqueued one)."""


def remaining_budget(states: list[str], n_trials: int) -> int:
    """Trials still to ask for: `n_trials` minus the finished ones (any state but
    `UNFINISHED`: complete, pruned and failed trials all spent their share)."""
    return max(0, n_trials - sum(state not in UNFINISHED for state in states))


def reseeded(sampler: Any, sampler_config: Any, n_trials_stored: int) -> Any:
    """`sampler` made anew from its config with seed `seed + n_trials_stored`, or `sampler`
    itself where its config sets no seed (then it draws fresh randomness anyway)."""
    from hydra.utils import instantiate

    seed = sampler_config.get("seed")
    if seed is None:
        return sampler
    return instantiate(sampler_config, seed=seed + n_trials_stored)


if OptunaSweeper is not None:

    class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
        """`OptunaSweeperImpl` whose `sweep` first finishes an interrupted run of the study,
        then asks for the rest of its budget (the module's docstring)."""

        def sweep(self, arguments: list[str]) -> None:
            if self.storage is not None:
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=self.storage,
                    directions=self._get_directions(),
                    load_if_exists=True,
                )
                for trial in study.get_trials(
                    deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
                ):
                    self._rerun(study, trial)
                trials = study.get_trials(deepcopy=False)
                if trials:
                    self.sampler = reseeded(
                        self.sampler, self.config.hydra.sweeper.sampler, len(trials)
                    )
                budget = self.n_trials
                self.n_trials = remaining_budget([t.state.name for t in trials], budget)
                self.job_idx = len(trials)
                if self.n_trials < budget:
                    log.info(
                        "Study %s: %d of %d trials finished, %d to go",
                        self.study_name, budget - self.n_trials, budget, self.n_trials,
                    )  # fmt: skip
            super().sweep(arguments)

        def _rerun(self, study: Any, trial: Any) -> None:
            """Run an interrupted trial again as job `trial.number` with its own values (the
            search's as `params`, the fixed ones as the user attributes `_configure_trials`
            set) and tell the study its value, or that it failed."""
            values = {**trial.params, **trial.user_attrs}
            overrides = tuple(f"{name}={value}" for name, value in values.items())
            log.info(
                "Study %s: trial %d was interrupted; running it again",
                self.study_name,
                trial.number,
            )
            (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            try:
                value = result.return_value
                study.tell(
                    trial.number,
                    values=list(value) if isinstance(value, (list, tuple)) else [float(value)],
                )
            except Exception as error:  # noqa: BLE001  (Hydra's sweeper treats a failed job alike)
                log.warning(
                    "Study %s: trial %d failed again: %s", self.study_name, trial.number, error
                )
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)

    class ResumableOptunaSweeper(OptunaSweeper):
        """Hydra's `OptunaSweeper` (same config keys) with `ResumableOptunaSweeperImpl`."""

        def __init__(self, **kwargs: Any) -> None:
            self.sweeper = ResumableOptunaSweeperImpl(**kwargs)
