"""A study's first phase, curves: PT's dev curves on the targets decide every arm's downstream steps.

PT (vocabulary init) is tuned on every target (task, curve seed, lr of ``target.tuning.lr``) for
``target.tuning.steps`` steps, dev every ``eval_every``. The step count comes from the mean
best-dev-so-far (lr chosen on dev per pair) by ``study.curves.rule``: ``last``, the first
evaluation within ``study.curves.tolerance`` points of the last one's; ``converged``, the first
evaluation (one past ``study.start_steps`` at least) that gained less than that over the last
quarter of its steps, else the cap (then PT had not converged, and the log and ``study.json`` say
so). Writes ``pt_curves.{csv,md}`` (``promptinit report`` draws them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from promptinit.files import atomic_write
from promptinit.search.phases.jobs import Job
from promptinit.search.phases.prepare import Context
from promptinit.search.phases.study_config import CURVES_CSV, CURVES_MD, StudyConfig

logger = logging.getLogger(__name__)


def run(ctx: Context, cfg: StudyConfig, tasks: Sequence[Any]) -> tuple[int, dict, dict]:
    """``(downstream steps, the tuning every arm uses, how the rule found them)`` from PT's dev
    curves (one job per task). How: ``rule``, and for ``converged`` whether PT converged by the cap
    and its ``gain`` (points) over the last quarter of the chosen steps."""
    from promptinit import curves
    from promptinit.evaluation import TuneConfig
    from promptinit.trainables.scoring import curve_job

    tuning, seeds = dict(cfg.target.tuning), cfg.curve_seeds
    jobs = [
        Job(
            f"PT curves {t.name}, seeds {' '.join(map(str, seeds))}",
            curve_job,
            dict(backbone=ctx.backbone, tasks=[t], seeds=seeds, tuning=tuning),
            {"backbone": ctx.backbone, "task": t.fingerprint, "seeds": seeds, "tuning": tuning, "curves": True},
        )
        for t in tasks
    ]
    records = [r for value in ctx.runner.run("curves", jobs) for r in value]
    summary = curves.summarize(records)
    rule, tolerance = cfg.study.curves.rule, cfg.study.curves.tolerance / 100
    if rule == "converged":
        # with a start budget, the end is at least one evaluation past it: two budgets, never one twice
        start = cfg.study.start_steps
        at_least = start + tuning.get("eval_every", 50) if start else 0
        found = curves.converged_steps(summary, tolerance, at_least=at_least)
        gain = 100 * last_quarter_gain(summary, found)
        converged = gain < cfg.study.curves.tolerance
        record = {"rule": rule, "converged": converged, "gain": round(gain, 2)}
        how = (
            f"the first evaluation that gained under {cfg.study.curves.tolerance:g} points over its last quarter"
            if converged
            else f"the cap: PT had not converged, its curve still gained {gain:.1f} points over the last quarter"
        )
    else:
        found = curves.enough_steps(summary, tolerance)
        record = {"rule": rule}
        how = f"the first evaluation within {cfg.study.curves.tolerance:g} points of the last one's"
    # at least one evaluation's worth: a curve already flat at the initial prompt still gets tuned
    steps = max(found, tuning.get("eval_every", 50))
    curves.write_csv(records, cfg.sweep_dir / CURVES_CSV)
    atomic_write(cfg.sweep_dir / CURVES_MD, curves.markdown(summary))
    logger.info(
        "\nPT's dev curves (best dev so far, %%, mean over %d pairs [95 %% CI]):\n%s\ndownstream steps: %d "
        "(%s; the curves end at step %d)",
        len(summary.pairs),
        curves.markdown(summary),
        steps,
        how,
        summary.steps[-1],
    )
    return steps, TuneConfig(**{**cfg.target.tuning, "steps": steps}).key_fields(), record


def last_quarter_gain(summary: Any, step: int, share: float = 0.25) -> float:
    """What PT's mean dev curve (lr chosen on dev) gained over the last ``share`` of ``step`` steps:
    the quantity ``promptinit.curves.converged_steps`` compares with its tolerance (a fraction)."""
    from promptinit.curves import CHOSEN

    means = {r["step"]: r[CHOSEN].mean for r in summary.rows}
    return means[step] - means[max(s for s in summary.steps if s <= (1 - share) * step)]
