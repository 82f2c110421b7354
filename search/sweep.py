#!/usr/bin/env python
"""Search the hyperparameters of upstream methods with Ray Tune + Optuna, log to MLflow,
score each method's best prompt on the target tasks and export it.

    python search/sweep.py                                  # configs/sweep/demo.yaml
    python search/sweep.py --config configs/sweep/x.yaml [--resume] [--smoke-test] [-q | -v]
    ray job submit --working-dir . -- python search/sweep.py --config configs/sweep/x.yaml

A sweep is a pipeline of phases (``promptinit.search.phases``), each a module with a typed input
and output, run top to bottom once:

1. ``check``: the YAML, ``storage_path``, the model, the tasks and, with ``--resume``, the sweep
   folder, before Ray starts and before anything is written (one line, exit code 2);
2. ``prepare``: the sweep folder, MLflow's parent run, Ray;
3. ``searching``: PT on the validation tasks once, then Tune + Optuna (TPE or random) + ASHA;
4. ``select``: each method's top-k trials re-scored on fresh validation seeds, the best chosen;
5. ``upstream``: the choice meta-trained with every upstream seed;
6. ``target``: PT and every (method, upstream seed) tuned on every target (task, seed);
7. ``publish``: the comparison table, the PEFT exports, the parent run's metrics and files.

Every phase after the search keeps finished jobs in ``<sweep>/final/`` for ``--resume``.
``search/study.py`` composes the same phases for many arms through ``run_sweep``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from promptinit.errors import PromptinitError
from promptinit.logs import add_verbosity_flags, setup_logging, verbosity
from promptinit.search.phases import (
    calibrate,
    check,
    prepare,
    publish,
    searching,
    select,
    target,
    tracking,
    upstream,
)
from promptinit.search.phases.config import DEFAULT_CONFIG

logger = logging.getLogger("promptinit.search.sweep")

RUNS_LEFT_OPEN_TAG = "promptinit.runs_left_open"  # on the parent run: why its child runs were not closed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="search/sweep.py",
        description="Search upstream-method hyperparameters with "
        "Ray Tune + Optuna; log to MLflow; export the best prompts.",
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="sweep YAML (default: configs/sweep/demo.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this config")
    p.add_argument("--smoke-test", action="store_true", help="one trial per method, a few steps, one seed")
    add_verbosity_flags(p)
    return p.parse_args(argv)


def run_sweep(checked: check.Checked) -> publish.Published:
    """Phases 2-7 of a checked sweep. No MLflow run stays RUNNING: whatever happens, every child
    run whose trial is over is closed, then the parent (FINISHED or FAILED)."""
    t_start = time.perf_counter()
    prepared = prepare.sweep(checked)
    status = "FAILED"
    try:
        published = run_phases(checked, prepared)
        status = "FINISHED"
    finally:
        reason = close_runs(prepared.run, checked.cfg.sweep_dir, status)
        if reason:
            pending = sys.exc_info()[1]
            if isinstance(pending, PromptinitError) and reason.endswith(str(pending)):
                reason = reason[: -len(str(pending))] + "see the error below"  # main prints it next
            logger.warning(
                "sweep: warning: MLflow parent run %s: %s (recorded in its tag %s; --resume closes them "
                "once the experiment state reads)",
                prepared.run.parent,
                reason,
                RUNS_LEFT_OPEN_TAG,
            )
    logger.info(
        "sweep finished in %.0f s\nOptuna study %r: optuna-dashboard %s",
        time.perf_counter() - t_start,
        checked.cfg.name,
        optuna_dashboard_url(checked),
    )
    return published


def run_phases(checked: check.Checked, prepared: prepare.Prepared) -> publish.Published:
    """Phases 3-7: search, select, upstream, target, publish."""
    cfg, ctx = checked.cfg, prepared.ctx
    searched = searching.run(checked, prepared)
    t0 = time.perf_counter()
    selected = select.run(checked, ctx, searched)
    checkpoints = upstream.run(ctx, selected.chosen, cfg.target.upstream_seeds)
    k = cfg.search.calibrate
    scores = target.run(
        ctx,
        selected.chosen,
        checkpoints,
        checked.tasks.target,
        cfg.target.seeds,
        cfg.target.tuning_dict(),
        also=calibrate.starts(ctx, searched.ranked, selected.chosen, k),
        also_seeds=cfg.calibration_seeds(),
    )
    arms, trials = calibrate.split(scores.arms)
    scores = dataclasses.replace(scores, arms=arms)
    if trials:
        from promptinit.analysis import write_calibration

        calibrated = calibrate.rows(
            searched.ranked, selected.chosen, selected.candidates, k, trials, scores.pt, cfg.search.objective
        )
        logger.info("\n%s", write_calibration(calibrated, cfg.sweep_dir))
    post_s = time.perf_counter() - t0
    logger.info(
        "after the search: %d methods chosen, x %d upstream seeds, on %d target tasks x %d seeds in %.0f s "
        "(%.0f CPU s)",
        len(selected.chosen),
        len(cfg.target.upstream_seeds),
        len(checked.tasks.target),
        len(cfg.target.seeds),
        post_s,
        ctx.runner.cpu_seconds,
    )
    return publish.run(checked, prepared, searched, selected, checkpoints, scores, post_s)


def optuna_dashboard_url(checked: check.Checked) -> str:
    """The Optuna study's storage URL, for ``optuna-dashboard``."""
    from promptinit.search.phases.searcher import optuna_storage_url

    return str(checked.record.get("optuna_storage") or optuna_storage_url(checked.cfg.sweep_dir))


def close_runs(run: prepare.Run, sweep_dir: Path, status: str) -> str | None:
    """End the sweep's MLflow runs: every child whose trial is over, then the parent with ``status``.

    When Tune's experiment state cannot be read, the children are left as they are instead of
    being guessed FAILED, and the parent gets tag ``RUNS_LEFT_OPEN_TAG`` with the reason.

    Returns:
        That reason (``"<n> child runs left open: <error>"``), or None when the children were closed.
    """
    c = tracking.client(run.uri)
    reason = None
    try:
        states = check.trial_states(sweep_dir)
    except PromptinitError as err:
        still_open = [
            r for r in tracking.child_runs(run.uri, run.experiment, run.parent) if r.info.status in tracking.RUN_STATES
        ]
        reason = f"{len(still_open)} child runs left open: {err}"
        c.set_tag(run.parent, RUNS_LEFT_OPEN_TAG, reason[:4000])
    else:
        tracking.close_open_children(run.uri, run.experiment, run.parent, states)
    c.set_terminated(run.parent, status)
    return reason


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(verbosity(args))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, prepare.interrupt) if main_thread else None
    try:
        published = run_sweep(check.sweep(check.Request(args.config, args.resume, args.smoke_test)))
    except PromptinitError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Tune's RuntimeError around it, or Ray's own from a phase's job
        if (advice := prepare.out_of_memory(err)) is None:
            raise
        print(f"sweep: error: {advice}", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(published.table.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
