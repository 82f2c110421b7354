"""Cost of one outer step of each upstream method, relative to one plain prompt-tuning step.

For each model (a tiny test model and SmolLM2-135M by default) on a batch of 4 examples x 48
tokens with 20 prompt vectors and eager attention:

1. time per outer step and peak memory of PT, MTL, FoMAML, MAML (second order) and Reptile
   (k inner steps), each divided by one plain prompt-tuning step on the same batch size
   (MAML / FoMAML: support 4 + query 4; Reptile: k support batches of 4);
2. MAML against a reference built on the ``higher`` library (the prompt wrapped in a small
   module, the language model called inside the closure), with the largest difference
   between the two meta-gradients;
3. a meta-batch of T = 1, 4, 8 tasks run as one batched pass vs task by task.

Targets (Qin et al. setting on a 2-core CPU, SmolLM2): MAML <= 3.2x a PT step,
FoMAML <= 2.1x, Reptile with k inner steps <= (k + 1.2)x; batched never slower than task by
task on the CPU (and T = 8 at most 0.5x on a GPU).

Timings are interleaved (one round runs every variant once) and each ratio is the median over
rounds of the within-round ratio, which cancels drift from other load on a shared machine.
Peak memory is the largest live-tensor total during the step, above what was live before
it (the torch profiler's allocation events on CPU, ``max_memory_allocated`` on CUDA).

Usage:
    python benchmarks/meta_step.py                       # tiny-llama and smollm2-135m
    python benchmarks/meta_step.py --models tiny-llama --rounds 3
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch


from promptinit.backbones import Backbone, BackboneConfig
from promptinit.evaluation import make_optimizer
from promptinit.methods import build_method
from promptinit.tasks.task import Example, Metric, Task, TaskKind

WORDS = ("time year people way day man thing woman life child world school state family student "
         "group country problem hand part place case week company system program question work "
         "government number night point home water room mother area money story fact month lot "
         "right study book eye job word business issue side kind head house service friend").split()


# --------------------------------------------------------------------------- data


def synthetic_tasks(n_tasks: int, n: int = 120, words: int = 80) -> list[Task]:
    """Classification tasks with long inputs (cut to the backbone's input cap) and 1-token labels."""
    tasks = []
    for t in range(n_tasks):
        rng = random.Random(t)
        labels = ("yes", "no")
        examples = [Example(" ".join(rng.choices(WORDS, k=words)) + f" {i} ->", labels[i % 2], labels)
                    for i in range(n)]
        tasks.append(Task(f"bench{t}", TaskKind.CLASSIFICATION, Metric.ACCURACY, tuple(examples), labels=labels))
    return tasks


# --------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(fn: Callable[[], object], device: torch.device) -> float:
    """Peak live tensor bytes during ``fn`` above those live when it started."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        fn()
        sync(device)
        return float(torch.cuda.max_memory_allocated() - start)
    from torch.profiler import ProfilerActivity, profile

    # The profiler records every CPU allocation and free with its size; replaying them in
    # time order gives the live total (tensors allocated before the step are not counted).
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return float(peak)


class PTStep:
    """One plain prompt-tuning step (Adafactor), the unit every ratio is relative to."""

    def __init__(self, bb: Backbone, task: Task, batch: int):
        self.bb = bb
        self.examples = list(task.examples[:batch])
        self.prompt = bb.init_prompt("vocab", seed=0).requires_grad_(True)
        self.opt = make_optimizer([self.prompt], "adafactor", 0.3)

    def __call__(self) -> None:
        loss = self.bb.loss(self.prompt, self.bb.encode(self.examples))
        (self.prompt.grad,) = torch.autograd.grad(loss, self.prompt)
        self.opt.step()


class PromptModule(torch.nn.Module):
    """Only the prompt is a parameter: `higher` cannot patch a transformers model itself."""

    def __init__(self, prompt: torch.Tensor):
        super().__init__()
        self.prompt = torch.nn.Parameter(prompt.detach().clone())


class HigherMAMLStep:
    """MAML's outer step with the meta-gradient from ``higher`` (the reference)."""

    def __init__(self, method):
        import higher  # noqa: F401  (fail early if missing)

        self.method = method
        self.module = PromptModule(method.prompt)
        self.opt = make_optimizer([self.module.prompt], "adafactor", method.config.outer_lr)

    def meta_gradient(self, meta_tasks) -> torch.Tensor:
        import higher

        bb, lr = self.method.backbone, self.method.config.inner_lr
        total = torch.zeros_like(self.module.prompt)
        for mt in meta_tasks:
            inner = torch.optim.SGD(self.module.parameters(), lr=lr)
            with higher.innerloop_ctx(self.module, inner, copy_initial_weights=False) as (fmodule, diffopt):
                for batch in mt.support:
                    diffopt.step(bb.loss(fmodule.prompt, bb.encode(batch)))
                query = bb.loss(fmodule.prompt, bb.encode(mt.query))
                total += torch.autograd.grad(query, self.module.prompt)[0]
        return total / len(meta_tasks)

    def __call__(self) -> None:
        self.module.prompt.grad = self.meta_gradient(self.method.sample())
        self.opt.step()


def timed_rounds(variants: dict[str, Callable[[], object]], rounds: int, device: torch.device,
                 clock: str = "wall") -> dict[str, list[float]]:
    """Run every variant once per round (after one warm-up call each); seconds per call.

    ``clock="cpu"`` measures the process's CPU time instead of wall time: on a machine shared
    with other jobs it counts only this process's work (exact with one torch thread; with
    more, threads spinning at barriers are counted too).
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        for name, fn in variants.items():
            sync(device)
            t = now()
            fn()
            sync(device)
            times[name].append(now() - t)
            print(f"  round {r + 1}/{rounds} {name}: {times[name][-1]:.3f} s", file=sys.stderr, flush=True)
    return times


def ratio(times: dict[str, list[float]], name: str, ref: str) -> float:
    return statistics.median(a / b for a, b in zip(times[name], times[ref]))


# --------------------------------------------------------------------------- the benchmark


def bench_model(model: str, args) -> list[str]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    bb = Backbone(BackboneConfig(model, prompt_length=args.prompt_length, dtype="float32",
                                 attn_implementation="eager", max_input_tokens=args.tokens - 2, device=str(device)))
    tasks = synthetic_tasks(max(args.meta_batches))
    n_tokens = bb.encode(tasks[0].examples[: args.batch]).input_ids.shape[1]
    B, k = args.batch, args.reptile_steps
    one = {"meta_batch_size": 1, "seeds": [100]}
    configs = {
                "mtl": ("mtl", {"batch_size": B, "meta_batch_size": 1, "seeds": [100]}),
        "fomaml": ("fomaml", {**one, "inner_batch_size": B, "query_batch_size": B}),
        "maml": ("maml", {**one, "inner_batch_size": B, "query_batch_size": B}),
        f"reptile k={k}": ("reptile", {**one, "inner_batch_size": B, "inner_steps": k}),
    }
    methods = {label: build_method(name, bb, tasks, cfg, seed=0) for label, (name, cfg) in configs.items()}
    variants: dict[str, Callable[[], object]] = {"PT step": PTStep(bb, tasks[0], B)}
    variants.update({label: m.step for label, m in methods.items()})
    reference = None
    if not args.no_higher:
        reference = HigherMAMLStep(methods["maml"])
        variants["maml (higher)"] = reference
    times = timed_rounds(variants, args.rounds, device, args.clock)
    memory = {name: peak_bytes(fn, device) for name, fn in variants.items()} if not args.no_memory else {}

    lines = [f"\n## {model} on {device.type} ({torch.get_num_threads()} threads, {args.clock} clock): batch {B} x "
             f"{n_tokens} tokens, {args.prompt_length} prompt vectors, eager attention, {args.rounds} rounds",
             f"{'step':<18}{'s/step':>9}{'x PT':>8}{'peak MB':>10}{'x PT':>8}  target"]
    targets = {"fomaml": 2.1, "maml": 3.2, f"reptile k={k}": k + 1.2, "maml (higher)": None}
    pt_mem = memory.get("PT step")
    for name in variants:
        t = statistics.median(times[name])
        r = ratio(times, name, "PT step")
        mem = memory.get(name, float("nan")) / 2**20
        mr = memory[name] / pt_mem if memory and pt_mem else float("nan")
        target = targets.get(name)
        mark = "" if target is None else f"<= {target:.1f}x {'ok' if r <= target else 'MISSED'}"
        lines.append(f"{name:<18}{t:9.3f}{r:8.2f}{mem:10.1f}{mr:8.2f}  {mark}")
    if reference is not None:
        meta_tasks = methods["maml"].sample()
        reference.module.prompt.data.copy_(methods["maml"].prompt)
        ours, _ = methods["maml"].meta_gradient(meta_tasks)
        ref = reference.meta_gradient(meta_tasks)
        rel = float((ours - ref).abs().max() / ref.abs().max())
        lines.append(f"MAML meta-gradient vs higher: max |diff| / max |grad| = {rel:.1e}"
                     f"{' (identical)' if rel == 0 else ''}")

    # meta-batch of T tasks, batched vs task by task
    lines.append(f"{'meta-batch':<18}{'batched s':>10}{'by task s':>10}{'batched/by task':>17}")
    for name in args.batch_methods:
        for T in args.meta_batches:
            cfg = {"meta_batch_size": T, "inner_batch_size": args.t_batch, "query_batch_size": args.t_batch,
                   "seeds": [100]}
            if name == "reptile":
                cfg = {"meta_batch_size": T, "inner_batch_size": args.t_batch, "inner_steps": k, "seeds": [100]}
            pair = {flag: build_method(name, bb, tasks, {**cfg, "task_batched": flag}, seed=0) for flag in (True, False)}
            tt = timed_rounds({f: pair[f].step for f in pair}, max(1, args.rounds // 2), device, args.clock)
            lines.append(f"{name + ' T=' + str(T):<18}{statistics.median(tt[True]):10.3f}"
                         f"{statistics.median(tt[False]):10.3f}{ratio(tt, True, False):17.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny-llama", "smollm2-135m"])
    p.add_argument("--batch", type=int, default=4, help="examples per pass (support, query and PT batch)")
    p.add_argument("--tokens", type=int, default=48, help="tokens per example (input cut to fit)")
    p.add_argument("--prompt-length", type=int, default=20)
    p.add_argument("--reptile-steps", type=int, default=3, help="Reptile inner steps k")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per variant")
    p.add_argument("--meta-batches", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--t-batch", type=int, default=2, help="support / query examples per task in the T sweep")
    p.add_argument("--batch-methods", nargs="+", default=["maml"], help="methods of the T sweep")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    p.add_argument("--device", default="auto")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall time, or process CPU time (robust to other jobs on a shared CPU; use --threads 1)")
    p.add_argument("--no-higher", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = [f"# meta_step benchmark: torch {torch.__version__}"]
    for model in args.models:
        lines = bench_model(model, args)
        print("\n".join(lines), flush=True)
        out += lines
    return 0


if __name__ == "__main__":
    sys.exit(main())
