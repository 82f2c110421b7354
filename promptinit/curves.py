"""PT's dev learning curves: how many downstream steps PT needs on a set of target tasks.

A study must tune long enough that PT itself has converged, and pick that step count from PT's
curves rather than by guess. ``pt_curves`` tunes PT (the sampled-vocabulary init of
``pt_baseline``) on every (task, seed, lr) as one batched run and records the best dev score so
far after each evaluation; ``summarize`` gives, per evaluation step, the mean over the (task,
seed) pairs with its 95 % interval for each lr and for the lr chosen on dev per pair;
``enough_steps`` is the first evaluation step whose selected mean is within a tolerance of the
last one's, and ``converged_steps`` the first at which it gained less than a tolerance over the
last quarter of its steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from promptinit import stats
from promptinit.files import atomic_write
from promptinit.tuning import TuneConfig

CHOSEN = "lr chosen on dev"  # the column of ``summarize`` for the per-pair selected lr


def running_best(curve: Iterable[Mapping]) -> dict[int, float]:
    """``{step: best dev so far}`` of one run's dev curve (``[{"step", "dev"}]``; step 0: the init)."""
    out, best = {}, float("-inf")
    for point in sorted(curve, key=lambda p: p["step"]):
        best = max(best, float(point["dev"]))
        out[int(point["step"])] = best
    return out


def pt_curves(backbone, tasks, seeds: Sequence[int], tuning: TuneConfig, progress: bool = False) -> list[dict]:
    """Tune PT on every (task, seed, lr of ``tuning.lrs``) for ``tuning.steps`` steps, dev every
    ``tuning.eval_every``.

    Returns:
        Records ``{"task", "seed", "lr", "step", "best_dev"}``: the best dev score so far of each
        run at each evaluation step (step 0: the initial prompt).
    """
    from promptinit.batched import TuneProblem, tune_prompts

    keys, problems = [], []
    for task in tasks:
        for seed in seeds:
            fs = tuning.few_shot(task, seed)
            for config in tuning.candidates():
                keys.append((task.name, int(seed), float(config.single_lr)))
                problems.append(TuneProblem(fs, backbone.init_prompt("vocab", seed=seed), config))
    results = tune_prompts(backbone, problems, dataclasses.replace(tuning, lr=tuning.lrs[0]), progress=progress)
    out = []
    for (task, seed, lr), r in zip(keys, results, strict=True):
        for step, value in running_best([{"step": 0, "dev": r.init_dev}, *r.curve]).items():
            out.append({"task": task, "seed": seed, "lr": lr, "step": step, "best_dev": value})
    return out


@dataclass(frozen=True)
class CurveSummary:
    """``summarize``'s result.

    Attributes:
        steps: the evaluation steps.
        columns: ``"lr 0.5"``, ... and ``CHOSEN``.
        rows: per step, column -> mean best-dev-so-far over the pairs with its 95 % interval.
        pairs: the (task, seed) pairs the means rest on.
        chosen_lr: per pair, the lr with the best dev score at the last step (ties: earlier lr).
    """

    steps: tuple[int, ...]
    columns: tuple[str, ...]
    rows: tuple[dict, ...]
    pairs: tuple[tuple[str, int], ...]
    chosen_lr: dict


def _interval(values: Mapping[tuple[str, int], float]) -> stats.Interval:
    """Mean over (task, seed) pairs with ``stats.compare``'s 95 % interval (tasks weigh alike,
    seeds resampled within a task), clipped to [0, 1]."""
    i = stats.compare(values, {k: 0.0 for k in values}).diff
    return stats.Interval(i.mean, max(i.lo, 0.0), min(i.hi, 1.0))


def summarize(records: Iterable[Mapping]) -> CurveSummary:
    """Per evaluation step, the mean best dev so far (with its 95 % interval) per lr and for the
    lr chosen on dev per (task, seed) pair, as the selection sees it at that step."""
    best: dict[tuple[str, int, float], dict[int, float]] = {}
    for r in records:
        best.setdefault((str(r["task"]), int(r["seed"]), float(r["lr"])), {})[int(r["step"])] = float(r["best_dev"])
    if not best:
        raise ValueError("no curve records")
    lrs = list(dict.fromkeys(lr for _, _, lr in best))
    pairs = tuple(sorted({(t, s) for t, s, _ in best}))
    steps = tuple(sorted({step for curve in best.values() for step in curve}))
    columns = (*(f"lr {lr:g}" for lr in lrs), CHOSEN)
    rows = []
    for step in steps:
        row: dict[str, int | stats.Interval] = {"step": step}
        for lr in lrs:
            row[f"lr {lr:g}"] = _interval({p: best[(*p, lr)][step] for p in pairs})
        row[CHOSEN] = _interval({p: max(best[(*p, lr)][step] for lr in lrs) for p in pairs})
        rows.append(row)
    last = steps[-1]
    chosen = {p: max(lrs, key=lambda lr: (best[(*p, lr)][last], -lrs.index(lr))) for p in pairs}
    return CurveSummary(steps, columns, tuple(rows), pairs, chosen)


def enough_steps(summary: CurveSummary, tolerance: float) -> int:
    """The first evaluation step whose selected-lr mean is within ``tolerance`` (a fraction, e.g.
    0.01 for one point) of the last step's."""
    last = summary.rows[-1][CHOSEN].mean
    return next(r["step"] for r in summary.rows if r[CHOSEN].mean >= last - tolerance)


def converged_steps(summary: CurveSummary, tolerance: float, share: float = 0.25, at_least: int = 0) -> int:
    """PT's convergence: the first evaluation step N >= ``at_least`` at which the selected-lr mean
    best dev so far gained less than ``tolerance`` (a fraction) over the last ``share`` of its
    steps, i.e. since the last evaluation at or before (1 - ``share``) x N; the last step (the cap)
    when no evaluation meets it. Unlike ``enough_steps`` it does not depend on where the curves
    stop, only on how they flatten.

    Example: means 40, 50, 55, 57, 57.5 % at steps 0, 20, 40, 60, 80 with a 1-point tolerance: at
    40 the gain since 20 is 5 points, at 60 it is 2 since 40, at 80 it is 0.5 since 60: N = 80.
    """
    means = {r["step"]: r[CHOSEN].mean for r in summary.rows}
    for step in summary.steps:
        if step <= 0 or step < at_least:
            continue
        since = max(s for s in summary.steps if s <= (1 - share) * step)
        if means[step] - means[since] < tolerance:
            return step
    return summary.steps[-1]


def markdown(summary: CurveSummary) -> str:
    """The summary as a Markdown table, in %."""
    head = "| step | " + " | ".join(summary.columns) + " |\n|---|" + "---|" * len(summary.columns) + "\n"
    body = "".join(
        f"| {r['step']} | "
        + " | ".join(f"{100 * r[c].mean:.1f} [{100 * r[c].lo:.1f}, {100 * r[c].hi:.1f}]" for c in summary.columns)
        + " |\n"
        for r in summary.rows
    )
    return head + body


FIELDS = ("task", "seed", "lr", "step", "best_dev")


def write_csv(records: Iterable[Mapping], path) -> None:
    """``pt_curves``'s records as CSV (written whole, then renamed into place)."""
    import csv
    import io

    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=FIELDS)
    w.writeheader()
    for r in records:
        w.writerow({k: r[k] for k in FIELDS})
    atomic_write(path, text.getvalue())


def read_csv(path) -> list[dict]:
    """Records written by ``write_csv``."""
    import csv

    with open(path, newline="") as f:
        return [
            {
                "task": r["task"],
                "seed": int(r["seed"]),
                "lr": float(r["lr"]),
                "step": int(r["step"]),
                "best_dev": float(r["best_dev"]),
            }
            for r in csv.DictReader(f)
        ]
