"""The search objective's noise per search: how far apart two trials must score on validation
before the search can tell them apart.

A trial's per-trial SE is the few-shot-seed standard error of its validation objective
(``trainables.scoring``: stratified over the validation tasks). Per searched method of each
sweep, ``promptinit report`` writes ``objective_noise.{md,csv}``: the median SE over the trials
on the search's own seeds, and over the best trials re-scored on fresh seeds (``selection.csv``,
the honest one: the search seeds' SEs belong to the scores the search picked). Each median has
its distribution-free 95 % interval (order statistics, from 6 trials on) and is set against the
goal of a median of at most 3 points (docs/objective.md, section 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from promptinit.analysis.results import Sweep
from promptinit.analysis.tables import OBJECTIVE_WORDS, SELECTION_CSV, markdown, write

FILE = "objective_noise"  # objective_noise.{md,csv} in the report's tables folder
GOAL = 0.03  # a median per-trial SE of at most 3 points
COLUMNS = [
    "search",
    "objective",
    "trials",
    "search_median",
    "search_lo",
    "search_hi",
    "search_min",
    "search_max",
    "rescored",
    "fresh_median",
    "fresh_lo",
    "fresh_hi",
    "fresh_min",
    "fresh_max",
]


def median_interval(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """The median of ``values`` and its distribution-free 95 % interval ``[x_(k), x_(n+1-k)]``, k
    the largest with P(Binomial(n, 1/2) < k) <= 2.5 % (coverage >= 95 %, exact for any continuous
    distribution); the interval is NaN below 6 values, where no such k exists."""
    from scipy.stats import binom

    x = np.sort(np.asarray(values, dtype=float))
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    k = int(binom.ppf(0.025, n, 0.5))  # the smallest k with P(B <= k) >= 2.5 %: then P(B < k) < 2.5 %
    if k < 1:
        return float(np.median(x)), math.nan, math.nan
    return float(np.median(x)), float(x[k - 1]), float(x[n - k])


def _summary(prefix: str, se: pd.Series) -> dict:
    med, lo, hi = median_interval(se.to_numpy(dtype=float))
    finite = se[np.isfinite(se)]
    spread = (finite.min(), finite.max()) if len(finite) else (math.nan, math.nan)
    return {
        f"{prefix}_median": med,
        f"{prefix}_lo": lo,
        f"{prefix}_hi": hi,
        f"{prefix}_min": spread[0],
        f"{prefix}_max": spread[1],
    }


def noise_table(sweeps: Sequence[Sweep]) -> pd.DataFrame:
    """Per searched method of each sweep with trials, its objective's per-trial SE (fractions, as
    the trials report them) on the search seeds and on the fresh seeds of its re-scored trials; a
    study's search sweeps each hold one method, labelled by the arm (``load_study``)."""
    rows, seen = [], set()
    for s in sweeps:
        if s.dir is None or s.dir in seen or not len(s.trials):  # a study's "defaults" line shares its sweep's folder
            continue
        seen.add(s.dir)
        path = Path(s.dir) / SELECTION_CSV
        selection = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["method", "rescored_se"])
        labels = list(dict.fromkeys(s.trials["method"]))
        for label, trials in s.trials.groupby("method", sort=False):
            fresh = selection if len(labels) == 1 else selection[selection["method"] == label]
            search_se = pd.to_numeric(trials["val_se"], errors="coerce")
            fresh_se = pd.to_numeric(fresh.get("rescored_se", pd.Series(dtype=float)), errors="coerce").dropna()
            rows.append(
                {
                    "search": str(label),
                    "sweep": s.name,
                    "objective": str(trials["objective"].dropna().iloc[0]) if trials["objective"].notna().any() else "",
                    "trials": int(search_se.notna().sum()),
                    **_summary("search", search_se.dropna()),
                    "rescored": len(fresh_se),
                    **_summary("fresh", fresh_se),
                }
            )
    df = pd.DataFrame(rows, columns=[*COLUMNS, "sweep"])
    twice = df["search"].duplicated(keep=False)  # the same method searched in several sweeps: name the sweep
    df.loc[twice, "search"] = df.loc[twice, "search"] + " (" + df.loc[twice, "sweep"] + ")"
    return df[COLUMNS]


def _cell(row: pd.Series, prefix: str, n: int) -> str:
    med = row[f"{prefix}_median"]
    if not math.isfinite(med):
        return "—"
    lo, hi = row[f"{prefix}_lo"], row[f"{prefix}_hi"]
    ci = f"[{100 * lo:.1f}, {100 * hi:.1f}]" if math.isfinite(lo) else "[n/a: < 6 trials]"
    return f"{100 * med:.1f} {ci} ({n} trials, {100 * row[f'{prefix}_min']:.1f}-{100 * row[f'{prefix}_max']:.1f})"


def _goal(row: pd.Series) -> str:
    """The goal on the fresh seeds (the search seeds' where none was re-scored), by the median's interval."""
    prefix = "fresh" if math.isfinite(row["fresh_median"]) else "search"
    med, lo, hi = (row[f"{prefix}_{k}"] for k in ("median", "lo", "hi"))
    if not math.isfinite(med):
        return "—"
    where = "" if prefix == "fresh" else " (search seeds: none re-scored)"
    if math.isfinite(hi) and hi <= GOAL:
        return f"met{where}"
    if math.isfinite(lo) and lo > GOAL:
        return f"missed{where}"
    side = "within" if med <= GOAL else "over"
    return f"median {side}, undetermined{where}"


def noise_markdown(df: pd.DataFrame) -> str:
    """The table in the report's words: points (or % for ARG), the median [95 % CI] (trials, range)."""
    header = [
        "search",
        "objective",
        "per-trial SE, search seeds: median [95 % CI] (trials, range)",
        "per-trial SE, fresh seeds: median [95 % CI] (re-scored trials, range)",
        f"median ≤ {100 * GOAL:.0f}",
    ]
    rows = []
    for _, r in df.iterrows():
        name, unit = OBJECTIVE_WORDS.get(r["objective"], (r["objective"], ""))
        cells = [_cell(r, "search", r["trials"]), _cell(r, "fresh", r["rescored"])]
        rows.append([r["search"], f"{name} ({unit})", *cells, _goal(r)])
    return (
        markdown(header, rows) + "\nThe objective's per-trial SE: its few-shot-seed standard error over the "
        "validation tasks, the noise two trials' scores differ by. Search seeds: every trial's best report; "
        "fresh seeds: the best trials re-scored (selection.csv), the honest measure. 95 % CI of the median: "
        "distribution-free, from order statistics (none below 6 trials). The goal, a median of at most "
        f"{100 * GOAL:.0f} points (docs/objective.md), is met when the interval lies below it and missed when "
        "above; otherwise undetermined.\n"
    )


def write_noise(sweeps: Sequence[Sweep], folder: Path) -> tuple[str, list[Path]]:
    """``objective_noise.{md,csv}`` in ``folder``; the Markdown and the files (``""``, ``[]`` without a trial SE)."""
    df = noise_table(sweeps)
    df = df[df["trials"].gt(0) | df["rescored"].gt(0)]
    if df.empty:
        return "", []
    text = noise_markdown(df)
    return text, list(write(df, text, folder, FILE))
