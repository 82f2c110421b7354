"""Tune's searcher over an Optuna study that promptinit owns.

Ray ships ``OptunaSearch``, but what a sweep needs from its study (the study in an RDB file
that ``optuna-dashboard`` reads, each Optuna trial tagged with its Tune trial, the objective
named ``val/arg``, and a resumed sweep reconciled with a file that ran ahead of Tune's
snapshot) would mean reading ``OptunaSearch``'s private attributes, which a Ray upgrade may
rename. ``StudySearcher`` implements Tune's public ``Searcher`` API over a study it opens
itself, with Optuna's public API only.

A resumed sweep restores the searcher from Tune's newest snapshot, while the study file may be
ahead of it; ``restore`` settles the difference the way Tune settles its own:

- a trial asked after the snapshot is unknown to the resumed sweep, which proposes a new one in
  its place: it is closed FAIL with user attr ``orphaned``, and when it was an enqueued paper
  default the default is enqueued again, as the snapshot's study would still hold it;
- a trial told after the snapshot is run again by Tune from its checkpoint; the study keeps the
  value it first got (the repeated reports are ignored instead of failing on a finished trial).

At each trial's end the searcher also writes the study's finished trials to ``<sweep>/trials.json``
(``finished_trials``): with the trials' folders, what a sweep resumes from on a machine that lost
Tune's state (``rebuild``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState, create_trial
from ray.tune.search import Searcher

from promptinit.files import atomic_write_json

logger = logging.getLogger(__name__)

OPTUNA_DB = "optuna.db"  # the search's Optuna study in the sweep folder: `optuna-dashboard sqlite:///<it>`
TUNE_TRIAL_ATTR = "tune_trial_id"  # user attr of each Optuna trial: its Tune trial (folder, MLflow run tag)
ORPHAN_ATTR = "orphaned"  # user attr of an Optuna trial the resumed sweep no longer knows (closed FAIL)
DEFAULTS_ATTR = "paper_defaults"  # user attr of an enqueued paper-defaults trial
ITERATION = "training_iteration"  # Tune's report counter: the step of Optuna's intermediate values
KEPT_FILE = "trials.json"  # the study's finished trials, written at each trial's end (``finished_trials``)


def optuna_storage_url(sweep_dir: Path) -> str:
    """The sqlite URL of the sweep's Optuna study (absolute: ``sqlite:////abs/<sweep>/optuna.db``)."""
    return f"sqlite:///{Path(sweep_dir).resolve() / OPTUNA_DB}"


def drop_study(url: str, study_name: str) -> None:
    """Delete study ``study_name`` at ``url`` if it is there.

    A fresh sweep starts its study afresh: a study of that name here comes from an attempt that
    died before Tune saved anything (nothing can resume it), and reusing it would mix its trials,
    and a second copy of the enqueued paper defaults, into this search.
    """
    try:
        optuna.delete_study(study_name=study_name, storage=url)
    except KeyError:  # no such study: the usual case
        pass


def finished_trials(study: optuna.Study) -> list[dict]:
    """The study's finished trials that ran as Tune trials, as JSON: each trial's Tune trial id,
    Optuna number, state, value, parameters with their distributions, intermediate values (the
    objective at each Tune report) and user attrs. ``add_finished`` adds them to another study."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished() or ORPHAN_ATTR in t.user_attrs or TUNE_TRIAL_ATTR not in t.user_attrs:
            continue
        out.append(
            {
                TUNE_TRIAL_ATTR: t.user_attrs[TUNE_TRIAL_ATTR],
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": t.params,
                "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
                "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                "user_attrs": t.user_attrs,
            }
        )
    return out


def make_sampler(algorithm: str, seed: int, startup_trials: int, asked: int = 0) -> optuna.samplers.BaseSampler:
    """Optuna's sampler of ``search.algorithm`` (``tpe`` or ``random``), seeded with ``seed``
    moved on by the ``asked`` trials its study holds already (0 for a new search)."""
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed + asked, n_startup_trials=startup_trials)
    return optuna.samplers.RandomSampler(seed=seed + asked)


def add_finished(study: optuna.Study, trials: Sequence[dict]) -> None:
    """Add trials written by ``finished_trials`` to ``study``, in their order."""
    for k in trials:
        state = TrialState[k["state"]]
        study.add_trial(
            create_trial(
                state=state,
                value=k["value"] if state != TrialState.FAIL else None,
                params=k["params"],
                distributions={n: json_to_distribution(d) for n, d in k["distributions"].items()},
                user_attrs=k["user_attrs"],
                intermediate_values={int(s): v for s, v in k["intermediate_values"].items()},
            )
        )


class _Recorder:
    """Wraps an Optuna trial for a define-by-run space and records what it suggests, in order
    (a trial config lists the searched settings as they were suggested, then the constants)."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.values: dict[str, Any] = {}

    def _record(self, suggest: Callable, name: str, *args: Any, **kwargs: Any) -> Any:
        self.values[name] = suggest(name, *args, **kwargs)
        return self.values[name]

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return self._record(self.trial.suggest_float, name, *args, **kwargs)

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return self._record(self.trial.suggest_int, name, *args, **kwargs)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._record(self.trial.suggest_categorical, name, choices)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"maml/inner_lr": x, "method": "maml"}`` -> ``{"maml": {"inner_lr": x}, "method": "maml"}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


class StudySearcher(Searcher):
    """Proposes Tune trials from an Optuna study kept in an RDB file.

    Args:
        space: the define-by-run function (``spaces.SweepSpace``): suggests on an Optuna trial,
            returns the constants.
        sampler: Optuna's sampler (TPE or random, seeded).
        storage_url: the study's RDB URL (``optuna_storage_url``).
        study_name: the study's name (the sweep's).
        points: paper-default points enqueued first (Optuna parameter names).
        metric: the objective Tune reports (``val/delta`` or ``val/arg``, ``search.objective``), also
            the study's metric name.
        mode: ``max`` or ``min``.
        kept_file: where to write the study's finished trials at each trial's end (``KEPT_FILE``).
        kept: finished trials of an earlier study (``finished_trials``), added to this one before
            the paper defaults; a default one of them ran is not enqueued again.
        reseed: the sampler for a process resumed from Tune's snapshot, given the number of
            trials the study holds (``make_sampler`` with the search's seed moved on by it). The
            snapshot's sampler is the one pickled at the search's start; drawing from it again
            would propose again the points the first process drew.
    """

    def __init__(
        self,
        space: Callable,
        sampler: optuna.samplers.BaseSampler,
        storage_url: str,
        study_name: str,
        points: list[dict] | None,
        metric: str,
        mode: str,
        kept_file: Path | None = None,
        kept: Sequence[dict] = (),
        reseed: Callable[[int], optuna.samplers.BaseSampler] | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        self.space, self.sampler, self.reseed = space, sampler, reseed
        self.storage_url, self.study_name = storage_url, study_name
        self.kept_file = kept_file
        self.numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self.completed: set[str] = set()
        self._study: optuna.Study | None = None
        self._live: dict[str, optuna.Trial] = {}
        add_finished(self.study, kept)
        ran = [k["user_attrs"].get(DEFAULTS_ATTR) for k in kept]
        for point in points or ():
            if point not in ran:
                self.study.enqueue_trial(point, user_attrs={DEFAULTS_ATTR: point})

    # Tune pickles the searcher (tuner.pkl); a database connection does not travel.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_study": None, "_live": {}}

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = optuna.create_study(
                storage=self.storage_url,
                study_name=self.study_name,
                sampler=self.sampler,
                load_if_exists=True,
                direction="maximize" if self.mode == "max" else "minimize",
            )
            self._study.set_metric_names([self.metric])  # optuna-dashboard plots "val/delta", not "Objective 0"
        return self._study

    def _reopen(self, number: int) -> optuna.Trial:
        """A live handle on the study's trial ``number`` (asked by an earlier process)."""
        storage = optuna.storages.get_storage(self.storage_url)  # read only: the study's id of that trial
        study_id = storage.get_study_id_from_name(self.study_name)
        return optuna.Trial(self.study, storage.get_trial_id_from_study_id_trial_number(study_id, number))

    def _trial(self, trial_id: str) -> optuna.Trial:
        if trial_id not in self._live:  # restored from a snapshot
            self._live[trial_id] = self._reopen(self.numbers[trial_id])
        return self._live[trial_id]

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self.numbers:
            trial = self.study.ask()
            trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
            self.numbers[trial_id], self._live[trial_id] = trial.number, trial
        recorder = _Recorder(self._trial(trial_id))
        constants = self.space(recorder) or {}
        return nest({**recorder.values, **constants})

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.completed:  # run again from its checkpoint after a resume: the study keeps its value
            return
        self._trial(trial_id).report(result[self.metric], result[ITERATION])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.completed or trial_id not in self.numbers:
            return
        value = (result or {}).get(self.metric)
        trial = self._trial(trial_id)
        if value is None:
            self.study.tell(trial, state=TrialState.FAIL if error else TrialState.PRUNED)
        else:
            # Tune hands a trial's last report only to this method: record it as a step too, so the
            # study's curve ends where the trial did (TPE never reads the steps).
            if ITERATION in (result or {}):
                trial.report(value, (result or {})[ITERATION])
            self.study.tell(trial, value)
        self.completed.add(trial_id)
        if self.kept_file is not None:
            atomic_write_json(self.kept_file, finished_trials(self.study), indent=1)

    def save(self, checkpoint_path: str) -> None:
        atomic_write_json(checkpoint_path, {"numbers": self.numbers, "completed": sorted(self.completed)})
        if self.kept_file is not None:
            # Tune saves this state into its staging folder and uploads that folder's files over
            # the sweep folder; after a restore the folder holds the kept file as it was then,
            # so refresh it beside the state, or each snapshot puts the stale copy back.
            atomic_write_json(Path(checkpoint_path).parent / self.kept_file.name, finished_trials(self.study), indent=1)

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.numbers = {k: int(v) for k, v in state["numbers"].items()}
        self.completed = set(state["completed"])
        self._live = {}
        self._reconcile()
        self._move_seed_on()

    def _move_seed_on(self) -> None:
        """Draw the rest of the search from a sampler seeded past the trials already asked."""
        asked = sum(t.state != TrialState.WAITING for t in self.study.get_trials(deepcopy=False))
        reseed = self.__dict__.get("reseed")  # absent from a searcher Tune pickled before it existed
        if reseed is not None:
            self.sampler = self.study.sampler = reseed(asked)
        else:
            self.study.sampler.reseed_rng()  # no seed to move on: a fresh one from the OS
        logger.info("resume: the search's sampler moved on past the %d trials asked so far", asked)

    def _reconcile(self) -> None:
        known = {n: tid for tid, n in self.numbers.items()}
        for frozen in self.study.get_trials(deepcopy=False):
            tid = known.get(frozen.number)
            if tid is None and frozen.state == TrialState.RUNNING:
                self._reopen(frozen.number).set_user_attr(ORPHAN_ATTR, True)
                self.study.tell(frozen.number, state=TrialState.FAIL)
                point = frozen.user_attrs.get(DEFAULTS_ATTR)
                if point:
                    self.study.enqueue_trial(point, user_attrs={DEFAULTS_ATTR: point})
                logger.info(
                    "resume: Optuna trial %d (Tune trial %s) was asked after Tune's last snapshot; closed FAIL",
                    frozen.number,
                    frozen.user_attrs.get(TUNE_TRIAL_ATTR),
                )
            elif tid is not None and frozen.state.is_finished():
                self.completed.add(tid)
