"""How memory grows with the number of problems in one batched run: the rule behind ``jobs.MAX_PROBLEMS``.

The target phase tunes every problem of a task in one batched run (``promptinit.batched``).
Its passes hold at most ``rows_per_pass`` rows whatever the number of problems, so what grows
with N is each problem's own state: its prompt, best prompt and optimiser state (L x d floats
each), its few-shot data and token lengths, and its scored outputs. This runs one batched run of
N PT problems (the demo's target tuning, 2 steps: memory does not grow with steps) in a fresh
process per N and prints the peak resident memory and the slope per problem; a run is split
only where N x slope would approach the worker's memory.

Usage:
    python benchmarks/batch_memory.py                 # N = 8, 32, 128 on bbc_topic, SmolLM2 bf16
    python benchmarks/batch_memory.py --ns 8 256 --task bb_sports_understanding
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def one(model: str, task: str, n: int, rows_per_pass: int) -> dict:
    """In this process: one batched run of ``n`` problems; its peak RSS (MB) and seconds."""
    import time

    import torch

    from promptinit.backbones import Backbone, BackboneConfig
    from promptinit.batched import TuneProblem, tune_prompts
    from promptinit.tasks.catalog import load_task
    from promptinit.tasks.fewshot import sample_few_shot
    from promptinit.tuning import TuneConfig

    torch.set_num_threads(1)
    bb = Backbone(BackboneConfig(model, prompt_length=8, max_input_tokens=64))
    t = load_task(task)
    config = TuneConfig(lr=0.3, batch_size=4, steps=2, eval_every=2, test_size=100, rows_per_pass=rows_per_pass)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    problems = [
        TuneProblem(sample_few_shot(t, 100 + i, test_size=100), bb.init_prompt("vocab", seed=i)) for i in range(n)
    ]
    t0 = time.perf_counter()
    tune_prompts(bb, problems, config, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "model_mb": before, "peak_mb": peak, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="bbc_topic")
    p.add_argument("--ns", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--rows-per-pass", type=int, default=32)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(one(args.model, args.task, args.child, args.rows_per_pass)))
        return 0
    rows = []
    for n in args.ns:
        cmd = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--task",
            args.task,
            "--child",
            str(n),
            "--rows-per-pass",
            str(args.rows_per_pass),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(
            f"N = {n}: peak {rows[-1]['peak_mb']:.0f} MB (model loaded: {rows[-1]['model_mb']:.0f} MB), "
            f"{rows[-1]['seconds']:.0f} s",
            flush=True,
        )
    a, b = rows[0], rows[-1]
    slope = (b["peak_mb"] - a["peak_mb"]) / max(b["n"] - a["n"], 1)
    print(f"\nper problem: {slope:.2f} MB ({args.task}, 100 test examples, L = 8, {args.rows_per_pass} rows per pass)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
