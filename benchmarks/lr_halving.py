"""Successive halving over the downstream learning rates: does it keep full selection's choice, for less?

Qin et al. choose each (task, seed)'s learning rate on dev from {0.5, 0.4, 0.3, 0.2}: four full
runs per problem. ``TuneConfig.lr_halving`` stops the trailing half of a problem's lr runs at each
rung (``promptinit.tuning.halving_rungs``; 4 lrs, 60 steps: 2 left after step 20, 1 after step
40, 140 run-steps instead of 240). It may be the default only if, on the CPU study's 15 PT pairs
(its 3 targets x 5 few-shot seeds, its recipe), the test score moves by at most +-1 point (the
95 % interval of the mean difference inside [-1, +1]) and it costs at most 0.6x.

Two measurements:

1. **offline**, from a study's committed PT dev curves (``pt_curves.csv``: best dev so far per
   task, seed, lr and step): the lr halving keeps vs the lr full selection keeps, per pair. No
   test scores there, so this gives the agreement only.
2. **live**: PT tuned on every pair twice, with full selection and with halving, each as one
   batched run on this machine (CPU seconds of each, run-steps of each), and per pair the kept lr
   and the test score; the difference (halving - full) with its 95 % interval from
   ``promptinit.stats.compare`` (tasks weigh alike, seeds resampled within a task). Where the two
   keep the same lr the scores can still differ by rounding (the runs share passes with other
   runs in each batched call).

Writes ``lr_halving.md`` and ``lr_halving.csv`` to ``--out``.

Usage:
    python benchmarks/lr_halving.py                        # the CPU study's 15 pairs (2 h of CPU on 2 threads, 6 Dec 2026)
    python benchmarks/lr_halving.py --offline-only         # the agreement from the committed curves
    python benchmarks/lr_halving.py --tasks bbc_topic --seeds 100 13 --steps 20 --eval-every 10
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from promptinit.tuning import TuneConfig, halving_rungs

TASKS = ("bb_intent_recognition", "bb_multiemo_hotels_en", "bbc_topic")  # configs/study/cpu.yaml targets
SEEDS = (100, 13, 21, 42, 87)
LRS = (0.5, 0.4, 0.3, 0.2)
CURVES = Path("runs/cpu-study/pt_curves.csv")


def full_choice(curve: dict[float, dict[int, float]], lrs: Sequence[float], steps: int) -> float:
    """The lr full selection keeps: the best dev after ``steps`` (a tie keeps the earlier lr)."""
    best = lrs[0]
    for lr in lrs:
        if curve[lr][steps] > curve[best][steps]:
            best = lr
    return best


def halving_choice(curve: dict[float, dict[int, float]], config: TuneConfig) -> float:
    """The lr successive halving keeps, replayed on best-dev-so-far curves ``{lr: {step: dev}}``."""
    live = list(config.lrs)
    for step, keep in sorted(halving_rungs(config).items()):
        live = sorted(live, key=lambda lr: -curve[lr][step])[:keep]  # stable: a tie keeps the earlier lr
        live = [lr for lr in config.lrs if lr in live]
    return full_choice(curve, live, config.steps)


def offline(path: Path, config: TuneConfig) -> list[dict]:
    """Per (task, seed) of a study's ``pt_curves.csv``: the lr full selection and halving keep."""
    curves: dict[tuple[str, int], dict[float, dict[int, float]]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            pair = (r["task"], int(r["seed"]))
            curves.setdefault(pair, {}).setdefault(float(r["lr"]), {})[int(r["step"])] = float(r["best_dev"])
    return [
        {
            "task": t,
            "seed": s,
            "full_lr": full_choice(c, config.lrs, config.steps),
            "halving_lr": halving_choice(c, config),
        }
        for (t, s), c in sorted(curves.items())
    ]


def run_steps(config: TuneConfig) -> int:
    """Steps of every lr run of one problem (no early stopping)."""
    k, steps, total, live = len(config.lrs), config.steps, 0, len(config.lrs)
    last = 0
    for step, keep in sorted(halving_rungs(config).items()):
        total += live * (step - last)
        live, last = keep, step
    return total + live * (steps - last) if k else 0


def live(args: argparse.Namespace, config: TuneConfig) -> tuple[list[dict], dict[str, float]]:
    """Tune PT on every pair with full selection, then with halving; per pair and the costs."""
    from promptinit.backbones import Backbone, BackboneConfig
    from promptinit.batched import TuneProblem, tune_prompts
    from promptinit.tasks.catalog import load_task
    from promptinit.tasks.fewshot import sample_few_shot

    torch.set_num_threads(args.threads)
    bb = Backbone(
        BackboneConfig(
            args.model, prompt_length=args.prompt_length, dtype=args.dtype, max_input_tokens=args.max_input_tokens
        )
    )
    pairs = [(load_task(t), s) for t in args.tasks for s in args.seeds]
    problems = [
        TuneProblem(sample_few_shot(t, s, test_size=args.test_size), bb.init_prompt("vocab", seed=s)) for t, s in pairs
    ]
    print(
        f"# {args.model} {bb.config.dtype}, {len(pairs)} pairs x {len(config.lrs)} lrs, {config.steps} steps, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    results, cpu = {}, {}
    for name, cfg in (("full", dataclasses.replace(config, lr_halving=False)), ("halving", config)):
        t0 = time.process_time()
        results[name] = tune_prompts(bb, problems, cfg, progress=True)
        cpu[name] = time.process_time() - t0
        print(f"{name}: {cpu[name]:.0f} CPU s", flush=True)
    rows = [
        {
            "task": t.name,
            "seed": s,
            "full_lr": f.lr,
            "halving_lr": h.lr,
            "full_dev": f.dev,
            "halving_dev": h.dev,
            "full_test": f.test,
            "halving_test": h.test,
        }
        for (t, s), f, h in zip(pairs, results["full"], results["halving"], strict=True)
    ]
    return rows, cpu


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    mid, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    return mid - half, mid + half


def agreement(rows: Sequence[dict]) -> str:
    k, n = sum(r["full_lr"] == r["halving_lr"] for r in rows), len(rows)
    lo, hi = wilson(k, n)
    return f"{k}/{n} pairs keep the same lr ({100 * k / max(n, 1):.0f} %, 95 % CI [{100 * lo:.0f}, {100 * hi:.0f}] %)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--prompt-length", type=int, default=8)
    p.add_argument("--max-input-tokens", type=int, default=64)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--rows-per-pass", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--curves", type=Path, default=CURVES, help="a study's pt_curves.csv (the offline replay)")
    p.add_argument("--offline-only", action="store_true", help="replay the committed curves only")
    p.add_argument("--out", type=Path, default=Path("runs/lr_halving"))
    args = p.parse_args(argv)
    config = TuneConfig(
        lr=args.lrs,
        batch_size=args.batch_size,
        steps=args.steps,
        eval_every=args.eval_every,
        test_size=args.test_size,
        rows_per_pass=args.rows_per_pass,
        lr_halving=True,
    )
    cost = run_steps(config) / (len(config.lrs) * config.steps)
    lines = [
        f"# Successive halving over {list(config.lrs)}, {config.steps} steps, dev every {config.eval_every}",
        "",
        f"rungs {halving_rungs(config)}: {cost:.2f}x the run-steps of full selection",
        "",
    ]
    if args.curves.is_file():
        replay = offline(args.curves, config)
        lines += [f"offline ({args.curves}): {agreement(replay)}", ""]
    if not args.offline_only:
        from promptinit import stats
        from promptinit.analysis.tables import markdown

        rows, cpu = live(args, config)
        c = stats.compare(
            {(r["task"], r["seed"]): r["halving_test"] for r in rows},
            {(r["task"], r["seed"]): r["full_test"] for r in rows},
        )
        lines += [
            f"live: {agreement(rows)}",
            f"test score, halving - full: {c.diff.fmt()} points (95 % CI; {c.n_tasks} tasks x "
            f"{c.n_pairs // max(c.n_tasks, 1)} seeds, seeds resampled within tasks)",
            f"cost: {cpu['halving']:.0f} vs {cpu['full']:.0f} CPU s = {cpu['halving'] / cpu['full']:.2f}x "
            f"(run-steps {cost:.2f}x)",
            "",
            markdown(list(rows[0]), [[f"{v:.3f}" if isinstance(v, float) else v for v in r.values()] for r in rows]),
        ]
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "lr_halving.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    text = "\n".join(lines)
    print(text)
    if not args.offline_only:
        (args.out / "lr_halving.md").write_text(text + "\n")
        print(f"wrote {args.out / 'lr_halving.md'} and {args.out / 'lr_halving.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
