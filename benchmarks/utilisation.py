"""Model FLOP rate of the tuning and scoring passes, as a fraction of the machine's matmul peak.

It prints two markdown tables:

- the matmul peak of each dtype on the machine's threads (GFLOP/s, best of several reps): a
  square product (2048² on a CPU, 8192² on a GPU) and an MLP-shaped one ([rows·tokens, d] @
  [d, intermediate] of the model at the pass size);
- per dtype, attention implementation and compilation (``promptinit.compiled``), the model FLOP
  rate of
  (1) a tuning pass: forward, then backward to the inputs (gradient only w.r.t. the prompts; the
      weights are frozen), ``Backbone.loss`` as ``promptinit.batched`` runs it, rows of
      ``--tokens`` tokens after the prompt of which the last ``TARGET_TOKENS`` are targets;
  (2) a scoring pass: forward only, ``Backbone.score_options`` as evaluation ranks answer
      options (the prompt and input once, with a key/value cache; then each of
      ``len(OPTIONS)`` options' tokens on that cache);
  as GFLOP/s (from the fastest of ``--rounds`` timings) and % of the same dtype's peak, with the
  median seconds of a pass and its median speed-up over the first variant of that dtype (each
  round times every variant once, the order reversed every other round, so a shared machine's
  drifting load falls on all of them; a ratio is taken within a round).

FLOPs are counted analytically from the shapes that run (padding included), counting only
matrix products, 2 FLOPs per multiply-add (norms, RoPE, softmax and other elementwise work are
left out). With P the weights of the decoder blocks' linear maps (q, k, v, o and the MLP;
embeddings and LM head excluded), l layers, A = query heads x head dim, V the vocabulary, d the
hidden size:

    forward of B rows of T tokens      2·P·B·T + 4·l·B·T²·A            (QK^T and AV: 2·B·T²·A each)
    LM head on N target positions      2·V·d·N
    tuning pass  = forward + backward to the inputs:
                   4·P·B·T + 12·l·B·T²·A + 4·V·d·N
                   (a frozen linear map's backward is its input gradient only, as many FLOPs as
                   its forward; attention's backward to Q, K and V is 4 products, twice its forward)
    scoring pass = prefix [prompt; input] of Tp tokens over B rows, then R = B·k option rows of
                   F fed tokens (an option's tokens but its last) attending to Tp + F positions:
                   2·P·B·Tp + 4·l·B·Tp²·A + 2·V·d·B  +  2·P·R·F + 4·l·R·F·(Tp + F)·A + 2·V·d·N_opt
                   (N_opt: option tokens after each option's first)

The full T x T attention is counted (eager attention computes it before masking). The counts
match ``torch.utils.flop_counter.FlopCounterMode`` on tiny Llama and GPT-2 models exactly
(``tests/test_benchmarks_utilisation.py``).

Pass sizes: ``--rows`` rows (default 32, the demo's ``rows_per_pass``) of ``--prompt-length`` +
``--tokens`` tokens (default 8 + 64, the demo's L and input cap); ``--rows 0`` takes the rows
``promptinit.throughput``'s measured rule picks for rows of that length (the eager probe, cached).

Compiled variants (``--compile on``) run inside ``promptinit.compiled.passes``, as
``PROMPTINIT_COMPILE=on`` makes ``promptinit.batched`` run them; the first call of each
(compilation, or reading it back from the on-disk cache ``promptinit.compiled.inductor_cache()``)
is timed apart and printed with the number of files the cache held before. ``--cold`` compiles
into a fresh temporary cache. A compiled scoring pass runs its prefix compiled and the options'
few tokens on the key/value cache eagerly, as ``promptinit.compiled`` does.

On CUDA, timings synchronise the device before and after.

Measured (5 Dec 2026, 2-core AMD EPYC with AVX512-BF16, the machine idle, load 1-2; defaults but
the variants listed; medians of 3 rounds; % of the dtype's best matmul rate):

| dtype | pass | attention | compiled | GFLOP/s | % of peak | s/pass | speed-up |
|---|---|---|---|---|---|---|---|
| bfloat16 (peak 412-420) | tuning | eager | off | 306 | 72 % | 3.34 | 1.00x |
| | tuning | eager | on | 352 | 83 % | 2.98 | 1.15x |
| | tuning | sdpa | off | 250 | 59 % | 4.19 | 0.82x |
| | scoring | eager | off | 323 | 77 % | 1.65 | 1.00x |
| | scoring | eager | on | 332 | 79 % | 1.59 | 1.03x |
| | scoring | sdpa | off | 293 | 69 % | 1.86 | 0.91x |
| float32 (peak 197) | tuning | eager | off / on | 163 / 174 | 83 / 88 % | 6.25 / 5.87 | 1.06x |
| | scoring | eager | off / on | 160 / 163 | 81 / 83 % | 3.27 / 3.24 | 1.01x |

Shared with other jobs (load 6-10) the same bf16 passes ran at 16 % (tuning) and 13 % (scoring)
of the peak eager, 31 % and 17 % compiled (1.93x, 1.24x): a best-of-reps matmul catches a quiet
moment, a 20-30 s pass does not, so quote % of peak from an idle machine only.

Usage:
    python benchmarks/utilisation.py                                # bf16 and fp32, eager, 3 rounds
    python benchmarks/utilisation.py --dtype bfloat16 --compile off on --rounds 5
    python benchmarks/utilisation.py --dtype bfloat16 --attn eager sdpa
    python benchmarks/utilisation.py --device cuda --attn eager sdpa      # (benchmarks/gpu_check.sh)
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from promptinit import compiled, throughput
from promptinit.backbones import Backbone, BackboneConfig, Batch
from promptinit.backbones.backbone import IGNORE
from promptinit.tasks.task import Example

TARGET_TOKENS = throughput.TARGET_TOKENS  # target tokens at the end of a tuning row
OPTIONS = ("yes", "no")  # answer options of a scoring row
WORDS = "time year people way day man thing woman life child world school state family".split()
PASSES = ("tuning", "scoring")


# --------------------------------------------------------------------------- FLOP counts


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a causal model.

    Attributes:
        layers: decoder blocks l.
        linear: weights P of the blocks' linear maps (2-D parameters, embeddings and LM head
            excluded); a token costs 2·P FLOPs through them.
        attn_width: query heads x head dim A: QK^T and AV cost 2·Tq·Tk·A each per row and layer.
        vocab: V, the LM head's outputs.
        hidden: d, the LM head's inputs.
    """

    layers: int
    linear: int
    attn_width: int
    vocab: int
    hidden: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelShape:
        """The shape of a transformers causal LM (Llama, GPT-2, Gemma, ...)."""
        cfg = model.config
        base = model.base_model
        embeddings = {id(m.weight) for m in base.modules() if isinstance(m, torch.nn.Embedding)}
        linear = sum(p.numel() for p in base.parameters() if p.dim() == 2 and id(p) not in embeddings)
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        head = model.get_output_embeddings().weight
        return cls(cfg.num_hidden_layers, linear, heads * head_dim, head.shape[0], head.shape[1])


def forward_flops(s: ModelShape, rows: int, tokens: int, context: int | None = None) -> int:
    """FLOPs of the blocks' forward: ``rows`` x ``tokens`` new tokens attending to ``context``
    positions each (default ``tokens``; more with a key/value cache)."""
    context = tokens if context is None else context
    return 2 * s.linear * rows * tokens + 4 * s.layers * rows * tokens * context * s.attn_width


def head_flops(s: ModelShape, positions: int) -> int:
    """FLOPs of the LM head on ``positions`` hidden states."""
    return 2 * s.vocab * s.hidden * positions


def tuning_flops(s: ModelShape, rows: int, tokens: int, targets: int) -> int:
    """A tuning pass: forward and backward to the inputs of ``rows`` x ``tokens`` (prompt
    included), LM head on ``targets`` positions: 4·P·B·T + 12·l·B·T²·A + 4·V·d·N."""
    fwd_linear = 2 * s.linear * rows * tokens
    fwd_attn = 4 * s.layers * rows * tokens * tokens * s.attn_width
    return 2 * fwd_linear + 3 * fwd_attn + 2 * head_flops(s, targets)


def scoring_flops(s: ModelShape, rows: int, prefix: int, option_rows: int, fed: int, option_targets: int) -> int:
    """A scoring pass (``Backbone.score_options``): the prefix of ``rows`` x ``prefix`` tokens and
    the first answer token's LM head, then ``option_rows`` rows of ``fed`` tokens on the cache and
    the LM head on ``option_targets`` positions."""
    out = forward_flops(s, rows, prefix) + head_flops(s, rows)
    if fed:
        out += forward_flops(s, option_rows, fed, prefix + fed) + head_flops(s, option_targets)
    return out


# --------------------------------------------------------------------------- passes


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def matmul_peak(dtype: torch.dtype, device: torch.device, m: int, k: int, n: int, reps: int = 5) -> float:
    """GFLOP/s of the fastest of ``reps`` products [m, k] @ [k, n] (after one warm-up)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(device, dtype)
    b = torch.randn(k, n, generator=gen).to(device, dtype)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(reps))
    return 2 * m * k * n / best / 1e9


@dataclass
class Pass:
    """One pass to time: ``run()`` does it, ``flops`` it counts, over ``rows`` rows."""

    run: Callable[[], object]
    flops: int
    rows: int


def tuning_pass(bb: Backbone, rows: int, tokens: int, seed: int = 0) -> Pass:
    """A tuning pass of ``rows`` rows of ``tokens`` tokens after the prompt, each with its own
    prompt (as ``promptinit.batched``), the last ``TARGET_TOKENS`` of a row its targets."""
    gen = torch.Generator().manual_seed(seed)
    L, d = bb.config.prompt_length, bb.hidden_size
    vocab = min(len(bb.tokenizer), bb.model.get_input_embeddings().num_embeddings)
    ids = torch.randint(vocab, (rows, tokens), generator=gen)
    labels = torch.full_like(ids, IGNORE)
    labels[:, -TARGET_TOKENS:] = ids[:, -TARGET_TOKENS:]
    batch = Batch(ids, torch.ones_like(ids), labels).to(bb.device)
    prompt = (0.02 * torch.randn(rows, L, d, generator=gen)).to(bb.device)

    def run() -> torch.Tensor:
        p = prompt.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(bb.loss(p, batch, per_example=True).sum(), p)
        return grad

    return Pass(run, tuning_flops(ModelShape.of(bb.model), rows, L + tokens, rows * TARGET_TOKENS), rows)


def scoring_examples(bb: Backbone, rows: int, tokens: int) -> tuple[list[Example], int]:
    """``rows`` copies of one example with ``OPTIONS`` whose input is about ``tokens`` tokens
    (within the input cap), and its exact token count."""
    words: list[str] = []
    count = 0
    while count < min(tokens, bb.config.max_input_tokens):
        words.append(WORDS[len(words) % len(WORDS)])
        count = len(bb.tokenizer(" ".join(words), add_special_tokens=False).input_ids)
    text = " ".join(words)
    count = min(count, bb.config.max_input_tokens)  # inputs keep their last max_input_tokens tokens
    return [Example(text, OPTIONS[0], OPTIONS) for _ in range(rows)], count


def option_tokens(bb: Backbone, option: str) -> int:
    """Tokens an answer option runs as after an input ending in a word: its separating space,
    its tokens (cut to ``max_target_tokens`` - 1) and the closing eos."""
    ids = bb.tokenizer(" " + option, add_special_tokens=False).input_ids
    return min(len(ids), bb.config.max_target_tokens - 1) + 1


def scoring_pass(bb: Backbone, rows: int, tokens: int, seed: int = 0) -> Pass:
    """A scoring pass of ``rows`` examples of about ``tokens`` input tokens, each with its own
    prompt, ranking ``OPTIONS`` (``Backbone.score_options``)."""
    gen = torch.Generator().manual_seed(seed)
    examples, n_in = scoring_examples(bb, rows, tokens)
    prompt = (0.02 * torch.randn(rows, bb.config.prompt_length, bb.hidden_size, generator=gen)).to(bb.device)
    lengths = [option_tokens(bb, o) for o in OPTIONS]
    fed = max(lengths) - 1
    option_targets = rows * sum(n - 1 for n in lengths)
    flops = scoring_flops(
        ModelShape.of(bb.model), rows, bb.config.prompt_length + n_in, rows * len(OPTIONS), fed, option_targets
    )
    return Pass(lambda: bb.score_options(prompt, examples, batch_size=rows), flops, rows)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Variant:
    """One way of running the passes."""

    dtype: str
    attn: str
    compile: str  # off | on

    @property
    def label(self) -> str:
        return f"{self.dtype} {self.attn} compile {self.compile}"


@dataclass
class Timings:
    """Seconds per pass of a variant, one per round, and its first (compiling) call."""

    seconds: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {k: [] for k in PASSES})
    first_call: dict[str, float] = dataclasses.field(default_factory=dict)


def build_passes(bb: Backbone, args: argparse.Namespace) -> dict[str, Pass]:
    """The tuning and scoring pass of ``bb`` at the benchmark's size."""
    width = bb.config.prompt_length + args.tokens
    rows = {
        kind: args.rows or throughput.rows_per_pass(bb, kind, width)
        for kind in throughput.KINDS  # train -> tuning, score -> scoring
    }
    return {
        "tuning": tuning_pass(bb, rows["train"], args.tokens),
        "scoring": scoring_pass(bb, rows["score"], args.tokens),
    }


def run_variant(v: Variant, passes: dict[str, Pass], kind: str, device: torch.device, bb: Backbone) -> float:
    with compiled.passes(bb, enabled=v.compile == "on"):
        return timed(passes[kind].run, device)


def peaks_table(peaks: dict[tuple[str, str], float], device: str, threads: int) -> list[str]:
    out = ["| device | dtype | threads | matmul | GFLOP/s |", "|---|---|---|---|---|"]
    out += [f"| {device} | {d} | {threads} | {m} | {g:.0f} |" for (d, m), g in peaks.items()]
    return out


def passes_table(
    variants: Sequence[Variant],
    timings: dict[Variant, Timings],
    flops: dict[Variant, dict[str, int]],
    peak: dict[str, float],
    device: str,
    threads: int,
) -> list[str]:
    """The utilisation table: GFLOP/s from each variant's fastest pass, % of its dtype's peak,
    median seconds and the median per-round speed-up over the dtype's first variant."""
    out = [
        "| device | dtype | threads | pass | attention | compiled | GFLOP/s | % of peak | median s/pass | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in PASSES:
        for v in variants:
            s = timings[v].seconds[kind]
            gflops = flops[v][kind] / min(s) / 1e9
            first = next(u for u in variants if u.dtype == v.dtype)
            ratios = [a / b for a, b in zip(timings[first].seconds[kind], s, strict=True)]
            out.append(
                f"| {device} | {v.dtype} | {threads} | {kind} | {v.attn} | {v.compile} | {gflops:.0f} | "
                f"{100 * gflops / peak[v.dtype]:.0f} % | {statistics.median(s):.2f} | "
                f"{statistics.median(ratios):.2f}x |"
            )
    return out


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""


def measure(args: argparse.Namespace) -> list[str]:
    """Warm up, time every variant over the rounds, return the report's lines."""
    device = torch.device(args.device)
    variants = [Variant(d, a, c) for d, a, c in itertools.product(args.dtype, args.attn, args.compile)]
    backbones = {
        (d, a): Backbone(BackboneConfig(args.model, prompt_length=args.prompt_length, dtype=d,
                                        attn_implementation=a, max_input_tokens=args.tokens, device=args.device))
        for d, a in {(v.dtype, v.attn) for v in variants}
    }
    passes = {k: build_passes(bb, args) for k, bb in backbones.items()}
    flops = {v: {kind: passes[(v.dtype, v.attn)][kind].flops for kind in PASSES} for v in variants}
    timings = {v: Timings() for v in variants}
    head = [f"# utilisation: torch {torch.__version__}, {args.model}, {device.type}"
            f"{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
            f"{torch.get_num_threads()} threads; {load()} at start"]
    print(*head, sep="\n", flush=True)
    cache_files = len(list(Path(compiled.inductor_cache()).rglob("*"))) if "on" in args.compile else 0
    for v in variants:  # first calls: allocation, kernel choice, compilation (timed apart)
        for kind in PASSES:
            timings[v].first_call[kind] = run_variant(v, passes[(v.dtype, v.attn)], kind, device,
                                                      backbones[(v.dtype, v.attn)])
    square = args.square or (8192 if device.type == "cuda" else 2048)
    some = next(iter(backbones.values()))
    tok = some.config.prompt_length + args.tokens
    mlp_rows = (args.rows or 32) * tok
    mlp = (mlp_rows, some.hidden_size, some.model.config.intermediate_size)
    shapes = {f"square {square}²": (square, square, square), f"MLP {mlp[0]}x{mlp[1]}x{mlp[2]}": mlp}
    peaks: dict[tuple[str, str], float] = {}
    dtypes = {d: bb.dtype for (d, _), bb in backbones.items()}
    for r in range(args.rounds):
        for d in args.dtype:  # the peak is measured in every round too, beside the passes
            for name, (m, k, n) in shapes.items():
                g = matmul_peak(dtypes[d], device, m, k, n, reps=args.reps)
                peaks[(d, name)] = max(peaks.get((d, name), 0.0), g)
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            for kind in PASSES:
                timings[v].seconds[kind].append(
                    run_variant(v, passes[(v.dtype, v.attn)], kind, device, backbones[(v.dtype, v.attn)]))
        print(f"round {r + 1}/{args.rounds} done; {load()}", file=sys.stderr, flush=True)
    peak = {d: max(g for (d2, _), g in peaks.items() if d2 == d) for d in args.dtype}
    threads = torch.get_num_threads()
    lines = [*head, "", *peaks_table(peaks, device.type, threads), "",
             *passes_table(variants, timings, flops, peak, device.type, threads), ""]
    sizes = {kind: passes[next(iter(passes))][kind] for kind in PASSES}
    lines.append(f"passes of ({args.prompt_length} prompt + {args.tokens}) tokens a row "
                 f"({'the measured rule' if not args.rows else '--rows'}): tuning {sizes['tuning'].rows} rows, "
                 f"{sizes['tuning'].flops / 1e9:.4g} GFLOP; scoring {sizes['scoring'].rows} rows, "
                 f"{sizes['scoring'].flops / 1e9:.4g} GFLOP; {args.rounds} rounds; "
                 f"% of peak against the best of {', '.join(shapes)}")
    for v in variants:
        first = ", ".join(f"{k} {s:.1f} s" for k, s in timings[v].first_call.items())
        lines.append(f"first call {v.label}: {first}")
    if "on" in args.compile:
        lines.append(f"compile cache {compiled.inductor_cache()}: {cache_files} files before this run")
    lines.append(f"{load()} at end")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--attn", nargs="+", default=["eager"], choices=["eager", "sdpa"])
    p.add_argument("--compile", nargs="+", default=["off"], choices=list(compiled.MODES))
    p.add_argument("--cold", action="store_true", help="compile into a fresh temporary cache (a cold compile)")
    p.add_argument("--rounds", type=int, default=3, help="timings of every pass of every variant, interleaved")
    p.add_argument("--reps", type=int, default=3, help="matmul timings per shape per round (the fastest kept)")
    p.add_argument("--square", type=int, default=0, help="side of the square matmul; 0: 2048 on a CPU, 8192 on a GPU")
    p.add_argument("--rows", type=int, default=32, help="rows per pass; 0: promptinit.throughput's measured rule")
    p.add_argument("--tokens", type=int, default=64, help="tokens of a row after the prompt")
    p.add_argument("--prompt-length", type=int, default=8)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds: {args.rounds} must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    if args.cold:
        os.environ[compiled.CACHE_ENV] = tempfile.mkdtemp(prefix="promptinit-inductor-")
    lines = measure(args)
    print(*lines[1:], sep="\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
