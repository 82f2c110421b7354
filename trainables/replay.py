"""Replay: a trial another sweep already ran is reported again instead of computed again.

A trial's reports are a deterministic function of its inputs: the shared inputs of its sweep
(``Shared``: backbone, tasks, validation seeds and tuning, PT's baseline, report interval,
seed), its config, the dtype the backbone resolves to on its node and the code that computes
them. Two searches of one study meet the same
trial: both enqueue the paper defaults first, and a random search and TPE's random start-up
trials seeded alike propose the same first points. On study v2 (7 Dec 2026) the MTL random
search's first two trials were twins of TPE's and gave identical reports, after 2,950 and
3,130 trial-seconds each; MAML's trials cost about 5,000.

So each trial's checkpoints record its **identity** (``Shared.identity``: a digest of all of
those, the code fingerprint included), and a new trial first looks in its sibling sweeps
(``Shared.replay_from``) for a trial with the same identity. When it finds one (the one with
the most reports), it reports the original's reports in order, each with a copy of the
original's checkpoint of that report where the original kept one, so its own scheduler (ASHA)
stops it, or promotes it, where it would have after computing them (each copy names the
checkpoint it copies, ``COPIED_FROM``, and the jobs that start from a checkpoint key it by that
name, ``jobs.checkpoint_key``: a study's two searches re-score and calibrate a shared trial once):

- the original ran all its steps: every report is replayed, nothing is computed;
- it stopped earlier (its own scheduler stopped it): the reports up to its last checkpoint that
  holds the method's state are replayed, and training goes on from that state;
- no checkpoint holds the state (a sweep resumed from its committed results keeps prompts
  only): nothing is replayed.

Accounting: a replayed report carries ``REPLAY_OF`` (``<sweep folder>/<trial folder>`` of the
trial it came from) and every report from the first replayed one on carries
``REPLAYED_SECONDS``, the original's trial-seconds up to the last report replayed, which the
analysis adds to Tune's ``time_total_s``: a search's cost and its best-so-far curve stay what
they were when every trial was computed. The CPU seconds of a replayed report (``time/cpu_s``)
are the original's: what the report cost, not what this sweep spent
(``benchmarks/study_plan.py --measured`` counts them apart).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptinit.trainables import metrics as M

STATE_FILE = "trial.json"  # step, method, settings, identity and the report, in every checkpoint
IDENTITY = "identity"  # its field with the trial's identity
COPIED_FROM = "copied_from"  # its field, in a replayed checkpoint: ``<sweep>/<trial>/<checkpoint>`` it copies
RESULTS_FILE = "result.json"  # Tune's reports of a trial, one JSON object per line


@dataclass(frozen=True)
class Report:
    """One report of the original trial.

    Attributes:
        values: what the trainable reported (Tune's own keys left out), replay keys added.
        step: upstream steps done at the report.
        seconds: the original's trial-seconds up to this report (its own replayed ones included).
        checkpoint: the original's checkpoint folder of the report, where it kept one.
        has_state: that folder holds the method's state (training can go on from it).
    """

    values: dict[str, Any]
    step: int
    seconds: float
    checkpoint: Path | None
    has_state: bool


@dataclass(frozen=True)
class Original:
    """A trial of a sibling sweep with this trial's identity (its reports so far): ``trial`` is
    ``<sweep folder>/<trial folder>``."""

    trial: str
    reports: tuple[Report, ...]

    def plan(self, after: int, total: int) -> tuple[list[Report], Report | None]:
        """The reports to replay after upstream step ``after`` of a trial of ``total`` steps, and
        the report whose checkpoint training goes on from (None: the original ran all its steps,
        or there is nothing to go on from)."""
        if not self.reports:
            return [], None
        if self.reports[-1].step >= total:
            return [r for r in self.reports if r.step > after], None
        kept = [r for r in self.reports if r.has_state]
        if not kept or kept[-1].step < after:
            return [], None
        return [r for r in self.reports if after < r.step <= kept[-1].step], kept[-1]


def _lines(path: Path) -> list[dict]:
    """A ``result.json``'s reports; a last line cut short (a trial writing it) is left out."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def _read_trial(trial_dir: Path, own_keys: set[str]) -> tuple[Report, ...]:
    """A trial's reports from its ``result.json`` (``own_keys``: what its trainable reported) with
    the checkpoint of each that is still on disk."""
    from promptinit.methods.checkpoint import STATE

    reports = []
    for line in _lines(trial_dir / RESULTS_FILE):
        name = line.get("checkpoint_dir_name")
        folder = trial_dir / name if name and (trial_dir / name / STATE_FILE).is_file() else None
        values = {k: v for k, v in line.items() if k in own_keys}
        seconds = float(line.get("time_total_s", 0.0)) + float(line.get(M.REPLAYED_SECONDS, 0.0))
        step = int(values.get(M.STEP, 0))
        reports.append(Report(values, step, seconds, folder, folder is not None and (folder / STATE).is_file()))
    return tuple(reports)


def find_original(folders: tuple[str, ...], identity: str) -> Original | None:
    """The trial with ``identity`` and the most reports among the trials of ``folders`` (sibling
    sweeps), or None. A folder that is missing or unreadable is passed over: replay saves
    compute, its absence never fails a trial."""
    best: Original | None = None
    for folder in map(Path, folders):
        trials: dict[Path, set[str]] = {}
        for state in sorted(folder.glob(f"*/checkpoint_*/{STATE_FILE}")):
            try:
                doc = json.loads(state.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if doc.get(IDENTITY) == identity:
                trials.setdefault(state.parent.parent, set()).update(doc.get("report", {}))
        for trial_dir, own_keys in trials.items():
            try:
                reports = _read_trial(trial_dir, own_keys)
            except OSError:
                continue
            if reports and (best is None or len(reports) > len(best.reports)):
                best = Original(f"{folder.name}/{trial_dir.name}", reports)
    return best


def copied_from(checkpoint: Path) -> str | None:
    """The checkpoint a replayed ``checkpoint`` copies (``<sweep>/<trial>/<checkpoint>``, the one
    that was computed), None for a computed checkpoint or one that is not on disk."""
    try:
        value = json.loads((checkpoint / STATE_FILE).read_text()).get(COPIED_FROM)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def copy_of(checkpoint: Path, original: Original) -> str:
    """What a replay's copy of ``original``'s ``checkpoint`` names as its origin: the computed
    checkpoint (a copy of a copy names the first)."""
    return copied_from(checkpoint) or f"{original.trial}/{checkpoint.name}"


def replayed(report: Report, original: Original) -> dict[str, Any]:
    """The values a replay reports for ``report`` of ``original``."""
    return {**report.values, M.REPLAY_OF: original.trial, M.REPLAYED_SECONDS: report.seconds}
