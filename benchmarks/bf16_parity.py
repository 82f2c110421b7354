"""Prompt-tuning accuracy with the model in bfloat16 vs float32 on CPU: is bf16 a safe default?

For 3 target tasks x 5 few-shot seeds it runs the PT baseline (sampled-vocabulary init, as
``promptinit.evaluation.pt_baseline``, Adafactor; no cache is read or written) on SmolLM2-135M
twice, once with the model's weights and activations in float32 and once in bfloat16, and prints

- the CPU's bf16 support: torch's CPU capability, its AVX512-BF16 / AMX checks and the
  ``avx512_bf16`` / ``amx_bf16`` flags of /proc/cpuinfo;
- the dtypes of the prompt, its gradient and the Adafactor state after one tuning step in each
  backbone dtype (by ``promptinit.batched.train_step`` and ``make_optimizer``, the path
  ``tune_prompts`` takes), and of the tuned prompts the runs return;
- per task: each dtype's mean test accuracy and the difference bf16 - fp32, with 95 % intervals;
- overall: ``promptinit.stats.describe`` of bf16 against fp32 (bf16 plays the method, fp32 the
  baseline), the difference's interval in points, each dtype's mean accuracy with its interval
  and whether the two intervals overlap;
- each dtype's wall-clock and process-CPU seconds of its tuning run and the ratio bf16 / fp32;
- an interleaved timing (--speed-repeats): one training step of every problem plus scoring 4
  test examples of each, the dtypes alternating fp32, bf16, bf16, fp32, ..., so a shared
  machine's changing load falls on both; the medians and their ratio.

Intervals are ``promptinit.stats.compare``'s stratified bootstrap over few-shot seeds within
tasks; a dtype's own mean accuracy is compared with a zero baseline, so the difference's
interval is that of the mean.

Both runs are in one process, one after the other, each after a one-step warm-up, so neither
pays first-call costs. Both use the same pass size (--rows-per-pass, default 32 rows, the
one-by-one scoring pass): the measured rule of ``promptinit.throughput`` probes each dtype
once and caches the result, and a probe on a busy machine (bf16 once chose 96-token passes, fp32
3,072) would time the pass sizes rather than the dtypes. On a shared CPU the wall-clock ratio
drifts with the load: in the run of 2026-12-01 the two tuning runs gave bf16 / fp32 0.72 (other
jobs kept the load at 4-6), the interleaved timing right after it 0.42 (unit medians 2.6 s vs
6.2 s, each of 3 within 0.2 s); process-CPU seconds drift too (OpenMP busy waits count in them),
so trust the interleaved ratio.

Scoring dominates the cost (15 problems x (dev + test) rows per evaluation; a training step of
15 x 4 rows costs about as much as scoring 60), so the defaults trade the PT protocol's 200
test examples, full dev sets and mid-run dev evaluation for a run that fits: 20 steps, batch 4,
dev (its first 32 examples, a random subset) scored at steps 0 and 20, 100 test examples,
prompt length 8. That run took 44 minutes on 2 CPU cores shared with other jobs; units of the
interleaved timing ran 3-5 times faster on the quiet machine than on the busy one, so expect
well under 15 minutes there. Dev and test are the same for both dtypes, so the comparison stays
paired; with two dev evaluations the best-on-dev prompt is the initial or the final one, and a
flip of that choice between the dtypes moves a pair by up to 20 points. It writes ``scores.csv``
(per task and seed: both dtypes' initial dev, best dev, test accuracy and best step),
``report.md`` (what it prints) and, with --speed-only, ``speed.md`` under --out.

Usage:
    python benchmarks/bf16_parity.py
    python benchmarks/bf16_parity.py --steps 2 --seeds 100 13 --test-size 20   # a quick look
    python benchmarks/bf16_parity.py --steps 40 --eval-every 20 --dev-size 0 --test-size 200   # the PT protocol, slower
    python benchmarks/bf16_parity.py --speed-only --speed-repeats 5   # only the interleaved timing, a few minutes

Compiled vs eager passes (``promptinit.compiled``, ``PROMPTINIT_COMPILE``): run it once eager and
once compiled with the same tasks, seeds and settings, the second reading the first's scores:

    python benchmarks/bf16_parity.py --compile off --out /tmp/bf16-eager
    python benchmarks/bf16_parity.py --compile on --out /tmp/bf16-compiled --against /tmp/bf16-eager

The second run adds, per dtype and task, the compiled - eager difference in test accuracy with
its 95 % interval (``promptinit.stats.compare``, pairs by task and seed) and the number of pairs
whose score is equal: the change is harmless where every interval holds 0 and its width is that
of rounding noise (bf16 - fp32's own interval is the yardstick).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


from promptinit import compiled, stats, throughput
from promptinit.backbones import Backbone, BackboneConfig
from promptinit.batched import TuneProblem, evaluate_many, train_step, tune_prompts
from promptinit.evaluation import TuneConfig, TuneResult, make_optimizer
from promptinit.tasks.catalog import load_task
from promptinit.tasks.fewshot import SEEDS, sample_few_shot

DTYPES = ("float32", "bfloat16")
# Targets of configs/partitions/tiny.yaml, with bb_intent_recognition (a validation task) in place
# of bb_arithmetic_2_digit_addition, on which PT saturates and so cannot show a difference.
TASKS = ("bb_sports_understanding", "bbc_topic", "bb_intent_recognition")
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f")
SPEED_TEST = 4  # test examples per problem scored in one interleaved timing unit
Scores = dict[tuple[str, int], float]


def cpu_bf16_support() -> list[str]:
    """Lines saying whether this CPU computes bfloat16 natively (else torch emulates it in fp32)."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
        flags = ", ".join(f"{f} {'yes' if f in words else 'no'}" for f in CPU_FLAGS)
    except OSError:
        flags = "/proc/cpuinfo unreadable"
    # private helpers of torch.cpu: their names have moved between releases
    checks = {name: getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("avx512_bf16", "amx_tile")}
    torch_says = ", ".join(f"{name} {fn() if fn else 'n/a'}" for name, fn in checks.items())
    return [f"CPU capability (torch.backends.cpu.get_cpu_capability): {torch.backends.cpu.get_cpu_capability()}",
            f"torch.cpu checks: {torch_says}",
            f"/proc/cpuinfo flags: {flags}"]


def problems(bb: Backbone, tasks: list, seeds: list[int], test_size: int, dev_size: int) -> list[TuneProblem]:
    """The PT baseline's problems: each (task, seed) from its sampled-vocabulary prompt, as
    ``promptinit.evaluation._baseline_plan`` builds them; dev cut to its first ``dev_size``
    examples (0: all)."""
    out = []
    for task in tasks:
        for seed in seeds:
            fs = sample_few_shot(task, seed, test_size=test_size)
            if dev_size:
                fs = dataclasses.replace(fs, dev=fs.dev[:dev_size])
            out.append(TuneProblem(fs, bb.init_prompt("vocab", seed=seed)))
    return out


def state_dtypes(bb: Backbone, problem: TuneProblem, config: TuneConfig) -> dict[str, torch.dtype]:
    """The dtypes one tuning step keeps, along ``tune_prompts``' own path (``train_step`` for the
    gradient, ``make_optimizer`` for the optimiser); also warms the backbone up."""
    prompt = problem.init.detach().clone().requires_grad_(True)
    opt = make_optimizer([prompt], config.optimizer, config.lr)
    batch = list(problem.fewshot.train[: config.batch_size])
    _, (grad,) = train_step(bb, [prompt], [batch], rows_per_pass=config.rows_per_pass)
    prompt.grad = grad
    opt.step()
    state = {f"{config.optimizer} {k}": v.dtype for k, v in opt.state[prompt].items() if torch.is_tensor(v)}
    return {"prompt": prompt.dtype, "gradient": grad.dtype, **state}


def run_dtype(dtype: str, tasks: list, args: argparse.Namespace, config: TuneConfig) -> dict:
    """Warm up and time one backbone dtype's PT run over every (task, seed)."""
    bb = Backbone(BackboneConfig(args.model, prompt_length=args.prompt_length, dtype=dtype, device="cpu"))
    if config.rows_per_pass:
        passes = f"{config.rows_per_pass} rows a pass"
    else:
        t0 = time.perf_counter()
        tokens = {kind: throughput.tokens_per_pass(bb, kind) for kind in throughput.KINDS}
        passes = (f"measured pass size: train {tokens['train']}, score {tokens['score']} tokens "
                  f"(probe / cache read {time.perf_counter() - t0:.1f} s, not timed)")
    probs = problems(bb, tasks, args.seeds, args.test_size, args.dev_size)
    kept = state_dtypes(bb, probs[0], config)
    wall, cpu = time.perf_counter(), time.process_time()
    results: list[TuneResult] = tune_prompts(bb, probs, config, progress=args.progress)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    kept["tuned prompts"] = results[0].prompt.dtype
    if any(r.prompt.dtype != results[0].prompt.dtype for r in results):
        raise RuntimeError(f"{dtype}: tuned prompts of mixed dtypes {sorted({str(r.prompt.dtype) for r in results})}")
    line = f"{dtype}: {wall:.0f} s wall, {cpu:.0f} s process CPU; {passes}"
    print(line, flush=True)
    return {"results": {(r.task, r.seed): r for r in results}, "wall": wall, "cpu": cpu, "kept": kept, "line": line}


def mean_interval(scores: Scores) -> stats.Interval:
    """Mean score over tasks (each task's seeds averaged first) with ``compare``'s interval,
    clipped to [0, 1] (the t-widened interval of a few seeds can step past an accuracy's range)."""
    i = stats.compare(scores, {k: 0.0 for k in scores}).diff
    return stats.Interval(i.mean, max(i.lo, 0.0), min(i.hi, 1.0))


def tables(runs: dict[str, dict], tasks: list[str]) -> list[str]:
    """The per-task table, the overall comparison and the timings, as markdown lines."""
    test = {d: {k: r.test for k, r in runs[d]["results"].items()} for d in DTYPES}
    fp32, bf16 = test["float32"], test["bfloat16"]
    out = ["| task | fp32 acc % | bf16 acc % | bf16 − fp32 (points) | pairs equal |", "|---|---|---|---|---|"]
    for task in tasks:
        sub = {d: {k: v for k, v in test[d].items() if k[0] == task} for d in DTYPES}
        diff = stats.compare(sub["bfloat16"], sub["float32"]).diff
        equal = sum(sub["bfloat16"][k] == v for k, v in sub["float32"].items())
        out.append(f"| {task} | {mean_interval(sub['float32']).fmt(signed=False)} | "
                   f"{mean_interval(sub['bfloat16']).fmt(signed=False)} | {diff.fmt()} | {equal}/{len(sub['float32'])} |")
    comp = stats.compare(bf16, fp32)
    m32, m16 = mean_interval(fp32), mean_interval(bf16)
    overlap = m32.lo <= m16.hi and m16.lo <= m32.hi
    biggest = max(abs(bf16[k] - v) for k, v in fp32.items())
    out += ["", f"bf16 vs fp32 (describe): {stats.describe(comp)}",
            f"difference bf16 − fp32, 95 % CI: {comp.diff.fmt()} points "
            f"({'holds 0' if comp.diff.holds_zero else 'excludes 0'}); largest |difference| of a pair "
            f"{100 * biggest:.1f} points",
            f"mean accuracy, 95 % CI: fp32 {m32.fmt(signed=False)} %, bf16 {m16.fmt(signed=False)} % "
            f"(intervals {'overlap' if overlap else 'do not overlap'})",
            "", "| dtype | wall s | process CPU s |", "|---|---|---|"]
    out += [f"| {d} | {runs[d]['wall']:.0f} | {runs[d]['cpu']:.0f} |" for d in DTYPES]
    w, c = (runs["bfloat16"][k] / runs["float32"][k] for k in ("wall", "cpu"))
    out += [f"| bf16 / fp32 | {w:.2f} | {c:.2f} |", "",
            "| dtype of | " + " | ".join(DTYPES) + " |", "|---|" + "---|" * len(DTYPES)]
    for name in runs["float32"]["kept"]:
        out.append(f"| {name} | " + " | ".join(str(runs[d]["kept"].get(name, "-")).replace("torch.", "")
                                               for d in DTYPES) + " |")
    return out


def interleaved_speed(tasks: list, args: argparse.Namespace, config: TuneConfig) -> list[str]:
    """Median seconds of one timing unit per dtype, the dtypes alternating A B B A A B ...

    A unit is one training step of every problem (``train_step``, as ``tune_prompts`` runs it)
    plus scoring ``SPEED_TEST`` test examples of each (``evaluate_many``), from the initial prompts.
    """
    bbs = {d: Backbone(BackboneConfig(args.model, prompt_length=args.prompt_length, dtype=d, device="cpu"))
           for d in DTYPES}
    probs = {d: problems(bbs[d], tasks, args.seeds, args.test_size, args.dev_size) for d in DTYPES}

    def unit(dtype: str) -> tuple[float, float]:
        bb, ps = bbs[dtype], probs[dtype]
        prompts = [p.init.detach().clone().requires_grad_(True) for p in ps]
        batches = [list(p.fewshot.train[: config.batch_size]) for p in ps]
        items = [(p.init, p.fewshot.test[:SPEED_TEST], p.fewshot.task.metric.value) for p in ps]
        wall, cpu = time.perf_counter(), time.process_time()
        train_step(bb, prompts, batches, rows_per_pass=config.rows_per_pass)
        evaluate_many(bb, items, rows_per_pass=config.rows_per_pass, min_rows=config.eval_batch_size)
        return time.perf_counter() - wall, time.process_time() - cpu

    for d in DTYPES:
        unit(d)  # warm-up: first calls allocate and pick kernels
    seen: dict[str, list[tuple[float, float]]] = {d: [] for d in DTYPES}
    for i in range(2 * args.speed_repeats):
        dtype = DTYPES[0] if i % 4 in (0, 3) else DTYPES[1]  # A B B A: a linear drift in load cancels
        seen[dtype].append(unit(dtype))
    med = {d: [float(np.median([t[j] for t in seen[d]])) for j in (0, 1)] for d in DTYPES}
    rows = len(probs[DTYPES[0]])
    out = [f"interleaved timing: {args.speed_repeats} units per dtype, order A B B A ..., a unit = one training "
           f"step of {rows} problems x {config.batch_size} rows + scoring {rows} x {SPEED_TEST} test examples",
           "| dtype | median wall s | median process CPU s | all wall s |", "|---|---|---|---|"]
    out += [f"| {d} | {med[d][0]:.1f} | {med[d][1]:.1f} | {' '.join(f'{t[0]:.1f}' for t in seen[d])} |" for d in DTYPES]
    ratio = [med[DTYPES[1]][j] / med[DTYPES[0]][j] for j in (0, 1)]
    out.append(f"| bf16 / fp32 | {ratio[0]:.2f} | {ratio[1]:.2f} | |")
    return out


def write_scores(path: Path, runs: dict[str, dict]) -> None:
    keys = list(runs["float32"]["results"])
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "seed", *(f"{d}_{c}" for d in DTYPES for c in ("init_dev", "dev", "test", "best_step"))])
        for key in keys:
            row = []
            for d in DTYPES:
                r = runs[d]["results"][key]
                row += [f"{r.init_dev:.4f}", f"{r.dev:.4f}", f"{r.test:.4f}", r.best_step]
            w.writerow([*key, *row])


def read_scores(path: Path) -> dict[str, Scores]:
    """Test accuracy per dtype and (task, seed) from a ``scores.csv`` that ``write_scores`` wrote."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {d: {(r["task"], int(r["seed"])): float(r[f"{d}_test"]) for r in rows} for d in DTYPES}


def against_table(runs: dict[str, dict], other: Path, tasks: list[str], compile_setting: str) -> list[str]:
    """This run's test accuracy against another run's (``--against``, e.g. compiled vs eager),
    per dtype and task: the difference with its 95 % interval and the pairs that are equal."""
    theirs = read_scores(other / "scores.csv")
    out = [f"this run (compile {compile_setting}) - {other} per dtype and task, test accuracy in points:",
           "| dtype | task | difference, 95 % CI | pairs equal |", "|---|---|---|---|"]
    for d in DTYPES:
        mine = {k: r.test for k, r in runs[d]["results"].items()}
        missing = sorted(set(mine) - set(theirs[d]))
        if missing:
            raise ValueError(f"--against {other}: no {d} score for {missing[:3]}; "
                             "run it with the same --tasks and --seeds")
        for task in [*tasks, "all"]:
            keys = [k for k in mine if task in ("all", k[0])]
            diff = stats.compare({k: mine[k] for k in keys}, {k: theirs[d][k] for k in keys}).diff
            equal = sum(mine[k] == theirs[d][k] for k in keys)
            out.append(f"| {d} | {task} | {diff.fmt()} ({'holds 0' if diff.holds_zero else 'excludes 0'}) | "
                       f"{equal}/{len(keys)} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), help="catalog task names (configs/tasks.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="few-shot seeds")
    p.add_argument("--steps", type=int, default=20, help="tuning steps per problem")
    p.add_argument("--eval-every", type=int, default=0, help="steps between dev evaluations; 0: only at the end")
    p.add_argument("--batch-size", type=int, default=4, help="training examples per step")
    p.add_argument("--lr", type=float, default=0.3, help="prompt learning rate (Adafactor)")
    p.add_argument("--test-size", type=int, default=100, help="cap on test examples per task")
    p.add_argument("--dev-size", type=int, default=32, help="dev examples per problem (its first ones); 0: all")
    p.add_argument("--rows-per-pass", type=int, default=32,
                   help="rows per pass for both dtypes; 0: promptinit.throughput's measured rule (per dtype)")
    p.add_argument("--prompt-length", type=int, default=8, help="soft-prompt vectors L")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path("/tmp/bf16"), help="folder for scores.csv and report.md")
    p.add_argument("--progress", action="store_true", help="show the tuning progress bars")
    p.add_argument("--speed-repeats", type=int, default=3, help="interleaved timing units per dtype; 0: none")
    p.add_argument("--speed-only", action="store_true", help="only the interleaved timing (writes speed.md)")
    p.add_argument("--compile", choices=compiled.MODES, default=None,
                   help="set PROMPTINIT_COMPILE for this run (compiled tuning and scoring passes); default: as set")
    p.add_argument("--against", type=Path, default=None,
                   help="folder of another run's scores.csv (same tasks and seeds) to compare this run's with")
    args = p.parse_args(argv)
    if args.compile:
        os.environ[compiled.ENV] = args.compile
    if args.against and not (args.against / "scores.csv").is_file():
        p.error(f"--against: {args.against / 'scores.csv'} not found; "
                f"run the other arm first with --out {args.against}")
    if len(args.seeds) < 2:
        p.error(f"--seeds: {args.seeds} gives no interval; pass at least 2 seeds")
    if args.speed_only and args.speed_repeats < 1:
        p.error(f"--speed-only needs --speed-repeats >= 1 (got {args.speed_repeats})")
    torch.set_num_threads(args.threads)
    config = TuneConfig(lr=args.lr, batch_size=args.batch_size, steps=args.steps,
                        eval_every=args.eval_every or args.steps, test_size=args.test_size,
                        rows_per_pass=args.rows_per_pass)
    tasks = [load_task(name) for name in args.tasks]
    head = [f"# bf16_parity: torch {torch.__version__}, {args.model}, {torch.get_num_threads()} threads",
            f"PT baseline: {len(tasks)} tasks x {len(args.seeds)} seeds (seeds {' '.join(map(str, args.seeds))}), "
            f"{config.steps} steps, batch {config.batch_size}, lr {config.lr} {config.optimizer}, dev every "
            f"{config.eval_every} steps, {f'first {args.dev_size}' if args.dev_size else 'all'} dev and <= "
            f"{config.test_size} test examples, L = {args.prompt_length}; compiled passes: {compiled.setting()}",
            *cpu_bf16_support(), ""]
    print(*head, sep="\n", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.speed_only:
        speed = interleaved_speed(tasks, args, config)
        print(*speed, sep="\n", flush=True)
        (args.out / "speed.md").write_text("\n".join([*head, *speed]) + "\n")
        print(f"\nwrote {args.out / 'speed.md'}")
        return 0
    runs = {d: run_dtype(d, tasks, args, config) for d in DTYPES}
    body = tables(runs, args.tasks)
    if args.against:
        body += ["", *against_table(runs, args.against, args.tasks, compiled.setting())]
    print("", *body, sep="\n", flush=True)
    speed = interleaved_speed(tasks, args, config) if args.speed_repeats else []
    print("", *speed, sep="\n", flush=True)
    write_scores(args.out / "scores.csv", runs)
    report = [*head, *(runs[d]["line"] for d in DTYPES), "", *body, "", *speed]
    (args.out / "report.md").write_text("\n".join(report) + "\n")
    print(f"\nwrote {args.out / 'scores.csv'} and {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
