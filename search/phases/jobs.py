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
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class Ran:
    """Where and how long a job ran, kept with its result (``"ran"`` in its file).

    Attributes:
        cpu_s: CPU seconds of the worker process.
        node, gpu_ids, cuda_visible_devices, device: ``trainables.placement.placement``'s facts.
        started, ended: wall-clock times (Unix seconds).
    """

    cpu_s: float
    node: str = ""
    gpu_ids: str = ""
    cuda_visible_devices: str | None = None
    device: str = "cpu"
    started: float = 0.0
    ended: float = 0.0


def _call(fn: Callable[..., Any], kwargs: dict) -> tuple[Any, Ran]:
    """Runs in the Ray worker: the result as JSON-ready data, and where and how long it ran."""
    from promptinit.trainables.placement import placement

    where = placement("job")
    started, t0 = time.time(), time.process_time()
    out = fn(**kwargs)
    if isinstance(out, dict):  # {(task, seed): score}
        out = [[k[0], int(k[1]), float(v)] for k, v in out.items()]
    return out, Ran(time.process_time() - t0, **where, started=started, ended=time.time())


def scores_of(value: list) -> dict[Pair, float]:
    """A score job's kept result back to ``{(task, seed): score}``."""
    return {(t, int(s)): float(v) for t, s, v in value}


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
        shared: other runners' folders whose kept results this one reuses (read only): a study's
            search sweeps and the study itself tune PT on the same problems.
    """

    def __init__(self, folder: Path, cpu: float, gpu: float, code: str | None = None, shared: Sequence[Path] = ()):
        self.folder = Path(folder)
        self.cpu, self.gpu = cpu, gpu
        self.code = code or code_fingerprint()
        self.shared = tuple(Path(f) for f in shared)
        self.cpu_seconds = 0.0

    def kept_note(self, n: int) -> str:
        """The log's note on ``n`` results reused: where they may lie (this folder, or a shared
        one: a study's search reuses the study's upstream runs and PT problems)."""
        places = " or ".join(str(f) for f in (self.folder, *self.shared))
        return f" ({n} done before, kept in {places})" if n else ""

    def rekey(self) -> int:
        """Give this folder's kept jobs keyed by a checkpoint's absolute path (written before 6 Dec
        2026) the key ``checkpoint_key`` makes, under their new file names; returns how many. A
        record written under other code, or whose name is not its key's digest, is left as it is."""
        n = 0
        for path in sorted(self.folder.glob("*-*.json")) if self.folder.is_dir() else ():
            record = read_json(path)
            key = record.get("key") if isinstance(record, dict) else None
            if not isinstance(key, dict) or not Path(str(key.get("checkpoint", ""))).is_absolute():
                continue
            phase = path.name.rsplit("-", 1)[0]
            if path.name != f"{phase}-{digest(key, self.code)}.json":
                continue
            key = {**key, "checkpoint": checkpoint_key(key["checkpoint"])}
            atomic_write_json(
                self.folder / f"{phase}-{digest(key, self.code)}.json", {**record, "key": key}, default=str
            )
            path.unlink()
            n += 1
        return n

    def file(self, phase: str, job: Job) -> Path:
        """Where ``job``'s result is kept."""
        return self.folder / f"{phase}-{digest(job.key, self.code)}.json"

    def kept(self, phase: str, job: Job) -> tuple[bool, Any]:
        """``(True, value)`` when a usable result of ``job`` is on disk, here or in a shared folder
        (the same file name: the job's key and the code's fingerprint)."""
        name = self.file(phase, job).name
        for path in (self.folder / name, *(f / name for f in self.shared)):
            if path.is_file():
                record = read_json(path)
                if isinstance(record, dict) and "value" in record and job.valid(record["value"]):
                    return True, record["value"]
        return False, None

    def run(self, phase: str, jobs: Sequence[Job], title: str | None = None) -> list[Any]:
        """Each job's result, in the order of ``jobs``; kept results are reused, the others
        computed. ``phase`` names the kept files (with each job's key), ``title`` (default:
        ``phase``) the logged lines."""
        results: list[Any] = [None] * len(jobs)
        todo = []
        for i, job in enumerate(jobs):
            found, value = self.kept(phase, job)
            if found:
                results[i] = value
            else:
                todo.append(i)
        title = title or phase
        header = f"{title}: {len(jobs)} jobs{self.kept_note(len(jobs) - len(todo))}"
        for i, value, ran in self.execute([jobs[i] for i in todo], title, header):
            results[todo[i]] = value
            job = jobs[todo[i]]
            atomic_write_json(
                self.file(phase, job),
                {"label": job.label, "key": job.key, "value": value, "cpu_s": ran.cpu_s, "ran": asdict(ran)},
                default=str,
            )
        return results

    def execute(self, jobs: Sequence[Job], title: str, header: str) -> Iterator[tuple[int, Any, Ran]]:
        """Run ``jobs`` as parallel Ray tasks (nothing kept): ``(index, result, where it ran)``
        as each finishes; logs ``header``, then a line per finished job with the time left."""
        import ray

        self.folder.mkdir(parents=True, exist_ok=True)
        remote = ray.remote(num_cpus=self.cpu, num_gpus=self.gpu, max_retries=1)(_call)
        pending = {remote.remote(job.fn, job.kwargs): i for i, job in enumerate(jobs)}
        logger.info("%s", header)
        t0, done, todo, slots, walls = time.perf_counter(), 0, len(pending), self.workers(), []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            value, ran = ray.get(ref)
            self.cpu_seconds += ran.cpu_s
            done += 1
            elapsed = time.perf_counter() - t0
            walls.append(ran.ended - ran.started)
            left = f"~{duration(time_left(walls, todo - done, slots))} left" if todo > done else "done"
            logger.info(
                "  %s [%d/%d] %s (%.0f CPU s); %s elapsed, %s",
                title,
                done,
                todo,
                jobs[i].label,
                ran.cpu_s,
                duration(elapsed),
                left,
            )
            yield i, value, ran

    def workers(self) -> int:
        """How many of this runner's jobs the Ray cluster runs at once (at least 1)."""
        import ray

        have = ray.cluster_resources()
        slots = [have.get("CPU", 1.0) / self.cpu] if self.cpu else []
        if self.gpu:
            slots.append(have.get("GPU", 0.0) / self.gpu)
        return max(1, int(min(slots, default=1.0)))


def time_left(walls: Sequence[float], remaining: int, workers: int) -> float:
    """Seconds until ``remaining`` more jobs finish on ``workers`` at once, each taking the mean
    wall time of the finished ones (``walls``): the jobs run in parallel, so the first job done
    among ``workers`` started together does not mean the rest run one after another."""
    return sum(walls) / len(walls) * remaining / max(1, min(workers, remaining))


UPSTREAM_DIR = "upstream"  # a runner's kept upstream runs: <final>/upstream/<arm>-seed<s>-<digest of the run's key>


def checkpoint_key(checkpoint: str | Path) -> str:
    """How a target job's key names the checkpoint it starts from, wherever the run folder lives
    (a fresh machine, another checkout) and however the path is spelt: an upstream run as
    ``upstream/<its folder>`` (the folder's name is the digest of what the run trained, so equal
    runs have one name), a search trial's checkpoint as ``<sweep>/<trial>/<checkpoint>``, and a
    checkpoint a replay copied (``trainables.replay``) as the one it copied, so the jobs that
    start from it are those of the original, kept once for both searches of a study."""
    from promptinit.trainables.replay import copied_from

    where = Path(checkpoint)
    if where.parent.name == UPSTREAM_DIR:
        return f"{UPSTREAM_DIR}/{where.name}"
    return copied_from(where) or "/".join(where.parts[-3:])


@dataclass(frozen=True)
class Start:
    """Where a downstream tuning starts, and what identifies that start in a job's key.

    Attributes:
        kwargs: ``score_problems``'s start: none (PT from the vocabulary), ``init="labels"``, ``init``
            a prompt, or ``method`` (a method restored from its checkpoint: SUPMER's ψ acts downstream).
        key: what identifies the start (the checkpoint, the method and settings, the upstream seed).
    """

    kwargs: dict
    key: dict


PT_START = Start({}, {"pt": True})  # PT from the sampled-vocabulary init: the baseline
LABELS_START = Start({"init": "labels"}, {"init": "labels"})  # PT from the class labels (Lester et al. 2021)


@dataclass(frozen=True)
class Problem:
    """One score a phase needs: ``owner`` tuned from ``start`` on ``task`` with few-shot ``seed``."""

    owner: Owner
    label: str  # the owner as printed: ``PT``, ``maml (upstream seed 1)``
    task: Any  # promptinit.tasks.task.Task
    seed: int
    start: Start


MAX_PROBLEMS = 128  # problems per batched run at most (see ``plan_runs``)
# Problem-steps per batched run at most, so that a stop (a session's end) loses little: 8
# problems of 300 steps (20-40 CPU minutes for SmolLM2 on one core), 40 of 60 steps. A run of 3
# costs 1.08x a run of 16 per problem (README, "Every problem of a task in one batched run").
MAX_RUN_STEPS = 2_400
RUN_OVERHEAD = 2.0  # a run's fixed cost (model load, partly filled passes), in problems' worth of work


def plan_runs(sizes: Sequence[int], workers: int, most: int = MAX_PROBLEMS) -> list[list[int]]:
    """How to cut each task's problems into batched runs: ``[[run size, ...] per task]``.

    A run never spans tasks and holds at most ``most`` problems. Fewer, larger runs share more
    of the model's passes; enough runs keep every worker busy. Among cuts into near-equal runs
    of ``ceil(total / (workers * k))`` problems (k = 1, 2, ...), the one with the shortest
    estimated finish is chosen: the runs scheduled longest-first over ``workers`` (cost of a
    run: its problems + ``RUN_OVERHEAD``). Deterministic: the same sizes and workers give the
    same cut.
    """
    total = sum(sizes)
    if total == 0:
        return [[] for _ in sizes]
    best: tuple[float, list[list[int]]] | None = None
    for k in range(1, 2 * max(sizes) + 1):
        size = max(1, math.ceil(total / (workers * k)))
        if size > most:
            continue
        cut = [_split(n, math.ceil(n / size)) if n else [] for n in sizes]
        finish = _finish([n + RUN_OVERHEAD for runs in cut for n in runs], workers)
        if best is None or finish < best[0] - 1e-9:
            best = (finish, cut)
        if size == 1:
            break
    assert best is not None
    return best[1]


def _split(n: int, parts: int) -> list[int]:
    """``n`` as ``parts`` near-equal sizes, larger first."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _finish(costs: Sequence[float], workers: int) -> float:
    """When the last of ``costs`` finishes, scheduled longest-first on ``workers``."""
    loads = [0.0] * workers
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


def run_size_limit(tuning: dict) -> int:
    """Problems per batched run at most for ``tuning`` (``TuneConfig`` fields): ``MAX_PROBLEMS``,
    and no more problem-steps than ``MAX_RUN_STEPS``."""
    from promptinit.tuning import TuneConfig

    steps = int(tuning.get("steps", TuneConfig.steps))
    return max(1, min(MAX_PROBLEMS, MAX_RUN_STEPS // max(1, steps)))


def problem_key(backbone: dict, tuning: dict, p: Problem) -> dict:
    """What decides a problem's score (its kept file is named by its hash)."""
    return {"backbone": backbone, "task": p.task.fingerprint, "seed": p.seed, "tuning": tuning, **p.start.key}


def run_scores(
    runner: Runner, phase: str, backbone: dict, tuning: dict, problems: Sequence[Problem], title: str | None = None
) -> dict[Owner, dict[Pair, float]]:
    """Every problem's test score, gathered by owner: ``{(arm, upstream seed): {(task, seed): score}}``.

    Kept scores are reused, one file per problem, so ``--resume`` and a study that adds an arm
    redo nothing finished; the others are tuned task by task, each task's problems in one
    batched run (``trainables.scoring.score_problems``) or cut by ``plan_runs`` to keep every
    worker busy and no run longer than ``run_size_limit`` allows. A run's CPU seconds are shared
    evenly by its problems' kept files.
    """
    from promptinit.trainables.scoring import score_problems

    title = title or phase
    out: dict[Owner, dict[Pair, float]] = {}
    todo: dict[str, list[Problem]] = {}
    for p in problems:
        job = Job(p.label, _always, {}, problem_key(backbone, tuning, p))
        found, value = runner.kept(phase, job)
        if found:
            out.setdefault(p.owner, {})[(p.task.name, p.seed)] = float(value)
        else:
            todo.setdefault(p.task.name, []).append(p)
    runs: list[list[Problem]] = []
    most = run_size_limit(tuning)
    cut = plan_runs([len(g) for g in todo.values()], runner.workers(), most)
    for group, sizes in zip(todo.values(), cut, strict=True):
        start = 0
        for n in sizes:
            runs.append(group[start : start + n])
            start += n
    jobs = [
        Job(
            f"{run[0].task.name}: {_who(run)}",
            score_problems,
            dict(backbone=backbone, task=run[0].task, tuning=tuning, problems=[(p.start.kwargs, p.seed) for p in run]),
            {},
        )
        for run in runs
    ]
    kept = len(problems) - sum(map(len, runs))
    header = f"{title}: {len(problems)} problems in {len(runs)} batched runs{runner.kept_note(kept)}"
    for i, values, ran in runner.execute(jobs, title, header):
        for p, value in zip(runs[i], values, strict=True):
            key = problem_key(backbone, tuning, p)
            atomic_write_json(
                runner.file(phase, Job(p.label, _always, {}, key)),
                {
                    "label": f"{p.label} {p.task.name}, seed {p.seed}",
                    "key": key,
                    "value": value,
                    "cpu_s": ran.cpu_s / len(runs[i]),
                    "ran": asdict(ran),
                },
                default=str,
            )
            out.setdefault(p.owner, {})[(p.task.name, p.seed)] = float(value)
    return out


def _who(run: Sequence[Problem]) -> str:
    """``12 problems: PT, maml (upstream seed 0), ...`` (each owner once)."""
    owners = list(dict.fromkeys(p.label for p in run))
    shown = ", ".join(owners[:3]) + (f" and {len(owners) - 3} more" if len(owners) > 3 else "")
    return f"{len(run)} problems ({shown})"


def problems_for(label: str, owner: Owner, tasks: Sequence[Any], seeds: Sequence[int], start: Start) -> list[Problem]:
    """``owner``'s problems: every task x few-shot seed from ``start``."""
    return [Problem(owner, label, t, s, start) for t in tasks for s in seeds]
