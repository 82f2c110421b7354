"""After the search: each method's choice, its upstream seeds and the target evaluation.

Three phases of Ray tasks, each printed as it goes (a line per finished job, with the time
elapsed and an estimate of the time left):

1. **re-score**: the best ``search.top_k`` trials of each method (each trial by its best
   validation ARG) are tuned again on the validation tasks with *fresh* few-shot seeds
   (``validation.rescore_seeds``), against PT on those seeds. The search's maximum over noisy
   evaluations is biased upwards (the winner's curse); a score on fresh seeds is not, so the
   method's choice is its best re-scored trial. Both values reach the report.
2. **upstream**: the chosen configuration is meta-trained again with every seed of
   ``target.upstream_seeds``, for as many outer steps as the chosen checkpoint had (the sweep's
   own ``seed`` reuses that checkpoint), so the target interval covers the variance of
   meta-training itself.
3. **target**: PT and every (method, upstream seed) are tuned on each target task x few-shot
   seed; the scores are keyed ``(task, seed, upstream seed)`` for ``promptinit.stats``.

A finished job's result is kept in ``<sweep>/final/`` under a hash of everything that decides
it (backbone, the tasks' content, seeds, tuning, method, settings, checkpoint, upstream seed,
and the source of ``promptinit`` and ``trainables/scoring.py``), so ``--resume`` after an
interruption redoes only the jobs that had not finished.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

FINAL_DIR = "final"  # <sweep>/final/: finished jobs' results, retrained upstream checkpoints


@dataclass
class Job:
    """One Ray task: ``fn(**kwargs)``, described by ``key`` (what decides its result)."""

    label: str  # printed when it finishes: "target maml (upstream 1) bbc_topic, seeds 100 13"
    fn: Callable[..., Any]
    kwargs: dict
    key: dict
    valid: Callable[[Any], bool] = lambda value: True  # whether a kept result is still usable


def _call(fn: Callable[..., Any], kwargs: dict) -> tuple[Any, float]:
    """Runs in the Ray worker: the result as JSON-ready data, and the CPU seconds it took."""
    t0 = time.process_time()
    out = fn(**kwargs)
    if isinstance(out, dict):  # {(task, seed): score}
        out = [[k[0], int(k[1]), float(v)] for k, v in out.items()]
    return out, time.process_time() - t0


def scores_of(value: list) -> dict[tuple[str, int], float]:
    """A score job's kept result back to ``{(task, seed): score}``."""
    return {(t, int(s)): float(v) for t, s, v in value}


def code_fingerprint() -> str:
    """Hash of the code that decides a job's result: every module of ``promptinit`` and
    ``trainables/scoring.py``."""
    import hashlib

    import promptinit

    root = Path(promptinit.__file__).parent
    h = hashlib.sha256()
    for path in sorted([*root.rglob("*.py"), Path(__file__).parents[1] / "trainables" / "scoring.py"]):
        h.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Runner:
    """Runs lists of ``Job`` as parallel Ray tasks, keeps each finished result on disk, and
    prints a line per finished job with an estimate of the time left."""

    def __init__(self, folder: Path, cpu: float, gpu: float, code: str | None = None):
        self.folder = Path(folder)
        self.cpu, self.gpu = cpu, gpu
        self.code = code or code_fingerprint()
        self.cpu_seconds = 0.0

    def _file(self, phase: str, job: Job) -> Path:
        from promptinit.fingerprints import digest

        return self.folder / f"{phase}-{digest(job.key, self.code)}.json"

    def run(self, phase: str, jobs: Sequence[Job], title: str | None = None) -> list[Any]:
        """Each job's result, in order; kept results are reused, the others computed. ``phase``
        names the kept files (with each job's key), ``title`` (default: ``phase``) the printed lines."""
        import ray

        from promptinit.errors import read_json

        self.folder.mkdir(parents=True, exist_ok=True)
        results: list[Any] = [None] * len(jobs)
        pending = {}
        remote = ray.remote(num_cpus=self.cpu, num_gpus=self.gpu, max_retries=1)(_call)
        for i, job in enumerate(jobs):
            file = self._file(phase, job)
            if file.is_file():
                kept = read_json(file)
                if isinstance(kept, dict) and "value" in kept and job.valid(kept["value"]):
                    results[i] = kept["value"]
                    continue
            pending[remote.remote(job.fn, job.kwargs)] = i
        kept = len(jobs) - len(pending)
        title = title or phase
        print(f"{title}: {len(jobs)} jobs" + (f" ({kept} done before, kept in {self.folder})" if kept else ""),
              flush=True)
        t0, done, todo = time.perf_counter(), 0, len(pending)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            value, cpu_s = ray.get(ref)
            self.cpu_seconds += cpu_s
            results[i] = value
            file = self._file(phase, jobs[i])
            tmp = file.with_name(file.name + ".tmp")
            tmp.write_text(json.dumps({"label": jobs[i].label, "key": jobs[i].key, "value": value, "cpu_s": cpu_s},
                                      default=str))
            tmp.replace(file)
            done += 1
            elapsed = time.perf_counter() - t0
            left = f"~{_duration(elapsed / done * (todo - done))} left" if todo > done else "done"
            print(f"  {title} [{done}/{todo}] {jobs[i].label} ({cpu_s:.0f} CPU s); "
                  f"{_duration(elapsed)} elapsed, {left}", flush=True)
        return results


# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """A trial's best checkpoint, a candidate for its method's choice."""

    method: str
    trial_id: str
    checkpoint: Any  # tune.Checkpoint
    val_arg: float
    metrics: dict
    settings: dict
    config: dict
    rescored: dict = field(default_factory=dict)  # {(task, fresh seed): score}
    rescored_arg: float = math.nan
    rescored_se: float = math.nan

    @property
    def step(self) -> int:
        from trainables import metrics as M

        return int(self.metrics[M.STEP])


def candidates(results, methods: Sequence[str], k: int) -> tuple[dict[str, list[Candidate]], dict[str, tuple[int, int]]]:
    """Each method's best ``k`` trials (a trial by its best kept checkpoint's ``val/arg``),
    best first, and each method's (trials, finished trials). Ties go to the earlier checkpoint
    and the smaller trial id, so the choice does not depend on the order Tune lists results in."""
    from spaces import trial_settings
    from trainables import metrics as M

    out: dict[str, list[Candidate]] = {m: [] for m in methods}
    counts = {m: [0, 0] for m in methods}
    for result in results:
        if not result.config:
            continue
        method, settings = trial_settings(result.config)
        counts[method][0] += 1
        if result.error is not None:
            continue
        counts[method][1] += 1
        kept = [(float(mt[M.VAL_ARG]), ck, mt) for ck, mt in result.best_checkpoints or [] if mt.get(M.VAL_ARG) is not None]
        if kept:
            # ties (a few test examples make them common) go to the earlier checkpoint, then to the
            # smaller trial id: a resumed sweep lists trials and checkpoints in another order
            value, checkpoint, metrics = max(kept, key=lambda x: (x[0], -float(x[2].get(M.STEP, 0))))
            out[method].append(Candidate(method, str(metrics.get("trial_id", "")), checkpoint, value, dict(metrics),
                                         settings, dict(result.config)))
    for m in out:
        out[m] = sorted(out[m], key=lambda c: (-c.val_arg, c.trial_id))[:k]
    return out, {m: (n, ok) for m, (n, ok) in counts.items()}


# --------------------------------------------------------------------------- the phases


@dataclass
class Context:
    """What every phase needs from the sweep."""

    backbone: dict  # BackboneConfig fields
    source: tuple  # the source tasks, most similar first
    seed: int  # the sweep's method seed (the search's upstream seed)
    runner: Runner


def checkpoint_path(checkpoint) -> str:
    """Where a checkpoint (a ``tune.Checkpoint`` or a ``train_job`` folder) lives."""
    return str(checkpoint if isinstance(checkpoint, (str, Path)) else checkpoint.path)


def checkpoint_prompt(checkpoint):
    """The prompt stored in a checkpoint."""
    from promptinit.backbones import load_prompt
    from trainables.scoring import PROMPT_FILE, checkpoint_folder

    with checkpoint_folder(checkpoint) as folder:
        return load_prompt(Path(folder) / PROMPT_FILE)


def _start(ctx: Context, method: str, settings: dict, config: dict, checkpoint, upstream_seed: int) -> tuple[dict, dict]:
    """``score_job`` arguments that start from a checkpoint (its prompt; SUPMER's whole method,
    whose ψ acts downstream too), and what identifies that start."""
    from spaces import trial_sources
    from trainables.scoring import needs_restore

    key = {"method": method, "settings": settings, "checkpoint": checkpoint_path(checkpoint),
           "upstream_seed": upstream_seed}
    if needs_restore(method):
        return {"method": {"name": method, "settings": settings, "checkpoint": checkpoint,
                           "source_tasks": trial_sources(config, ctx.source), "seed": upstream_seed}}, key
    return {"init": checkpoint_prompt(checkpoint)}, key


def _score(ctx: Context, label: str, task, seeds: Sequence[int], tuning: dict, start: tuple[dict, dict] | None = None) -> Job:
    from trainables.scoring import score_job

    kwargs, key = start or ({}, {"pt": True})
    return Job(f"{label} {task.name}, seeds {' '.join(map(str, seeds))}", score_job,
               dict(backbone=ctx.backbone, tasks=[task], seeds=list(seeds), tuning=tuning, **kwargs),
               {"backbone": ctx.backbone, "task": task.fingerprint, "seeds": list(seeds), "tuning": tuning, **key})


def _pt_jobs(ctx: Context, tasks, seeds, tuning: dict) -> list[Job]:
    return [_score(ctx, "PT", t, seeds, tuning) for t in tasks]


def _merge(values: list) -> dict:
    return {k: v for value in values for k, v in scores_of(value).items()}


def validation_baseline(ctx: Context, tasks, seeds: Sequence[int], tuning: dict) -> dict[tuple[str, int], float]:
    """PT's test score per (validation task, seed): the search's baseline."""
    return _merge(ctx.runner.run("validation PT", _pt_jobs(ctx, tasks, seeds, tuning)))


def rescore(ctx: Context, cands: dict[str, list[Candidate]], tasks, seeds: Sequence[int],
            tuning: dict) -> dict[str, Candidate]:
    """Re-score every candidate on fresh validation seeds; each method's choice is its best
    re-scored candidate (``Candidate.rescored_*`` are filled in)."""
    from trainables.scoring import arg_against, arg_standard_error

    todo = [c for cs in cands.values() for c in cs]
    jobs = _pt_jobs(ctx, tasks, seeds, tuning)
    for c in todo:
        start = _start(ctx, c.method, c.settings, c.config, c.checkpoint, ctx.seed)
        jobs += [_score(ctx, f"{c.method} trial {c.trial_id}", t, seeds, tuning, start) for t in tasks]
    values = ctx.runner.run("re-score", jobs)
    n = len(tasks)
    baseline = _merge(values[:n])
    for i, c in enumerate(todo):
        c.rescored = _merge(values[n + i * n: n + (i + 1) * n])
        c.rescored_arg = arg_against(c.rescored, baseline).mean
        c.rescored_se = arg_standard_error(c.rescored, baseline)
    return choose(cands)


def choose(cands: Mapping[str, list[Candidate]]) -> dict[str, Candidate]:
    """Each method's candidate with the best re-scored validation ARG (on a tie, the one the
    search ranked higher)."""
    return {m: max(cs, key=lambda c: c.rescored_arg) for m, cs in cands.items() if cs}


def upstream_checkpoints(ctx: Context, chosen: Mapping[str, Candidate], upstream_seeds: Sequence[int]) -> dict:
    """``{(method, upstream seed): checkpoint}``: the chosen checkpoint for the sweep's own seed,
    the same configuration meta-trained afresh (as many steps) for every other seed."""
    from promptinit.fingerprints import digest
    from spaces import trial_sources
    from trainables.scoring import train_job

    out, jobs, keys = {}, [], []
    for m, c in chosen.items():
        for u in upstream_seeds:
            if u == ctx.seed:
                out[(m, u)] = c.checkpoint
                continue
            key = {"backbone": ctx.backbone, "method": m, "settings": c.settings, "steps": c.step, "upstream_seed": u,
                   "sources": [t.fingerprint for t in trial_sources(c.config, ctx.source)]}
            folder = ctx.runner.folder / "upstream" / f"{m}-seed{u}-{digest(key, ctx.runner.code)}"
            method = {"name": m, "settings": c.settings, "source_tasks": trial_sources(c.config, ctx.source), "seed": u}
            jobs.append(Job(f"{m} upstream seed {u} ({c.step} steps)", train_job,
                            dict(backbone=ctx.backbone, method=method, steps=c.step, folder=str(folder)), key,
                            valid=lambda value: Path(value).is_dir()))
            keys.append((m, u))
    for k, folder in zip(keys, ctx.runner.run("upstream", jobs)):
        out[k] = folder
    return out


def target_scores(ctx: Context, chosen: Mapping[str, Candidate], checkpoints: Mapping[tuple[str, int], Any], tasks,
                  seeds: Sequence[int], tuning: dict) -> tuple[dict[str, dict], dict]:
    """``({arm: {(task, seed, upstream seed): score}}, PT's {(task, seed): score})``; ``chosen``
    and ``checkpoints`` are keyed by arm (a sweep's arms are its methods; a study's may be a
    method's ablation, whose ``Candidate.method`` names the method)."""
    jobs = _pt_jobs(ctx, tasks, seeds, tuning)
    order = list(checkpoints)
    for m, u in order:
        c = chosen[m]
        start = _start(ctx, c.method, c.settings, c.config, checkpoints[(m, u)], u)
        jobs += [_score(ctx, f"{m} (upstream seed {u})", t, seeds, tuning, start) for t in tasks]
    values = ctx.runner.run("target", jobs)
    n = len(tasks)
    pt = _merge(values[:n])
    scores: dict[str, dict] = {m: {} for m in chosen}
    for i, (m, u) in enumerate(order):
        for (task, seed), v in _merge(values[n + i * n: n + (i + 1) * n]).items():
            scores[m][(task, seed, u)] = v
    return scores, pt


# --------------------------------------------------------------------------- the selection table


def selection_rows(cands: Mapping[str, list[Candidate]], chosen: Mapping[str, Candidate]) -> list[dict]:
    """One row per candidate (``analysis.write_selection``): the search's validation ARG next
    to the re-scored one."""
    from trainables import metrics as M

    rows = []
    for m, cs in cands.items():
        for rank, c in enumerate(cs, start=1):
            rows.append({"method": m, "rank_in_search": rank, "trial_id": c.trial_id, "step": c.step,
                         "val_arg": c.val_arg, "val_arg_se": c.metrics.get(M.VAL_ARG_SE, math.nan),
                         "rescored_arg": c.rescored_arg, "rescored_se": c.rescored_se,
                         "chosen": chosen.get(m) is c, "settings": json.dumps(c.settings, default=str)})
    return rows


def tuning_dict(evaluation) -> dict:
    """An ``Evaluation``'s ``TuneConfig`` as plain fields."""
    return dataclasses.asdict(evaluation.tune_config())
