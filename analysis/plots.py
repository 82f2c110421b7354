"""Plots of a sweep (matplotlib figures without pyplot, PNG).

Each function draws one figure from the tidy tables, writes it and returns the path. ARG is
shown in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

DPI = 110


def _subplots(*grid: int, figsize: tuple[float, float], squeeze: bool = True):
    """``plt.subplots`` without pyplot: a figure of its own (Agg canvas when saved), so drawing a
    report never touches the backend or the figures of a user's session (a notebook's, say)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, squeeze=squeeze)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def arg_bars(
    table: pd.DataFrame,
    path: Path,
    value: str = "diff_mean",
    lo: str = "diff_lo",
    hi: str = "diff_hi",
    ylabel: str = "Δ test score vs PT (points)",
    title: str = "difference with prompt tuning\n(mean and 95 % CI over (task, seed) pairs)",
) -> Path:
    """Bars per method with asymmetric error bars from ``lo`` to ``hi`` and the zero line,
    one group of bars per partition. The default is the headline: the absolute difference with
    PT and its bootstrap interval (``analysis.tables.arg_table``); a bar whose whisker crosses
    the zero line is not "better" or "worse" than PT (the table's verdict says whether it is
    equivalent or undetermined). A row without an interval (an old sweep) gets a bar
    without whiskers, a missing value no bar.

    Args:
        table: rows with partition, method, ``value``, ``lo`` and ``hi`` (fractions).
        path: the PNG.
    """
    partitions = list(dict.fromkeys(table["partition"]))
    methods = list(dict.fromkeys(table["method"]))
    cell = {(r["partition"], r["method"]): (r[value], r[lo], r[hi]) for _, r in table.iterrows()}
    width = 0.8 / max(len(partitions), 1)
    fig, ax = _subplots(figsize=(max(5.0, 1.2 * len(methods) + 2.5), 3.8))
    x = np.arange(len(methods))
    for i, p in enumerate(partitions):
        values = np.array([cell.get((p, m), (np.nan,) * 3) for m in methods], dtype=float) * 100  # [methods, 3]
        means, lows, highs = values.T
        # matplotlib wants distances below and above the bar; a missing bound draws no whisker
        below, above = np.nan_to_num(means - lows), np.nan_to_num(highs - means)
        ax.bar(
            x + (i - (len(partitions) - 1) / 2) * width,
            means,
            width,
            yerr=np.vstack([below, above]),
            capsize=4,
            label=p,
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, methods)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    if len(partitions) > 1:
        ax.legend(title="partition", fontsize="small")
    return _save(fig, path)


def contrast_bars(table: pd.DataFrame, path: Path) -> Path | None:
    """One horizontal bar per contrast (``analysis.tables.contrasts``): Δ a − b in points with
    its 95 % CI as whiskers and the zero line; a whisker across the line is neither "better" nor "worse".
    Labelled "a − b" over its question, coloured by question; None when no contrast has a value."""
    rows = table[table["diff_mean"].notna()] if len(table) else table
    if not len(rows):
        return None
    several = table["partition"].nunique() > 1
    labels = [
        f"{r.a} − {r.b}" + (f" ({r.partition})" if several else "") + f"\n{r.question}" for r in rows.itertuples()
    ]
    questions = list(dict.fromkeys(rows["question"]))
    means, lows, highs = (rows[c].to_numpy(dtype=float) * 100 for c in ("diff_mean", "diff_lo", "diff_hi"))
    y = np.arange(len(rows))[::-1]  # the table's first row on top
    fig, ax = _subplots(figsize=(8.0, 1.4 + 0.6 * len(rows)))
    ax.barh(
        y,
        means,
        xerr=np.vstack([np.nan_to_num(means - lows), np.nan_to_num(highs - means)]),
        capsize=3,
        color=[f"C{questions.index(q) % 10}" for q in rows["question"]],
    )
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize="small")
    ax.set_xlabel("Δ test score, a − b (points; whiskers: 95 % CI)")
    ax.set_title(
        "the study's arms against each other\n(mean and 95 % CI over the same (task, seed) pairs)", fontsize="medium"
    )
    return _save(fig, path)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def sensitivity(trials: pd.DataFrame, method: str, path: Path) -> Path | None:
    """The validation objective (``search.objective``) against each searched setting of ``method``
    (one panel per setting).

    Failed trials are left out. Hollow markers: trials ASHA stopped early. Settings that never varied are left out; None
    when nothing varied.
    """
    g = trials[
        (trials["method"] == method) & trials["val"].astype(float).map(math.isfinite) & (trials["status"] != "failed")
    ]
    params = [dict(p or {}) for p in g["params"]]
    names = [n for n in sorted({k for p in params for k in p}) if len({repr(p.get(n)) for p in params}) > 1]
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = _subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    y = 100 * g["val"].astype(float).to_numpy()
    label = _objective_label(g)
    stopped = g["stopped_early"].fillna(False).astype(bool).to_numpy()
    for ax, name in zip(axes.flat, names, strict=False):  # the grid may have spare panels
        values = [p.get(name) for p in params]
        if all(_is_number(v) for v in values):
            xs = np.array(values, dtype=float)
            if xs.min() > 0 and xs.max() / xs.min() >= 10:
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v in values})
            xs = np.array([cats.index(str(v)) for v in values], dtype=float)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize="small")
        ax.scatter(xs[~stopped], y[~stopped], color="C0", label="finished")
        if stopped.any():
            ax.scatter(xs[stopped], y[stopped], facecolors="none", edgecolors="C0", label="stopped early")
        ax.set_xlabel(name)
        ax.set_ylabel(label)
        ax.axhline(0, color="grey", lw=0.6)
    if stopped.any():
        axes.flat[0].legend(fontsize="small")
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"{method}: sensitivity of the validation objective ({label})")
    return _save(fig, path)


def _objective_label(rows: pd.DataFrame) -> str:
    """The axis label of the validation objective of ``rows`` (trials or best-so-far rows of one panel)."""
    from promptinit.analysis.tables import objective_label, objective_of

    return objective_label(objective_of(rows))


def learning_curves(trials: pd.DataFrame, path: Path) -> Path | None:
    """The validation objective against upstream steps: one panel per method, one line per trial."""
    methods = list(dict.fromkeys(trials["method"]))
    if not methods or not any(len(c or []) for c in trials["curve"]):
        return None
    cols = min(3, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = _subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False)
    for ax, method in zip(axes.flat, methods, strict=False):  # the grid may have spare panels
        for t in trials[trials["method"] == method].itertuples():
            pts = [(p["step"], p["val"]) for p in (t.curve or []) if _is_number(p["val"])]
            if pts:
                xs, ys = zip(*pts, strict=True)
                failed = t.status == "failed"
                ax.plot(
                    xs,
                    100 * np.array(ys),
                    marker="x" if failed else "o",
                    ms=4 if failed else 3,
                    lw=1,
                    alpha=0.8,
                    ls=":" if failed else "--" if t.stopped_early else "-",
                )
        ax.set_title(method)
        ax.set_xlabel("upstream step")
        ax.set_ylabel(_objective_label(trials[trials["method"] == method]))
        ax.axhline(0, color="grey", lw=0.6)
    for ax in list(axes.flat)[len(methods) :]:
        ax.set_visible(False)
    fig.suptitle("the validation objective during meta-training (dashed: stopped early, dotted/x: failed)")
    return _save(fig, path)


def best_so_far_curves(
    progress: pd.DataFrame, path: Path, labels: Mapping[str, str] | None = None, z: float = 1.959964
) -> Path | None:
    """The best validation objective found so far against cumulative compute: one panel per method
    (a sweep's trials of every method first, where there are several), one line per sweep.

    Each line steps up where a trial beat the best so far (a dot per trial); the band is
    ±``z`` standard errors of the trial that holds the best (over its validation pairs), where
    recorded. A running max of noisy estimates is biased upward: the band shows the noise of
    the current best, not of the maximum.

    Args:
        progress: ``analysis.tables.best_so_far`` of one or more sweeps.
        path: the PNG.
        labels: sweep name -> legend label (default the name).
        z: band half-width in standard errors (1.96: 95 % normal interval).

    Returns:
        The path, or None when no trial has a result yet.
    """
    from promptinit.analysis.tables import ALL_METHODS

    if progress.empty or not np.isfinite(progress["best"].astype(float)).any():
        return None
    labels = dict(labels or {})
    panels = sorted(dict.fromkeys(progress["method"]), key=lambda m: m != ALL_METHODS)  # stable: the rest keep order
    sweeps = list(dict.fromkeys(progress["sweep"]))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    # wide enough for the title with one panel
    fig, axes = _subplots(rows, cols, figsize=(max(6.4, 4.4 * cols), 3.3 * rows + 0.4), squeeze=False)
    for ax, method in zip(axes.flat, panels, strict=False):  # the grid may have spare panels
        for i, sweep in enumerate(sweeps):  # one colour per sweep in every panel
            g = progress[(progress["method"] == method) & (progress["sweep"] == sweep)]
            _best_so_far_line(ax, g, f"C{i}", labels.get(sweep, sweep), z)
        ax.set_xlim(left=0)  # compute from the start of the search
        ax.set_title(method)
        ax.set_xlabel(f"cumulative {progress['unit'].iloc[0]}")
        ax.set_ylabel(f"best {_objective_label(progress[progress['method'] == method])} so far")
        ax.axhline(0, color="grey", lw=0.6)
    # the legend on the first panel with a line (a sweep may have no result for some methods)
    next(ax for ax in axes.flat if ax.get_legend_handles_labels()[0]).legend(fontsize="small", title="sweep")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"best validation objective found so far (band: ±{z:.2f} SE of the best trial)")
    return _save(fig, path)


def _best_so_far_line(ax, g: pd.DataFrame, color: str, label: str, z: float) -> None:
    """Draws one sweep's line of a panel (steps, a dot per trial, the band, the final whisker); returns nothing."""
    x = g["compute"].to_numpy(dtype=float)
    y = 100 * g["best"].to_numpy(dtype=float)
    half = 100 * z * g["best_se"].to_numpy(dtype=float)
    ok = np.isfinite(y)
    if not ok.any():
        return
    x, y, half = x[ok], y[ok], half[ok]
    ax.step(x, y, where="post", color=color, lw=1.5, label=label)
    ax.plot(x, y, "o", ms=3, color=color)
    band = np.isfinite(half)
    if band.any():
        ax.fill_between(
            x,
            y - np.nan_to_num(half),
            y + np.nan_to_num(half),
            where=band,
            step="post",
            color=color,
            alpha=0.2,
            lw=0,
        )
    if band[-1]:  # the band ends at the last trial: the final best gets a whisker
        ax.errorbar(x[-1], y[-1], yerr=half[-1], color=color, capsize=3, lw=1)


def importances(values: Mapping[str, float], method: str, path: Path) -> Path:
    """Horizontal bars of Optuna parameter importances (largest on top)."""
    names = list(values)[::-1]
    fig, ax = _subplots(figsize=(5.0, 0.5 * len(names) + 1.4))
    ax.barh(names, [values[n] for n in names], color="C2")
    ax.set_xlabel("importance (fANOVA)")
    ax.set_xlim(0, 1)
    ax.set_title(f"{method}: hyperparameter importance for the validation objective")
    return _save(fig, path)


def similarity_heatmap(names: Sequence[str], matrix: np.ndarray, path: Path, title: str = "task similarity") -> Path:
    """Heat map of a task-similarity matrix (values in [0, 1], annotated when small)."""
    n = len(names)
    fig, ax = _subplots(figsize=(max(5.0, 1.5 + 0.55 * n), max(4.0, 1.2 + 0.5 * n)))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(n), names, fontsize="small")
    if n <= 15:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] < 0.6 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize="medium")
    return _save(fig, path)


def pt_curves(summary, path: Path, enough: int | None = None, title: str = "PT's dev learning curves") -> Path:
    """PT's best dev score so far against downstream steps (``promptinit.curves.summarize``): one
    line per lr and a thick one for the lr chosen on dev per pair, with its 95 % band; a dashed
    line at the step count chosen from it."""
    from promptinit.curves import CHOSEN

    fig, ax = _subplots(figsize=(7, 4))
    steps = list(summary.steps)
    for c in summary.columns:
        chosen = c == CHOSEN
        ax.plot(steps, [100 * r[c].mean for r in summary.rows], marker="o", lw=2.5 if chosen else 1.2, label=c)
        if chosen:
            ax.fill_between(
                steps, [100 * r[c].lo for r in summary.rows], [100 * r[c].hi for r in summary.rows], alpha=0.2
            )
    if enough is not None:
        ax.axvline(enough, color="grey", ls="--", lw=1, label=f"chosen: {enough} steps")
    ax.set(
        xlabel="downstream tuning step",
        ylabel=f"best dev so far, % (mean over {len(summary.pairs)} pairs)",
        title=title,
    )
    ax.legend(fontsize=8)
    return _save(fig, path)
