"""Phase 3, search: Tune + Optuna over trials, each validated on the partition's validation tasks.

PT's baseline on the validation tasks is computed once (or read from its cache) and handed to
every trial; methods with expensive on-disk caches (SUPMER's clustered corpus, MetaPT's groups)
are built once before the trials. The searcher (``searcher.StudySearcher``: TPE or random by
``search.algorithm``, the paper defaults first) keeps its Optuna study in ``<sweep>/optuna.db``;
ASHA stops trials early. A search resumed without Tune's state goes on from its kept finished
trials (``rebuild``). The output: each method's best ``search.top_k`` trials, best first.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptinit.search.phases import tracking
from promptinit.search.phases.check import RECORD_FILE, Checked, trial_states
from promptinit.search.phases.config import SweepConfig
from promptinit.search.phases.jobs import PT_START, problems_for, run_scores
from promptinit.search.phases.prepare import Context, Prepared, Run
from promptinit.search.phases.rebuild import KeptASHA, kept_results, kept_trials, remaining
from promptinit.search.phases.searcher import KEPT_FILE, StudySearcher, drop_study, make_sampler, optuna_storage_url
from promptinit.spaces import Choice, Fixed, Float, Int, SweepSpace, trial_settings
from promptinit.trainables import metrics as M

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A trial's best checkpoint (or a study's preset), a candidate for its method's choice.

    Attributes:
        method: the method that trains it.
        trial_id: Tune's trial id (``"preset"`` for a study's preset arm).
        checkpoint: a ``tune.Checkpoint`` or a checkpoint folder (None for a preset not yet trained).
        val_arg: its validation ARG in the search (NaN for a preset).
        metrics: the report it was checkpointed with (``val/delta``, ``val/arg`` and their SEs).
        settings: the method's settings.
        config: the trial's config (``spaces.SweepSpace``), e.g. with the number of sources.
        rescored: the same validation metrics on fresh few-shot seeds (filled in by the select
            phase, ``trainables.scoring.validation_metrics``); empty before.
    """

    method: str
    trial_id: str
    checkpoint: Any
    val_arg: float
    metrics: Mapping[str, Any]
    settings: Mapping[str, Any]
    config: Mapping[str, Any]
    rescored: Mapping[str, float] = field(default_factory=dict)

    @property
    def step(self) -> int:
        """Upstream steps of the checkpoint."""
        return int(self.metrics[M.STEP])

    def value(self, objective: str) -> float:
        """The search objective (``search.objective``) in the search; NaN where not reported."""
        return float(self.metrics.get(M.OBJECTIVES[objective][0], math.nan))

    def rescored_value(self, objective: str) -> float:
        """The search objective on fresh few-shot seeds; NaN before the select phase."""
        return float(self.rescored.get(M.OBJECTIVES[objective][0], math.nan))

    @property
    def rescored_arg(self) -> float:
        """Its validation ARG on fresh few-shot seeds (NaN before the select phase)."""
        return float(self.rescored.get(M.VAL_ARG, math.nan))

    @property
    def rescored_se(self) -> float:
        """That ARG's standard error."""
        return float(self.rescored.get(M.VAL_ARG_SE, math.nan))


@dataclass(frozen=True)
class TrialCounts:
    trials: int = 0
    finished: int = 0


@dataclass(frozen=True)
class Searched:
    """The search's outcome.

    Attributes:
        candidates: each method's best ``top_k`` trials, best first.
        counts: each method's trials and finished trials.
        ranked: each method's every trial with a validation score, best first (for calibration).
        seconds: wall seconds of ``Tuner.fit``.
        trial_cpu_s: CPU seconds the trials spent (a replayed report spends none).
    """

    candidates: dict[str, list[Candidate]]
    counts: dict[str, TrialCounts]
    ranked: dict[str, list[Candidate]]
    seconds: float
    trial_cpu_s: float


def run(checked: Checked, prepared: Prepared) -> Searched:
    """Search (or resume the search of) the sweep; see the module docstring."""
    from promptinit.trainables.trainable import Shared, make_trainable

    cfg, ctx, tasks = checked.cfg, prepared.ctx, checked.tasks
    tuning = cfg.validation.tuning_dict()
    pt = problems_for("PT", ("pt", None), tasks.validation, cfg.validation.seeds, PT_START)
    baseline = run_scores(ctx.runner, "validation PT", ctx.backbone, tuning, pt)[("pt", None)]
    build_caches(cfg.space(), ctx)
    shared = Shared(
        backbone=ctx.backbone,
        source_tasks=ctx.source,
        validation_tasks=tasks.validation,
        validation_seeds=tuple(cfg.validation.seeds),
        validation_tuning=tuning,
        baseline=baseline,
        steps_per_report=cfg.budget.steps_per_report,
        seed=cfg.seed,
        code=ctx.runner.code,
        replay_from=sibling_sweeps(cfg.sweep_dir) if cfg.search.replay else (),
    )
    trainable = make_trainable(shared, ctx.cpu, ctx.gpu)
    if not checked.resume:  # a file an earlier sweep in this folder left: this search writes its own
        (cfg.sweep_dir / KEPT_FILE).unlink(missing_ok=True)
    kept = kept_trials(cfg.sweep_dir)
    if checked.rebuild:
        left = remaining(cfg.budget.num_samples, kept)
        logger.info("resume without Tune's state: %d finished trials kept, %d to run", len(kept), left)
        tuner = tuner_for(cfg, trainable, prepared.run, kept) if left else None
    else:
        tuner = _restore(cfg, trainable, prepared.run) if checked.resume else tuner_for(cfg, trainable, prepared.run)
    t0 = time.perf_counter()
    results = list(tuner.fit()) if tuner is not None else []
    results += kept_results(cfg.sweep_dir, kept, [Path(r.path) for r in results])  # those of an earlier Tune run
    seconds = time.perf_counter() - t0
    trial_cpu, replays = _spent(results)
    logger.info(
        "search: %d trials in %.0f s (%.0f CPU s in trials%s)",
        len(results),
        seconds,
        trial_cpu,
        f"; {replays} reports replayed from sibling sweeps' trials" if replays else "",
    )
    ranked, counts = best_trials(results, cfg.methods, len(results), cfg.search.objective)
    candidates = {m: cs[: cfg.search.top_k] for m, cs in ranked.items()}
    return Searched(candidates, counts, ranked, seconds, trial_cpu)


def _spent(results: list) -> tuple[float, int]:
    """CPU seconds the trials' reports cost this search, and how many reports were replayed (they cost none)."""
    cpu, replays = 0.0, 0
    for r in results:
        df = r.metrics_dataframe
        if df is None or M.CPU_SECONDS not in df:
            continue
        if M.REPLAY_OF not in df:
            cpu += float(df[M.CPU_SECONDS].sum())
            continue
        replayed = df[M.REPLAY_OF].notna()
        cpu += float(df.loc[~replayed, M.CPU_SECONDS].sum())
        replays += int(replayed.sum())
    return cpu, replays


def sibling_sweeps(sweep_dir: Path) -> tuple[str, ...]:
    """The sweep folders beside ``sweep_dir`` (a study's other searches): where its trials look
    for themselves to replay (``trainables.replay``)."""
    own = sweep_dir.resolve()
    return tuple(str(p) for p in sorted(own.parent.iterdir()) if p != own and (p / RECORD_FILE).is_file())


def build_caches(space: SweepSpace, ctx: Context) -> None:
    """Build once, before the trials, every method whose on-disk caches are expensive (so the
    trials read them instead of computing them side by side)."""
    import ray

    from promptinit.trainables.scoring import prepare_job

    prepare = [s for s in space.spaces if s.prepare]
    if not prepare:
        return
    remote = ray.remote(num_cpus=ctx.cpu, num_gpus=ctx.gpu)(prepare_job)
    seconds = ray.get(
        [remote.remote(ctx.backbone, s.method, s.settings(s.default_point()), ctx.source, ctx.seed) for s in prepare]
    )
    logger.info("prepared %s", ", ".join(f"{s.method} ({t:.0f} s)" for s, t in zip(prepare, seconds, strict=True)))


def searcher_for(cfg: SweepConfig, kept: Sequence[dict] = ()) -> StudySearcher:
    """The sweep's searcher: Optuna's sampler of ``search.algorithm`` (TPE or random, seeded), the
    paper defaults enqueued first, a fresh study named after the sweep in ``<sweep>/optuna.db``
    (holding first the ``kept`` trials of a rebuilt search, the seed moved on by their number, as
    it is on a resume from Tune's snapshot by the trials asked before it)."""
    space = cfg.space()
    reseed = functools.partial(make_sampler, cfg.search.algorithm, cfg.search.seed, cfg.search.startup_trials)
    url = optuna_storage_url(cfg.sweep_dir)
    drop_study(url, cfg.name)
    return StudySearcher(
        space,
        reseed(len(kept)),
        url,
        cfg.name,
        space.points_to_evaluate() if cfg.search.points_to_evaluate else None,
        M.OBJECTIVES[cfg.search.objective][0],
        M.MODE,
        kept_file=cfg.sweep_dir / KEPT_FILE,
        kept=kept,
        reseed=reseed,
    )


def tuner_for(cfg: SweepConfig, trainable: Any, run: Run, kept: Sequence[dict] = ()) -> Any:
    """A fresh ``tune.Tuner``: ``searcher_for`` + ASHA (or FIFO), every trial mirrored to MLflow;
    for a rebuilt search, the trials left after the ``kept`` ones, which ASHA's rungs hold."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from promptinit.trainables.trainable import trial_dirname

    metric = M.OBJECTIVES[cfg.search.objective][0]
    max_reports = max(-(-s // cfg.budget.steps_per_report) for s in all_steps(cfg.space()))
    scheduler: Any = FIFOScheduler()
    if cfg.scheduler.type == "asha":  # metric/mode come from TuneConfig (Tune refuses them on both)
        scheduler = KeptASHA(
            kept,
            time_attr="training_iteration",
            max_t=max_reports,
            grace_period=min(cfg.scheduler.grace_period, max_reports),
            reduction_factor=cfg.scheduler.reduction_factor,
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher_for(cfg, kept),
            scheduler=scheduler,
            metric=metric,
            mode=M.MODE,
            num_samples=remaining(cfg.budget.num_samples, kept),
            max_concurrent_trials=cfg.budget.max_concurrent_trials,
            time_budget_s=cfg.budget.time_budget_s,
            reuse_actors=True,  # one actor runs trial after trial: no process start or model load per trial
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=str(cfg.sweep_dir.parent),
            failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=cfg.checkpoint.num_to_keep,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=M.MODE,
            ),
            callbacks=[tracking.TrialRuns(run.uri, run.experiment, run.parent)],
        ),
    )


def _restore(cfg: SweepConfig, trainable: Any, run: Run) -> Any:
    """The interrupted Tuner; MLflow runs of trials that ended while no driver watched are closed."""
    from ray import tune

    states = trial_states(cfg.sweep_dir)  # unreadable is an error here (Tuner.restore needs it too)
    continuing = [tid for tid, (status, _) in states.items() if status not in ("TERMINATED", "ERROR")]
    closed = tracking.close_open_children(run.uri, run.experiment, run.parent, states, keep_running=continuing)
    logger.info(
        "resume: %d trials on record, %d to continue, %d open MLflow runs closed",
        len(states),
        len(continuing),
        len(closed),
    )
    return tune.Tuner.restore(str(cfg.sweep_dir), trainable=trainable, resume_errored=True)


def all_steps(space: SweepSpace) -> list[int]:
    """Every upstream step count a trial of ``space`` may plan (ASHA's horizon)."""
    out: list[int] = []
    for s in space.spaces:
        p = s.params.get("steps")
        if isinstance(p, Fixed):
            out.append(int(p.value))
        elif isinstance(p, Choice):
            out += [int(v) for v in p.options]
        elif isinstance(p, (Int, Float)):
            out.append(int(p.high))
    return out or [1]


def best_trials(
    results: Any, methods: Sequence[str], k: int, objective: str
) -> tuple[dict[str, list[Candidate]], dict[str, TrialCounts]]:
    """Each method's best ``k`` trials (a trial by its best kept checkpoint's ``objective``, a key
    of ``metrics.OBJECTIVES``), best first, and each method's trial counts. Ties go to the earlier
    checkpoint and the smaller trial id, so the choice does not depend on the order Tune lists
    results in (a resumed sweep lists trials and checkpoints in another order)."""
    metric = M.OBJECTIVES[objective][0]
    out: dict[str, list[Candidate]] = {m: [] for m in methods}
    counts = {m: TrialCounts() for m in methods}
    for result in results:
        if not result.config:
            continue
        method, settings = trial_settings(result.config)
        finished = result.error is None
        counts[method] = TrialCounts(counts[method].trials + 1, counts[method].finished + finished)
        kept = [
            (float(mt[metric]), ck, mt)
            for ck, mt in (result.best_checkpoints or [])
            if finished and mt.get(metric) is not None
        ]
        if kept:
            _, checkpoint, metrics = max(kept, key=lambda x: (x[0], -float(x[2].get(M.STEP, 0))))
            out[method].append(
                Candidate(
                    method,
                    str(metrics.get("trial_id", "")),
                    checkpoint,
                    float(metrics.get(M.VAL_ARG, math.nan)),
                    dict(metrics),
                    settings,
                    dict(result.config),
                )
            )
    ranked = {m: sorted(cs, key=lambda c: (-c.value(objective), c.trial_id))[:k] for m, cs in out.items()}
    return ranked, counts
