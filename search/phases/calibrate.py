"""Calibration (``search.calibrate: k``): does the search objective predict the target?

A search ranks trials by their validation objective and trusts that ranking to carry over to
the target tasks. This phase measures it: ``k`` trials of each method, spread evenly over the
validation ranking (the best, the worst and between; the method's choice always among them),
are tuned on the target tasks from their own search checkpoint, in the target phase's batched
runs beside PT. Per trial: its validation objective and its target difference to PT (mean over
the target (task, seed) pairs it was tuned on, in points: all of them, or the seeds of
``search.calibrate_seeds``). ``analysis.calibration`` turns them into Spearman's
rho with a bootstrap interval and the rank the chosen trial holds on the target; the sweep writes
``calibration.{md,csv}`` and ``promptinit report`` shows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from promptinit.search.phases.arms import start_from
from promptinit.search.phases.jobs import Pair, Start
from promptinit.search.phases.prepare import Context
from promptinit.search.phases.searching import Candidate
from promptinit.trainables import metrics as M

PREFIX = "calibrate "  # the target phase's arm label of a calibrated trial: "calibrate <trial id>"


@dataclass(frozen=True)
class Calibrated:
    """One calibrated trial: its validation objective and its target difference to PT."""

    method: str
    trial_id: str
    val_rank: int  # 1 = the search's best
    val_arg: float
    rescored_arg: float  # NaN unless it was re-scored (a top_k trial)
    target_diff: float  # mean over its target pairs of (trial - PT), a fraction
    pairs: int
    chosen: bool
    val_delta: float = float("nan")  # its validation score difference to PT (``val/delta``), a fraction
    objective: str = "arg"  # the search's objective (``search.objective``); "arg" before 6 Dec 2026


def spread(ranked: Sequence[Candidate], k: int, chosen: Candidate | None) -> list[tuple[int, Candidate]]:
    """``k`` of ``ranked`` (best first) at evenly spaced ranks, best and worst included, plus the
    chosen trial if it fell between: ``[(rank from 1, candidate), ...]`` in rank order."""
    if k <= 0 or not ranked:
        return []
    picks = {int(round(i)) for i in np.linspace(0, len(ranked) - 1, num=min(k, len(ranked)))}
    if chosen is not None:
        picks |= {i for i, c in enumerate(ranked) if c.trial_id == chosen.trial_id}
    return [(i + 1, ranked[i]) for i in sorted(picks)]


def starts(
    ctx: Context, ranked: Mapping[str, Sequence[Candidate]], chosen: Mapping[str, Candidate], k: int
) -> dict[str, Start]:
    """The target phase's extra arms: each calibrated trial tuned from its search checkpoint."""
    return {
        f"{PREFIX}{c.trial_id}": start_from(ctx, c, c.checkpoint, ctx.seed)
        for method, cs in ranked.items()
        for _, c in spread(cs, k, chosen.get(method))
    }


def split(
    arms: Mapping[str, dict[tuple, float]],
) -> tuple[dict[str, dict[tuple, float]], dict[str, dict[Pair, float]]]:
    """The target phase's arms without the calibrated trials, and those trials' scores by trial id."""
    kept = {a: s for a, s in arms.items() if not a.startswith(PREFIX)}
    trials = {a[len(PREFIX) :]: dict(s) for a, s in arms.items() if a.startswith(PREFIX)}
    return kept, trials


def rows(
    ranked: Mapping[str, Sequence[Candidate]],
    chosen: Mapping[str, Candidate],
    rescored: Mapping[str, Sequence[Candidate]],
    k: int,
    scores: Mapping[str, Mapping[Pair, float]],
    pt: Mapping[Pair, float],
    objective: str,
) -> list[Calibrated]:
    """One ``Calibrated`` per trial of ``spread``, from its target ``scores`` and PT's."""
    again = {c.trial_id: c.rescored_arg for cs in rescored.values() for c in cs}
    out = []
    for method, cs in ranked.items():
        choice = chosen.get(method)
        for rank, c in spread(cs, k, choice):
            mine = scores[c.trial_id]  # its pairs: PT's, or those of `search.calibrate_seeds`
            diff = float(np.mean([mine[p] - pt[p] for p in mine]))
            out.append(
                Calibrated(
                    method,
                    c.trial_id,
                    rank,
                    c.val_arg,
                    float(again.get(c.trial_id, float("nan"))),
                    diff,
                    len(mine),
                    choice is not None and c.trial_id == choice.trial_id,
                    float(c.metrics.get(M.VAL_DELTA, float("nan"))),
                    objective,
                )
            )
    return out
