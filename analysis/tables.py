"""Paper-style tables from the tidy results: Markdown for reading, CSV (long form) for reuse.

- ``arg_table``: target ARG per method x partition, mean ± std over few-shot seeds, in the
  shape of Qin et al. (2023) Table 2 (methods as rows, settings as columns);
- ``validation_table``: what the search saw: best validation ARG per method and the spread
  over its trials (the hyperparameter sensitivity the papers warn about);
- ``task_gains``: relative gain per target task (averaged over seeds);
- ``cost_table``: trials, wall / CPU / GPU hours and ARG per accelerator-hour.

ARG values are fractions in the CSVs and percentages in the Markdown.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

ARG_NOTE = ("ARG = mean relative gain over the target tasks vs prompt tuning from a sampled-vocabulary "
            "init (pt), in %; mean ± std (population) over few-shot seeds.")


def pct(mean: float, std: float | None = None) -> str:
    """``+20.0 ± 8.2`` (fractions in, percent out); ``n/a`` for a missing value."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{100 * mean:+.1f}"
    if std is not None and math.isfinite(std):
        text += f" ± {100 * std:.1f}"
    return text


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    cells = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def _order(values) -> list:
    return list(dict.fromkeys(values))


def arg_table(targets: pd.DataFrame) -> pd.DataFrame:
    """Target ARG per (partition, method), long form.

    Columns: partition, method, arg_mean, arg_std, n_seeds, per_seed (JSON), trial_id.
    Mean and std are recomputed from the per-seed ARGs when present (population std, as
    ``promptinit.evaluation.ARG``).
    """
    rows = []
    for t in targets.itertuples():
        per_seed = dict(t.per_seed or {})
        mean, std = t.arg_mean, t.arg_std
        if per_seed:
            values = np.array([per_seed[s] for s in sorted(per_seed)], dtype=float)
            mean, std = float(values.mean()), float(values.std())
        rows.append({"partition": t.partition, "method": t.method, "arg_mean": mean, "arg_std": std,
                     "n_seeds": len(per_seed), "per_seed": json.dumps({str(k): v for k, v in sorted(per_seed.items())}),
                     "trial_id": t.trial_id})
    return pd.DataFrame(rows, columns=["partition", "method", "arg_mean", "arg_std", "n_seeds", "per_seed", "trial_id"])


def arg_markdown(table: pd.DataFrame) -> str:
    """Methods as rows, partitions as columns, ``mean ± std`` in % (Qin et al. Table 2 shape)."""
    partitions, methods = _order(table["partition"]), _order(table["method"])
    cell = {(r.partition, r.method): pct(r.arg_mean, r.arg_std) for r in table.itertuples()}
    rows = [[m, *[cell.get((p, m), "—") for p in partitions]] for m in methods]
    return markdown(["method", *partitions], rows) + "\n" + ARG_NOTE + "\n"


def validation_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The search per (partition, method): trial counts and validation ARG (best and spread).

    Columns: partition, method, trials, finished, failed, stopped_early, best_trial,
    val_arg_best, val_arg_best_std (over validation seeds), val_arg_mean, val_arg_std (over
    trials), val_arg_min, val_arg_max.
    """
    rows = []
    for (partition, method), g in trials.groupby(["partition", "method"], sort=False):
        # Failed trials count as trials but not as results (the sweep never picks them either).
        scored = g[np.isfinite(g["val_arg"].astype(float)) & (g["status"] != "failed")]
        best = scored.loc[scored["val_arg"].astype(float).idxmax()] if len(scored) else None
        v = scored["val_arg"].astype(float)
        rows.append({
            "partition": partition, "method": method, "trials": len(g),
            "finished": int((g["status"] == "finished").sum()), "failed": int((g["status"] == "failed").sum()),
            "stopped_early": int(g["stopped_early"].fillna(False).astype(bool).sum()),
            "best_trial": best["trial_id"] if best is not None else "",
            "val_arg_best": float(best["val_arg"]) if best is not None else math.nan,
            "val_arg_best_std": float(best["val_arg_std"]) if best is not None else math.nan,
            "val_arg_mean": float(v.mean()) if len(v) else math.nan,
            "val_arg_std": float(v.std(ddof=0)) if len(v) else math.nan,
            "val_arg_min": float(v.min()) if len(v) else math.nan,
            "val_arg_max": float(v.max()) if len(v) else math.nan,
        })
    return pd.DataFrame(rows)


def validation_markdown(table: pd.DataFrame) -> str:
    rows = [[r.partition, r.method, f"{r.trials} ({r.finished} finished, {r.failed} failed, {r.stopped_early} stopped early)",
             pct(r.val_arg_best, r.val_arg_best_std), r.best_trial, pct(r.val_arg_mean, r.val_arg_std),
             f"{pct(r.val_arg_min)} … {pct(r.val_arg_max)}"] for r in table.itertuples()]
    head = ["partition", "method", "trials", "best val ARG %", "best trial", "val ARG % over trials", "range"]
    return markdown(head, rows) + ("\nValidation ARG: on the partition's validation tasks (the search objective). "
                                   "Best: the trial's best report, ± std over validation seeds; over trials: "
                                   "mean ± std of each trial's best.\n")


def task_gains(targets: pd.DataFrame) -> pd.DataFrame:
    """Relative gain per target task (mean over seeds): partition, method, task, rg."""
    rows = [{"partition": t.partition, "method": t.method, "task": task, "rg": float(rg)}
            for t in targets.itertuples() for task, rg in sorted((t.per_task or {}).items())]
    return pd.DataFrame(rows, columns=["partition", "method", "task", "rg"])


def task_gains_markdown(gains: pd.DataFrame) -> str:
    parts = []
    for partition, g in gains.groupby("partition", sort=False):
        tasks, methods = _order(g["task"]), _order(g["method"])
        cell = {(r.method, r.task): pct(r.rg) for r in g.itertuples()}
        parts.append(f"### {partition}\n\n" + markdown(["method", *tasks], [[m, *[cell.get((m, t), "—") for t in tasks]]
                                                                            for m in methods]))
    if not parts:
        return "No target-task results yet.\n"
    return "\n".join(parts) + "\nRelative gain (%) over prompt tuning per target task, mean over few-shot seeds.\n"


def cost_table(trials: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Search cost and ARG per accelerator-hour, per (partition, method).

    The accelerator is the GPU when any trial of the table used one, else the CPU (so every
    method is measured in the same unit). Hours are resource-seconds / 3600 summed over the
    method's trials (the search only; the final target evaluation is not included).

    Columns: partition, method, trials, wall_h, cpu_h, gpu_h, accelerator, accel_h,
    val_arg_best, target_arg, target_arg_per_accel_h, val_arg_per_accel_h.
    """
    use_gpu = bool((trials["gpu_s"].astype(float).fillna(0) > 0).any()) if len(trials) else False
    target = {(t.partition, t.method): t.arg_mean for t in arg_table(targets).itertuples()}
    rows = []
    for (partition, method), g in trials.groupby(["partition", "method"], sort=False):
        wall_h = float(g["wall_s"].astype(float).sum()) / 3600
        # one trial of unknown reservation (NaN) makes the sum unknown, never an undercount
        cpu_h = float(g["cpu_s"].astype(float).sum(skipna=False)) / 3600
        gpu_h = float(g["gpu_s"].astype(float).sum(skipna=False)) / 3600
        accel_h = gpu_h if use_gpu else cpu_h
        val = g["val_arg"].astype(float)
        best = float(val.max()) if val.notna().any() else math.nan
        tgt = target.get((partition, method), math.nan)
        per = (lambda x: x / accel_h if accel_h and math.isfinite(accel_h) and accel_h > 0 else math.nan)
        rows.append({"partition": partition, "method": method, "trials": len(g), "wall_h": wall_h, "cpu_h": cpu_h,
                     "gpu_h": gpu_h, "accelerator": "GPU" if use_gpu else "CPU", "accel_h": accel_h,
                     "val_arg_best": best, "target_arg": tgt, "target_arg_per_accel_h": per(tgt),
                     "val_arg_per_accel_h": per(best)})
    return pd.DataFrame(rows)


def cost_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "No trials.\n"
    unit = table["accelerator"].iloc[0]

    def num(x: float, digits: int = 3) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"

    rows = [[r.partition, r.method, r.trials, num(r.wall_h), num(r.cpu_h), num(r.gpu_h),
             pct(r.target_arg), pct(r.target_arg_per_accel_h), pct(r.val_arg_per_accel_h)] for r in table.itertuples()]
    head = ["partition", "method", "trials", "wall h", "CPU h", "GPU h",
            "target ARG %", f"target ARG % per {unit} h", f"best val ARG % per {unit} h"]
    return markdown(head, rows) + (f"\nCost of the search (all trials of the method, failed ones included; the final "
                                   f"target evaluation is not counted). CPU h / GPU h = CPUs / GPUs reserved per "
                                   f"trial x trial wall time; the accelerator is the {unit}.\n")


def write(df: pd.DataFrame, md_text: str, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv``; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    md, csv_path = folder / f"{stem}.md", folder / f"{stem}.csv"
    md.write_text(md_text)
    df.to_csv(csv_path, index=False)
    return md, csv_path
