"""Cost of rank-classification scoring with K options relative to scoring one option.

Causal models run prompt + input once and share its key/value cache across options, so K
options should cost little more than one. Prints, for K = 1, 2, 4, 8: the time per batch
of the cached scorer, its ratio to K = 1, and the ratio of the naive way (K full passes of
prompt + input + option) for comparison. Target: cached <= 1.5x at K = 4 on 128-token inputs.

    python benchmarks/scoring.py [--model smollm2-135m] [--batch 8] [--input-tokens 128]
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from promptinit.backbones import Backbone, BackboneConfig
from promptinit.tasks.task import Example

WORDS = "the a movie plot was very good bad film story really quite long and short but".split()
OPTIONS = ["positive", "negative", "neutral", "mixed", "angry", "happy", "sad", "calm"]


def make_examples(bb: Backbone, n: int, tokens: int, k: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = f"{i}:"
        while len(bb.tokenizer(text, add_special_tokens=False).input_ids) < tokens:
            text += " " + rng.choice(WORDS)
        ids = bb.tokenizer(text, add_special_tokens=False).input_ids[:tokens]
        opts = tuple(OPTIONS[:k])
        out.append(Example(bb.tokenizer.decode(ids) + "\nAnswer:", opts[0], opts))
    return out


def naive_scores(bb: Backbone, prompt: torch.Tensor, examples: list[Example]) -> None:
    """K full passes: every option re-runs prompt + input (what the cache avoids)."""
    with torch.no_grad():
        for j in range(len(examples[0].options)):
            exs = [Example(e.input, e.options[j], e.options) for e in examples]
            bb.token_logprobs(prompt, bb.encode(exs))


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input-tokens", type=int, default=128)
    ap.add_argument("--prompt-length", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2) if not torch.cuda.is_available() else torch.get_num_threads())
    bb = Backbone(BackboneConfig(args.model, prompt_length=args.prompt_length))
    prompt = bb.init_prompt("vocab", seed=0)
    print(f"model {args.model} on {bb.device}, batch {args.batch}, input {args.input_tokens} tokens, "
          f"prompt {args.prompt_length}, threads {torch.get_num_threads()}")
    rows = []
    for k in (1, 2, 4, 8):
        exs = make_examples(bb, args.batch, args.input_tokens, k)
        cached = timeit(lambda: bb.score_options(prompt, exs, batch_size=args.batch), args.repeats)
        naive = timeit(lambda: naive_scores(bb, prompt, exs), args.repeats)
        rows.append((k, cached, naive))
    base = rows[0][1]
    print(f"{'K':>3} {'cached s':>10} {'x K=1':>7} {'naive s':>10} {'x K=1':>7} {'naive/cached':>13}")
    for k, cached, naive in rows:
        print(f"{k:>3} {cached:>10.3f} {cached / base:>7.2f} {naive:>10.3f} {naive / base:>7.2f} {naive / cached:>13.2f}")
    k4 = rows[2][1] / base
    print(f"K=4 cached / K=1: {k4:.2f}x (target <= 1.5x): {'OK' if k4 <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
