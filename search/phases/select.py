"""Phase 4, select: each method's top trials re-scored on fresh validation seeds; the best re-scored one is chosen.

"Best" is by the search objective (``search.objective``: the score difference to PT, or ARG).

The search's maximum over noisy evaluations is biased upwards (the winner's curse); a score on
fresh few-shot seeds (``validation.rescore_seeds``) is not, so each method's choice is its best
re-scored candidate. Both values are written to ``selection.{md,csv}`` and reach the report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from promptinit.search.phases.arms import start_from
from promptinit.search.phases.check import Checked
from promptinit.search.phases.jobs import PT_START, problems_for, run_scores
from promptinit.search.phases.prepare import Context
from promptinit.search.phases.searching import Candidate, Searched
from promptinit.trainables import metrics as M

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selected:
    """Each method's candidates (re-scored) and its choice, and the selection table written."""

    candidates: dict[str, list[Candidate]]
    chosen: dict[str, Candidate]
    fresh_seeds: list[int]
    files: list[Path]


def run(checked: Checked, ctx: Context, searched: Searched) -> Selected:
    """Re-score every candidate on fresh validation seeds against PT on those seeds; choose."""
    from promptinit.analysis import write_selection
    from promptinit.trainables.scoring import validation_metrics

    cfg, tasks = checked.cfg, checked.tasks.validation
    seeds, tuning = cfg.validation.fresh_seeds(), cfg.validation.tuning_dict()
    problems = problems_for("PT", ("pt", None), tasks, seeds, PT_START)
    for c in (c for cs in searched.candidates.values() for c in cs):
        start = start_from(ctx, c, c.checkpoint, ctx.seed)
        problems += problems_for(f"{c.method} trial {c.trial_id}", (c.trial_id, ctx.seed), tasks, seeds, start)
    scores = run_scores(ctx.runner, "re-score", ctx.backbone, tuning, problems)
    baseline = scores[("pt", None)]
    rescored = {
        m: [dataclasses.replace(c, rescored=validation_metrics(scores[(c.trial_id, ctx.seed)], baseline)) for c in cs]
        for m, cs in searched.candidates.items()
    }
    objective = cfg.search.objective
    chosen = choose(rescored, objective)
    rows = selection_rows(rescored, chosen, objective)
    text, files = write_selection(rows, cfg.sweep_dir, cfg.validation.seeds, seeds)
    logger.info("\n%s", text)
    return Selected(rescored, chosen, seeds, list(files))


def choose(candidates: Mapping[str, list[Candidate]], objective: str) -> dict[str, Candidate]:
    """Each method's candidate with the best re-scored validation ``objective`` (a key of
    ``metrics.OBJECTIVES``; on a tie, the one the search ranked higher)."""
    return {m: max(cs, key=lambda c: c.rescored_value(objective)) for m, cs in candidates.items() if cs}


def selection_rows(
    candidates: Mapping[str, list[Candidate]], chosen: Mapping[str, Candidate], objective: str
) -> list[dict]:
    """One row per candidate (``analysis.write_selection``): the search's validation objective
    and its SE next to the re-scored ones."""
    se_key = M.OBJECTIVES[objective][1]
    return [
        {
            "method": m,
            "rank_in_search": rank,
            "trial_id": c.trial_id,
            "step": c.step,
            "objective": objective,
            "val": c.value(objective),
            "val_se": float(c.metrics.get(se_key, math.nan)),
            "rescored": c.rescored_value(objective),
            "rescored_se": float(c.rescored.get(se_key, math.nan)),
            "chosen": chosen.get(m) is c,
            "settings": json.dumps(c.settings, default=str),
        }
        for m, cs in candidates.items()
        for rank, c in enumerate(cs, start=1)
    ]
