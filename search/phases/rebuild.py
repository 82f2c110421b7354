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

``python -m promptinit.search.phases.rebuild <sweep>...`` prints those files (``portable_files``),
with the sweep's kept jobs (``final/``), e.g. for ``git add -f``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from promptinit.errors import PromptinitError, read_json
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


def reports(trial_dir: Path) -> list[dict]:
    """A trial's reports, from its ``result.json``."""
    lines = (Path(trial_dir) / RESULT_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


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
    """ASHA whose rungs first hold the kept trials' reports (``trials.json``'s intermediate
    values: the objective at each Tune report), as they would after an uninterrupted search.

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
        self.kept = []  # replayed once: a restored experiment pickles the rungs themselves


def replay_runs(uri: str, experiment: str, parent: str, sweep_dir: Path, kept: Sequence[dict]) -> None:
    """The kept trials as child runs of a new parent run, replayed from their ``result.json``:
    their parameters, every report's metrics, their end (FINISHED, or FAILED for a failed trial)."""
    from promptinit.search.phases import tracking

    c = tracking.client(uri)
    for t in kept:
        rows = reports(trial_folder(sweep_dir, t[TUNE_TRIAL_ATTR]))
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


def portable_files(sweep_dir: Path) -> list[Path]:
    """What a sweep resumes from without Tune's state (see the module docstring), with its kept
    jobs (``final/``): the files to copy, or commit, for it to go on elsewhere."""
    from promptinit.search.phases.check import RECORD_FILE
    from promptinit.search.phases.prepare import FINAL_DIR
    from promptinit.trainables.scoring import PROMPT_FILE, needs_restore
    from promptinit.trainables.trainable import STATE_FILE

    sweep_dir = Path(sweep_dir)
    out = [sweep_dir / f for f in (RECORD_FILE, KEPT_FILE) if (sweep_dir / f).is_file()]
    out += sorted(p for p in (sweep_dir / FINAL_DIR).rglob("*") if p.is_file())
    for t in kept_trials(sweep_dir):
        folder = trial_folder(sweep_dir, t[TUNE_TRIAL_ATTR])
        out += [folder / f for f in ("params.json", RESULT_FILE) if (folder / f).is_file()]
        method = (reports(folder) or [{}])[-1].get("config", {}).get("method", "")
        names = None if needs_restore(method) else (PROMPT_FILE, STATE_FILE)  # SUPMER: its ψ too
        out += sorted(p for p in folder.glob("checkpoint_*/*") if p.is_file() and (names is None or p.name in names))
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print("\n".join(str(p) for p in portable_files(Path(arg))))
