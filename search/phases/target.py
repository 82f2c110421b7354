"""Phase 6, target: PT and every (arm, upstream seed) tuned on each target task x few-shot seed.

Scores are keyed ``(task, seed, upstream seed)`` for ``promptinit.stats``; PT's ``(task, seed)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptinit.search.phases.arms import start_from
from promptinit.search.phases.jobs import PT_START, Pair, Start, score_jobs, scores_by_owner
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
) -> TargetScores:
    """Tune PT, every checkpoint's arm and every start of ``also`` on every (task, seed).

    Args:
        ctx: the sweep's context.
        chosen: arm -> its configuration; ``checkpoints`` are keyed by (arm, upstream seed).
        tasks: the target tasks; ``seeds``: few-shot seeds; ``tuning``: ``TuneConfig`` fields.
        also: more arms without an upstream run (a study's PT from class labels), keyed by arm;
            their scores are keyed ``(task, seed)`` like PT's.
    """
    jobs = score_jobs(ctx.backbone, "PT", tasks, seeds, tuning, PT_START, ("pt", None))
    for arm, start in (also or {}).items():
        jobs += score_jobs(ctx.backbone, arm, tasks, seeds, tuning, start, (arm, None))
    for (arm, u), checkpoint in checkpoints.items():
        start = start_from(ctx, chosen[arm], checkpoint, u)
        jobs += score_jobs(ctx.backbone, f"{arm} (upstream seed {u})", tasks, seeds, tuning, start, (arm, u))
    by_owner = scores_by_owner(jobs, ctx.runner.run("target", jobs))
    arms: dict[str, dict[tuple, float]] = {}
    for (arm, upstream_seed), scores in by_owner.items():
        if upstream_seed is None:  # PT, or an arm of `also`
            arms[arm] = dict(scores)
        else:
            arms.setdefault(arm, {}).update({(task, seed, upstream_seed): v for (task, seed), v in scores.items()})
    return TargetScores(arms.pop("pt"), arms)
