"""Phase 6, target: PT and every (arm, upstream seed) tuned on each target task x few-shot seed,
every problem of a task in one batched run (``jobs.run_scores``).

Scores are keyed ``(task, seed, upstream seed)`` for ``promptinit.stats``; PT's ``(task, seed)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptinit.search.phases.arms import start_from
from promptinit.search.phases.jobs import PT_START, Pair, Start, problems_for, run_scores
from promptinit.search.phases.prepare import Context
from promptinit.search.phases.searching import Candidate
from promptinit.search.phases.upstream import Checkpoints


@dataclass(frozen=True)
class TargetScores:
    """PT's scores, and each arm's keyed ``(task, seed, upstream seed)``."""

    pt: dict[Pair, float]
    arms: dict[str, dict[tuple, float]]  # (task, seed, upstream seed) -> score; (task, seed) for arms of `also`


def run(
    ctx: Context,
    chosen: Mapping[str, Candidate],
    checkpoints: Checkpoints,
    tasks: Sequence[Any],
    seeds: Sequence[int],
    tuning: dict,
    also: Mapping[str, Start] | None = None,
    also_seeds: Sequence[int] | None = None,
) -> TargetScores:
    """Tune PT, every checkpoint's arm and every start of ``also`` on every (task, seed).

    Args:
        ctx: the sweep's context.
        chosen: arm -> its configuration; ``checkpoints`` are keyed by (arm, upstream seed).
        tasks: the target tasks; ``seeds``: few-shot seeds; ``tuning``: ``TuneConfig`` fields.
        also: more arms without an upstream run (a study's PT from class labels), keyed by arm;
            their scores are keyed ``(task, seed)`` like PT's; ``also_seeds``: the few-shot seeds they
            are tuned on (default ``seeds``).
    """
    problems = problems_for("PT", ("pt", None), tasks, seeds, PT_START)
    for arm, start in (also or {}).items():
        problems += problems_for(arm, (arm, None), tasks, seeds if also_seeds is None else also_seeds, start)
    for (arm, u), checkpoint in checkpoints.items():
        start = start_from(ctx, chosen[arm], checkpoint, u)
        problems += problems_for(f"{arm} (upstream seed {u})", (arm, u), tasks, seeds, start)
    by_owner = run_scores(ctx.runner, "target", ctx.backbone, tuning, problems)
    arms: dict[str, dict[tuple, float]] = {}
    for (arm, upstream_seed), scores in by_owner.items():
        if upstream_seed is None:  # PT, or an arm of `also`
            arms[arm] = dict(scores)
        else:
            arms.setdefault(arm, {}).update({(task, seed, upstream_seed): v for (task, seed), v in scores.items()})
    return TargetScores(arms.pop("pt"), arms)
