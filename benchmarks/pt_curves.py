"""PT's dev learning curves per learning rate: how many downstream steps PT needs to converge.

The CPU study (issue 12) must tune long enough that PT itself has converged on its targets, and
choose each (task, seed)'s learning rate on dev from {0.5, 0.4, 0.3, 0.2} as Qin et al. do. This
tunes PT (sampled-vocabulary init, Adafactor, batch 4) on every (task, seed, lr) as one batched
run (``promptinit.batched.tune_prompts``), evaluates dev every ``--eval-every`` steps and prints,
per evaluation step, the mean dev score over the (task, seed) pairs with its 95 % interval
(``promptinit.stats.compare``: tasks weigh alike, seeds resampled within a task) for each lr and
for the lr chosen on dev per pair (the best dev so far of its best lr, as the selection sees it
at that step). The suggested step count is the first evaluation step whose selected mean is
within ``--tolerance`` points of the last one's. Writes ``curves.csv`` and ``curves.png``.

Usage:
    python benchmarks/pt_curves.py                              # the demo's targets, 3 seeds, 60 steps
    python benchmarks/pt_curves.py --tasks bbc_topic --seeds 100 13 21 42 87 --steps 200 --eval-every 20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


from promptinit.analysis import plots
from promptinit import curves
from promptinit.backbones import Backbone, BackboneConfig
from promptinit.evaluation import TuneConfig
from promptinit.tasks.catalog import load_task

TASKS = ("bb_sports_understanding", "bbc_topic", "bb_implicatures")  # configs/partitions/demo.yaml targets
LRS = (0.5, 0.4, 0.3, 0.2)  # Qin et al.'s downstream list


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 13, 21])
    p.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--prompt-length", type=int, default=8)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--rows-per-pass", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=1.0, help="points below the last step's selected mean")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/pt_curves"))
    args = p.parse_args(argv)
    if len(args.seeds) < 2:
        p.error(f"--seeds: {args.seeds} gives no interval; pass at least 2 seeds")
    torch.set_num_threads(args.threads)
    bb = Backbone(BackboneConfig(args.model, prompt_length=args.prompt_length, dtype=args.dtype))
    tuning = TuneConfig(lr=args.lrs, batch_size=args.batch_size, steps=args.steps, eval_every=args.eval_every,
                        test_size=args.test_size, rows_per_pass=args.rows_per_pass)
    tasks = [load_task(name) for name in args.tasks]
    print(f"# pt_curves: {args.model} {bb.config.dtype}, L = {args.prompt_length}, {len(tasks)} tasks x "
          f"{len(args.seeds)} seeds x {len(args.lrs)} lrs = {len(tasks) * len(args.seeds) * len(args.lrs)} runs of "
          f"{args.steps} steps (batch {args.batch_size}, dev every {args.eval_every}), {torch.get_num_threads()} threads",
          flush=True)
    t0 = time.perf_counter()
    records = curves.pt_curves(bb, tasks, args.seeds, tuning, progress=True)
    wall = time.perf_counter() - t0
    summary = curves.summarize(records)
    print(f"\nbest dev so far, % (mean over {len(summary.pairs)} (task, seed) pairs [95 % CI]); {wall:.0f} s wall\n")
    print(curves.markdown(summary))
    enough = curves.enough_steps(summary, args.tolerance / 100)
    print(f"suggested downstream steps: {enough} (the first evaluation within {args.tolerance:g} points of "
          f"step {summary.steps[-1]}'s selected mean, {100 * summary.rows[-1][curves.CHOSEN].mean:.1f} %)")
    print("lr chosen per pair: " + ", ".join(f"{t} {s}: {lr:g}" for (t, s), lr in summary.chosen_lr.items()))

    args.out.mkdir(parents=True, exist_ok=True)
    curves.write_csv(records, args.out / "curves.csv")
    title = f"PT on {', '.join(args.tasks)} ({len(args.seeds)} seeds; band: 95 % CI)"
    plots.pt_curves(summary, args.out / "curves.png", enough, title)
    print(f"wrote {args.out / 'curves.csv'} and {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
