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

Usage:
    python benchmarks/study_plan.py --config configs/study/cpu-v2.yaml --end-steps 120 180 300
"""

from __future__ import annotations

import argparse
import glob
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptinit.errors import read_json

STUDY = Path("runs/cpu-study")
TARGET_RUN_STEPS = 5 * 4 * 60  # a committed target job: 5 few-shot seeds x 4 lrs x 60 steps


@dataclass(frozen=True)
class Units:
    """Measured unit costs (CPU seconds)."""

    upstream_step: dict[str, float]  # per outer step, by method
    run_step: float  # per downstream run-step
    validation_problem: float  # per validation problem
    halving: float = 1.0  # share of run-steps lr halving keeps (1: full selection)


def committed_units(study: Path = STUDY) -> tuple[dict[str, float], float]:
    """``(CPU s per outer step by method, CPU s per downstream run-step)`` from a study's kept jobs."""
    per_step: dict[str, list[float]] = {}
    for path in glob.glob(str(study / "final" / "upstream-*.json")):
        job = read_json(path)
        key = job["key"]
        if key["settings"].get("use_mgr", True) and key["settings"].get("curriculum") != "none":  # not an ablation
            per_step.setdefault(key["method"], []).append(job["cpu_s"] / key["steps"])
    target = [read_json(p)["cpu_s"] for p in glob.glob(str(study / "final" / "target-*.json"))]
    target = [c for c in target if c > 1]  # PT's target jobs read the curves' cache (0.3 CPU s)
    return {m: sum(v) / len(v) for m, v in per_step.items()}, sum(target) / len(target) / TARGET_RUN_STEPS


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
    """A search arm's trials (upstream and validation), re-score, calibration and fresh upstream runs."""
    b, s, v = cfg.budget, cfg.search, cfg.validation
    steps = max(b.steps)
    reports = asha_reports(b.num_samples, math.ceil(steps / b.steps_per_report), cfg.scheduler.reduction_factor)
    tasks = len(_validation(cfg))
    per_report = tasks * len(v.seeds) * units.validation_problem
    step_s = units.upstream_step[arm.method]
    return [
        (arm.label, f"trials: {b.num_samples} x <= {steps} steps (ASHA)", reports * b.steps_per_report * step_s),
        (arm.label, f"validation: {reports:.0f} reports x {tasks * len(v.seeds)} problems", reports * per_report),
        (arm.label, "re-score", s.top_k * tasks * len(v.rescore_seeds) * units.validation_problem),
        (arm.label, f"calibration: {s.calibrate} trials", s.calibrate * pairs * problem_s),
        (arm.label, f"choice upstream {steps} steps x {len(cfg.target.upstream_seeds)}",
         steps * len(cfg.target.upstream_seeds) * step_s),
    ]


def _partition(cfg):
    from promptinit.search.phases.config import load_partition

    return load_partition(cfg)


def _targets(cfg) -> Sequence[str]:
    return list(_partition(cfg).target)


def _validation(cfg) -> Sequence[str]:
    return list(_partition(cfg).validation)


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
    out += f"| wall h on {cores} cores (if every core stays busy) | | " + " | ".join(
        f"{t / cores:.1f}" for t in totals
    ) + " |\n"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/study/cpu-v2.yaml")
    p.add_argument("--end-steps", type=int, nargs="+", default=[120, 180, 300])
    p.add_argument("--run-step-s", type=float, default=None, help="CPU s per downstream run-step (default: committed)")
    p.add_argument("--validation-problem-s", type=float, default=17.0)
    p.add_argument("--halving", type=float, default=1.0, help="share of run-steps lr halving keeps (140/240: 0.583)")
    p.add_argument("--cores", type=int, default=2)
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
    print(markdown({e: plan(cfg, units, e) for e in args.end_steps}, args.cores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
