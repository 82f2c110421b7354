"""Downstream prompt tuning of N problems: one batched run vs N one-by-one runs.

For N = 1, 6, 12, 36 prompt-tuning problems (6 synthetic classification tasks x few-shot seeds
x 2 learning rates, Adafactor) on SmolLM2-135M, in float32 and bfloat16, it times

- one by one: ``tune_prompt`` on each problem in turn;
- batched: ``tune_prompts`` on all of them (one forward/backward per step over every active
  problem's rows, dev and test scoring in shared passes, passes sized by
  ``promptinit.throughput``'s measured rule);

each including the initial dev score, the dev evaluations and the test score, and prints the
seconds per problem-step of both and their ratio (batched / one by one; below 1 is faster).
The problems of a smaller N are the first ones of a larger N, and one-by-one runs are
independent, so each problem is timed one by one once (next to the batched run of the first N
that holds it) and N's one-by-one time is the sum over its problems. The throughput probe (once
per backbone, device and kind of pass, then cached on disk) and a warm-up run come before the
timings; the probe's cost is printed apart.

That the results are the same is tested in float64 (``tests/evaluation/test_batched.py``): in
float32 and bfloat16 a few Adafactor steps amplify the rounding differences of other pass shapes.

Target: the ratio <= 1 at every N on a 2-core CPU.

The default run (2 steps, batch 4, 4 dev and 4 test examples per problem, ~14-token inputs)
takes about 10 minutes on 2 idle CPU cores; scale up with --steps, --dev-size, --test-size,
--words.

Usage:
    python benchmarks/eval_throughput.py
    python benchmarks/eval_throughput.py --threads 1 --clock cpu   # steady on a shared, busy machine
    python benchmarks/eval_throughput.py --dtypes float32 --ns 1 6 --steps 4
    python benchmarks/eval_throughput.py --model tiny-llama --ns 1 6 12 36 --steps 20
    # the demo's target problems (a real task, its shapes, one thread as in a Ray job): is a job
    # of 16 problems cheaper per problem than the 3 a job held before (N = 3)?
    python benchmarks/eval_throughput.py --task bb_sports_understanding --dtypes bfloat16 --ns 1 3 16 \
        --steps 20 --eval-every 20 --dev-size 0 --test-size 100 --prompt-length 8 --rows-per-pass 32 \
        --threads 1 --clock cpu
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch


from promptinit import throughput
from promptinit.backbones import Backbone, BackboneConfig
from promptinit.batched import TuneProblem, tune_prompts
from promptinit.evaluation import TuneConfig, tune_prompt
from promptinit.tasks import load_task
from promptinit.tasks.fewshot import sample_few_shot
from promptinit.tasks.task import Example, Metric, Task, TaskKind

WORDS = ("time year people way day man thing woman life child world school state family student "
         "group country problem hand part place case week company system program question work "
         "government number night point home water room mother area money story fact month lot").split()
LABELS = [("yes", "no"), ("good", "bad"), ("true", "false"), ("positive", "negative"), ("up", "down"),
          ("hot", "cold")]
SEEDS = (100, 13, 21)
LRS = (0.3, 0.1)


def synthetic_task(t: int, words: int, n: int = 120) -> Task:
    """A classification task of ``words``-word inputs with a 2-way verbalizer of its own."""
    rng = random.Random(t)
    labels = LABELS[t % len(LABELS)]
    examples = [Example(" ".join(rng.choices(WORDS, k=words)) + f" {i} ->", labels[i % 2], labels)
                for i in range(n)]
    return Task(f"bench{t}", TaskKind.CLASSIFICATION, Metric.ACCURACY, tuple(examples), labels=labels)


def problems(bb: Backbone, n: int, args: argparse.Namespace) -> list[TuneProblem]:
    """The first ``n`` of 36 problems: 6 synthetic tasks (or ``--task``) x 3 seeds x 2 learning
    rates, tasks varying fastest; with one ``--task`` each problem has an init prompt of its own."""
    tasks = [load_task(args.task)] if args.task else [synthetic_task(t, args.words) for t in range(6)]
    out = []
    for i in range(36):
        task, seed, lr = tasks[i % len(tasks)], SEEDS[i // len(tasks) % 3], LRS[i // (3 * len(tasks)) % 2]
        fs = sample_few_shot(task, seed, test_size=args.test_size)
        fs = dataclasses.replace(fs, dev=fs.dev[: args.dev_size or None])
        cfg = TuneConfig(lr=lr, batch_size=args.batch_size, steps=args.steps, eval_every=args.eval_every,
                         eval_batch_size=args.eval_batch_size, test_size=args.test_size)
        out.append(TuneProblem(fs, bb.init_prompt("vocab", seed=seed if len(tasks) > 1 else i), cfg))
    return out[:n]


def clock(kind: str) -> Callable[[], float]:
    return time.process_time if kind == "cpu" else time.perf_counter


def bench_dtype(dtype: str, args: argparse.Namespace) -> list[str]:
    bb = Backbone(BackboneConfig(args.model, prompt_length=args.prompt_length, dtype=dtype, device=args.device))
    now = clock(args.clock)
    t0 = time.perf_counter()
    tokens = {kind: throughput.tokens_per_pass(bb, kind) for kind in throughput.KINDS}
    probe_s = time.perf_counter() - t0
    lines = [f"\n## {args.model} {dtype} on {bb.device.type} ({torch.get_num_threads()} threads, {args.clock} clock): "
             f"{args.steps} steps, batch {args.batch_size}, {args.dev_size or 'all'} dev + {args.test_size} test examples, "
             f"{args.task or f'{args.words}-word synthetic'} inputs, {args.prompt_length} prompt vectors",
             f"pass size: train {tokens['train']} tokens, score {tokens['score']} tokens per pass "
             f"(probe / cache read {probe_s:.1f} s)",
             f"{'N':>4}{'one by one s/prob-step':>24}{'batched s/prob-step':>21}{'batched/one':>13}"]
    print(*lines, sep="\n", flush=True)
    every = problems(bb, max(args.ns), args)
    warm = dataclasses.replace(every[0], config=dataclasses.replace(every[0].config, steps=1, eval_every=1))
    tune_prompt(bb, warm.fewshot, warm.init, warm.config, progress=False)  # first calls allocate
    tune_prompts(bb, [warm, warm], warm.config, progress=False)
    alone: list[float] = []  # one-by-one seconds of each problem, in order
    for i, n in enumerate(sorted(args.ns)):
        probs = every[:n]

        def one_by_one():
            for p in every[len(alone) : n]:
                start = now()
                tune_prompt(bb, p.fewshot, p.init, p.config, progress=False)
                alone.append(now() - start)

        def batched():
            start = now()
            tune_prompts(bb, probs, TuneConfig(rows_per_pass=args.rows_per_pass), progress=False)
            return now() - start

        # alternate which goes first, so slow drift of a shared machine's load favours neither
        if i % 2 == 0:
            one_by_one()
            t_bat = batched()
        else:
            t_bat = batched()
            one_by_one()
        steps = n * args.steps
        t_one = sum(alone[:n])
        line = f"{n:>4}{t_one / steps:>24.3f}{t_bat / steps:>21.3f}{t_bat / t_one:>13.2f}"
        print(line, flush=True)
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--ns", type=int, nargs="+", default=[1, 6, 12, 36], help="numbers of problems (at most 36)")
    p.add_argument("--steps", type=int, default=2, help="tuning steps per problem")
    p.add_argument("--eval-every", type=int, default=2, help="steps between dev evaluations")
    p.add_argument("--batch-size", type=int, default=4, help="training examples per step")
    p.add_argument("--dev-size", type=int, default=4, help="dev examples per problem; 0: all of the few-shot dev set")
    p.add_argument("--test-size", type=int, default=4, help="test examples per problem")
    p.add_argument("--eval-batch-size", type=int, default=32, help="one-by-one scoring pass")
    p.add_argument("--words", type=int, default=8, help="words per input (~1.5 tokens each)")
    p.add_argument("--task", default=None, help="a catalog task (configs/tasks.yaml) instead of the synthetic ones")
    p.add_argument("--prompt-length", type=int, default=20)
    p.add_argument("--rows-per-pass", type=int, default=0, help="0: the measured rule")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    p.add_argument("--device", default="auto")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall time, or process CPU time (steadier on a shared CPU)")
    args = p.parse_args(argv)
    if max(args.ns) > len(SEEDS) * len(LRS) * 6:
        p.error(f"--ns: at most {len(SEEDS) * len(LRS) * 6} problems")
    torch.set_num_threads(args.threads)
    out = [f"# eval_throughput: torch {torch.__version__}"]
    print(out[0], flush=True)
    for dtype in args.dtypes:
        out += bench_dtype(dtype, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
