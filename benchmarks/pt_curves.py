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
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptinit import stats  # noqa: E402
from promptinit.backbones import Backbone, BackboneConfig  # noqa: E402
from promptinit.batched import TuneProblem, tune_prompts  # noqa: E402
from promptinit.evaluation import TuneConfig  # noqa: E402
from promptinit.tasks.catalog import load_task  # noqa: E402
from promptinit.tasks.fewshot import sample_few_shot  # noqa: E402

TASKS = ("bb_sports_understanding", "bbc_topic", "bb_implicatures")  # configs/partitions/demo.yaml targets
LRS = (0.5, 0.4, 0.3, 0.2)  # Qin et al.'s downstream list


def running_best(curve: list[dict]) -> dict[int, float]:
    """``{step: best dev so far}`` of one run's dev curve (step 0: the initial prompt)."""
    out, best = {}, float("-inf")
    for point in sorted(curve, key=lambda p: p["step"]):
        best = max(best, point["dev"])
        out[point["step"]] = best
    return out


def interval(values: dict[tuple[str, int], float]) -> stats.Interval:
    """Mean over (task, seed) pairs with ``compare``'s 95 % interval, clipped to [0, 1]."""
    i = stats.compare(values, {k: 0.0 for k in values}).diff
    return stats.Interval(i.mean, max(i.lo, 0.0), min(i.hi, 1.0))


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
    keys, problems = [], []
    for name in args.tasks:
        task = load_task(name)
        for seed in args.seeds:
            fs = sample_few_shot(task, seed, test_size=args.test_size)
            for lr in args.lrs:
                config = TuneConfig(lr=lr, batch_size=args.batch_size, steps=args.steps, eval_every=args.eval_every,
                                    test_size=args.test_size, rows_per_pass=args.rows_per_pass)
                keys.append((name, seed, lr))
                problems.append(TuneProblem(fs, bb.init_prompt("vocab", seed=seed), config))
    print(f"# pt_curves: {args.model} {bb.config.dtype}, L = {args.prompt_length}, {len(args.tasks)} tasks x "
          f"{len(args.seeds)} seeds x {len(args.lrs)} lrs = {len(problems)} runs of {args.steps} steps "
          f"(batch {args.batch_size}, dev every {args.eval_every}), {torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    results = tune_prompts(bb, problems, progress=True)
    wall = time.perf_counter() - t0
    best = {k: running_best([{"step": 0, "dev": r.init_dev}, *r.curve]) for k, r in zip(keys, results)}
    steps = sorted(next(iter(best.values())))
    pairs = sorted({(t, s) for t, s, _ in keys})
    rows = []
    for step in steps:
        row = {"step": step}
        for lr in args.lrs:
            row[f"lr {lr:g}"] = interval({(t, s): best[(t, s, lr)][step] for t, s in pairs})
        row["lr chosen on dev"] = interval({(t, s): max(best[(t, s, lr)][step] for lr in args.lrs) for t, s in pairs})
        rows.append(row)
    cols = [c for c in rows[0] if c != "step"]
    print(f"\nbest dev so far, % (mean over {len(pairs)} (task, seed) pairs [95 % CI]); {wall:.0f} s wall\n")
    print("| step | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for row in rows:
        print(f"| {row['step']} | " + " | ".join(
            f"{100 * row[c].mean:.1f} [{100 * row[c].lo:.1f}, {100 * row[c].hi:.1f}]" for c in cols) + " |")
    last = rows[-1]["lr chosen on dev"].mean
    enough = next(r["step"] for r in rows if r["lr chosen on dev"].mean >= last - args.tolerance / 100)
    chosen = {}
    for t, s in pairs:
        chosen[(t, s)] = max(args.lrs, key=lambda lr: (best[(t, s, lr)][steps[-1]], -args.lrs.index(lr)))
    print(f"\nsuggested downstream steps: {enough} (the first evaluation within {args.tolerance:g} points of "
          f"step {steps[-1]}'s selected mean, {100 * last:.1f} %)")
    print("lr chosen per pair: " + ", ".join(f"{t} {s}: {lr:g}" for (t, s), lr in chosen.items()))

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "seed", "lr", "step", "best_dev_so_far"])
        for (t, s, lr), curve in best.items():
            for step, value in curve.items():
                w.writerow([t, s, lr, step, f"{value:.6f}"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for c in cols:
        mean = [100 * r[c].mean for r in rows]
        ax.plot(steps, mean, marker="o", lw=2.5 if c == "lr chosen on dev" else 1.2, label=c)
        if c == "lr chosen on dev":
            ax.fill_between(steps, [100 * r[c].lo for r in rows], [100 * r[c].hi for r in rows], alpha=0.2)
    ax.axvline(enough, color="grey", ls="--", lw=1)
    ax.set(xlabel="downstream tuning step", ylabel="best dev so far, % (mean over pairs)",
           title=f"PT on {', '.join(args.tasks)} ({len(args.seeds)} seeds; band: 95 % CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=120)
    print(f"wrote {args.out / 'curves.csv'} and {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
