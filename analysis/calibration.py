"""Does a sweep's search objective predict the target? Spearman's rho between the calibrated
trials' validation objective and their target difference to PT (``search.calibrate``).

The sweep writes ``calibration.csv`` (one row per calibrated trial) and ``calibration.md``;
``promptinit report`` reads the csv back. Per method: rho with a 95 % percentile bootstrap
interval (trials resampled with replacement; resamples in which either column is constant have
no rank correlation and are dropped, and their share is printed), and where the method's chosen
trial ranks on the target among the calibrated ones. With the 8-16 trials a CPU sweep affords,
the interval is wide: a low or undetermined rho is a finding, not a failure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptinit.analysis.tables import markdown
from promptinit.files import atomic_write

FILE = "calibration"  # calibration.{csv,md} in the sweep folder
RESAMPLES = 4000
RHO_DELTA = "rho of validation Δ [95 % CI]"


@dataclasses.dataclass(frozen=True)
class Rho:
    """Spearman's rho with its bootstrap interval."""

    rho: float
    lo: float
    hi: float
    n: int  # trials
    dropped: float  # share of resamples without a rank correlation (a constant column)

    def fmt(self) -> str:
        if not math.isfinite(self.rho):
            return "n/a"
        return f"{self.rho:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}]"


def spearman(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> Rho:
    """Spearman's rho of ``x`` and ``y`` with a 95 % percentile bootstrap interval over the pairs."""
    from scipy.stats import rankdata

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(a)
    if n < 3 or not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return Rho(math.nan, math.nan, math.nan, n, 1.0)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    rx, ry = rankdata(a[idx], axis=1), rankdata(b[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    ok = den > 0
    boot = (rx * ry).sum(axis=1)[ok] / den[ok]
    point = _rho(a, b)
    lo, hi = np.quantile(boot, [0.025, 0.975]) if boot.size else (math.nan, math.nan)
    return Rho(point, float(lo), float(hi), n, float(1 - ok.mean()))


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The calibrated trials (``search.phases.calibrate.Calibrated`` as dicts), with each trial's
    rank on the target among its method's calibrated trials (1 = largest difference to PT)."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        return df
    df["target_rank"] = df.groupby("method")["target_diff"].rank(ascending=False, method="min").astype(int)
    return df.sort_values(["method", "val_rank"]).reset_index(drop=True)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per method: trials, rho [95 % CI] of the validation ARG and of the validation score
    difference (``val/delta``, NaN where not on record), the search objective (``arg`` or
    ``delta``; ``arg`` for files from before it was a setting), and the chosen trial's rank on
    the target."""
    out = []
    for method, g in df.groupby("method", sort=True):
        r = spearman(g["val_arg"].to_numpy(), g["target_diff"].to_numpy())
        d = spearman(_column(g, "val_delta"), g["target_diff"].to_numpy())
        chosen = g[g["chosen"].astype(bool)]
        out.append(
            {
                "method": method,
                "trials": len(g),
                "rho": r.rho,
                "rho_lo": r.lo,
                "rho_hi": r.hi,
                "rho_dropped": r.dropped,
                "rho_delta": d.rho,
                "rho_delta_lo": d.lo,
                "rho_delta_hi": d.hi,
                "rho_delta_dropped": d.dropped,
                "objective": str(g["objective"].iloc[0]) if "objective" in g else "arg",
                "chosen_target_rank": int(chosen["target_rank"].iloc[0]) if len(chosen) else None,
                "pairs": int(g["pairs"].iloc[0]),
            }
        )
    return pd.DataFrame(out)


def pooled(df: pd.DataFrame) -> pd.DataFrame:
    """Per method searched more than once in one study: its calibrated trials of every search
    together, each configuration once, and Spearman's rho of the validation ARG and of the
    validation Δ with the target difference (columns as ``summary``'s, with ``searches``).

    The same configuration in two searches of one study is the same trial (the same inputs and
    code: computed twice, or replayed, with the same scores), so its checkpoint counts once: a
    row with the configuration and the validation scores of another is that checkpoint again.
    (The same configuration with other scores is another checkpoint: one search's ASHA stopped
    the trial at another step.) Needs the columns ``base_method`` (the method), ``search`` (the
    search's folder) and ``config`` (the trial's settings as canonical JSON; "" where unknown:
    such a trial counts as distinct)."""
    if df.empty or not {"base_method", "search", "config"} <= set(df.columns):
        return pd.DataFrame()
    out = []
    for method, g in df.assign(key=checkpoint_keys(df)).groupby("base_method", sort=True):
        if g["search"].nunique() < 2:
            continue
        g = g.drop_duplicates("key")
        r = spearman(g["val_arg"].to_numpy(), g["target_diff"].to_numpy())
        d = spearman(_column(g, "val_delta"), g["target_diff"].to_numpy())
        out.append(
            {
                "method": method,
                "searches": int(df.loc[df["base_method"] == method, "search"].nunique()),
                "trials": len(g),
                "rho": r.rho,
                "rho_lo": r.lo,
                "rho_hi": r.hi,
                "rho_delta": d.rho,
                "rho_delta_lo": d.lo,
                "rho_delta_hi": d.hi,
                "objective": str(g["objective"].iloc[0]) if "objective" in g else "arg",
            }
        )
    return pd.DataFrame(out)


def checkpoint_keys(df: pd.DataFrame) -> pd.Series:
    """Per calibrated trial, its checkpoint's key: the configuration with its validation scores
    (``pooled``'s rule: two searches' trials with both alike are one checkpoint), or the search and
    trial id where the configuration is unknown (no ``config`` column, or "")."""
    if "config" not in df or "search" not in df:
        return df["trial_id"].astype(str)
    scores = df["val_arg"].map(repr) + "/" + df["val_delta"].map(repr) if "val_delta" in df else df["val_arg"].map(repr)
    return (df["config"] + "@" + scores).where(df["config"] != "", df["search"] + "/" + df["trial_id"])


def _marked(rho: Rho, objective: str, r: Any) -> str:
    """``rho`` formatted, marked when it is of the row's search objective."""
    return rho.fmt() + (" (the objective)" if r.objective == objective else "")


def _pooled_markdown(p: pd.DataFrame) -> str:
    table_ = markdown(
        ["method", "searches", "distinct trials", "Spearman rho of validation ARG [95 % CI]", RHO_DELTA],
        [
            [
                r.method,
                r.searches,
                r.trials,
                _marked(Rho(r.rho, r.rho_lo, r.rho_hi, r.trials, 0.0), "arg", r),
                _marked(Rho(r.rho_delta, r.rho_delta_lo, r.rho_delta_hi, r.trials, 0.0), "delta", r),
            ]
            for r in p.itertuples()
        ],
    )
    return (
        "Each method's searches together (their calibrated trials pooled; a checkpoint both searches "
        f"scored, the same configuration with the same validation scores, counts once):\n\n{table_}"
    )


def _column(g: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column, all NaN when the file predates it."""
    return pd.to_numeric(g[name], errors="coerce").to_numpy() if name in g else np.full(len(g), np.nan)


def _summary_markdown(s: pd.DataFrame) -> str:
    """``summary``'s rows as a table; the rho of the search's objective is marked."""
    return markdown(
        [
            "method",
            "trials",
            "Spearman rho of validation ARG [95 % CI]",
            RHO_DELTA,
            "chosen trial's rank on target",
        ],
        [
            [
                r.method,
                r.trials,
                _marked(Rho(r.rho, r.rho_lo, r.rho_hi, r.trials, r.rho_dropped), "arg", r),
                _marked(Rho(r.rho_delta, r.rho_delta_lo, r.rho_delta_hi, r.trials, r.rho_delta_dropped), "delta", r),
                f"{r.chosen_target_rank} of {r.trials}" if r.chosen_target_rank else "not calibrated",
            ]
            for r in s.itertuples()
        ],
    )


def to_markdown(df: pd.DataFrame) -> str:
    """The summary and the per-trial table, with what they rest on."""
    if df.empty:
        return "No calibrated trials."
    s = summary(df)
    head = _summary_markdown(s)
    trials = markdown(
        [
            "method",
            "trial",
            "validation rank",
            "validation ARG",
            "validation Δ (points)",
            "re-scored ARG",
            "target Δ vs PT (points)",
            "target rank",
        ],
        [
            [
                r.method,
                r.trial_id + (" (chosen)" if r.chosen else ""),
                r.val_rank,
                f"{100 * r.val_arg:+.1f} %",
                f"{100 * getattr(r, 'val_delta', math.nan):+.1f}"
                if math.isfinite(getattr(r, "val_delta", math.nan))
                else "",
                f"{100 * r.rescored_arg:+.1f} %" if math.isfinite(r.rescored_arg) else "",
                f"{100 * r.target_diff:+.1f}",
                r.target_rank,
            ]
            for r in df.itertuples()
        ],
    )
    pairs = int(s["pairs"].iloc[0])
    p = pooled(df)
    together = f"{_pooled_markdown(p)}\n\n" if len(p) else ""
    return (
        "Does the search objective predict the target? Spearman's rho between each calibrated trial's "
        "validation ARG, and its validation score difference Δ to PT, and its mean target difference to PT "
        "(the search ranked trials by the one marked the objective) "
        f"({pairs} target (task, seed) pairs per trial; trials spread over the validation ranking; 95 % "
        f"percentile bootstrap over trials, {RESAMPLES} resamples).\n\n{head}\n\n{together}{trials}\n"
    )


def write_calibration(rows: Iterable[Any], folder: str | Path) -> str:
    """Write ``calibration.{csv,md}`` (atomically) from ``Calibrated`` rows (or dicts); returns the Markdown."""
    df = table(dict(r) if isinstance(r, Mapping) else dataclasses.asdict(r) for r in rows)
    folder = Path(folder)
    text = to_markdown(df)
    atomic_write(folder / f"{FILE}.csv", df.to_csv(index=False))
    atomic_write(folder / f"{FILE}.md", text)
    return text


def read(folder: str | Path) -> pd.DataFrame | None:
    """A sweep's ``calibration.csv``, or None when it calibrated nothing."""
    path = Path(folder) / f"{FILE}.csv"
    return pd.read_csv(path, dtype={"trial_id": str}) if path.is_file() else None
