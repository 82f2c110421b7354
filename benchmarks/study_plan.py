"""A study's cost plan, before it runs: CPU-hours per arm and phase from measured per-job costs.

The unit costs are measurements, not guesses:

- **upstream**: CPU s per outer step of each method, the mean over the committed upstream jobs of
  the first CPU study (``runs/cpu-study/final/upstream-*.json``: 200 steps x 3 seeds each, one
  thread per Ray worker, SmolLM2; the cost of a step does not grow with the number of sources);
- **downstream**: CPU s per run-step (one lr's tuning step of one problem, its share of the dev
  evaluations and of the test scoring included), ``--run-step-s``; default the committed target
  jobs of the first study (5 seeds x 4 lrs x 60 steps per job, dev every 10, 100 test examples);
- **validation**: CPU s per validation problem (PT or a trial's prompt at the validation recipe),
  ``--validation-problem-s`` (the demo's recipe, 20 steps at lr 0.3: 15.8-20.2 CPU s, 6 Dec 2026).

Searches under ASHA (grace period 1 report, reduction factor r): of n trials, about n / r^(k-1)
reach their k-th report, so a search runs about ``steps_per_report`` x that sum of outer steps and
as many validation reports. The end budget (PT's convergence) is unknown until PT's curves ran:
the plan is printed for each of ``--end-steps``. lr halving (``--halving``) runs the share of
run-steps ``promptinit.tuning.halving_rungs`` keeps.

While and after the study runs, ``--measured RUN_FOLDER`` prints the plan at the study's own end
budget beside the CPU seconds its kept jobs recorded, per phase: PT's curves and tuning, each
method's upstream runs and tuning (its preset and the searches' choices together, as they share
batched runs), each method's searches (their trials' upstream steps and validation, from Tune's
reports; re-score; calibration), and SUPMER's / MetaPT's preparation (unplanned), with the number
of kept problems (or runs, or trial reports) behind each; while it runs, a phase's measured / planned
is the share spent so far. The projection beneath prices the whole plan at the units the study
measured so far: a searched method's trial reports at their measured mean once its searches
computed some (before that, its validation linearly in its recipe's steps, an upper bound).

Usage:
    python benchmarks/study_plan.py --config configs/study/cpu-v2.yaml --end-steps 120 180 300
    python benchmarks/study_plan.py --config configs/study/cpu-v2.yaml --measured runs/cpu-study-v2
"""

from __future__ import annotations

import argparse
import glob
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from promptinit.errors import read_json

STUDY = Path("runs/cpu-study")
TARGET_RUN_STEPS = 5 * 4 * 60  # a committed target job: 5 few-shot seeds x 4 lrs x 60 steps
CACHE_READ_S = 5.0  # a kept problem under this many CPU s read PT's curves' cache; a tuned one costs 15+


@dataclass(frozen=True)
class Units:
    """Measured unit costs (CPU seconds)."""

    upstream_step: dict[str, float]  # per outer step, by method
    run_step: float  # per downstream run-step
    validation_problem: float  # per validation problem at the study's validation recipe
    halving: float = 1.0  # share of run-steps lr halving keeps (1: full selection)
    report_s: dict[str, float] = field(default_factory=dict)  # per computed trial report, by searched method


def committed_units(study: Path = STUDY) -> tuple[dict[str, float], float]:
    """``(CPU s per outer step by method, CPU s per downstream run-step)`` from a finished study's
    kept jobs (the first study's layout: one target job per 5 seeds x 4 lrs)."""
    target = [read_json(p)["cpu_s"] for p in glob.glob(str(study / "final" / "target-*.json"))]
    target = [c for c in target if c > 1]  # PT's target jobs read the curves' cache (0.3 CPU s)
    return _upstream_units(study), sum(target) / len(target) / TARGET_RUN_STEPS


def _upstream_units(study: Path) -> dict[str, float]:
    """CPU s per outer step by method, the mean over a study's kept upstream runs (ablations left out)."""
    per_step: dict[str, list[float]] = {}
    for path in glob.glob(str(study / "final" / "upstream-*.json")):
        job = read_json(path)
        key = job["key"]
        if key["settings"].get("use_mgr", True) and key["settings"].get("curriculum") != "none":  # not an ablation
            per_step.setdefault(key["method"], []).append(job["cpu_s"] / key["steps"])
    return {m: sum(v) / len(v) for m, v in per_step.items()}


def study_units(folder: Path, base: Units, cfg=None) -> Units:
    """``base`` with the unit costs a running study measured so far (v2 layout: one kept file per
    downstream problem): CPU s per outer step of each method with a kept upstream run, per
    downstream run-step over its kept target problems (those that tuned: PT's curve reads cost
    under 1 CPU s), and per validation problem over its searches' kept PT validation problems
    (PT at the validation recipe, as each trial report's validation is; a cache read left out, as
    for the targets: study v2's PT at 60 steps read its curves' cache; one at another step count,
    a method's ``study.validation``, counted at the study's validation steps by ``_search``'s
    rule, with ``cfg``), and per trial report of each searched method whose searches computed
    reports (their steps and validation, Tune's ``time/cpu_s``; replayed reports left out). Methods
    and units not measured yet keep ``base``'s."""
    upstream = _upstream_units(folder)
    cpu = steps = 0.0
    for path in glob.glob(str(folder / "final" / "target-*.json")):
        job = read_json(path)
        tuning = job["key"].get("tuning", {})
        lrs = tuning.get("lr")
        if job["cpu_s"] > CACHE_READ_S and "steps" in tuning:
            cpu += job["cpu_s"]
            steps += tuning["steps"] * (len(lrs) if isinstance(lrs, list) else 1)
    run_step = cpu / steps if steps else base.run_step
    at = _validation_steps(cfg) if cfg is not None else None
    validation = [
        job["cpu_s"] * (at / job["key"]["tuning"]["steps"] if at else 1.0)
        for job in map(read_json, glob.glob(str(folder / "sweeps" / "*" / "final" / "validation PT-*.json")))
        if job["cpu_s"] > CACHE_READ_S
    ]
    problem = sum(validation) / len(validation) if validation else base.validation_problem
    reports: dict[str, list[float]] = {}
    for sweep in glob.glob(str(folder / "sweeps" / "*" / "promptinit-sweep.json")):
        computed = [r["time/cpu_s"] for r in _reports(Path(sweep).parent) if "replay/of" not in r and r.get("time/cpu_s")]
        reports.setdefault(read_json(sweep)["config"]["methods"][0], []).extend(computed)
    report_s = {m: sum(v) / len(v) for m, v in reports.items() if v}
    return Units({**base.upstream_step, **upstream}, run_step, problem, base.halving, report_s)


def asha_reports(trials: int, rungs: int, reduction: float) -> float:
    """Reports a search of ``trials`` makes under ASHA with ``rungs`` reports per full trial."""
    return sum(max(1.0, trials / reduction**k) for k in range(rungs))


def plan(cfg, units: Units, end: int) -> list[tuple[str, str, float]]:
    """``[(arm, phase, CPU s)]`` of a study config (``StudyConfig``) whose end budget is ``end`` steps."""
    t = cfg.target
    pairs = len(_targets(cfg)) * len(t.seeds)
    lrs = len(t.tuning["lr"]) if isinstance(t.tuning["lr"], list) else 1
    start = cfg.study.start_steps
    budgets = [(f"start {start} steps", start), ("end", end)] if start else [("end", end)]

    def tune(problems: int, steps: int) -> float:
        return problems * lrs * steps * units.run_step * units.halving

    rows = [("PT", "curves (to the cap)", pairs * lrs * t.tuning["steps"] * units.run_step)]
    rows += [("PT", f"tuning, {name}", tune(pairs, steps)) for name, steps in budgets]
    ups = len(t.upstream_seeds)
    for arm in cfg.arms():
        seeds = 1 if arm.kind == "labels" else ups
        at = [(n, s) for n, s in budgets if not (n == "end" and start and arm.key in cfg.study.start_only)]
        if arm.kind == "search":
            rows += _search(cfg, arm, units, pairs, tune(1, budgets[0][1]))
        if arm.kind == "preset":
            steps = cfg.study.presets[arm.name].steps
            rows.append((arm.label, f"upstream {steps} steps x {ups}", steps * ups * units.upstream_step[arm.method]))
        rows += [(arm.label, f"tuning, {n}", tune(pairs * seeds, s)) for n, s in at]
    return rows


def _search(cfg, arm, units: Units, pairs: int, problem_s: float) -> list[tuple[str, str, float]]:
    """A search arm's trials (upstream and validation, at its method's ``validation_for``), re-score,
    calibration and fresh upstream runs."""
    b, s, v = cfg.budget, cfg.search, cfg.validation_for(arm.method)
    steps = max(b.steps)
    reports = asha_reports(b.num_samples, math.ceil(steps / b.steps_per_report), cfg.scheduler.reduction_factor)
    tasks = len(_validation(cfg))
    step_s = units.upstream_step[arm.method]
    if arm.method in units.report_s:  # its trials' measured reports, less their outer steps
        problem = max(0.0, units.report_s[arm.method] - b.steps_per_report * step_s) / (tasks * len(v.seeds))
    else:  # linear in the steps (dev is evaluated every `eval_every` of them too); an upper bound:
        # study v2's 60-step problems cost 77 CPU s in the objective-proxy run (48 per batched run)
        # against 37 for its searches' 20-step PT problems (3 per run), 2.1x
        problem = units.validation_problem * v.tune_config().steps / _validation_steps(cfg)
    per_report = tasks * len(v.seeds) * problem
    return [
        (arm.label, f"trials: {b.num_samples} x <= {steps} steps (ASHA)", reports * b.steps_per_report * step_s),
        (arm.label, f"validation: {reports:.0f} reports x {tasks * len(v.seeds)} problems", reports * per_report),
        (arm.label, "re-score", s.top_k * tasks * len(v.fresh_seeds()) * problem),
        (
            arm.label,
            f"calibration: {s.calibrate} trials x {len(cfg.calibration_seeds())} seeds",
            s.calibrate * pairs * problem_s * len(cfg.calibration_seeds()) / len(cfg.target.seeds),
        ),
        (
            arm.label,
            f"choice upstream {steps} steps x {len(cfg.target.upstream_seeds)}",
            steps * len(cfg.target.upstream_seeds) * step_s,
        ),
    ]


def replay_saving(cfg, units: Units, study: Path | None = None) -> float:
    """CPU s trial replay (``search.replay``) may save: a later algorithm's search of a method
    proposes the first search's first ``startup_trials`` points (the paper defaults, then the same
    seeded random draws; TPE models the results only after them) and replays those trials instead
    of computing them. At most: a resume re-seeds a sampler (``searcher.make_sampler``), after
    which the two searches draw different points (cpu-study-v2's MTL random search shared 3 of 4).
    With ``study`` (a run folder), a search that has trial reports there already is left out: it
    replayed, or computed, what it shared."""
    if not cfg.search.replay or len(cfg.study.algorithms) < 2:
        return 0.0
    shared = min(cfg.search.startup_trials, cfg.budget.num_samples)
    saved = 0.0
    for arm in cfg.arms():
        if arm.kind != "search" or arm.algorithm == cfg.study.algorithms[0]:
            continue
        if study is None or not any((study / "sweeps" / cfg.sweep_folder(arm).name).glob("*/result.json")):
            trials = sum(s for _, _, s in _search(cfg, arm, units, 0, 0.0)[:2])  # its trials + validation
            saved += trials * shared / cfg.budget.num_samples
    return saved


def _partition(cfg):
    from promptinit.search.phases.config import load_partition

    return load_partition(cfg)


def _targets(cfg) -> Sequence[str]:
    return list(_partition(cfg).target)


def _validation(cfg) -> Sequence[str]:
    return list(_partition(cfg).validation)


def _validation_steps(cfg) -> int:
    """The downstream steps of the study's validation recipe (``validation.tuning``)."""
    return cfg.validation.tune_config().steps


def markdown(rows_by_end: dict[int, list[tuple[str, str, float]]], cores: int) -> str:
    """The plan per arm and phase (CPU-hours), one column per end budget, and the totals."""
    ends = list(rows_by_end)
    first = rows_by_end[ends[0]]
    head = "| arm | phase | " + " | ".join(f"CPU h, end {e} steps" for e in ends) + " |\n"
    out = head + "|---|---|" + "---|" * len(ends) + "\n"
    for i, (arm, phase, _) in enumerate(first):
        cells = [f"{rows_by_end[e][i][2] / 3600:.2f}" for e in ends]
        out += f"| {arm} | {phase} | " + " | ".join(cells) + " |\n"
    totals = [sum(s for _, _, s in rows_by_end[e]) / 3600 for e in ends]
    out += "| **total** | | " + " | ".join(f"**{t:.1f}**" for t in totals) + " |\n"
    out += (
        f"| wall h on {cores} cores (if every core stays busy) | | "
        + " | ".join(f"{t / cores:.1f}" for t in totals)
        + " |\n"
    )
    return out


def phase_of(cfg, arm: str, phase: str) -> str:
    """The measured phase a plan row (``plan``'s arm label and phase) belongs to."""
    budget = "end" if phase == "tuning, end" else "start"
    if arm == "PT":
        return "PT: curves" if phase.startswith("curves") else f"PT: tuning, {budget}"
    one = {a.label: a for a in cfg.arms()}[arm]
    if one.kind == "labels":
        return "PT from class labels: tuning, start"
    if phase.startswith("tuning"):
        return f"{one.method}: tuning, {budget}"
    if "upstream" in phase:  # a preset's runs and a search's choice, afresh
        return f"{one.method}: upstream"
    part = {"trials": "trials", "validation": "trials", "re-score": "re-score", "calibration": "calibration"}
    return f"{one.method} searches: {part[phase.split(':')[0]]}"


@dataclass
class Measured:
    """A phase's kept work: CPU seconds and how many problems (or runs, or trial reports) it holds."""

    cpu_s: float = 0.0
    done: int = 0


def measured(folder: Path, start_steps: int | None) -> dict[str, Measured]:
    """Phase -> the CPU seconds and count of a study's kept jobs (``<study>/final``, each search
    sweep's ``final`` and its trials' Tune reports). A problem tuned once and reused by a search
    (``jobs.Runner``'s shared folders) is counted once, where it ran."""
    out: dict[str, Measured] = {}

    def add(phase: str, cpu_s: float, n: int = 1) -> None:
        m = out.setdefault(phase, Measured())
        m.cpu_s, m.done = m.cpu_s + cpu_s, m.done + n

    def budget(key: dict) -> str:
        return "start" if key["tuning"]["steps"] == start_steps else "end"

    for path in sorted(glob.glob(str(folder / "final" / "*.json"))):
        job = read_json(path)
        kind, key = Path(path).stem.rsplit("-", 1)[0], job["key"]
        if kind == "curves":
            add("PT: curves", job["cpu_s"])
        elif kind == "upstream":
            add(f"{key['method']}: upstream", job["cpu_s"])
        elif kind == "prepare":
            add("preparation (SUPMER, MetaPT)", job["cpu_s"])
        elif job["label"].startswith("pt (class labels)"):
            add("PT from class labels: tuning, start", job["cpu_s"])
        else:  # a target problem: PT's or a meta-trained arm's
            add(f"{key.get('method') or 'PT'}: tuning, {budget(key)}", job["cpu_s"])
    for sweep in sorted(glob.glob(str(folder / "sweeps" / "*" / "promptinit-sweep.json"))):
        _measured_sweep(Path(sweep).parent, read_json(sweep)["config"]["methods"][0], add, budget)
    return out


def _measured_sweep(sweep: Path, method: str, add, budget) -> None:
    """One search sweep's kept jobs and its trials' reports (``time/cpu_s``: steps and validation;
    none for a report replayed from another search's trial)."""
    for path in sorted(glob.glob(str(sweep / "final" / "*.json"))):
        job = read_json(path)
        kind, key = Path(path).stem.rsplit("-", 1)[0], job["key"]
        if kind == "upstream":
            add(f"{method}: upstream", job["cpu_s"])
        elif kind == "validation PT":  # PT's validation scores, the searches' baseline: not a trial report
            add(f"{method} searches: trials", job["cpu_s"], 0)
        elif kind == "re-score":
            add(f"{method} searches: re-score", job["cpu_s"])
        elif job["label"].startswith("calibrate"):
            add(f"{method} searches: calibration", job["cpu_s"])
        elif kind == "target":
            add(f"{key.get('method') or 'PT'}: tuning, {budget(key)}", job["cpu_s"])
    for report in _reports(sweep):  # a replayed report (trainables/replay.py) cost this study nothing
        add(f"{method} searches: trials", 0.0 if "replay/of" in report else report.get("time/cpu_s", 0.0))


def _reports(sweep: Path) -> list[dict]:
    """Every trial report of a search sweep (its trials' Tune ``result.json`` lines)."""
    return [
        json.loads(line)
        for results in sorted(glob.glob(str(sweep / "*" / "result.json")))
        for line in Path(results).read_text().splitlines()
        if line.strip()
    ]


def measured_markdown(cfg, rows: list[tuple[str, str, float]], kept: dict[str, Measured], cores: int) -> str:
    """The plan per phase beside the measured CPU-hours and the share of its work done."""
    planned: dict[str, float] = {}
    for arm, phase, cpu_s in rows:
        name = phase_of(cfg, arm, phase)
        planned[name] = planned.get(name, 0.0) + cpu_s
    out = "| phase | planned CPU h | measured CPU h (kept so far) | kept jobs | measured / planned |\n"
    out += "|---|---|---|---|---|\n"
    for phase in [*planned, *(p for p in kept if p not in planned)]:
        plan_h, m = planned.get(phase, 0.0) / 3600, kept.get(phase, Measured())
        ratio = "unplanned" if not plan_h else f"{m.cpu_s / 3600 / plan_h:.2f}" if m.done else "—"
        out += f"| {phase} | {plan_h:.2f} | {m.cpu_s / 3600:.2f} | {m.done} | {ratio} |\n"
    total_plan, total = sum(planned.values()) / 3600, sum(m.cpu_s for m in kept.values()) / 3600
    out += f"| **total** | **{total_plan:.1f}** | **{total:.1f}** | | {total / total_plan:.2f} |\n"
    wall = f"| wall h on {cores} cores (if every core stays busy) | {total_plan / cores:.1f} | {total / cores:.1f} |"
    return out + wall + " | |\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/study/cpu-v2.yaml")
    p.add_argument("--end-steps", type=int, nargs="+", default=[120, 180, 300])
    p.add_argument("--run-step-s", type=float, default=None, help="CPU s per downstream run-step (default: committed)")
    p.add_argument("--validation-problem-s", type=float, default=17.0)
    p.add_argument("--halving", type=float, default=1.0, help="share of run-steps lr halving keeps (140/240: 0.583)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument(
        "--measured",
        type=Path,
        default=None,
        help="a study's run folder: the plan at its end budget beside its kept jobs' CPU",
    )
    args = p.parse_args(argv)

    from promptinit.search.phases.study_config import load_study_config

    cfg = load_study_config(args.config)
    upstream, run_step = committed_units()
    units = Units(upstream, args.run_step_s or run_step, args.validation_problem_s, args.halving)
    print(
        f"# {args.config}: unit costs (CPU s) upstream per outer step "
        + ", ".join(f"{m} {v:.2f}" for m, v in sorted(upstream.items()))
        + f" (runs/cpu-study); downstream per run-step {units.run_step:.3f}; validation problem "
        f"{units.validation_problem:g}; lr halving share {units.halving:g}\n"
    )
    if args.measured is None:
        print(markdown({e: plan(cfg, units, e) for e in args.end_steps}, args.cores))
        return 0
    end = (
        read_json(args.measured / "study.json").get("downstream_steps")
        if (args.measured / "study.json").is_file()
        else None
    )
    ends = [end] if end else args.end_steps[-1:]
    print(f"end budget {ends[0]} steps ({'the study' if end else 'not known yet: the largest of --end-steps'})\n")
    print(measured_markdown(cfg, plan(cfg, units, ends[0]), measured(args.measured, cfg.study.start_steps), args.cores))
    now = study_units(args.measured, units, cfg)
    projected = sum(s for _, _, s in plan(cfg, now, ends[0])) / 3600
    print(
        f"\nprojected at the unit costs measured so far in {args.measured}: {projected:.1f} CPU-hours "
        f"({projected / args.cores:.1f} h of {args.cores} cores); upstream per outer step "
        + ", ".join(
            f"{m} {v:.2f}{'' if v == units.upstream_step.get(m) else ' (measured)'}"
            for m, v in sorted(now.upstream_step.items())
        )
        + f"; downstream per run-step {now.run_step:.3f}{' (measured)' if now.run_step != units.run_step else ''}"
        + f"; validation problem {now.validation_problem:.1f}"
        + (" (measured)" if now.validation_problem != units.validation_problem else "")
        + "".join(f"; {m} trial report {v:.0f} (measured)" for m, v in sorted(now.report_s.items()))
    )
    saving = replay_saving(cfg, now, args.measured) / 3600
    if saving:
        print(
            f"trial replay (search.replay) may save up to {saving:.1f} CPU-hours of that: "
            f"{min(cfg.search.startup_trials, cfg.budget.num_samples)} trials of each search not started yet that "
            f"repeats another's start, at its average trial's cost (not subtracted above; a resume before "
            f"they run shares fewer)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
