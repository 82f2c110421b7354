#!/usr/bin/env python
"""Search the hyperparameters of upstream methods with Ray Tune + Optuna, log to MLflow,
score each method's best prompt on the target tasks and export it.

    python search/sweep.py                                  # configs/sweep/demo.yaml
    python search/sweep.py --config configs/sweep/x.yaml [--resume] [--smoke-test]
    ray job submit --working-dir . -- python search/sweep.py --config configs/sweep/x.yaml

Steps: validate the YAML, ``storage_path``, the model (it resolves and its config loads) and,
with ``--resume``, the sweep folder (before Ray starts and before anything is written; errors
are one line, exit code 2) -> load the partition's tasks -> MLflow parent run -> connect to
Ray (``RAY_ADDRESS`` or the job's cluster, else a local one) -> PT baseline on the validation
tasks, once -> Tune (``OptunaSearch``, TPE or random by ``search.algorithm``, + ASHA; the Optuna
study in ``<sweep>/optuna.db`` for ``optuna-dashboard``) over trials of
``trainables.train_prompt_init`` -> ``search.final``: each method's top-k trials re-scored on
fresh validation seeds, the best re-scored one chosen (``selection.md``), meta-trained again
with every ``target.upstream_seeds``, and tuned with PT on every target (task, seed) -> the
comparison table (difference, ARG, P(>PT) with 95 % CIs; ``analysis.write_target_table``:
Markdown, CSV and the per-pair scores) -> exports. Every phase after the search prints a line
per finished job with the time left, and keeps its results in ``<sweep>/final/`` for
``--resume``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts search/ first on sys.path, where config.py would
# shadow top-level modules of those names; the packages (search, spaces, trainables,
# analysis) live at the repository root.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "search":
    sys.path.pop(0)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from promptinit.errors import PromptinitError  # noqa: E402
from search.config import (  # noqa: E402
    DEFAULT_CONFIG,
    SweepConfig,
    check_model,
    check_storage,
    load_partition,
    load_sweep_config,
)

META_FILE = "promptinit-sweep.json"  # parent run id, tracking URI, the validated config
TUNER_FILE = "tuner.pkl"  # written by Tune when a sweep starts; its presence means "resumable"
EXPERIMENT_STATE = "experiment_state-*.json"  # Tune's experiment snapshots (TuneController.CKPT_FILE_TMPL)
RUNS_LEFT_OPEN_TAG = "promptinit.runs_left_open"  # on the parent run: why its child runs were not closed
AUTO_GPU_FRACTION = 0.25  # resources.gpu: auto -> this share of a GPU per trial when GPUs exist
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job manager for a submitted driver
# Every report carries a checkpoint, so Tune snapshots the experiment often; that is what makes
# --resume lose little, and the experiment state is small, so its warning about it is noise.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="search/sweep.py", description="Search upstream-method hyperparameters with Ray Tune + Optuna; log to MLflow; export the best prompts.")
    p.add_argument("--config", default=str(DEFAULT_CONFIG.relative_to(ROOT) if Path.cwd() == ROOT else DEFAULT_CONFIG),
                   help="sweep YAML (default: configs/sweep/demo.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this config")
    p.add_argument("--smoke-test", action="store_true", help="one trial per method, a few steps, one seed")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- Ray


def connect_ray(cfg: SweepConfig) -> None:
    """``ray.init()``: the cluster of ``RAY_ADDRESS`` / the submitted job, else a local Ray.

    Workers must import ``trainables`` and ``spaces``: a job's ``--working-dir`` puts them on
    the path; otherwise the repository root goes into the workers' ``PYTHONPATH``.
    """
    import ray

    if ray.is_initialized():  # a caller (tests, notebooks) connected already
        return
    job = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}").get("runtime_env") or {}
    runtime_env = None
    if not job.get("working_dir") and "PYTHONPATH" not in (job.get("env_vars") or {}):
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        runtime_env = {"env_vars": {"PYTHONPATH": path}}
    kwargs = {}
    if not os.environ.get("RAY_ADDRESS"):
        kwargs = {k: v for k, v in cfg.ray.model_dump().items() if v is not None}
        kwargs["include_dashboard"] = False
    ray.init(runtime_env=runtime_env, **kwargs)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # ray.init installed its own; ours closes the runs


def trial_resources(cfg: SweepConfig) -> tuple[float, float]:
    """(CPUs, GPUs) per trial; ``gpu: auto`` shares GPUs when the cluster has any."""
    import ray

    gpu = cfg.resources.gpu
    if gpu == "auto":
        gpu = AUTO_GPU_FRACTION if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return cfg.resources.cpu, float(gpu)


# --------------------------------------------------------------------------- Tune


def searcher_for(cfg: SweepConfig, storage=None):
    """The sweep's searcher: Optuna's sampler of ``search.algorithm`` (TPE or random, seeded),
    the paper defaults enqueued first, the study named after the sweep in ``storage``.

    Args:
        cfg: the sweep.
        storage: an Optuna ``RDBStorage`` for the study (``tracking.fresh_study_storage``), or
            None for an in-memory study.

    Returns:
        A ``tracking.StudySearch`` (an ``OptunaSearch``).
    """
    from optuna.samplers import RandomSampler, TPESampler

    from search.tracking import StudySearch
    from trainables import metrics as M

    space = cfg.space()
    if cfg.search.algorithm == "tpe":
        sampler = TPESampler(seed=cfg.search.seed, n_startup_trials=cfg.search.startup_trials)
    else:
        sampler = RandomSampler(seed=cfg.search.seed)
    return StudySearch(
        space, metric=M.METRIC, mode=M.MODE,
        points_to_evaluate=space.points_to_evaluate() if cfg.search.points_to_evaluate else None,
        # The seed goes to the sampler only: OptunaSearch ignores its own seed when given a sampler.
        sampler=sampler,
        study_name=cfg.name, storage=storage,
    )


def tuner_for(cfg: SweepConfig, trainable, callbacks: list):
    """A fresh ``tune.Tuner``: ``searcher_for`` (its study in ``<sweep>/optuna.db``) + ASHA."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from search.tracking import fresh_study_storage, optuna_storage_url
    from trainables import metrics as M
    from trainables.trainable import trial_dirname

    space = cfg.space()
    searcher = searcher_for(cfg, fresh_study_storage(optuna_storage_url(cfg.sweep_dir), cfg.name))
    max_reports = max(-(-s // cfg.budget.steps_per_report) for s in _all_steps(space))
    if cfg.scheduler.type == "asha":
        # metric/mode come from TuneConfig (Tune refuses them on both).
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_reports,
                                  grace_period=min(cfg.scheduler.grace_period, max_reports),
                                  reduction_factor=cfg.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, metric=M.METRIC, mode=M.MODE,
            num_samples=cfg.budget.num_samples, max_concurrent_trials=cfg.budget.max_concurrent_trials,
            time_budget_s=cfg.budget.time_budget_s,
            # One actor runs trial after trial: no process start, imports or model load per trial.
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=cfg.name, storage_path=str(cfg.sweep_dir.parent),
            failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=cfg.checkpoint.num_to_keep, checkpoint_score_attribute=M.VAL_ARG,
                checkpoint_score_order=M.MODE,
            ),
            callbacks=callbacks,
        ),
    )


def _all_steps(space) -> list[int]:
    from spaces import Choice, Fixed, Float, Int

    out = []
    for s in space.spaces:
        p = s.params.get("steps")
        if isinstance(p, Fixed):
            out.append(int(p.value))
        elif isinstance(p, Choice):
            out += [int(v) for v in p.options]
        elif isinstance(p, (Int, Float)):
            out.append(int(p.high))
    return out or [1]


def check_metapt_pool(cfg: SweepConfig, where: str, heldout) -> None:
    """Refuse, before anything is written, a MetaPT pre-training pool that any trial could draw
    (``pool`` fixed or a choice) when it is a target or validation task's corpus."""
    if "metapt" not in cfg.methods:
        return
    from promptinit.methods import make_config

    param = cfg.space().space("metapt").params.get("pool")
    refuse_leaky_pool(getattr(param, "options", None) or [getattr(param, "value", make_config("metapt").pool)],
                      where, heldout)


def refuse_leaky_pool(pools, where: str, heldout) -> None:
    """Refuse MetaPT ``pools`` (values of its ``pool`` setting) that hold a held-out task's corpus;
    the error starts with ``where``."""
    from promptinit.methods.metapt import Pool, check_pool_leakage, sentiment_pool

    if Pool.SENTIMENT.value in pools:
        try:
            check_pool_leakage([sentiment_pool(None, 0)], heldout)
        except PromptinitError as err:
            raise PromptinitError(f"{where}: {err}") from None


def trial_states(sweep_dir: Path) -> dict[str, tuple[str, dict | None]]:
    """Trial id -> (Tune status, last result), from the experiment state on disk.

    Returns ``{}`` only when Tune wrote no experiment state (``experiment_state-*.json``): the
    driver died before Tune's first snapshot, so no trial is on record.

    Raises:
        PromptinitError: an experiment state exists but cannot be read (corrupt, or written by
            another Ray version). Reading it as "no trials" would close every open MLflow run
            FAILED (and orphaned) although their trials may have finished.
    """
    found = sorted(Path(sweep_dir).glob(EXPERIMENT_STATE))
    if not found:
        return {}
    import ray
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(sweep_dir))
        return {t.trial_id: (t.status, dict(t.last_result or {})) for t in analysis.trials}
    except Exception as err:  # noqa: BLE001 - Tune raises many types for a state it cannot read; all mean this
        newest = max(found, key=lambda p: p.stat().st_mtime)
        raise PromptinitError(
            f"{newest}: Tune's experiment state is unreadable ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
            f"the trials' outcomes are unknown. Read it with the Ray version that wrote it (this is Ray {ray.__version__}), "
            "or start the sweep afresh under a new `name`"
        ) from None


def close_runs(uri: str, experiment: str, parent: str, sweep_dir: Path, status: str) -> str | None:
    """End the sweep's MLflow runs: every child whose trial is over, then the parent with ``status``.

    When Tune's experiment state cannot be read (``trial_states`` raises), the children are left
    as they are instead of being guessed FAILED, and the parent gets tag ``RUNS_LEFT_OPEN_TAG``
    with the reason.

    Returns:
        That reason (``"<n> child runs left open: <error>"``), or None when the children were closed.
    """
    from search import tracking

    c = tracking.client(uri)
    reason = None
    try:
        states = trial_states(sweep_dir)
    except PromptinitError as err:
        still_open = [r for r in tracking.child_runs(uri, experiment, parent) if r.info.status in tracking.RUN_STATES]
        reason = f"{len(still_open)} child runs left open: {err}"
        c.set_tag(parent, RUNS_LEFT_OPEN_TAG, reason[:4000])
    else:
        tracking.close_open_children(uri, experiment, parent, states)
    c.set_terminated(parent, status)
    return reason


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    cfg = load_sweep_config(args.config)
    if args.smoke_test:
        cfg = cfg.smoke()
    sweep_dir = cfg.sweep_dir
    # Every input is checked before anything is written and before Ray starts: a bad one is one
    # line (exit code 2) and leaves no folder behind.
    check_storage(cfg, str(args.config))
    if args.resume and not (sweep_dir / TUNER_FILE).exists():
        raise PromptinitError(f"{sweep_dir}: nothing to resume (no {TUNER_FILE}); run without --resume")
    if not args.resume and (sweep_dir / TUNER_FILE).exists():
        raise PromptinitError(
            f"{args.config}: field 'name': a sweep already ran in {sweep_dir}; pass --resume to continue it, "
            "or change `name`"
        )
    from search import tracking

    uri = tracking.resolve_tracking_uri(cfg.tracking_uri, sweep_dir)
    resumed = check_resumable(sweep_dir, uri) if args.resume else None
    check_model(cfg, str(args.config))

    # Tasks load before Ray starts, so a bad catalog entry is one line too.
    partition = load_partition(cfg)
    from promptinit.tasks.catalog import load_task

    def tasks(names):
        return tuple(load_task(t, cfg.catalog) for t in names)

    ranked = cfg.ranked_sources(partition)
    if cfg.source_selection is not None:
        print("sources by similarity to the targets: " + ", ".join(f"{n} {s:.3f}" for n, s in ranked)
              + f"; trials use the first k of {list(cfg.source_selection.counts)}", flush=True)
    source = tasks([name for name, _ in ranked])  # most similar first: a trial takes the first k
    validation = tasks(cfg.validation.select(partition.validation, "validation"))
    target = tasks(cfg.target.select(partition.target, "target"))
    check_metapt_pool(cfg, str(args.config), (*validation, *target))

    from search.config import config_dict

    sweep_dir.mkdir(parents=True, exist_ok=True)
    exp = tracking.experiment_id(uri, cfg.name, sweep_dir)
    mlflow = tracking.client(uri)
    meta_path = sweep_dir / META_FILE
    meta = resumed or _earlier_meta(meta_path)
    if args.resume:
        parent = meta["parent_run_id"]
        try:
            mlflow.update_run(parent, status="RUNNING")
        except Exception as err:  # noqa: BLE001 - MLflow raises its own types for an unknown run or store
            raise PromptinitError(
                f"{meta_path}: field 'parent_run_id': MLflow run {parent} at {uri} cannot be reopened "
                f"({' '.join(str(err).split())[:200]}); resume with the tracking store this sweep logged to"
            ) from None
    else:
        if meta.get("parent_run_id") and meta.get("tracking_uri") == uri:
            # An earlier attempt died before Tune saved anything: close its parent run.
            try:
                earlier = mlflow.get_run(meta["parent_run_id"]).info.status
            except Exception:  # noqa: BLE001 - the run is gone from the store: nothing to close
                earlier = None
            if earlier == "RUNNING":
                mlflow.set_terminated(meta["parent_run_id"], "FAILED")
        parent = mlflow.create_run(exp, run_name=cfg.name, tags={
            tracking.ROLE_TAG: "sweep", tracking.SWEEP_TAG: str(sweep_dir), "partition": partition.name,
            "model": cfg.model, "config_file": str(args.config),
        }).info.run_id
        tracking.log_dict(parent, uri, params=tracking.flat_params(config_dict(cfg)))
        meta = {"parent_run_id": parent, "tracking_uri": uri, "experiment_id": exp, "config": config_dict(cfg),
                "optuna_storage": tracking.optuna_storage_url(sweep_dir), "optuna_study": cfg.name}
        meta_path.write_text(json.dumps(meta, indent=1))
    print(f"sweep {cfg.name}: {sweep_dir}\nMLflow: {uri} (experiment {cfg.name!r}, parent run {parent})", flush=True)

    status = "FAILED"
    try:
        rows, seconds = _search(cfg, args, partition, source, validation, target, uri, exp, parent)
        status = "FINISHED"
    finally:
        # No run stays RUNNING: close every child whose trial is over (or never recorded), then the
        # parent; children whose trials' outcomes are unknown stay open, and the user is told why.
        left_open = close_runs(uri, exp, parent, sweep_dir, status)
        if left_open:
            pending = sys.exc_info()[1]
            if isinstance(pending, PromptinitError) and left_open.endswith(str(pending)):
                left_open = left_open[: -len(str(pending))] + "see the error below"  # main prints it next
            print(f"sweep: warning: MLflow parent run {parent}: {left_open} (recorded in its tag {RUNS_LEFT_OPEN_TAG}; "
                  "--resume closes them once the experiment state reads)", file=sys.stderr, flush=True)
    print(f"sweep finished in {time.perf_counter() - t_start:.0f} s (search {seconds:.0f} s)")
    if meta.get("optuna_storage"):  # sweeps started before the study was kept in a file have none
        print(f"Optuna study {meta.get('optuna_study', cfg.name)!r}: optuna-dashboard {meta['optuna_storage']}")
    return 0


def check_resumable(sweep_dir: Path, uri: str) -> dict:
    """What ``--resume`` needs, read and checked before anything is written or Ray starts: the
    sweep's record (``promptinit-sweep.json`` with its MLflow parent run and tracking URI, the
    same URI as now), a Tune state that is a complete pickle, the sqlite store when the sweep
    logs to one in its folder, the Optuna study's file, and Tune's experiment state
    (``trial_states``).

    Returns:
        The sweep's record.

    Raises:
        PromptinitError: one line naming the file and the field, and the fix.
    """
    import pickletools

    from promptinit.errors import read_json

    path = sweep_dir / META_FILE
    afresh = "start the sweep afresh under a new `name`"
    if not path.is_file():
        raise PromptinitError(f"{path}: missing (the sweep's MLflow parent run and tracking URI are recorded there); "
                              f"this folder cannot be resumed; {afresh}")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise PromptinitError(f"{path}: expected a JSON object (parent_run_id, tracking_uri, config); {afresh}")
    for key in ("parent_run_id", "tracking_uri"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise PromptinitError(f"{path}: field {key!r}: missing or not a string; this folder cannot be resumed; {afresh}")
    if meta["tracking_uri"] != uri:
        raise PromptinitError(
            f"{path}: field 'tracking_uri': this sweep logs to MLflow at {meta['tracking_uri']!r}, not {uri!r}; "
            "resume with the same MLFLOW_TRACKING_URI / tracking_uri"
        )
    tuner = sweep_dir / TUNER_FILE
    try:
        data = tuner.read_bytes()
        for _ in pickletools.genops(data):  # walks the opcodes without unpickling anything
            pass
        complete = bool(data)
    except Exception:  # noqa: BLE001 - unreadable, or any malformed opcode: not a state Tune can restore
        complete = False
    if not complete:
        raise PromptinitError(f"{tuner}: Tune's state is truncated or corrupt (an interrupted write?); "
                              f"the sweep cannot be resumed; {afresh}")
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))  # sqlite:////abs/path: the default, in the sweep folder
        if db.is_absolute() and db.is_relative_to(sweep_dir) and not db.is_file():
            raise PromptinitError(f"{path}: field 'tracking_uri': the MLflow store {db} is missing, so the sweep's "
                                  f"runs are gone; {afresh}")
    study = meta.get("optuna_storage")
    if isinstance(study, str) and study.startswith("sqlite:///"):
        # Tune's snapshot holds this URL: without the file the resumed searcher would start an empty one.
        db = Path(study.removeprefix("sqlite:///"))
        if not db.is_file():
            raise PromptinitError(f"{path}: field 'optuna_storage': the search's Optuna study {db} is missing "
                                  f"(Tune's searcher state points at it); {afresh}")
    trial_states(sweep_dir)  # an unreadable experiment state is one line here, not after Ray started
    return meta


def _earlier_meta(path: Path) -> dict:
    """The record of an earlier attempt that died before Tune saved anything (or ``{}``)."""
    from promptinit.errors import read_json

    try:
        meta = read_json(path) if path.is_file() else {}
    except PromptinitError:  # unreadable: it is replaced below
        return {}
    return meta if isinstance(meta, dict) else {}


def _search(cfg, args, partition, source, validation, target, uri, exp, parent):
    from promptinit.backbones import BackboneConfig
    from promptinit.backbones.backbone import resolve_dtype
    from ray import tune

    from analysis import export_best, write_selection, write_target_table
    from search import final, tracking
    from search.final import Context, Runner
    from spaces import trial_sources
    from trainables import metrics as M
    from trainables.scoring import held_out_sizes
    from trainables.trainable import Shared, make_trainable

    connect_ray(cfg)
    cpu, gpu = trial_resources(cfg)
    backbone = BackboneConfig(cfg.model, prompt_length=cfg.prompt_length, dtype=cfg.dtype,
                              attn_implementation=cfg.attn_implementation,
                              max_input_tokens=cfg.max_input_tokens)
    dtype = resolve_dtype(backbone.dtype, backbone.resolved_device())  # `auto` as this node resolves it
    backbone = dataclasses.asdict(backbone)
    val_tuning, tgt_tuning = final.tuning_dict(cfg.validation), final.tuning_dict(cfg.target)
    ctx = Context(backbone, source, cfg.seed, Runner(cfg.sweep_dir / final.FINAL_DIR, cpu, gpu))

    # The PT baseline on the validation tasks: computed (or read from the cache) once, here,
    # and handed to every trial; never per trial.
    baseline = final.validation_baseline(ctx, validation, cfg.validation.seeds, val_tuning)

    # Methods with expensive on-disk caches (SUPMER's clustered corpus, MetaPT's groups) are
    # built once here, so the trials read the caches instead of computing them side by side.
    space = cfg.space()
    prepare = [s for s in space.spaces if s.prepare]
    if prepare:
        import ray

        from trainables.scoring import prepare_job

        remote = ray.remote(num_cpus=cpu, num_gpus=gpu)(prepare_job)
        defaults = [s.settings(s.default_point()) for s in prepare]
        seconds = ray.get([remote.remote(backbone, s.method, d, source, cfg.seed) for s, d in zip(prepare, defaults)])
        print("prepared " + ", ".join(f"{s.method} ({t:.0f} s)" for s, t in zip(prepare, seconds)), flush=True)

    shared = Shared(
        backbone=backbone, source_tasks=source, validation_tasks=validation,
        validation_seeds=tuple(cfg.validation.seeds), validation_tuning=val_tuning,
        baseline=baseline, steps_per_report=cfg.budget.steps_per_report, seed=cfg.seed,
    )
    trainable = make_trainable(shared, cpu, gpu)
    if args.resume:
        # An unreadable experiment state is an error here (Tuner.restore needs it too), not "no trials".
        states = trial_states(cfg.sweep_dir)
        continuing = [tid for tid, (status, _) in states.items() if status not in ("TERMINATED", "ERROR")]
        closed = tracking.close_open_children(uri, exp, parent, states, keep_running=continuing)
        print(f"resume: {len(states)} trials on record, {len(continuing)} to continue, "
              f"{len(closed)} open MLflow runs closed", flush=True)
        tuner = tune.Tuner.restore(str(cfg.sweep_dir), trainable=trainable, resume_errored=True)
    else:
        callbacks = [tracking.TrialRuns(uri, exp, parent)]
        tuner = tuner_for(cfg, trainable, callbacks)
    t0 = time.perf_counter()
    results = tuner.fit()
    search_s = time.perf_counter() - t0
    trial_cpu = sum(r.metrics_dataframe[M.CPU_SECONDS].sum() for r in results
                    if r.metrics_dataframe is not None and M.CPU_SECONDS in r.metrics_dataframe)
    print(f"search: {len(results)} trials in {search_s:.0f} s ({trial_cpu:.0f} CPU s in trials)", flush=True)

    # Each method's top-k trials re-scored on fresh validation seeds -> its choice -> meta-trained
    # with every upstream seed -> the target tasks (every few-shot seed) against PT.
    t0 = time.perf_counter()
    cands, counts = final.candidates(results, cfg.methods, cfg.search.top_k)
    fresh = cfg.validation.fresh_seeds()
    chosen = final.rescore(ctx, cands, validation, fresh, val_tuning)
    selection, selection_files = write_selection(final.selection_rows(cands, chosen), cfg.sweep_dir,
                                                 cfg.validation.seeds, fresh)
    print("\n" + selection, flush=True)
    checkpoints = final.upstream_checkpoints(ctx, chosen, cfg.target.upstream_seeds)
    scores, pt = final.target_scores(ctx, chosen, checkpoints, target, cfg.target.seeds, tgt_tuning)
    n_test = held_out_sizes(target, cfg.target.seeds, cfg.target.tune_config().test_size)
    rows = []  # one per method: its per-pair scores, PT's, and how it was chosen
    for m in cfg.methods:
        row = {"sweep": cfg.name, "partition": partition.name, "method": m, "trials": counts[m][0],
               "finished": counts[m][1]}
        if m in chosen:
            c = chosen[m]
            row.update(trial_id=c.trial_id, settings=c.settings, val_arg=c.val_arg,
                       val_arg_se=_finite(c.metrics.get(M.VAL_ARG_SE)), val_arg_rescored=c.rescored_arg,
                       val_arg_rescored_se=_finite(c.rescored_se), scores=scores[m], baseline=pt, n_test=n_test)
        rows.append(row)
    post_s = time.perf_counter() - t0
    print(f"after the search: {len(chosen)} methods chosen, x {len(cfg.target.upstream_seeds)} upstream seeds, on "
          f"{len(target)} target tasks x {len(cfg.target.seeds)} seeds in {post_s:.0f} s "
          f"({ctx.runner.cpu_seconds:.0f} CPU s)", flush=True)

    table = write_target_table(rows, cfg.sweep_dir)
    print("\n" + table.text, flush=True)

    exports = []
    first = cfg.target.upstream_seeds[0]  # the exported prompt: the target scores of this upstream seed are in the table
    for m, c in chosen.items():
        checkpoint = checkpoints[(m, first)]
        prompt = final.checkpoint_prompt(checkpoint)
        info = {
            "hyperparameters": c.settings, "trial_id": c.trial_id, "checkpoint": final.checkpoint_path(checkpoint),
            "upstream_seed": first, "upstream_steps": c.step,
            "model": cfg.model,
            "prompt_length": cfg.prompt_length, "dtype": dtype, "partition": partition.name,
            "partition_fingerprint": partition.fingerprint,
            "task_fingerprints": {t.name: t.fingerprint for t in (*source, *validation, *target)},
            "source_tasks": [t.name for t in trial_sources(c.config, source)],
            "validation": {"arg": c.val_arg, "arg_se": _finite(c.metrics.get(M.VAL_ARG_SE)),
                           "seeds": cfg.validation.seeds, "tuning": val_tuning,
                           "rescored_arg": _finite(c.rescored_arg), "rescored_arg_se": _finite(c.rescored_se),
                           "rescore_seeds": fresh,
                           "metrics": {k: v for k, v in c.metrics.items()
                                       if isinstance(v, (str, bool)) or _finite(v) is not None}},
            # the per-pair scores (method, PT, test size) and their comparison, as in the table
            "target": {**table.records[(partition.name, m)], "seeds": cfg.target.seeds,
                       "upstream_seeds": cfg.target.upstream_seeds, "tuning": tgt_tuning},
            "sweep": {"name": cfg.name, "dir": str(cfg.sweep_dir), "mlflow_parent_run": parent},
        }
        exports.append(export_best(cfg.sweep_dir, m, prompt, info))
        print(f"exported {m}: {exports[-1]}")

    metrics = tracking.target_metrics(table.table)
    for m, c in chosen.items():
        metrics[f"{M.VAL_ARG}/{m}"] = c.val_arg
        for name, value in ((M.VAL_ARG_SE, c.metrics.get(M.VAL_ARG_SE)), (M.VAL_ARG_RESCORED, c.rescored_arg),
                            (M.VAL_ARG_RESCORED_SE, c.rescored_se)):
            if _finite(value) is not None:  # NaN with one validation pair
                metrics[f"{name}/{m}"] = value
    metrics.update({"time/search_s": search_s, "time/trial_cpu_s": float(trial_cpu), "time/after_search_s": post_s,
                    "time/after_search_cpu_s": ctx.runner.cpu_seconds})
    tracking.log_dict(parent, uri, metrics=metrics)
    c = tracking.client(uri)
    for path in (*table.files, *selection_files):
        c.log_artifact(parent, str(path))
    for folder in exports:
        c.log_artifacts(parent, str(folder), artifact_path=f"exports/{folder.name}")
    return rows, search_s


def _finite(value) -> float | None:
    """A finite number as float, else None (JSON has no NaN: ``val/arg_se`` is NaN with one pair)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _interrupt(signum, frame):
    # `ray job stop` and schedulers send SIGTERM: unwind through `finally` so the MLflow runs
    # are closed (FAILED) instead of left RUNNING; `--resume` continues the sweep later.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return run(args)
    except PromptinitError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
