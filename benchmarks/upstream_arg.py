"""ARG of each upstream method (and the SUPMER / MetaPT ablations) from `promptinit upstream`.

Runs ``promptinit upstream`` once per variant on one model and partition with short, equal
budgets, then prints one table: upstream seconds, evaluation seconds and the ARG over the
partition's target tasks (mean [95 % CI] over (task, few-shot seed) pairs, promptinit.stats) against the cached PT baseline,
plus each target task's relative gain. Every variant writes ``<out>/<variant>/upstream.json``;
a variant whose file exists is read, not rerun, so an interrupted run continues.

Variants: mtl, maml, fomaml, reptile; supmer (full), supmer without the meta-gradient
regulariser, supmer without curriculum mixup; metapt with K-means and with random grouping.

    python benchmarks/upstream_arg.py                         # SmolLM2 on the tiny partition
    python benchmarks/upstream_arg.py --variants maml supmer --steps 10 --seeds 100
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from promptinit.cli import main as promptinit

META = ["--set", "meta_batch_size=2", "--set", "inner_batch_size=2"]
SUPMER = ["--method", "supmer", *META, "--set", "query_batch_size=2", "--set", "max_sentences=2000",
          "--set", "num_clusters=20"]
METAPT = ["--method", "metapt", *META, "--set", "query_batch_size=2", "--set", "pool=sources", "--set", "max_examples_per_task=200",
          "--set", "num_clusters=5"]
VARIANTS: dict[str, list[str]] = {
    "mtl": ["--method", "mtl", "--set", "batch_size=4"],
    "maml": ["--method", "maml", *META],
    "fomaml": ["--method", "fomaml", *META],
    "reptile": ["--method", "reptile", *META, "--set", "inner_steps=3"],
    "supmer": SUPMER,
    "supmer-no-mgr": [*SUPMER, "--set", "use_mgr=false"],
    "supmer-no-curriculum": [*SUPMER, "--set", "curriculum=none"],
    "metapt-kmeans": [*METAPT, "--set", "grouping=kmeans"],
    "metapt-random": [*METAPT, "--set", "grouping=random"],
}


def run(variant: str, args: argparse.Namespace) -> dict:
    out = Path(args.out) / variant
    report = out / "upstream.json"
    if not report.is_file():
        argv = ["upstream", *VARIANTS[variant], "--model", args.model, "--partition", args.partition,
                "--prompt-length", str(args.prompt_length), "--max-input-tokens", str(args.max_input_tokens),
                "--steps", str(args.steps), "--seeds", *map(str, args.seeds), "--tune-steps", str(args.tune_steps),
                "--eval-every", str(args.eval_every), "--tune-batch-size", "4", "--test-size", str(args.test_size),
                "--out", str(out), "--no-progress"]
        print("$ promptinit " + " ".join(argv), flush=True)
        if promptinit(argv) != 0:
            raise SystemExit(f"{variant}: promptinit upstream failed")
    return json.loads(report.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--partition", default="tiny")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=20, help="upstream outer steps of every variant")
    p.add_argument("--prompt-length", type=int, default=8)
    p.add_argument("--max-input-tokens", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 13])
    p.add_argument("--tune-steps", type=int, default=20, help="downstream tuning steps per target and seed")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--test-size", type=int, default=48)
    p.add_argument("--out", default="runs/bench-upstream")
    args = p.parse_args()

    reports = {v: run(v, args) for v in args.variants}
    tasks = list(next(iter(reports.values()))["arg"]["per_task"])
    print(f"\n{args.model} on partition {args.partition}: {args.steps} upstream steps; targets tuned "
          f"{args.tune_steps} steps, seeds {args.seeds}, test <= {args.test_size}; RG and ARG in %")
    head = f"{'variant':<22}{'upstream s':>11}{'eval s':>8}{'ARG [95 % CI]':>24}" + "".join(f"{t[:14]:>16}" for t in tasks)
    print(head + "\n" + "-" * len(head))
    for v, r in reports.items():
        arg = r["arg"]
        cells = "".join(f"{100 * arg['per_task'][t]:+16.1f}" for t in tasks)
        ci = r["comparison"]["arg"]
        mean_std = f"{100 * ci['mean']:+.1f} [{100 * ci['lo']:+.1f}, {100 * ci['hi']:+.1f}]"
        print(f"{v:<22}{r['upstream_s']:11.0f}{r['eval_s']:8.0f}{mean_std:>24}{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
