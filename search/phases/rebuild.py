"""A sweep resumed from its results alone, on a machine that lost Tune's state.

``--resume`` continues a sweep from Tune's state in its folder (``tuner.pkl``, the experiment
state, the Optuna and MLflow sqlite files). A sweep can outlive that state: a session or a
preemptible node ends and only the files someone kept (committed, copied) remain. These are
enough to go on:

- ``promptinit-sweep.json``, the sweep's record;
- ``trials.json``, the search's finished trials (``searcher.finished_trials``, rewritten at
  each trial's end);
- each finished trial's folder: ``params.json``, ``result.json`` and in its ``checkpoint_*``
  folders the prompt and the report (``prompt.safetensors``, ``trial.json``); no pickles, no
  optimizer state (a finished trial is never trained on), except for a method tuned downstream
  with its own state (SUPMER's ψ), whose checkpoints are kept whole.

A resume without ``tuner.pkl`` but with ``trials.json`` rebuilds the search from them:

- the Optuna study is rebuilt from ``trials.json``; the sampler is seeded with ``search.seed``
  plus the number of kept trials, so a random search does not draw the kept trials' points again;
- Tune runs the remaining ``num_samples`` minus the kept trials; ASHA's rungs first replay the
  kept trials' reports (``KeptASHA``), so it stops a new trial where the uninterrupted sweep
  would have;
- the kept trials join Tune's results for the selection (``kept_results``);
- MLflow: the recorded parent run goes on when its store still has it; otherwise a new parent
  run gets the kept trials as child runs, replayed from their ``result.json`` (``replay_runs``).

A trial that had not finished is lost: its folder is left and never read, and the search
proposes a trial in its place (a paper default is enqueued again).

``python -m promptinit.search.phases.rebuild <sweep or study>...`` prints those files with the
folder's results (``portable_files``), one per line: job records' names hold spaces
(``validation PT-<key>.json``), so commit them with ``... | git add -f --pathspec-from-file=-``,
not ``git add -f $(...)``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from promptinit.analysis import read_results
from promptinit.errors import PromptinitError, read_json
from promptinit.search.phases.jobs import UPSTREAM_DIR
from promptinit.search.phases.searcher import KEPT_FILE, TUNE_TRIAL_ATTR

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"  # Tune's per-trial reports, one JSON object per line


def kept_trials(sweep_dir: Path) -> list[dict]:
    """The finished trials in ``<sweep>/trials.json`` (``[]`` when the file is missing).

    Raises:
        PromptinitError: the file is not a list of trials, or a trial's folder (with its
            ``result.json``) is missing.
    """
    path = Path(sweep_dir) / KEPT_FILE
    if not path.is_file():
        return []
    trials = read_json(path)
    if not isinstance(trials, list) or not all(isinstance(t, dict) and TUNE_TRIAL_ATTR in t for t in trials):
        raise PromptinitError(
            f"{path}: expected a list of trials, each with {TUNE_TRIAL_ATTR!r} (written by the sweep's searcher); "
            "restore the file, or start the sweep afresh under a new `name`"
        )
    for t in trials:
        trial_folder(sweep_dir, t[TUNE_TRIAL_ATTR])
    return trials


def trial_folder(sweep_dir: Path, trial_id: str) -> Path:
    """The folder of Tune trial ``trial_id`` (``<method>_<trial id>``, ``trainable.trial_dirname``).

    Raises:
        PromptinitError: no such folder with a ``result.json``.
    """
    found = [d for d in Path(sweep_dir).glob(f"*_{trial_id}") if (d / RESULT_FILE).is_file()]
    if len(found) != 1:
        raise PromptinitError(
            f"{Path(sweep_dir) / KEPT_FILE}: field {TUNE_TRIAL_ATTR!r}: trial {trial_id} has "
            f"{'no folder' if not found else 'several folders'} with a {RESULT_FILE} in {sweep_dir}; restore "
            "the trial's folder (params.json, result.json, checkpoint_*), or start the sweep afresh under a new `name`"
        )
    return found[0]


def kept_results(sweep_dir: Path, kept: Sequence[dict], known: Collection[Path]) -> list[Any]:
    """Tune ``Result``s of the kept trials Tune's own results lack (``known``: their folders): the
    trials that finished before the search was rebuilt. A trial that failed keeps an error."""
    from ray.tune import Result

    seen = {Path(p).resolve() for p in known}
    out = []
    for t in kept:
        folder = trial_folder(sweep_dir, t[TUNE_TRIAL_ATTR])
        if folder.resolve() in seen:
            continue
        result = Result.from_path(str(folder))
        if t["state"] == "FAIL" and result.error is None:
            result = dataclasses.replace(result, error=RuntimeError("the trial failed before the sweep was rebuilt"))
        out.append(result)
    return out


class KeptASHA(ASHAScheduler):
    """ASHA whose rungs hold, as they would after an uninterrupted search, the kept trials'
    reports (``trials.json``'s intermediate values: the objective at each Tune report) and, on a
    resume from Tune's snapshot, the restored trials' reports (their folders' ``result.json``).
    Tune keeps no scheduler state in its snapshots: it restores ASHA as ``tuner.pkl`` holds it,
    from the search's start, so without this a resumed ASHA judges the trials left against the
    results reported since the resume alone.

    Args:
        kept: the kept trials (``kept_trials``); ``[]`` is plain ASHA.
        **kwargs: ``ASHAScheduler``'s.
    """

    def __init__(self, kept: Sequence[dict] = (), **kwargs: Any):
        super().__init__(**kwargs)
        self.kept = list(kept)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        accepted = super().set_search_properties(metric, mode, **spec)
        if accepted and self.kept:
            self.replay()
        return accepted

    def replay(self) -> None:
        """Record the kept trials' reports in the rungs (the scheduler's metric and mode set)."""
        if len(self._brackets) != 1:
            logger.warning("ASHA with %d brackets: the kept trials' reports are not replayed", len(self._brackets))
            return
        bracket = self._brackets[0]
        for t in self.kept:
            trial: Any = SimpleNamespace(trial_id=t[TUNE_TRIAL_ATTR])  # the bracket reads only the id
            for step, value in sorted((int(s), v) for s, v in t["intermediate_values"].items()):
                bracket.on_result(trial, step, self._metric_op * value)
        self.kept = []  # replayed once

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        # A trial restored from Tune's snapshot has reported before: record its reports (a new
        # trial's folder holds none yet). Rungs are keyed by trial, so a report twice is once.
        bracket = self._trial_info[trial.trial_id]
        rows = read_results(Path(trial.path)) if getattr(trial, "relative_logdir", None) else []
        keys = (self._time_attr, self._metric)
        reports = [(r[keys[0]], r[keys[1]]) for r in rows if all(r.get(k) is not None for k in keys)]
        for step, value in reports:
            bracket.on_result(trial, step, self._metric_op * value)
        if reports:
            logger.info("resume: ASHA's rungs take trial %s's %d reports again", trial.trial_id, len(reports))


def replay_runs(uri: str, experiment: str, parent: str, sweep_dir: Path, kept: Sequence[dict]) -> None:
    """The kept trials as child runs of a new parent run, replayed from their ``result.json``:
    their parameters, every report's metrics, their end (FINISHED, or FAILED for a failed trial)."""
    from promptinit.search.phases import tracking

    c = tracking.client(uri)
    for t in kept:
        rows = read_results(trial_folder(sweep_dir, t[TUNE_TRIAL_ATTR]))
        config = rows[-1].get("config", {}) if rows else {}
        rid = tracking.create_child(uri, experiment, parent, t[TUNE_TRIAL_ATTR], config)
        for row in rows:
            tracking.log_result(rid, uri, row)
        c.set_tag(rid, "replayed_from", str(Path(sweep_dir) / KEPT_FILE))
        if t["state"] == "FAIL":
            c.set_terminated(rid, "FAILED")
        else:
            c.set_tag(rid, tracking.STOPPED_TAG, str(tracking.stopped_early(rows[-1] if rows else None)).lower())
            c.set_terminated(rid, "FINISHED")


def remaining(num_samples: int, kept: Sequence[dict]) -> int:
    """Trials Tune still has to run after the kept ones."""
    return max(0, num_samples - len(kept))


KEEP_SUFFIXES = (".json", ".csv", ".md")  # a run folder's own records and tables
TUNE_STATE = ("experiment_state-", "search_gen_state-")  # Tune's snapshots (with pickled fields)


def portable_files(folder: Path) -> list[Path]:
    """The results of a sweep or study folder and what it resumes from without Tune's state: the
    files to copy, or commit, for it to go on elsewhere, and nothing Tune-internal.

    A sweep's: its records and tables (``*.json``, ``*.csv``, ``*.md`` but Tune's snapshots), the
    exported prompts (``exports/``), the kept jobs (``final/``; of a retrained checkpoint its
    prompt, or for a method tuned downstream with its own state such as SUPMER's ψ the whole
    checkpoint), and the kept finished trials (see the module docstring). A study's: the same of
    the study folder and of each of its sweeps (``sweeps/*``).
    """
    folder = Path(folder)
    out = [p for p in sorted(folder.iterdir()) if _own_record(p)]
    out += sorted(p for p in (folder / "exports").rglob("*") if p.is_file())
    out += _kept_jobs(folder / "final")
    for t in kept_trials(folder):
        trial = trial_folder(folder, t[TUNE_TRIAL_ATTR])
        out += [trial / f for f in ("params.json", RESULT_FILE) if (trial / f).is_file()]
        method = (read_results(trial) or [{}])[-1].get("config", {}).get("method", "")
        for checkpoint in sorted(trial.glob("checkpoint_*")):
            out += _checkpoint_files(checkpoint, method)
    for sweep in sorted((folder / "sweeps").glob("*")) if (folder / "sweeps").is_dir() else ():
        out += portable_files(sweep)
    return out


def _own_record(path: Path) -> bool:
    return path.is_file() and path.suffix in KEEP_SUFFIXES and not path.name.startswith(TUNE_STATE)


def _kept_jobs(final: Path) -> list[Path]:
    """A ``final/`` folder's kept jobs, and of each retrained upstream checkpoint what downstream
    tuning reads (``_checkpoint_files``)."""
    if not final.is_dir():
        return []
    out = sorted(p for p in final.glob("*.json"))
    for job in [p for p in out if p.name.startswith("upstream-")]:
        record = read_json(job)
        checkpoint = Path(str(record.get("value")))
        if not checkpoint.is_dir():  # recorded in another checkout: here under its name (upstream.located)
            checkpoint = final / UPSTREAM_DIR / checkpoint.name
        if not checkpoint.is_dir():
            continue
        if checkpoint.resolve().is_relative_to(final.resolve()):  # named as the caller named the folder
            checkpoint = final / checkpoint.resolve().relative_to(final.resolve())
        out += _checkpoint_files(checkpoint, record.get("key", {}).get("method", ""), upstream=True)
    return out


def _checkpoint_files(checkpoint: Path, method: str, upstream: bool = False) -> list[Path]:
    """A checkpoint's prompt and report, no optimizer state; whole for a method whose downstream
    tuning restores the method (SUPMER: its ψ lives in the method's state), but for a kept
    ``upstream`` run that wrote its ψ apart (``upstream.keep_psi``): its prompt, report and ψ."""
    from promptinit.export import PSI
    from promptinit.trainables.scoring import PROMPT_FILE, needs_restore
    from promptinit.trainables.trainable import STATE_FILE

    if upstream and (checkpoint / PSI).is_file():
        keep: tuple[str, ...] = (PROMPT_FILE, STATE_FILE, PSI)
    elif method and needs_restore(method):
        return sorted(p for p in checkpoint.iterdir() if p.is_file())
    else:
        keep = (PROMPT_FILE, STATE_FILE)
    return sorted(p for p in checkpoint.iterdir() if p.is_file() and p.name in keep)


if __name__ == "__main__":
    import argparse

    prog = "python -m promptinit.search.phases.rebuild"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep or study run folders")
    for folder in parser.parse_args().folders:
        print("\n".join(str(p) for p in portable_files(folder)))
