"""Paper-style tables from the tidy results: Markdown for reading, CSV (long form) for reuse.

- ``arg_table`` / ``arg_markdown`` / ``write_target_table``: each method's best prompt against
  prompt tuning on the target tasks, from the per-pair test scores (``promptinit.stats.compare``):
  the absolute difference in points (the headline), ARG and P(>PT) per cell, each as
  ``mean [95 % CI]``, the Wilcoxon p-value and its Holm adjustment over the table's rows, a
  verdict (``promptinit.stats.verdict``: better or worse than PT, equivalent to PT within δ points,
  or undetermined) and how many tasks, seeds and test examples it rests on.
  ``write_target_table`` is the one writer of ``arg_table.{md,csv}`` (+ ``target_scores.csv``):
  ``search/sweep.py`` and ``promptinit report`` both call it;
- ``validation_table``: what the search saw: the best validation objective per method (with its standard
  error over validation pairs) and the range over its trials (the hyperparameter sensitivity
  the papers warn about);
- ``task_gains``: difference and relative gain per target task, mean [95 % CI] over its seeds;
- ``contrasts``: one arm against another on the same pairs (a study's ablations, meta-learning
  against MTL, a search against its preset, TPE against random), Δ and P(a > b) with CIs, Wilcoxon
  and Holm p;
- ``cost_table``: trials, wall / CPU / GPU hours and ARG per accelerator-hour;
- ``best_so_far``: the best validation objective found so far against cumulative compute, per sweep
  and method (to compare searchers at equal compute).

Values are fractions in the CSVs and percentages (points for differences) in the Markdown.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptinit.analysis.results import (
    ARG_TABLE,
    OBJECTIVE_VALUES,
    SCORE_COLUMNS,
    TARGET_SCORES,
    pair_records,
    target_row,
)
from promptinit.files import atomic_write
from promptinit.stats import (
    DELTA,
    EXACT_FLIPS,
    LEVEL,
    LOW_BASELINE,
    MIN_BASELINE,
    NOT_AFTER_HOLM,
    RESAMPLES,
    WHOLE,
    Comparison,
    Interval,
    compare,
    equivalent,
    holm,
    verdict,
)

TABLE_MD = "arg_table.md"
UNDETERMINED = "undetermined: no interval (one seed per task)"  # the verdict when there is no interval
NO_TRIAL = "no finished trial"
NOT_COUNTS = (
    "Wilcoxon p on the scores as recorded: not every score is a whole number of correct answers out of its "
    "test examples (a metric such as macro-F1 or ROUGE-L, or unknown test sizes)"
)


def verdict_words(delta: float = DELTA, than: str = "PT", rows: str = "rows") -> str:
    """How a table's verdicts read, for its note (``rows``: what Holm's family is)."""
    return (
        f'"better than {than}" or "worse than {than}": the Δ interval lies wholly above or below 0; '
        f'"{equivalent(delta, than)}": it holds 0 and lies between −{100 * delta:g} and +{100 * delta:g} points '
        '(the equivalence margin); "undetermined: interval too wide": it holds 0 and reaches past that margin. '
        '"(not after Holm)": the '
        f"Wilcoxon p adjusted by Holm's method over the table's {rows} is not below {1 - LEVEL:.2g}, so the "
        "effect does not survive the correction for testing them all"
    )


def arg_note(delta: float = DELTA) -> str:
    """The explanation under the target table (``delta``: its equivalence margin)."""
    return (
        f"Cells: mean [{100 * LEVEL:.0f} % CI] over (target task, few-shot seed) pairs, by a hierarchical bootstrap "
        f"({RESAMPLES} resamples; upstream seeds, when the method was meta-trained with several, resampled once for "
        "all tasks, then few-shot seeds within each task, so every task keeps its weight; rescaled per level and "
        "widened by t at the Welch-Satterthwaite degrees of freedom; promptinit.stats). "
        "Δ: test score of the method minus that of prompt tuning from a sampled-vocabulary init "
        "(PT), in points (the headline). ARG: relative gain (s − s_PT) / s_PT averaged over tasks, in % (s_PT "
        f"clamped at {MIN_BASELINE} as a guard; pairs with s_PT < {LOW_BASELINE} make ARG unreliable and are "
        "flagged). P(>PT) per cell: the share of cells, one (task, few-shot seed, upstream seed) score each, that "
        "the method wins (ties count half), averaged over tasks: a pair counts once per upstream seed. Wilcoxon p: "
        "two-sided signed-rank test of the pair differences (the method averaged over its upstream seeds), on "
        f"counts of correct answers, exact (with ties: all sign flips up to {EXACT_FLIPS} pairs, else the normal "
        "approximation); Holm p: that p adjusted over the table's rows. Verdict: " + verdict_words(delta) + ". "
        "Rests on: tasks × few-shot seeds (× upstream seeds), and the test examples behind each score. Val: the "
        "chosen trial's validation score by the sweep's search objective (Δ in points or ARG in %, "
        "`search.objective`), in the search and re-scored on fresh few-shot seeds (selection.md: the choice "
        "among each method's best trials, by that objective)."
    )


ARG_NOTE = arg_note()
ARG_COLUMNS = [
    "partition",
    "method",
    "diff_mean",
    "diff_lo",
    "diff_hi",
    "arg_mean",
    "arg_lo",
    "arg_hi",
    "p_improve_mean",
    "p_improve_lo",
    "p_improve_hi",
    "p_value",
    "p_holm",
    "p_method",
    "verdict",
    "distinguishable",
    "n_tasks",
    "n_seeds",
    "n_upstream",
    "n_pairs",
    "n_test_min",
    "n_test_max",
    "test_per_seed",
    "low_baseline",
    "val_arg",
    "val_arg_se",
    "val_arg_rescored",
    "val_arg_rescored_se",
    "objective",
    *OBJECTIVE_VALUES,
    "trials",
    "finished",
    "trial_id",
    "settings",
    "note",
]


def pct(mean: float) -> str:
    """``+20.0`` (fractions in, percent out); ``n/a`` for a missing value."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{100 * mean:+.1f}".replace("-", "\u2212")


def ci_cell(mean: float, lo: float, hi: float, **fmt: Any) -> str:
    """``+3.1 [−0.8, +7.0]`` (``Interval.fmt``; ``fmt`` passes its scale / digits / signed);
    ``+3.1 [no CI]`` when the bounds are missing, ``n/a`` when the mean is."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if math.isfinite(lo) and math.isfinite(hi):
        return Interval(mean, lo, hi).fmt(**fmt)
    return Interval(mean, mean, mean).fmt(**fmt).split(" [")[0] + " [no CI]"  # the mean, formatted alike


def pct_se(mean: float, se: float) -> str:
    """``+20.0 (SE 3.1)``: a mean with its standard error, in %."""
    if mean is None or not math.isfinite(mean):
        return "—"
    return f"{pct(mean)} (SE {100 * se:.1f})" if se is not None and math.isfinite(se) else f"{pct(mean)} (SE n/a)"


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    cells = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def _order(values) -> list:
    return list(dict.fromkeys(values))


# --------------------------------------------------------------------------- target table


def target_rows(targets: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict]:
    """Target rows (``analysis.results.TARGET_COLUMNS``) from a frame or from plain mappings.

    A mapping needs ``partition`` and ``method``; with ``scores`` (the method's test score per
    ``(task, seed)``), ``baseline`` (PT's) and optionally ``n_test`` (test examples per
    ``(task, seed)``) it gets intervals; ``trial_id``, ``val_arg``, ``val_arg_se``, ``trials``,
    ``finished``, ``settings`` and ``sweep`` are carried into the table when given.
    """
    records = targets.to_dict("records") if isinstance(targets, pd.DataFrame) else [dict(t) for t in targets]
    out = []
    for r in records:

        def get(name, default=math.nan, r=r):  # absent, None or NaN (a frame's empty cell): the default
            v = r.get(name)
            return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

        out.append(
            target_row(
                get("sweep", ""),
                r["partition"],
                r["method"],
                get("trial_id", ""),
                get("scores", {}),
                get("baseline", {}),
                get("n_test", {}),
                get("arg_mean"),
                get("n_seeds", 0),
                get("per_task", {}),
                get("val_arg"),
                get("val_arg_se"),
                get("trials"),
                get("finished"),
                get("settings", {}),
                get("val_arg_rescored"),
                get("val_arg_rescored_se"),
                get("test_per_seed", None),
                objective=get("objective", "arg"),
                val={k: get(k) for k in OBJECTIVE_VALUES},
            )
        )
    return out


def counted_sizes(scores: Mapping[tuple, float], row: Mapping[str, Any]) -> Mapping[tuple, int] | None:
    """The row's test sizes when ``scores`` (and PT's) are whole numbers of correct answers out of
    them, so ``compare`` tests exact counts; None when a size is missing or a score is not such a
    share (macro-F1, ROUGE-L): the test then takes the scores as recorded, and the note says so."""
    sizes = row.get("n_test") or {}
    if any((k[0], k[1]) not in sizes for k in scores):
        return None
    for key, value in [*scores.items(), *row["baseline"].items()]:
        exact = float(value) * int(sizes[(key[0], key[1])])
        if abs(exact - round(exact)) > WHOLE:
            return None
    return sizes


def comparison_of(row: Mapping[str, Any], delta: float = DELTA) -> Comparison | None:
    """``promptinit.stats.compare`` of a target row's per-pair scores with PT's (None without them),
    on counts of correct answers when the scores are shares of their test examples (``counted_sizes``).
    ``compare`` orders the pairs itself, so a study's own table and the report (which reads the
    scores back from CSV in another order) give the same cells."""
    if not row.get("scores"):
        return None
    return compare(row["scores"], row["baseline"], n_test=counted_sizes(row["scores"], row), delta=delta)


def has_interval(c: Comparison) -> bool:
    """Whether the bootstrap measured any variance: some task has two or more few-shot seeds,
    or there are several upstream seeds. With one seed per task every resample is the sample
    itself, and the "interval" is the point: no interval, no verdict."""
    return c.n_pairs > c.n_tasks or c.n_upstream > 1


def _note(row: Mapping[str, Any], c: Comparison | None) -> str:
    if c is not None:
        notes = []
        if not has_interval(c):
            notes.append(
                "one few-shot seed per task: the bootstrap has nothing to resample, so there is no interval "
                "and no verdict; evaluate on more seeds"
            )
        if c.low_baseline:
            notes.append(
                f"{c.low_baseline} of {c.n_pairs} pairs have a PT score below {LOW_BASELINE}: ARG is unreliable "
                "(its denominator is near 0), read Δ"
            )
        if not c.on_counts:
            notes.append(NOT_COUNTS)
        return "; ".join(notes)
    if math.isfinite(row.get("arg_mean", math.nan)):
        return (
            f"no per-pair scores: this sweep predates them, so no interval can be given (its record: ARG "
            f"{pct(row['arg_mean'])} %, a point estimate without uncertainty); rerun the sweep for intervals"
        )
    return NO_TRIAL if not row.get("trial_id") else "no target scores"


def arg_table(targets: pd.DataFrame | Iterable[Mapping[str, Any]], delta: float = DELTA) -> pd.DataFrame:
    """Each (partition, method) against PT on the target tasks, long form (``ARG_COLUMNS``).

    ``diff_*`` (absolute difference, fraction), ``arg_*`` and ``p_improve_*`` are mean, lo, hi
    of ``promptinit.stats.compare`` over the row's per-pair scores; ``p_holm`` is the Wilcoxon
    p adjusted by Holm's method over the table's rows (``with_holm``); ``verdict`` is
    ``promptinit.stats.verdict`` of the difference's interval ("better than PT", "worse than
    PT", "equivalent to PT within 2 points" for ``delta`` = 0.02, "undetermined: interval too
    wide"), with " (not after Holm)" when an effect's adjusted p is not below 1 - ``LEVEL``.
    Rows without an interval (one seed per task) keep their means with NaN bounds and verdict
    ``UNDETERMINED``; rows without per-pair scores (an old sweep, a method without a finished
    trial) are NaN with verdict ``n/a`` (``arg_mean`` keeps an old record's point value). Each
    has a ``note`` saying why.
    """
    rows: list[dict[str, Any]] = []
    first: dict[Any, int] = {}  # the runs (a row's scores) -> the first row with them
    same: dict[int, int | None] = {}
    for i, r in enumerate(target_rows(targets)):
        c = comparison_of(r, delta)
        row = {**_record_cells(r, c), **(_unmeasured_cells(r) if c is None else _measured_cells(r, c))}
        runs = (r["partition"], *(tuple(sorted(r[k].items())) for k in ("scores", "baseline"))) if r["scores"] else i
        j = first.setdefault(runs, i)
        if j != i:  # a search that chose the paper preset reuses its runs: the same test, counted once
            same[i] = j
            row["note"] = f"the same runs as {rows[j]['method']}: one test, counted once in Holm's adjustment"
        rows.append(row)
    return with_holm(pd.DataFrame(rows, columns=ARG_COLUMNS), same)


def with_holm(table: pd.DataFrame, same: Mapping[int, int | None] | None = None) -> pd.DataFrame:
    """``table`` with ``p_holm``: its ``p_value`` column adjusted by Holm's method over the rows that
    have one (``promptinit.stats.holm``); a "better" or "worse" verdict whose adjusted p is not
    below 1 - ``LEVEL`` gets " (not after Holm)". ``same`` maps a row (by position) that tests no
    hypothesis of its own to the row whose runs it repeats (it takes that row's adjusted p: one
    hypothesis counts once in the family) or to None (no hypothesis: no adjusted p)."""
    out = table.copy()
    same = same or {}
    family = [math.nan if i in same else float(v) for i, v in enumerate(out["p_value"])]
    adjusted = holm(family) if len(out) else []
    for i, j in same.items():
        adjusted[i] = math.nan if j is None else adjusted[j]
    out["p_holm"] = adjusted
    alpha = 1 - LEVEL
    for i, r in out.iterrows():
        directed = str(r["verdict"]).startswith(("better than", "worse than"))
        if directed and not float(r["p_holm"]) < alpha:
            out.at[i, "verdict"] = f"{r['verdict']} ({NOT_AFTER_HOLM})"
    return out


def _record_cells(r: Mapping[str, Any], c: Comparison | None) -> dict[str, Any]:
    """The cells of a table row that come from the sweep's record: the trial, its search, the note, the test sizes."""
    sizes = list(r["n_test"].values())
    return {
        "partition": r["partition"],
        "method": r["method"],
        "val_arg": r["val_arg"],
        "val_arg_se": r["val_arg_se"],
        "val_arg_rescored": r["val_arg_rescored"],
        "val_arg_rescored_se": r["val_arg_rescored_se"],
        "objective": r["objective"],
        **{k: r[k] for k in OBJECTIVE_VALUES},
        "trials": r["trials"],
        "finished": r["finished"],
        "trial_id": r["trial_id"],
        "settings": json.dumps(r["settings"], default=str),
        "note": _note(r, c),
        "n_test_min": min(sizes) if sizes else math.nan,
        "n_test_max": max(sizes) if sizes else math.nan,
        "test_per_seed": r.get("test_per_seed"),
    }


_INTERVAL_CELLS = (
    "diff_mean",
    "diff_lo",
    "diff_hi",
    "arg_lo",
    "arg_hi",
    "p_improve_mean",
    "p_improve_lo",
    "p_improve_hi",
    "p_value",
)


def _unmeasured_cells(r: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison cells of a row without per-pair scores: NaN, verdict ``n/a``, an old record's ARG."""
    return {
        **dict.fromkeys(_INTERVAL_CELLS, math.nan),
        "p_method": "",
        "arg_mean": r["arg_mean"],
        "verdict": "n/a",
        "distinguishable": None,
        "n_tasks": len(r["per_task"]) or math.nan,
        "n_seeds": r["n_seeds"] or math.nan,
        "n_upstream": math.nan,
        "n_pairs": math.nan,
        "low_baseline": math.nan,
    }


def _measured_cells(r: Mapping[str, Any], c: Comparison) -> dict[str, Any]:
    """The comparison cells of a row with per-pair scores: means, bounds (NaN without an interval), verdict."""
    interval = has_interval(c)
    out: dict[str, Any] = {}
    for name in ("diff", "arg", "p_improve"):
        iv = getattr(c, name)
        out.update(
            {
                f"{name}_mean": iv.mean,
                f"{name}_lo": iv.lo if interval else math.nan,
                f"{name}_hi": iv.hi if interval else math.nan,
            }
        )
    return {
        **out,
        "p_value": c.p_value,
        "p_method": c.p_method,
        "verdict": c.verdict() if interval else UNDETERMINED,
        "distinguishable": c.distinguishable if interval else None,
        "n_tasks": c.n_tasks,
        "n_seeds": r["n_seeds"],
        "n_upstream": c.n_upstream,
        "n_pairs": c.n_pairs,
        "low_baseline": c.low_baseline,
    }


def _cell(r: Any, name: str, **fmt: Any) -> str:
    return ci_cell(*(getattr(r, f"{name}_{x}") for x in ("mean", "lo", "hi")), **fmt)


def _rests_on(r: Any) -> str:
    if not math.isfinite(r.n_pairs):
        return "—"

    def n(count: float, word: str) -> str:
        return f"{int(count)} {word}{'s' if int(count) != 1 else ''}"

    text = f"{n(r.n_tasks, 'task')} × {n(r.n_seeds, 'seed')}"
    if r.n_upstream > 1:
        text += f" × {n(r.n_upstream, 'upstream seed')}"
    if not math.isfinite(r.n_test_min):
        return text + ", test size unknown"
    lo, hi = int(r.n_test_min), int(r.n_test_max)
    text += f", {lo} test ex. per score" if lo == hi else f", {lo}–{hi} test ex. per score"
    draw = getattr(r, "test_per_seed", None)
    if draw is True or draw is False:  # None / NaN: not on record
        text += " (each seed its own sample)" if draw else " (one sample shared by the seeds)"
    return text


def _trials(r: Any) -> str:
    return f"{int(r.trials)} ({int(r.finished)})" if math.isfinite(r.trials) and math.isfinite(r.finished) else "—"


def arg_markdown(table: pd.DataFrame, delta: float = DELTA) -> str:
    """One row per method (and partition, when there are several): Δ (points), ARG (%) and
    P(>PT) per cell as ``mean [95 % CI]``, Wilcoxon and Holm p, the verdict, what it rests on,
    the validation objective of the chosen checkpoint and the trial counts; notes (old records, one
    seed per task, low baselines, scores that are not counts) below. ``delta``: the equivalence
    margin the table's verdicts used (for the note)."""
    several = len(_order(table["partition"])) > 1
    rows = [_arg_cells(r, several) for r in table.itertuples()]
    objectives = list(dict.fromkeys(table["objective"].dropna())) if "objective" in table else []
    head = objective_label(objectives[0]) if len(objectives) == 1 else "val (each row's objective)"
    text = markdown(_arg_header(several, head), rows) + "\n" + arg_note(delta) + "\n"
    lines = [f"- {', '.join(names)}: {note}." for note, names in _arg_notes(table, several).items()]
    return text + ("\n" + "\n".join(lines) + "\n" if lines else "")


def _arg_header(several: bool, val: str) -> list[str]:
    """The header of the Markdown target table (with a partition column when there are several)."""
    level = f"{100 * LEVEL:.0f} % CI"
    return [
        "method",
        *(["partition"] if several else []),
        f"Δ vs PT, points [{level}]",
        f"ARG % [{level}]",
        f"P(>PT) per cell [{level}]",
        "Wilcoxon p",
        "Holm p",
        "verdict",
        "rests on",
        f"{val} (SE): search",
        f"{val} (SE): re-scored",
        "trials (finished)",
    ]


def _arg_cells(r: Any, several: bool) -> list[Any]:
    """The cells of one table row in the Markdown, in ``_arg_header``'s order."""
    if not math.isfinite(r.diff_mean):  # no per-pair scores: an old record's ARG is in the note
        compared = ["n/a"] * 5 + [f"n/a: {r.note}" if r.note == NO_TRIAL else "n/a (see note)"]
    else:
        compared = _compared_cells(r)
    return [
        r.method,
        *([r.partition] if several else []),
        *compared,
        _rests_on(r),
        pct_se(r.val, r.val_se),
        pct_se(r.val_rescored, r.val_rescored_se),
        _trials(r),
    ]


def _compared_cells(r: Any) -> list[str]:
    """Δ, ARG (flagged when unreliable), P(>PT), Wilcoxon and Holm p and verdict cells of a row with per-pair scores."""
    arg_cell = _cell(r, "arg")
    if math.isfinite(r.arg_mean) and math.isfinite(r.low_baseline) and r.low_baseline:
        n = int(r.low_baseline)
        arg_cell += f" (unreliable: {n} pair{'s' if n > 1 else ''} with PT < {LOW_BASELINE})"
    return [
        _cell(r, "diff"),
        arg_cell,
        _cell(r, "p_improve", scale=1, digits=2, signed=False),
        f"{r.p_value:.2g}",
        f"{r.p_holm:.2g}",
        r.verdict,
    ]


def _arg_notes(table: pd.DataFrame, several: bool) -> dict[str, list[str]]:
    """Note -> the rows (method, and partition when there are several) it applies to, in table order."""
    notes: dict[str, list[str]] = {}
    for r in table.itertuples():
        shown = r.note != NO_TRIAL if not math.isfinite(r.diff_mean) else bool(r.note)
        if shown:
            notes.setdefault(r.note, []).append(r.method + (f" ({r.partition})" if several else ""))
    return notes


@dataclass
class TargetTable:
    """What ``write_target_table`` wrote.

    Attributes:
        table: the long-form table (``ARG_COLUMNS``), as in ``arg_table.csv``.
        text: the Markdown, as in ``arg_table.md``.
        files: ``arg_table.md``, ``arg_table.csv``, ``target_scores.csv``.
        records: (partition, method) -> ``target_record``: the per-pair scores and the table's
            numbers, JSON-ready (an export's ``target`` block).
    """

    table: pd.DataFrame
    text: str
    files: list[Path] = field(default_factory=list)
    records: dict[tuple[str, str], dict] = field(default_factory=dict)


def target_record(row: Mapping[str, Any], table_row: Mapping[str, Any] | None = None) -> dict:
    """A target row as JSON-ready data: its per-pair scores (``analysis.results.pair_records``)
    and the table's numbers for it (``ARG_COLUMNS`` but the chosen trial's; NaN as None)."""
    if table_row is None:
        table_row = arg_table([row]).iloc[0].to_dict()
    keep = [
        c
        for c in ARG_COLUMNS
        if c
        not in (
            "partition",
            "method",
            "val_arg",
            "val_arg_se",
            "val_arg_rescored",
            "val_arg_rescored_se",
            "objective",
            *OBJECTIVE_VALUES,
            "trials",
            "finished",
            "trial_id",
            "settings",
        )
    ]
    stats = {k: None if isinstance(table_row[k], float) and math.isnan(table_row[k]) else table_row[k] for k in keep}
    stats = {k: v.item() if isinstance(v, np.generic) else v for k, v in stats.items()}  # numpy scalars -> JSON
    return {"scores": pair_records(row["scores"], row["baseline"], row["n_test"]), "comparison": stats}


def write_target_table(
    targets: pd.DataFrame | Iterable[Mapping[str, Any]], folder: str | Path, delta: float = DELTA
) -> TargetTable:
    """Write ``arg_table.md``, ``arg_table.csv`` and ``target_scores.csv`` into ``folder``.

    The one writer of the ARG table: the sweep calls it after its target evaluation, ``promptinit
    report`` on loaded sweeps. The scores file keeps every (method, task, seed) test score with
    PT's and the test size, so the table can be recomputed from it (``analysis.results`` reads
    both back).

    Args:
        targets: target rows (see ``target_rows``), e.g. ``Sweep.targets``.
        folder: where the files go (created).
        delta: the equivalence margin of the verdicts (fraction; 0.02 = 2 points).

    Returns:
        A ``TargetTable``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = target_rows(targets)
    table = arg_table(rows, delta)
    text = arg_markdown(table, delta) if len(table) else "No target-task results yet.\n"
    md, csv_path, scores_path = folder / TABLE_MD, folder / ARG_TABLE, folder / TARGET_SCORES
    out = TargetTable(table, text, [md, csv_path, scores_path])
    scores = io.StringIO(newline="")
    w = csv.DictWriter(scores, fieldnames=SCORE_COLUMNS)
    w.writeheader()
    for r, t in zip(rows, table.to_dict("records"), strict=True):
        key = (r["partition"], r["method"])
        out.records[key] = target_record(r, t)
        for pair in out.records[key]["scores"]:
            w.writerow(
                {
                    "partition": r["partition"],
                    "method": r["method"],
                    **{k: "" if v is None else v for k, v in pair.items()},
                }
            )
    # Each file whole or not at all: a study takes a sweep folder's arg_table.csv as "this sweep finished".
    atomic_write(scores_path, scores.getvalue())
    atomic_write(md, text)
    atomic_write(csv_path, table.to_csv(index=False))
    return out


# --------------------------------------------------------------------------- arm against arm


CONTRAST_COLUMNS = [
    "partition",
    "a",
    "b",
    "question",
    "diff_mean",
    "diff_lo",
    "diff_hi",
    "p_a_mean",
    "p_a_lo",
    "p_a_hi",
    "p_value",
    "p_holm",
    "p_method",
    "verdict",
    "n_tasks",
    "n_seeds",
    "n_upstream",
    "n_pairs",
    "n_test_min",
    "n_test_max",
    "note",
]


def contrast_note(delta: float = DELTA) -> str:
    """The explanation under the contrasts table (``delta``: its equivalence margin)."""
    return (
        f"Δ: arm a's test score minus arm b's on the same (task, few-shot seed) pairs, in points, mean "
        f"[{100 * LEVEL:.0f} % CI]; P(a > b) per cell: the share of cells, one (task, few-shot seed, upstream seed) "
        "score each, that a wins (ties count half): a pair counts once per upstream seed. Wilcoxon p: signed-rank "
        "test over the (task, seed) pairs' differences, averaged over upstream seeds, on counts of correct answers, "
        "so it does not see the upstream seeds' spread (the interval does, and the verdict follows the interval); "
        "Holm p: that p adjusted over the table's contrasts. The interval comes from promptinit.stats.compare "
        "given the per-pair differences a − b against a zero baseline, so it is the same hierarchical bootstrap as "
        "the arm table (upstream seeds resampled once for all tasks, few-shot seeds within each task, tasks weigh "
        "alike), with a's and b's upstream seeds resampled together by number: they are independent draws for both "
        "arms, so the pairing by number is as good as any and the interval holds both arms' upstream variance. "
        "Verdict, of a against b: " + verdict_words(delta, "b", "contrasts") + "."
    )


CONTRAST_NOTE = contrast_note()


@dataclass(frozen=True)
class Contrast:
    """A question one arm against another answers: ``a`` − ``b`` (a positive Δ supports it)."""

    a: str
    b: str
    question: str


SAME_RUNS = (
    "every score of a equals b's: the same configuration's runs (a search that chose the paper preset"
    " reuses the preset's), so the contrast measures nothing and is left out of Holm's adjustment"
)


def _measured_contrast(ra: Mapping[str, Any], rb: Mapping[str, Any], pair: Contrast, delta: float) -> dict[str, Any]:
    """The measured cells of contrast ``pair`` (a - b on the pairs both arms were scored on)."""
    cells: dict[str, Any] = {}
    zero = {k: 0.0 for k in ra["baseline"]}  # compare's Δ is then a − b itself
    sizes, sizes_b = counted_sizes(ra["scores"], ra), counted_sizes(rb["scores"], rb)
    sizes = sizes if sizes is not None and sizes == sizes_b else None  # counts only on one scale
    c = compare({k: ra["scores"][k] - rb["scores"][k] for k in ra["scores"]}, zero, n_test=sizes, delta=delta)
    interval = has_interval(c)
    known = [*ra["n_test"].values(), *rb["n_test"].values()]
    cells.update(
        diff_mean=c.diff.mean,
        p_a_mean=c.p_improve.mean,
        p_value=c.p_value,
        p_method=c.p_method,
        n_tasks=c.n_tasks,
        n_seeds=ra["n_seeds"],
        n_upstream=c.n_upstream,
        n_pairs=c.n_pairs,
        n_test_min=min(known) if known else math.nan,
        n_test_max=max(known) if known else math.nan,
    )
    for name, iv in (("diff", c.diff), ("p_a", c.p_improve)):
        cells.update({f"{name}_lo": iv.lo if interval else math.nan, f"{name}_hi": iv.hi if interval else math.nan})
    cells["verdict"] = verdict(c.diff, delta, than=pair.b) if interval else UNDETERMINED
    if not c.on_counts:
        cells["note"] = NOT_COUNTS
    return cells


def contrasts(
    targets: pd.DataFrame | Iterable[Mapping[str, Any]], pairs: Sequence[Contrast], delta: float = DELTA
) -> pd.DataFrame:
    """Arm ``a`` against arm ``b`` on the target tasks for each of ``pairs`` (``CONTRAST_COLUMNS``).

    Both arms need per-pair scores on the same (task, seed[, upstream seed]) keys and the same PT
    baseline; a pair whose arm is missing (not run yet) is left out, one whose keys differ is kept
    with NaN and a note saying so. ``diff_*`` are fractions; ``p_a_*`` is P(a > b) per cell;
    ``p_holm`` adjusts ``p_value`` over the contrasts (``with_holm``). The verdict is
    ``promptinit.stats.verdict`` of a against b: "better than b", "worse than b", "equivalent to
    b within 2 points" (``delta`` = 0.02), "undetermined: interval too wide", or "the same runs as
    b" when every score of a is b's (a search whose choice is the preset: not an equivalence shown).
    """
    rows_by = {(r["partition"], r["method"]): r for r in target_rows(targets) if r["scores"]}
    out: list[dict[str, Any]] = []
    same: dict[int, int | None] = {}  # contrasts of an arm with its own runs: no test
    for partition in _order(p for p, _ in rows_by):
        for pair in pairs:
            ra, rb = rows_by.get((partition, pair.a)), rows_by.get((partition, pair.b))
            if ra is None or rb is None:
                continue
            row = {"partition": partition, "a": pair.a, "b": pair.b, "question": pair.question, "note": ""}
            if set(ra["scores"]) != set(rb["scores"]) or ra["baseline"] != rb["baseline"]:
                out.append(
                    {
                        **row,
                        "verdict": "n/a",
                        "note": "the two arms were not scored on the same pairs (or against the same PT scores)",
                    }
                )
                continue
            row.update(_measured_contrast(ra, rb, pair, delta))
            if ra["scores"] == rb["scores"]:  # a search that chose the preset reuses the preset's runs
                row["verdict"] = f"the same runs as {pair.b}"
                row["note"] = SAME_RUNS
                same[len(out)] = None
            out.append(row)
    return with_holm(pd.DataFrame(out, columns=CONTRAST_COLUMNS), same)


def contrasts_markdown(table: pd.DataFrame, delta: float = DELTA) -> str:
    """One row per contrast: the question, a − b in points and P(a > b) with CIs, Wilcoxon and Holm p,
    the verdict (``delta``: the equivalence margin it used, for the note)."""
    if not len(table):
        return "No contrasts yet: each needs both of its arms finished.\n"
    several = len(_order(table["partition"])) > 1
    level = f"{100 * LEVEL:.0f} % CI"
    head = [
        "question",
        "a",
        "b",
        *(["partition"] if several else []),
        f"Δ a − b, points [{level}]",
        f"P(a > b) per cell [{level}]",
        "Wilcoxon p",
        "Holm p",
        "verdict",
        "rests on",
    ]
    rows, notes = [], []
    for r in table.itertuples():
        if r.verdict == "n/a":
            rows.append([r.question, r.a, r.b, *([r.partition] if several else []), *["n/a"] * 5, "—"])
            notes.append(f"- {r.a} vs {r.b}: {r.note}.")
            continue
        if r.note:
            notes.append(f"- {r.a} vs {r.b}: {r.note}.")
        rows.append(
            [
                r.question,
                r.a,
                r.b,
                *([r.partition] if several else []),
                _cell(r, "diff"),
                _cell(r, "p_a", scale=1, digits=2, signed=False),
                f"{r.p_value:.2g}",
                f"{r.p_holm:.2g}" if math.isfinite(r.p_holm) else "—",
                r.verdict,
                _rests_on(r),
            ]
        )
    return markdown(head, rows) + "\n" + contrast_note(delta) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def objective_of(trials: pd.DataFrame) -> str:
    """The search objective of a group of trials (one sweep's: ``search.objective``); ``arg`` for none."""
    names = list(dict.fromkeys(trials["objective"].dropna())) if "objective" in trials else []
    return str(names[0]) if names else "arg"


def objective_label(objective: str) -> str:
    """``val Δ points`` / ``val ARG %``: a column head for the search objective."""
    name, unit = OBJECTIVE_WORDS[objective]
    return f"val {name} {unit}"


def validation_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The search per (partition, method): trial counts and the validation objective (best and spread).

    Columns: partition, method, objective (the sweeps' ``search.objective``: ``delta`` or ``arg``),
    trials, finished, failed, stopped_early, best_trial, val_best, val_best_se (its standard error
    over the validation (task, seed) pairs), val_mean, val_min, val_max (over the trials' bests:
    the sensitivity to the hyperparameters, not an uncertainty). Values are fractions.
    """
    rows = []
    for (partition, method), g in trials.groupby(["partition", "method"], sort=False):
        # Failed trials count as trials but not as results (the sweep never picks them either).
        scored = g[np.isfinite(g["val"].astype(float)) & (g["status"] != "failed")]
        best = scored.loc[scored["val"].astype(float).idxmax()] if len(scored) else None
        v = scored["val"].astype(float)
        rows.append(
            {
                "partition": partition,
                "method": method,
                "objective": objective_of(g),
                "trials": len(g),
                "finished": int((g["status"] == "finished").sum()),
                "failed": int((g["status"] == "failed").sum()),
                "stopped_early": int(g["stopped_early"].fillna(False).astype(bool).sum()),
                "best_trial": best["trial_id"] if best is not None else "",
                "val_best": float(best["val"]) if best is not None else math.nan,
                "val_best_se": float(best["val_se"]) if best is not None else math.nan,
                "val_mean": float(v.mean()) if len(v) else math.nan,
                "val_min": float(v.min()) if len(v) else math.nan,
                "val_max": float(v.max()) if len(v) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def validation_markdown(table: pd.DataFrame) -> str:
    rows = [
        [
            r.partition,
            r.method,
            f"{r.trials} ({r.finished} finished, {r.failed} failed, {r.stopped_early} stopped early)",
            objective_label(r.objective),
            pct_se(r.val_best, r.val_best_se),
            r.best_trial,
            pct(r.val_mean),
            f"{pct(r.val_min)} … {pct(r.val_max)}",
        ]
        for r in table.itertuples()
    ]
    head = ["partition", "method", "trials", "objective", "best (SE)", "best trial", "mean over trials", "range"]
    return markdown(head, rows) + (
        "\nObjective: what the search ranked trials by on the partition's validation tasks (search.objective: "
        "val Δ, the score difference to PT in points, or val ARG, the relative gain in %). "
        "Best: the best report of the method's trials, with its standard error over the "
        "validation (task, seed) pairs (n/a with one pair). Over trials: mean and range of "
        "each trial's best (the sensitivity to the hyperparameters).\n"
    )


GAIN_COLUMNS = ["partition", "method", "task", "diff", "diff_lo", "diff_hi", "rg", "rg_lo", "rg_hi", "n_seeds"]


def task_gains(targets: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Per target task: the difference with PT and the relative gain, mean [95 % CI] over its
    few-shot seeds (``promptinit.stats.compare`` on that task's pairs); an old record without
    per-pair scores gives its RG without an interval.

    Columns: ``GAIN_COLUMNS`` (fractions).
    """
    rows = []
    for t in target_rows(targets):
        if not t["scores"]:
            rows += [
                {"partition": t["partition"], "method": t["method"], "task": task, "rg": float(rg)}
                for task, rg in sorted(t["per_task"].items())
            ]
            continue
        for task in sorted({k[0] for k in t["scores"]}):
            c = compare(
                {k: v for k, v in t["scores"].items() if k[0] == task},
                {k: v for k, v in t["baseline"].items() if k[0] == task},
            )
            bound = (lambda x: x) if has_interval(c) else (lambda x: math.nan)  # one seed: no interval
            rows.append(
                {
                    "partition": t["partition"],
                    "method": t["method"],
                    "task": task,
                    "diff": c.diff.mean,
                    "diff_lo": bound(c.diff.lo),
                    "diff_hi": bound(c.diff.hi),
                    "rg": c.arg.mean,
                    "rg_lo": bound(c.arg.lo),
                    "rg_hi": bound(c.arg.hi),
                    "n_seeds": c.n_pairs,
                }
            )
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)


def task_gains_markdown(gains: pd.DataFrame) -> str:
    parts = []
    for partition, g in gains.groupby("partition", sort=False):
        tasks, methods = _order(g["task"]), _order(g["method"])
        for name, title in (("diff", "Δ vs PT (points)"), ("rg", "relative gain (%)")):
            cell = {(r.method, r.task): _gain_cell(r, name) for r in g.itertuples()}
            parts.append(
                f"### {partition}: {title}\n\n"
                + markdown(["method", *tasks], [[m, *[cell.get((m, t), "—") for t in tasks]] for m in methods])
            )
    if not parts:
        return "No target-task results yet.\n"
    return "\n".join(parts) + (
        f"\nPer target task, mean [{100 * LEVEL:.0f} % CI] over its few-shot seeds (bootstrap; "
        "with few seeds the intervals are wide, and with one seed they are only the point). "
        "n/a: an old sweep without per-pair scores.\n"
    )


def _gain_cell(r: Any, name: str) -> str:
    return ci_cell(getattr(r, name), getattr(r, f"{name}_lo"), getattr(r, f"{name}_hi"))


BUDGET_MARK = " · "  # a study's row label: "<method> · <budget>" (search/study.py, Budget.suffix)


def cost_table(trials: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Search cost and ARG per accelerator-hour, per (partition, method); in a study with two
    downstream budgets, per (partition, method, budget): the search's cost beside each budget's ARG.

    The accelerator is the GPU when any trial of the table used one, else the CPU (so every
    method is measured in the same unit). Hours are resource-seconds / 3600 summed over the
    method's trials (the search only; the final target evaluation is not included).

    Columns: partition, method, trials, wall_h, cpu_h, gpu_h, accelerator, accel_h, objective
    (``search.objective``), val_best (the best trial's validation objective), target_arg (+ _lo, _hi:
    its 95 % interval), target_arg_per_accel_h (+ _lo, _hi), val_per_accel_h.
    """
    use_gpu = bool((trials["gpu_s"].astype(float).fillna(0) > 0).any()) if len(trials) else False
    # A study with two downstream budgets labels a method's target rows "<method> · 60 steps", ...:
    # the method's search cost then stands beside each budget's target ARG, one row each.
    target: dict[tuple[str, str], list[tuple[str, float, float, float]]] = {}
    for t in arg_table(targets).itertuples():
        key = (str(t.partition), str(t.method).split(BUDGET_MARK)[0])
        target.setdefault(key, []).append((str(t.method), t.arg_mean, t.arg_lo, t.arg_hi))
    rows = []
    for (partition, method), g in trials.groupby(["partition", "method"], sort=False):
        wall_h = float(g["wall_s"].astype(float).sum()) / 3600
        # one trial of unknown reservation (NaN) makes the sum unknown, never an undercount
        cpu_h = float(g["cpu_s"].astype(float).sum(skipna=False)) / 3600
        gpu_h = float(g["gpu_s"].astype(float).sum(skipna=False)) / 3600
        accel_h = gpu_h if use_gpu else cpu_h
        val = g["val"].astype(float)
        best = float(val.max()) if val.notna().any() else math.nan

        def per(x: float, hours: float = accel_h) -> float:
            return x / hours if hours and math.isfinite(hours) and hours > 0 else math.nan

        # hours are a constant of the method, so the interval per hour is the interval / hours
        for label, tgt, lo, hi in target.get((str(partition), str(method))) or [(method, math.nan, math.nan, math.nan)]:
            rows.append(
                {
                    "partition": partition,
                    "method": label,
                    "trials": len(g),
                    "wall_h": wall_h,
                    "cpu_h": cpu_h,
                    "gpu_h": gpu_h,
                    "accelerator": "GPU" if use_gpu else "CPU",
                    "accel_h": accel_h,
                    "objective": objective_of(g),
                    "val_best": best,
                    "target_arg": tgt,
                    "target_arg_lo": lo,
                    "target_arg_hi": hi,
                    "target_arg_per_accel_h": per(tgt),
                    "target_arg_per_accel_h_lo": per(lo),
                    "target_arg_per_accel_h_hi": per(hi),
                    "val_per_accel_h": per(best),
                }
            )
    return pd.DataFrame(rows)


def cost_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "No trials.\n"
    unit = table["accelerator"].iloc[0]

    def num(x: float, digits: int = 3) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"

    rows = [
        [
            r.partition,
            r.method,
            r.trials,
            num(r.wall_h),
            num(r.cpu_h),
            num(r.gpu_h),
            _gain_cell(r, "target_arg"),
            _gain_cell(r, "target_arg_per_accel_h"),
            f"{pct(r.val_per_accel_h)} ({objective_label(r.objective)})",
        ]
        for r in table.itertuples()
    ]
    head = [
        "partition",
        "method",
        "trials",
        "wall h",
        "CPU h",
        "GPU h",
        f"target ARG % [{100 * LEVEL:.0f} % CI]",
        f"target ARG % per {unit} h [CI]",
        f"best validation objective per {unit} h",
    ]
    return markdown(head, rows) + (
        f"\nCost of the search (all trials of the method, failed ones included; the final "
        f"target evaluation is not counted). CPU h / GPU h = CPUs / GPUs reserved per "
        f"trial x trial wall time; the accelerator is the {unit}. Target ARG: as in "
        f"arg_table.md (no CI: one seed per task, or an old sweep without per-pair "
        f"scores).\n"
    )


ALL_METHODS = "all methods"  # best_so_far's group of a sweep's trials of every method
TRIAL_SECONDS, OUTER_STEPS = "trial-seconds", "outer steps"  # best_so_far's units of compute
BEST_SO_FAR_COLUMNS = [
    "sweep",
    "method",
    "trial_id",
    "status",
    "objective",
    "val",
    "compute",
    "unit",
    "best",
    "best_se",
    "best_trial",
]


def compute_unit(trials: pd.DataFrame) -> str:
    """``trial-seconds`` when every trial that reported recorded its wall seconds, else ``outer steps``."""
    reported = trials[trials["reports"].astype(float).fillna(0) > 0]
    wall = reported["wall_s"].astype(float)
    return TRIAL_SECONDS if bool((np.isfinite(wall) & (wall > 0)).all()) else OUTER_STEPS


def _ended(curve) -> float:
    """When a trial's last report came (Unix seconds); inf when not recorded (sorts last)."""
    stamps = [float(p["timestamp"]) for p in curve or [] if isinstance(p.get("timestamp"), (int, float))]
    stamps = [t for t in stamps if math.isfinite(t)]
    return max(stamps) if stamps else math.inf


def best_so_far(trials: pd.DataFrame) -> pd.DataFrame:
    """The search's progress: the best validation objective found so far against the compute spent so far.

    Per sweep and method, and per sweep over all its methods (method ``ALL_METHODS``) when it
    searched several, one row per trial that reported, in the order the trials ended (their
    last report's timestamp; trials without one keep the table's order, after the timed ones).
    Compute is cumulative over those trials, in one unit for the whole table
    (``compute_unit``): trial-seconds (each trial's wall seconds, ``wall_s``), else outer steps
    (``steps_done``). Failed trials add their compute but no result, as in ``validation_table``.
    Two sweeps that differ only in their searcher (TPE, random, the paper defaults alone) can
    so be compared at equal compute.

    Args:
        trials: the tidy trial table (``analysis.results``), of one or more sweeps.

    Returns:
        Columns ``BEST_SO_FAR_COLUMNS``: objective (the sweep's ``search.objective``), val (the
        trial's best report of it; NaN when it failed), compute, unit, best (the running max of
        val; NaN before the first result), best_se
        and best_trial (the standard error and id of the trial that holds it).
    """
    if trials.empty:
        return pd.DataFrame(columns=BEST_SO_FAR_COLUMNS)
    unit = compute_unit(trials)
    t = trials[trials["reports"].astype(float).fillna(0) > 0]
    cost = t["wall_s" if unit == TRIAL_SECONDS else "steps_done"]
    t = t.assign(
        cost=pd.to_numeric(cost, errors="coerce").fillna(0.0),
        value=pd.to_numeric(t["val"], errors="coerce").where(t["status"] != "failed"),
        se=pd.to_numeric(t["val_se"], errors="coerce"),
        ended=[_ended(c) for c in t["curve"]],
    )
    rows = []
    for sweep, g in t.groupby("sweep", sort=False):
        methods, objective = list(dict.fromkeys(g["method"])), objective_of(g)
        groups = ([(ALL_METHODS, g)] if len(methods) > 1 else []) + [(m, g[g["method"] == m]) for m in methods]
        for method, h in groups:
            compute, best, best_se, best_trial = 0.0, math.nan, math.nan, ""
            for r in h.sort_values("ended", kind="stable").to_dict("records"):
                compute += r["cost"]
                value = r["value"]
                if math.isfinite(value) and not value <= best:  # `not <=`: true while best is NaN
                    best, best_se, best_trial = value, r["se"], r["trial_id"]
                rows.append(
                    {
                        "sweep": sweep,
                        "method": method,
                        "trial_id": r["trial_id"],
                        "status": r["status"],
                        "objective": objective,
                        "val": value,
                        "compute": compute,
                        "unit": unit,
                        "best": best,
                        "best_se": best_se,
                        "best_trial": best_trial,
                    }
                )
    return pd.DataFrame(rows, columns=BEST_SO_FAR_COLUMNS)


def write(df: pd.DataFrame, md_text: str, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv``; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    md, csv_path = folder / f"{stem}.md", folder / f"{stem}.csv"
    atomic_write(md, md_text)
    atomic_write(csv_path, df.to_csv(index=False))
    return md, csv_path


SELECTION_MD, SELECTION_CSV = "selection.md", "selection.csv"
SELECTION_COLUMNS = [
    "method",
    "rank_in_search",
    "trial_id",
    "step",
    "objective",
    "val",
    "val_se",
    "rescored",
    "rescored_se",
    "chosen",
    "settings",
]
OBJECTIVE_WORDS = {"delta": ("Δ", "points"), "arg": ("ARG", "%")}  # ``search.objective`` in tables: name, unit


def objective_noise(df: pd.DataFrame) -> str:
    """The selection table's note on the search objective's noise: the median per-trial SE of the
    validation objective on the fresh seeds and on the search seeds (``trainables.scoring``:
    few-shot-seed noise on the fixed validation tasks), and how far the fresh scores fell from the
    search's. '' without a finite SE."""
    fresh = pd.to_numeric(df["rescored_se"], errors="coerce").dropna()
    search = pd.to_numeric(df["val_se"], errors="coerce").dropna()
    if fresh.empty and search.empty:
        return ""
    name, _ = OBJECTIVE_WORDS[str(df["objective"].iloc[0])]

    def median(se: pd.Series) -> str:
        if se.empty:
            return "n/a"
        return f"{100 * se.median():.1f} points ({len(se)} trials, {100 * se.min():.1f}-{100 * se.max():.1f})"

    fresh_value, search_value = (pd.to_numeric(df[c], errors="coerce") for c in ("rescored", "val"))
    shift = (fresh_value - search_value).dropna()
    why = (
        "the search scores of its best trials are biased upwards"
        if shift.median() < 0
        else "higher on the fresh seeds: the selection's upward bias is smaller than the noise here"
    )
    moved = (
        f" Fresh minus search {name}: median {100 * shift.median():+.1f} points, largest "
        f"|{100 * shift.abs().max():.1f}| ({why})."
        if not shift.empty
        else ""
    )
    return (
        f"\nObjective noise: median per-trial SE of the validation {name} (the objective), fresh seeds "
        f"{median(fresh)}; search seeds {median(search)}.{moved}\n"
    )


def write_selection(
    rows: Iterable[Mapping[str, Any]], folder: str | Path, seeds: Sequence[int], fresh: Sequence[int]
) -> tuple[str, list[Path]]:
    """Write ``selection.md`` and ``selection.csv``: how each method's configuration was chosen.

    Args:
        rows: one per candidate (``SELECTION_COLUMNS``): its rank in the search, the search
            objective (``objective``: delta or arg) on the search's validation seeds with its SE,
            the same on fresh seeds, whether it was chosen.
        folder: the sweep folder.
        seeds: the search's validation seeds; ``fresh``: the re-scoring's.

    Returns:
        The Markdown, and the two files.
    """
    folder = Path(folder)
    df = pd.DataFrame(list(rows), columns=SELECTION_COLUMNS)
    df.to_csv(folder / SELECTION_CSV, index=False)
    name, unit = OBJECTIVE_WORDS[str(df["objective"].iloc[0])] if len(df) else ("objective", "%")
    body = markdown(
        [
            "method",
            "search rank",
            "trial",
            "step",
            f"val {name} {unit} (SE), search seeds {' '.join(map(str, seeds))}",
            f"val {name} {unit} (SE), fresh seeds {' '.join(map(str, fresh))}",
            "chosen",
        ],
        [
            [
                r.method,
                r.rank_in_search,
                r.trial_id,
                r.step,
                pct_se(r.val, r.val_se),
                pct_se(r.rescored, r.rescored_se),
                "✓" if r.chosen else "",
            ]
            for r in df.itertuples()
        ],
    )
    text = (
        f"Each method's best trials in the search by the validation {name} (the search objective), re-scored on "
        "fresh validation seeds; the best re-scored one is the method's choice (the best of several noisy scores "
        "is biased upwards, a fresh score is not).\n\n" + body + objective_noise(df)
    )
    (folder / SELECTION_MD).write_text(text)
    return text, [folder / SELECTION_MD, folder / SELECTION_CSV]
