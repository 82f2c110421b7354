"""Ray tasks that outlive an interruption: a ``Job`` is one unit of work, the ``Runner`` runs
lists of them side by side and keeps each finished result on disk under a hash of what decides
it, so ``--resume`` (and a study that adds an arm) redoes only the jobs that had not finished.

The phases after the search (select, upstream, target) and the study's own phases are lists of
jobs. A job names its ``owner`` (an arm and an upstream seed), so a phase gathers its results by
owner, never by position in a list.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promptinit
from promptinit.errors import read_json
from promptinit.files import atomic_write_json
from promptinit.fingerprints import digest

logger = logging.getLogger(__name__)

Pair = tuple[str, int]  # (task name, few-shot seed)
Owner = tuple[str, int | None]  # (arm, upstream seed): whose score a job computes; None for PT


def _always(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Job:
    """One Ray task: ``fn(**kwargs)``, described by ``key`` (everything that decides its result).

    Attributes:
        label: printed when it finishes (``"target maml (upstream seed 1) bbc_topic, seeds 100 13"``).
        fn: a module-level function (Ray pickles it by reference).
        kwargs: its arguments.
        key: what decides the result; the kept file is named by its hash.
        owner: the (arm, upstream seed) whose score this is, for the phase that gathers results.
        valid: whether a kept result is still usable (a checkpoint folder still there).
    """

    label: str
    fn: Callable[..., Any]
    kwargs: dict
    key: dict
    owner: Owner = ("", None)
    valid: Callable[[Any], bool] = field(default=_always)


def _call(fn: Callable[..., Any], kwargs: dict) -> tuple[Any, float]:
    """Runs in the Ray worker: the result as JSON-ready data, and the CPU seconds it took."""
    t0 = time.process_time()
    out = fn(**kwargs)
    if isinstance(out, dict):  # {(task, seed): score}
        out = [[k[0], int(k[1]), float(v)] for k, v in out.items()]
    return out, time.process_time() - t0


def scores_of(value: list) -> dict[Pair, float]:
    """A score job's kept result back to ``{(task, seed): score}``."""
    return {(t, int(s)): float(v) for t, s, v in value}


def scores_by_owner(jobs: Sequence[Job], values: Sequence[Any]) -> dict[Owner, dict[Pair, float]]:
    """Score jobs' results gathered by their owner: ``{(arm, upstream seed): {(task, seed): score}}``."""
    out: dict[Owner, dict[Pair, float]] = {}
    for job, value in zip(jobs, values, strict=True):
        out.setdefault(job.owner, {}).update(scores_of(value))
    return out


def code_fingerprint() -> str:
    """Hash of the code that decides a job's result: every module of the core library
    (``promptinit/``) and ``trainables/scoring.py``."""
    from promptinit.trainables import scoring

    root = Path(promptinit.__file__).parent
    h = hashlib.sha256()
    scoring_file = Path(scoring.__file__)
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes())
    h.update(b"trainables/scoring.py\0" + scoring_file.read_bytes())
    return h.hexdigest()[:16]


def duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Runner:
    """Runs lists of ``Job`` as parallel Ray tasks, keeps each finished result on disk, and
    logs a line per finished job with an estimate of the time left.

    Args:
        folder: where finished results are kept (``<sweep>/final``).
        cpu: CPUs per job.
        gpu: GPUs per job (a fraction shares one).
        code: the code fingerprint in every kept file's name (default: ``code_fingerprint()``).
    """

    def __init__(self, folder: Path, cpu: float, gpu: float, code: str | None = None):
        self.folder = Path(folder)
        self.cpu, self.gpu = cpu, gpu
        self.code = code or code_fingerprint()
        self.cpu_seconds = 0.0

    def file(self, phase: str, job: Job) -> Path:
        """Where ``job``'s result is kept."""
        return self.folder / f"{phase}-{digest(job.key, self.code)}.json"

    def kept(self, phase: str, job: Job) -> tuple[bool, Any]:
        """``(True, value)`` when a usable result of ``job`` is on disk."""
        path = self.file(phase, job)
        if path.is_file():
            record = read_json(path)
            if isinstance(record, dict) and "value" in record and job.valid(record["value"]):
                return True, record["value"]
        return False, None

    def run(self, phase: str, jobs: Sequence[Job], title: str | None = None) -> list[Any]:
        """Each job's result, in the order of ``jobs``; kept results are reused, the others
        computed. ``phase`` names the kept files (with each job's key), ``title`` (default:
        ``phase``) the logged lines."""
        import ray

        self.folder.mkdir(parents=True, exist_ok=True)
        results: list[Any] = [None] * len(jobs)
        pending = {}
        remote = ray.remote(num_cpus=self.cpu, num_gpus=self.gpu, max_retries=1)(_call)
        for i, job in enumerate(jobs):
            found, value = self.kept(phase, job)
            if found:
                results[i] = value
            else:
                pending[remote.remote(job.fn, job.kwargs)] = i
        title = title or phase
        done_before = len(jobs) - len(pending)
        logger.info(
            "%s: %d jobs%s",
            title,
            len(jobs),
            f" ({done_before} done before, kept in {self.folder})" if done_before else "",
        )
        t0, done, todo = time.perf_counter(), 0, len(pending)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            results[i], cpu_s = ray.get(ref)
            self.cpu_seconds += cpu_s
            job = jobs[i]
            atomic_write_json(
                self.file(phase, job),
                {"label": job.label, "key": job.key, "value": results[i], "cpu_s": cpu_s},
                default=str,
            )
            done += 1
            elapsed = time.perf_counter() - t0
            left = f"~{duration(elapsed / done * (todo - done))} left" if todo > done else "done"
            logger.info(
                "  %s [%d/%d] %s (%.0f CPU s); %s elapsed, %s",
                title,
                done,
                todo,
                job.label,
                cpu_s,
                duration(elapsed),
                left,
            )
        return results


@dataclass(frozen=True)
class Start:
    """Where a downstream tuning starts, and what identifies that start in a job's key.

    Attributes:
        kwargs: ``score_job`` arguments: none (PT from the vocabulary), ``init="labels"``, ``init``
            a prompt, or ``method`` (a method restored from its checkpoint: SUPMER's ψ acts downstream).
        key: what identifies the start (the checkpoint, the method and settings, the upstream seed).
    """

    kwargs: dict
    key: dict


PT_START = Start({}, {"pt": True})  # PT from the sampled-vocabulary init: the baseline
LABELS_START = Start({"init": "labels"}, {"init": "labels"})  # PT from the class labels (Lester et al. 2021)


def score_jobs(
    backbone: dict, label: str, tasks: Sequence[Any], seeds: Sequence[int], tuning: dict, start: Start, owner: Owner
) -> list[Job]:
    """One job per task: tune from ``start`` on each few-shot seed, score on its test sample."""
    from promptinit.trainables.scoring import score_job

    return [
        Job(
            f"{label} {t.name}, seeds {' '.join(map(str, seeds))}",
            score_job,
            dict(backbone=backbone, tasks=[t], seeds=list(seeds), tuning=tuning, **start.kwargs),
            {"backbone": backbone, "task": t.fingerprint, "seeds": list(seeds), "tuning": tuning, **start.key},
            owner,
        )
        for t in tasks
    ]
