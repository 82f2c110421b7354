"""Phase 7, publish: the comparison table, the exports, and the parent run's metrics and artifacts.

The table (difference with PT, ARG, P(>PT), 95 % CIs; ``analysis.write_target_table``: Markdown,
CSV and the per-pair scores), one PEFT export per chosen method (the prompt of the first upstream
seed, whose target scores are in the table), and every number and file logged to MLflow. Before
them, ``chosen.json``: each method's chosen configuration and its upstream checkpoints, which a
study reads to tune the same choice for a second downstream budget (``read_chosen``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptinit.errors import PromptinitError, read_json
from promptinit.files import atomic_write_json
from promptinit.search.phases import tracking
from promptinit.search.phases.arms import checkpoint_path, checkpoint_prompt
from promptinit.search.phases.check import Checked
from promptinit.search.phases.prepare import Prepared
from promptinit.search.phases.searching import Candidate, Searched
from promptinit.search.phases.select import Selected
from promptinit.search.phases.target import TargetScores
from promptinit.search.phases.upstream import Checkpoints
from promptinit.trainables import metrics as M

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    table: Any  # analysis.TargetTable
    exports: list[Path]


def finite(value: Any) -> float | None:
    """A finite number as float, else None (JSON has no NaN: ``val/arg_se`` is NaN with one pair)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def target_rows(checked: Checked, searched: Searched, selected: Selected, scores: TargetScores) -> list[dict]:
    """One row per method for ``analysis.write_target_table``: its per-pair scores, PT's, and how
    it was chosen."""
    from promptinit.trainables.scoring import held_out_sizes

    cfg = checked.cfg
    objective = cfg.search.objective
    n_test = held_out_sizes(checked.tasks.target, cfg.target.seeds, cfg.target.tune_config().test_size)
    rows = []
    for m in cfg.methods:
        row: dict[str, Any] = {
            "sweep": cfg.name,
            "partition": checked.partition.name,
            "method": m,
            "trials": searched.counts[m].trials,
            "finished": searched.counts[m].finished,
        }
        c = selected.chosen.get(m)
        if c is not None:
            row.update(
                trial_id=c.trial_id,
                settings=dict(c.settings),
                val_arg=c.val_arg,
                val_arg_se=finite(c.metrics.get(M.VAL_ARG_SE)),
                val_arg_rescored=c.rescored_arg,
                val_arg_rescored_se=finite(c.rescored_se),
                objective=objective,
                val=c.value(objective),
                val_se=finite(c.metrics.get(M.OBJECTIVES[objective][1])),
                val_rescored=finite(c.rescored_value(objective)),
                val_rescored_se=finite(c.rescored.get(M.OBJECTIVES[objective][1])),
                scores=scores.arms[m],
                baseline=scores.pt,
                n_test=n_test,
                test_per_seed=cfg.target.tune_config().test_per_seed,
            )
        rows.append(row)
    return rows


def run(
    checked: Checked,
    prepared: Prepared,
    searched: Searched,
    selected: Selected,
    checkpoints: Checkpoints,
    scores: TargetScores,
    post_s: float,
) -> Published:
    """Write the table and the exports; log them and the sweep's numbers to the parent run."""
    from promptinit.analysis import write_target_table

    write_chosen(checked.cfg.sweep_dir, selected.chosen, checkpoints)  # before the table, which marks the sweep done
    table = write_target_table(target_rows(checked, searched, selected, scores), checked.cfg.sweep_dir)
    exports = [export(checked, prepared, selected, m, c, checkpoints, table) for m, c in selected.chosen.items()]
    metrics = tracking.target_metrics(table.table)
    for m, c in selected.chosen.items():
        metrics[f"{M.VAL_ARG}/{m}"] = c.val_arg
        for name, value in (
            (M.VAL_ARG_SE, c.metrics.get(M.VAL_ARG_SE)),
            (M.VAL_DELTA, c.metrics.get(M.VAL_DELTA)),
            (M.VAL_DELTA_SE, c.metrics.get(M.VAL_DELTA_SE)),
            (M.VAL_ARG_RESCORED, c.rescored_arg),
            (M.VAL_ARG_RESCORED_SE, c.rescored_se),
        ):
            number = finite(value)
            if number is not None:  # NaN with one validation pair
                metrics[f"{name}/{m}"] = number
    metrics.update(
        {
            "time/search_s": searched.seconds,
            "time/trial_cpu_s": searched.trial_cpu_s,
            "time/after_search_s": post_s,
            "time/after_search_cpu_s": prepared.ctx.runner.cpu_seconds,
        }
    )
    run_ = prepared.run
    tracking.log_dict(run_.parent, run_.uri, metrics=metrics)
    c = tracking.client(run_.uri)
    for path in (*table.files, *selected.files):
        c.log_artifact(run_.parent, str(path))
    for folder in exports:
        c.log_artifacts(run_.parent, str(folder), artifact_path=f"exports/{folder.name}")
    return Published(table, exports)


CHOSEN_FILE = "chosen.json"


def write_chosen(sweep_dir: Path, chosen: dict[str, Candidate], checkpoints: Checkpoints) -> None:
    """``chosen.json``: per method its choice (trial, settings, config, upstream steps) and the
    checkpoint of every upstream seed, as paths relative to the sweep folder (``../..`` where the
    run was kept by the study beside it: a choice equal to a preset reuses the preset's runs)."""
    record = {
        m: {
            "trial_id": c.trial_id,
            "settings": dict(c.settings),
            "config": dict(c.config),
            "step": c.step,
            "upstream": {
                str(u): os.path.relpath(Path(checkpoint_path(ckpt)).resolve(), sweep_dir.resolve())
                for (arm, u), ckpt in checkpoints.items()
                if arm == m
            },
        }
        for m, c in chosen.items()
    }
    atomic_write_json(sweep_dir / CHOSEN_FILE, record, indent=1, default=str)


def read_chosen(sweep_dir: Path) -> tuple[dict[str, Candidate], Checkpoints]:
    """A finished sweep's ``chosen.json`` back as ``(method -> candidate, (method, upstream seed) ->
    checkpoint folder)``, what the upstream phase returned (``upstream.run``)."""
    path = sweep_dir / CHOSEN_FILE
    if not path.is_file():
        raise PromptinitError(
            f"{sweep_dir}: no {CHOSEN_FILE} (a sweep finished before promptinit wrote it); a second downstream "
            "budget needs it: delete the sweep's arg_table.csv and resume the study to republish it"
        )
    chosen: dict[str, Candidate] = {}
    checkpoints: Checkpoints = {}
    for m, r in read_json(path).items():
        chosen[m] = Candidate(m, r["trial_id"], None, math.nan, {M.STEP: r["step"]}, r["settings"], r["config"])
        for u, rel in r["upstream"].items():
            checkpoints[(m, int(u))] = sweep_dir / rel
    return chosen, checkpoints


def export(
    checked: Checked,
    prepared: Prepared,
    selected: Selected,
    method: str,
    c: Candidate,
    checkpoints: Checkpoints,
    table: Any,
) -> Path:
    """The PEFT export of ``method``'s choice: the prompt of the first upstream seed."""
    from promptinit.analysis import export_best
    from promptinit.spaces import trial_sources

    cfg, tasks, ctx = checked.cfg, checked.tasks, prepared.ctx
    first = cfg.target.upstream_seeds[0]
    checkpoint = checkpoints[(method, first)]
    info = {
        "hyperparameters": dict(c.settings),
        "trial_id": c.trial_id,
        "checkpoint": checkpoint_path(checkpoint),
        "upstream_seed": first,
        "upstream_steps": c.step,
        "model": cfg.model,
        "prompt_length": cfg.prompt_length,
        "dtype": ctx.dtype,
        "partition": checked.partition.name,
        "partition_fingerprint": checked.partition.fingerprint,
        "task_fingerprints": {t.name: t.fingerprint for t in (*tasks.source, *tasks.validation, *tasks.target)},
        "source_tasks": [t.name for t in trial_sources(c.config, tasks.source)],
        "validation": {
            "objective": cfg.search.objective,
            "delta": finite(c.metrics.get(M.VAL_DELTA)),
            "delta_se": finite(c.metrics.get(M.VAL_DELTA_SE)),
            "rescored_delta": finite(c.rescored.get(M.VAL_DELTA)),
            "rescored_delta_se": finite(c.rescored.get(M.VAL_DELTA_SE)),
            "arg": c.val_arg,
            "arg_se": finite(c.metrics.get(M.VAL_ARG_SE)),
            "seeds": cfg.validation.seeds,
            "tuning": cfg.validation.tuning_dict(),
            "rescored_arg": finite(c.rescored_arg),
            "rescored_arg_se": finite(c.rescored_se),
            "rescore_seeds": selected.fresh_seeds,
            "metrics": {k: v for k, v in c.metrics.items() if isinstance(v, (str, bool)) or finite(v) is not None},
        },
        # the per-pair scores (method, PT, test size) and their comparison, as in the table
        "target": {
            **table.records[(checked.partition.name, method)],
            "seeds": cfg.target.seeds,
            "upstream_seeds": cfg.target.upstream_seeds,
            "tuning": cfg.target.tuning_dict(),
        },
        "sweep": {"name": cfg.name, "dir": str(cfg.sweep_dir), "mlflow_parent_run": prepared.run.parent},
    }
    folder = export_best(cfg.sweep_dir, method, checkpoint_prompt(checkpoint), info)
    logger.info("exported %s: %s", method, folder)
    return folder
