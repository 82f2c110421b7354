#!/usr/bin/env python
"""A study: does a meta-learned initialisation beat plain prompt tuning, and does searching
its hyperparameters pay? Every arm tuned on the same target (task, seed) pairs, with intervals.

    python search/study.py --config configs/study/cpu.yaml [--resume] [-q | -v]
    promptinit report runs/cpu-study --out docs/results/cpu-study

A study YAML is a sweep YAML (``search/sweep.py``) whose ``methods`` are the searched ones, plus
a ``study`` block (``promptinit.search.phases.study_config``). It composes the sweep's phases
(``promptinit.search.phases``) through their Python API, arm by arm:

1. **check** and **prepare** as a sweep's (the same source-selection rule for every arm);
2. **curves**: PT's dev curves on every target give the downstream step count of every arm
   (``study.curves.rule``); with ``study.start_steps`` every arm is tuned for that fixed budget
   too (a start and an end: two **budgets**, each row's label naming its own, each compared with
   PT at the same budget; arms of ``study.start_only`` get the start budget only);
3. **baselines**: PT from the vocabulary (every arm's baseline) and from the class labels;
4. **presets**, two at a time: each arm of ``study.presets`` meta-trained with every upstream
   seed (``upstream``), then both arms' upstream seeds tuned on every target pair at each budget,
   each task's problems in one batched run (``target``); the searched methods' presets first, the
   others after the searches (``stages``);
5. **searches**: per searched method and ``study.algorithms`` a whole sweep (``sweep.run_sweep``)
   in ``<study>/sweeps/``, with the study's first budget's downstream tuning; its choice
   (``chosen.json``: the configuration and its fresh upstream checkpoints) is then tuned at the
   other budget by the study;
6. **publish**: after each arm, ``arg_table.{md,csv}``, ``target_scores.csv`` and ``study.json``.

``--resume`` continues an interrupted study: finished jobs and sweeps are kept, an interrupted
sweep resumes. The config must be the one the study ran with, except that it may add arms under
``study.presets`` and change the search space or ``study.validation`` of a method whose sweeps have
not finished (those sweeps start afresh).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptinit.errors import PromptinitError, read_json
from promptinit.files import atomic_write_json
from promptinit.logs import add_verbosity_flags, setup_logging, verbosity
from promptinit.search.phases import check, curves, prepare, target, upstream
from promptinit.search.phases.config import check_model, check_storage, config_dict, load_partition
from promptinit.search.phases.jobs import LABELS_START
from promptinit.search.phases.prepare import FINAL_DIR
from promptinit.search.phases.publish import read_chosen
from promptinit.search.phases.searcher import KEPT_FILE
from promptinit.search.phases.searching import Candidate
from promptinit.search.phases.study_config import (
    ALGORITHM_LABEL,
    META_FILE,
    RESULT_FILE,
    ROUND,
    STUDY_DIR,
    SWEEPS,
    Arm,
    StudyConfig,
    config_changes,
    load_study_config,
    preset_settings,
    resume_plan,
)
from promptinit.search.sweep import run_sweep
from promptinit.spaces import METHOD_KEY
from promptinit.trainables import metrics as M

logger = logging.getLogger("promptinit.search.study")


@dataclass(frozen=True)
class Budget:
    """One downstream budget: the arms' rows at it carry ``suffix`` and PT's scores at it.

    Attributes:
        steps: downstream steps.
        tuning: ``TuneConfig`` fields with those steps.
        suffix: the rows' label suffix (``" · 60 steps"``; ``""`` in a study with one budget).
        end: the budget of PT's curves (``study.start_only`` arms skip it when there are two).
    """

    steps: int
    tuning: dict
    suffix: str
    end: bool

    def runs(self, cfg: StudyConfig, arm: Arm) -> bool:
        """Whether ``arm`` is tuned at this budget."""
        return not (self.end and self.suffix and arm.key in cfg.study.start_only)


def budgets(cfg: StudyConfig, steps: int, tuning: dict) -> list[Budget]:
    """The study's downstream budgets, the start first: ``study.start_steps`` (when set and below
    the curves' ``steps``) and the curves' ``steps``."""
    start = cfg.study.start_steps
    if start is None:
        return [Budget(steps, tuning, "", True)]
    if steps <= start:  # PT converged by the start budget: one budget, named
        return [Budget(start, {**tuning, "steps": start}, f" · {start} steps", True)]
    return [
        Budget(start, {**tuning, "steps": start}, f" · {start} steps", False),
        Budget(steps, tuning, f" · {steps} steps", True),
    ]


@dataclass(frozen=True)
class Study:
    """A checked study: its config, tasks and the context every phase shares."""

    cfg: StudyConfig
    where: str
    partition: Any
    tasks: check.TaskSets
    ctx: prepare.Context


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="search/study.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(STUDY_DIR / "cpu.yaml"), help="study YAML (default: configs/study/cpu.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted study of this config")
    add_verbosity_flags(p)
    return p.parse_args(argv)


def check_study(where: str, resume: bool) -> tuple[StudyConfig, Any, check.TaskSets, list[str], list[str]]:
    """Everything refused before anything is written: ``(cfg, partition, tasks, added arms, respaced methods)``."""
    cfg = load_study_config(where)
    check_storage(cfg, where)
    meta = cfg.sweep_dir / META_FILE
    if resume and not meta.is_file():
        raise PromptinitError(f"{cfg.sweep_dir}: nothing to resume (no {META_FILE}); run without --resume")
    if not resume and meta.is_file():
        raise PromptinitError(
            f"{where}: field 'name': a study already ran in {cfg.sweep_dir}; pass --resume to "
            "continue it, or change `name`"
        )
    added: list[str] = []
    respaced: list[str] = []
    if resume:
        finished = {
            a.method for a in cfg.arms() if a.kind == "search" and (cfg.sweep_folder(a) / "arg_table.csv").is_file()
        }
        record = read_json(meta)
        check_code(record, where, cfg.sweep_dir)
        now = config_dict(cfg)
        searched = any(cfg.sweep_folder(a).exists() for a in cfg.arms() if a.kind == "search")
        plan = resume_plan(record.get("config"), now, finished, unstarted_presets(cfg), searched)
        if plan is None:
            changed = config_changes(record.get("config"), now)
            raise PromptinitError(
                f"{where}: the config differs from the one {cfg.sweep_dir} ran with ({meta}) in "
                f"{', '.join(changed)}: more than arms under `study.presets` added or changed before any of "
                "their jobs ran and the search space or validation of a method whose sweeps have not finished; "
                "resume with that config, or change `name` for a new study"
            )
        added, respaced = plan
    if any(a.kind == "search" for a in cfg.arms()):
        check.refuse_search_seed(cfg, where)
    check_model(cfg, where)
    partition = load_partition(cfg)
    tasks = check.load_tasks(cfg, partition)
    heldout = (*tasks.validation, *tasks.target)
    check.check_metapt_pool(cfg, where, heldout)
    for name, p in cfg.study.presets.items():
        if p.method_of(name) == "metapt":
            check.refuse_leaky_pool(
                [str(preset_settings(cfg, name, p).get("pool"))], f"{where}: field 'study.presets.{name}'", heldout
            )
    if cfg.study.labels and not any(t.labels for t in tasks.target):
        raise PromptinitError(
            f"{where}: field 'study.labels': no target task has class labels for the class-label init "
            f"(targets: {', '.join(t.name for t in tasks.target)}); set `labels: false` or add classification targets"
        )
    return cfg, partition, tasks, added, respaced


def unstarted_presets(cfg: StudyConfig) -> set[str]:
    """The preset arms none of whose jobs ran: no upstream run of theirs is kept (their target
    jobs start from those runs)."""
    started = set()
    for path in (cfg.sweep_dir / FINAL_DIR).glob("upstream-*.json"):
        label = read_json(path).get("label", "")
        started.add(label.split(" upstream seed ")[0])
    return {name for name in cfg.study.presets if name not in started}


def code_record() -> dict[str, str | None]:
    """The code a study's kept jobs are keyed by (``jobs.code_fingerprint``) and the git commit it
    came from (``+changes`` when the core library differs from it; None outside a git checkout)."""
    from promptinit.search.phases.jobs import code_fingerprint

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--", "promptinit", "trainables/scoring.py"):
        commit += "+changes"
    return {"code": code_fingerprint(), "commit": commit}


def check_code(record: dict, where: str, folder: Path) -> None:
    """Refuse to resume a study under other code than its kept jobs were computed with: their
    files are keyed by the code's fingerprint, so every one of them would silently run again (a
    study of many hours). A study recorded before the fingerprint was (the first study) passes."""
    from promptinit.search.phases.jobs import code_fingerprint

    started, now = record.get("code"), code_fingerprint()
    if started is None or started == now:
        return
    commit = f", commit {record['commit']}" if record.get("commit") else ""
    raise PromptinitError(
        f"{where}: the code that decides the jobs' results (promptinit/ and trainables/scoring.py, fingerprint "
        f"{now}) is not the code {folder} started with ({started}{commit}), so none of its kept jobs would be "
        "reused; resume from a checkout of that commit, or change `name` for a new study"
    )


def prepare_study(where: str, resume: bool) -> Study:
    """Check, then write the study's record and connect to Ray."""
    cfg, partition, tasks, added, respaced = check_study(where, resume)
    cfg.sweep_dir.mkdir(parents=True, exist_ok=True)
    for arm in (a for a in cfg.arms() if a.kind == "search" and a.method in respaced):
        if cfg.sweep_folder(arm).exists():  # an interrupted sweep cannot go on under another space or validation
            logger.info(
                "resume: %s's search space or validation changed; its unfinished sweep %s starts afresh",
                arm.method,
                cfg.sweep_folder(arm),
            )
            shutil.rmtree(cfg.sweep_folder(arm))
    write_record(cfg, partition.name, resume)
    logger.info("study %s: %s", cfg.name, cfg.sweep_dir)
    if added:
        logger.info("resume: arms added, or changed before they ran, since the last run: %s", ", ".join(added))
    return Study(cfg, where, partition, tasks, prepare.context(cfg, tasks.source))


def write_record(cfg: StudyConfig, partition: str, resume: bool) -> None:
    """Record the config the study runs with. A resume rewrites it with every change
    ``check_study`` accepted (arms added, a respaced method, ``search.calibrate_seeds`` before any
    search), so the next resume judges its changes against the config that last ran; the code
    record stays the one the study started with."""
    meta = cfg.sweep_dir / META_FILE
    code = {k: read_json(meta).get(k) for k in ("code", "commit")} if resume else code_record()
    atomic_write_json(meta, {"config": config_dict(cfg), "partition": partition, **code}, indent=1)


def preset_candidate(cfg: StudyConfig, arm: Arm) -> Candidate:
    """A preset arm as the candidate the upstream and target phases take."""
    settings = preset_settings(cfg, arm.name, cfg.study.presets[arm.name])
    return Candidate(
        arm.method,
        "preset",
        None,
        float("nan"),
        {M.STEP: cfg.study.presets[arm.name].steps},
        settings,
        {METHOD_KEY: arm.method, arm.method: settings},
    )


def stages(cfg: StudyConfig) -> list[list[Arm]]:
    """The study's arms in the groups and the order they run: PT from the class labels; the
    searched methods' presets, ``ROUND`` at a time (meta-trained side by side); each search; the
    other presets, ``ROUND`` at a time. The searches, the study's question, run before the presets
    they are not compared with: those come last, where a study over its plan may still cut them
    (issue 30's rule cuts SUPMER's and Reptile's steps first)."""
    arms = cfg.arms()
    presets = [a for a in arms if a.kind == "preset"]
    searched = [a for a in presets if a.name in cfg.methods]
    others = [a for a in presets if a not in searched]

    def rounds(group: list[Arm]) -> list[list[Arm]]:
        return [group[i : i + ROUND] for i in range(0, len(group), ROUND)]

    labels = [a for a in arms if a.kind == "labels"]
    return [labels, *rounds(searched), *([a] for a in arms if a.kind == "search"), *rounds(others)]


def row_labels(cfg: StudyConfig, plan: list[Budget]) -> list[str]:
    """Every row of the study's table (an arm at a budget), in the order the study writes them
    (``stages``; a group's arms at each budget in turn)."""
    return [a.label + b.suffix for group in stages(cfg) for b in plan for a in group if b.runs(cfg, a)]


def baseline_rows(study: Study, plan: list[Budget]) -> tuple[list[dict], list[dict]]:
    """PT (every arm's baseline) and PT from the class labels at each budget: ``(the labels arm's
    rows, each budget's fields shared by its rows: PT's scores and the test sizes among them)``."""
    cfg, targets = study.cfg, study.tasks.target
    labelled = [t for t in targets if t.labels]  # a multiple-choice task without fixed classes has no label init
    if cfg.study.labels and len(labelled) < len(targets):
        logger.info(
            "PT from the class labels: on the %d of %d targets with class labels (not %s)",
            len(labelled),
            len(targets),
            ", ".join(t.name for t in targets if not t.labels),
        )
    rows, commons = [], []
    for b in plan:
        also = {a.label: LABELS_START for a in cfg.arms() if a.kind == "labels" and b.runs(cfg, a)}
        same = len(labelled) == len(targets)  # then PT and the labels arm share one batched run per task
        base = target.run(study.ctx, {}, {}, targets, cfg.target.seeds, b.tuning, also=also if same else None)
        arms = (
            base.arms
            if same or not also
            else target.run(study.ctx, {}, {}, labelled, cfg.target.seeds, b.tuning, also=also).arms
        )  # PT's scores there come from its cache
        n_test = held_out(study, b.tuning)
        commons.append({"sweep": cfg.name, "partition": study.partition.name, "n_test": n_test, "baseline": base.pt})
        names = {t.name for t in labelled}  # the label arm's pairs: PT's there
        mine = {"baseline": {k: v for k, v in base.pt.items() if k[0] in names}}
        rows += [{**commons[-1], **mine, "method": arm + b.suffix, "trial_id": "", "scores": arms[arm]} for arm in also]
    return rows, commons


def preset_rows(study: Study, arms: list[Arm], plan: list[Budget], commons: list[dict]) -> list[dict]:
    """Meta-train ``arms`` side by side with every upstream seed, then tune each on the targets at
    each budget of ``plan`` (``commons``: each budget's shared row fields, PT's scores among them)."""
    cfg, ctx = study.cfg, study.ctx
    chosen = {a.name: preset_candidate(cfg, a) for a in arms}
    upstream.build_caches(ctx, chosen)
    checkpoints = upstream.run(ctx, chosen, cfg.target.upstream_seeds, title=f"upstream {', '.join(chosen)}")
    rows = []
    for b, common in zip(plan, commons, strict=True):
        now = [a for a in arms if b.runs(cfg, a)]
        if not now:
            continue
        scores = target.run(  # the round's arms batched together
            ctx,
            {a.name: chosen[a.name] for a in now},
            {k: v for k, v in checkpoints.items() if k[0] in {a.name for a in now}},
            study.tasks.target,
            cfg.target.seeds,
            b.tuning,
        )
        rows += [
            {
                **common,
                "method": a.label + b.suffix,
                "trial_id": "preset",
                "settings": chosen[a.name].settings,
                "scores": scores.arms[a.name],
            }
            for a in now
        ]
    return rows


def search_rows(study: Study, arm: Arm, plan: list[Budget], commons: list[dict]) -> list[dict]:
    """Run (or resume, or keep) one search arm's sweep, tuned downstream at the first budget; then its
    choice at the other budget. Its target rows, labelled by the arm and budget."""
    from promptinit.analysis import load_sweep

    cfg = study.cfg
    folder = cfg.sweep_folder(arm)
    if not (folder / "arg_table.csv").is_file():
        resume = check.resumable_from(folder) is not None
        if folder.exists() and not resume:  # it died before Tune saved anything: start it afresh
            logger.info(
                "%s: an interrupted start (no %s, no %s); starting that sweep afresh",
                folder,
                check.TUNER_FILE,
                KEPT_FILE,
            )
            shutil.rmtree(folder)
        logger.info(
            "\n== search arm %s, %s: sweep %s%s",
            arm.method,
            ALGORITHM_LABEL[arm.algorithm],
            folder,
            " (resumed)" if resume else "",
        )
        where = f"{study.where}: search arm {arm.label}"
        # PT's problems (targets, validation, re-score) are the same in every search and the study: tuned once
        shared = [study.ctx.runner.folder, *(cfg.sweep_folder(a) / FINAL_DIR for a in cfg.arms() if a.kind == "search")]
        checked = check.config(cfg.sub_sweep(arm, plan[0].steps), where, resume)
        run_sweep(dataclasses.replace(checked, shared=tuple(f for f in shared if f != folder / FINAL_DIR)))
    targets = load_sweep(folder).targets
    rows = [{**r, "sweep": cfg.name, "method": arm.label + plan[0].suffix} for r in targets.to_dict("records")]
    if len(plan) > 1:
        chosen, checkpoints = read_chosen(folder)
        if arm.method not in chosen:  # no trial finished: the first budget's row says so
            return rows
        record = rows[0]  # the sweep's one row: its choice (trial, settings, validation)
        for b, common in zip(plan[1:], commons[1:], strict=True):
            scores = target.run(study.ctx, chosen, checkpoints, study.tasks.target, cfg.target.seeds, b.tuning)
            rows.append({**record, **common, "method": arm.label + b.suffix, "scores": scores.arms[arm.method]})
    return rows


def publish(study: Study, rows: list[dict], summary: dict, finished: bool = False) -> Any:
    """The table of the arms done so far, and ``study.json``: results arrive arm by arm."""
    from promptinit.analysis import write_target_table

    cfg = study.cfg
    table = write_target_table(rows, cfg.sweep_dir)
    result = {
        **summary,
        "finished": finished,
        "done": [r["method"] for r in rows],
        "cpu_s_jobs": kept_cpu_seconds(study.ctx.runner.folder),
    }
    atomic_write_json(cfg.sweep_dir / RESULT_FILE, result, indent=1, default=str)
    return table


def run(where: str, resume: bool) -> Any:
    """The whole study (see the module docstring); returns its final table."""
    t_start = time.perf_counter()
    study = prepare_study(where, resume)
    cfg, ctx = study.cfg, study.ctx
    times: dict[str, float] = {}
    steps, tuning, found = curves.run(ctx, cfg, study.tasks.target)
    plan = budgets(cfg, steps, tuning)
    times["curves_s"] = time.perf_counter() - t_start
    arms = cfg.arms()
    summary = {
        "downstream_steps": steps,
        "steps_rule": found,  # for `converged`: whether PT converged by the cap, and its last-quarter gain
        "tuning": tuning,
        "budgets": [{"steps": b.steps, "label": b.suffix.strip(" ·"), "end": b.end} for b in plan],
        "start_only": list(cfg.study.start_only),
        "target_seeds": list(cfg.target.seeds),
        "upstream_seeds": cfg.target.upstream_seeds,
        "targets": [t.name for t in study.tasks.target],
        "arms": row_labels(cfg, plan),  # the table's rows, in the order they arrive
        "arm_records": [a.record() for a in arms],
        "presets": {
            a.label: {
                "method": a.method,
                "steps": cfg.study.presets[a.name].steps,
                "settings": preset_settings(cfg, a.name, cfg.study.presets[a.name]),
                "cut": cfg.study.presets[a.name].cut,
            }
            for a in arms
            if a.kind == "preset"
        },
        "searches": {a.label: f"{SWEEPS}/{cfg.sweep_folder(a).name}" for a in arms if a.kind == "search"},
        "times": times,
    }
    t0 = time.perf_counter()
    rows, commons = baseline_rows(study, plan)
    times["presets_s"], times["searches_s"] = time.perf_counter() - t0, 0.0  # the baselines with the presets
    publish(study, rows, summary)
    for group in stages(cfg)[1:]:  # a round's upstream runs side by side; a row per arm as it is done
        t0, search = time.perf_counter(), group[0].kind == "search"
        rows += search_rows(study, group[0], plan, commons) if search else preset_rows(study, group, plan, commons)
        times["searches_s" if search else "presets_s"] += time.perf_counter() - t0
        publish(study, rows, summary)
    times["wall_s"] = time.perf_counter() - t_start
    return publish(study, rows, summary, finished=True)


def held_out(study: Study, tuning: dict) -> dict:
    from promptinit.trainables.scoring import held_out_sizes

    return held_out_sizes(study.tasks.target, list(study.cfg.target.seeds), tuning["test_size"])


def kept_cpu_seconds(folder: Path) -> float:
    """CPU seconds of every job kept in the study's job folder (all runs of the study so far).

    Raises:
        PromptinitError: a kept job file is unreadable (the cost total would silently drop it).
    """
    total = 0.0
    for path in sorted(Path(folder).glob("*.json")):
        record = read_json(path)
        cpu_s = record.get("cpu_s", 0.0) if isinstance(record, dict) else None
        if not isinstance(cpu_s, (int, float)):
            raise PromptinitError(
                f"{path}: field 'cpu_s': expected a number of CPU seconds, got {cpu_s!r}; "
                "delete the file to recompute that job"
            )
        total += float(cpu_s)
    return total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(verbosity(args))
    try:
        table = run(args.config, args.resume)
    except PromptinitError as err:
        print(f"study: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Tune's RuntimeError around it, or Ray's own from a phase's job
        if (advice := prepare.out_of_memory(err)) is None:
            raise
        print(f"study: error: {advice}", file=sys.stderr)
        return 1
    print(f"\n{table.text}\nreport: promptinit report {load_study_config(args.config).sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
