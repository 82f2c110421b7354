"""The sweep's ARG table: method x partition, mean ± std over seeds (Qin et al. Table 2 shape)."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from promptinit.evaluation import ARG

TABLE_MD = "arg_table.md"
TABLE_CSV = "arg_table.csv"


@dataclass
class Row:
    """One method's outcome on one partition."""

    method: str
    partition: str
    arg: ARG | None  # target ARG vs PT (None: no finished trial)
    val_arg: float | None = None  # validation ARG of the chosen checkpoint
    trials: int = 0
    finished: int = 0
    trial_id: str = ""
    settings: dict = field(default_factory=dict)


def _pct(arg: ARG | None) -> str:
    return "n/a" if arg is None else f"{100 * arg.mean:+.1f} ± {100 * arg.std:.1f}"


def markdown(rows: list[Row], seeds: list[int]) -> str:
    """The table in Markdown: one row per method, one column per partition."""
    partitions = list(dict.fromkeys(r.partition for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    cell = {(r.method, r.partition): r for r in rows}
    head = ["method", *[f"{p} (target ARG %)" for p in partitions], "val ARG %", "trials (finished)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        rs = [cell.get((m, p)) for p in partitions]
        first = next(r for r in rs if r is not None)
        val = "—" if first.val_arg is None else f"{100 * first.val_arg:+.1f}"
        lines.append("| " + " | ".join([m, *[_pct(r.arg if r else None) for r in rs], val,
                                        f"{first.trials} ({first.finished})"]) + " |")
    note = (f"\nARG = mean relative gain over the target tasks vs prompt tuning from a sampled-vocabulary "
            f"init (pt); mean ± std over few-shot seeds {seeds}.\n")
    return "\n".join(lines) + "\n" + note


def write(rows: list[Row], seeds: list[int], folder: str | Path) -> tuple[Path, Path, str]:
    """Write ``arg_table.md`` and ``arg_table.csv`` into ``folder``; return both paths and the Markdown."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, seeds)
    md = folder / TABLE_MD
    md.write_text(text)
    tasks = sorted({t for r in rows if r.arg for t in r.arg.per_task})
    path = folder / TABLE_CSV
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "partition", "arg_mean", "arg_std", "arg_per_seed", "val_arg", "trials", "finished",
                    "trial_id", "settings", *[f"rg/{t}" for t in tasks]])
        for r in rows:
            a = r.arg
            w.writerow([r.method, r.partition, "" if a is None else a.mean, "" if a is None else a.std,
                        "" if a is None else json.dumps(a.per_seed), "" if r.val_arg is None else r.val_arg,
                        r.trials, r.finished, r.trial_id, json.dumps(r.settings),
                        *["" if a is None else a.per_task.get(t, "") for t in tasks]])
    return md, path, text
