"""Many prompt-tuning problems as one batched computation: the prompt is an input.

N independent problems (initial prompt x task x few-shot seed x learning rate ...) each keep
what ``tune_prompt`` keeps for one: their own batches (the same seeded
``promptinit.tuning.train_batches`` stream), optimiser state, dev evaluations every
``eval_every`` steps, best-on-dev prompt, patience and step count. What they share is the
model's passes. One training step runs the rows of every active problem through the model
together, each row carrying its problem's prompt; problem k's loss is the mean over its own
rows and the losses are summed, so the gradient that reaches prompt k is exactly problem k's
own (no other loss depends on it). Dev and test scoring likewise run many problems' examples
in shared passes.

Design:
    Prompt lengths: problems may differ in their number of prompt vectors L. Rows of different
    L never share a pass (padding a short prompt would move the inputs of a causal model to
    other positions and change its outputs); each L group runs its own passes in the same step.
    Pass size: a group's rows are sorted by length (less padding) and cut into passes of
    ``promptinit.throughput.rows_per_pass`` rows (measured once per backbone and device and
    cached, or the ``rows_per_pass`` setting), so a problem's rows may span passes; their
    gradients add up to the same sum.
    Optimisers: one per problem, on its own prompt tensor. transformers' Adafactor factors
    the second moment and clips the update by its RMS per parameter, so one optimiser over a
    stacked [N, L, d] tensor would mix the problems; N optimisers over N tensors give every
    problem the update of its separate run (Adam and SGD likewise).

    Learning-rate selection: a problem whose config lists k learning rates (``TuneConfig.lr``,
    Qin et al.'s best of 0.5, 0.4, 0.3, 0.2 on dev) runs as k problems, one per lr, in the same
    passes as every other; at the end it is reduced to the run with the best dev score
    (``promptinit.tuning.choose_lr``), and only that run's prompt is scored on test.

Results equal N separate ``tune_prompt`` runs to rounding (``tests/evaluation/test_batched.py``,
``tests/evaluation/test_lr_selection.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import cast

import numpy as np
import torch

from promptinit import compiled, metrics, throughput
from promptinit.backbones import Backbone
from promptinit.progress import progress_bar
from promptinit.tasks.fewshot import FewShot
from promptinit.tasks.task import Example
from promptinit.throughput import example_tokens
from promptinit.tuning import (
    GradTransform,
    TuneConfig,
    TuneResult,
    choose_lr,
    halving_rungs,
    make_optimizer,
    train_batches,
)

Row = tuple[int, int]  # (problem or item index, example index)


@dataclass
class TuneProblem:
    """One prompt-tuning problem of a batched run.

    Attributes:
        fewshot: train / dev / test of one task and seed.
        init: the initial prompt [L, d] (not modified); L may differ between problems.
        config: this problem's settings (lr, or several to choose from on dev, optimizer,
            batch_size, steps, eval_every, patience); None: the run's shared config.
        grad_transform: optional map applied to this problem's prompt gradient before each
            step (SUPMER's meta-gradient regulariser).
    """

    fewshot: FewShot
    init: torch.Tensor
    config: TuneConfig | None = None
    grad_transform: GradTransform | None = None


@dataclass
class _Run:
    """What ``tune_prompt`` keeps in local variables, for one (problem, lr) of a batched run."""

    fewshot: FewShot
    config: TuneConfig  # with a single lr
    grad_transform: GradTransform | None
    prompt: torch.Tensor  # leaf [L, d] that requires grad
    optimizer: torch.optim.Optimizer
    batches: Iterator[list[Example]]
    lengths: dict[str, int]  # tokens of each train example (uid -> count), for sorting rows
    init_dev: float = float("nan")
    best_dev: float = float("nan")
    best: torch.Tensor | None = None
    best_step: int = 0
    since_best: int = 0
    curve: list[dict] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    stopped: bool = False  # patience ran out, or successive halving dropped it
    problem: int = -1  # index of its problem in the batched run (its lr runs share it)
    rungs: dict[int, int] = field(default_factory=dict)  # its problem's successive-halving rungs

    @property
    def metric(self) -> str:
        return self.fewshot.task.metric.value

    def record(self, step: int, dev: float) -> None:
        """A dev evaluation at ``step``: the curve, the best prompt and patience, as ``tune_prompt``."""
        self.curve.append({"step": step, "train_loss": float(np.mean(self.running)), "dev": dev})
        self.running = []
        if dev > self.best_dev:
            self.best_dev, self.best, self.best_step, self.since_best = dev, self.prompt.detach().clone(), step, 0
        else:
            self.since_best += 1
        patience = self.config.patience
        self.stopped = patience is not None and self.since_best >= patience

    def on_dev(self) -> TuneResult:
        """The run's outcome before its test scoring (``test`` left NaN)."""
        return TuneResult(
            self.fewshot.task.name,
            self.fewshot.seed,
            self.metric,
            self.init_dev,
            self.best_dev,
            math.nan,
            self.best_step,
            self.curve,
            self.best,
            lr=self.config.single_lr,
        )


def _start(backbone: Backbone, problem: TuneProblem, cfg: TuneConfig) -> _Run:
    """The run of ``problem`` with ``cfg`` (one of its candidate configs, a single lr)."""
    fs = problem.fewshot
    prompt = problem.init.detach().clone().requires_grad_(True)
    lengths = dict(zip((ex.uid for ex in fs.train), example_tokens(backbone, fs.train), strict=True))
    return _Run(
        fs,
        cfg,
        problem.grad_transform,
        prompt,
        make_optimizer([prompt], cfg.optimizer, cfg.single_lr),
        train_batches(fs.train, cfg.batch_size, fs.seed),
        lengths,
    )


def tune_prompts(
    backbone: Backbone,
    problems: Sequence[TuneProblem],
    config: TuneConfig = TuneConfig(),
    *,
    progress: bool = True,
) -> list[TuneResult]:
    """Tune N prompts at once, each as ``tune_prompt`` would alone, sharing the model's passes.

    Every step runs one training step of each active problem (its own next batch, gradient,
    optional ``grad_transform`` and optimiser step); a problem whose ``eval_every`` divides the
    step, or at its last step, is scored on its dev set (all such problems in shared passes);
    a problem leaves the run after its ``steps`` or when its ``patience`` runs out. At the end
    every best-on-dev prompt is scored on its test set in shared passes.

    A problem whose config lists k learning rates runs as k problems (one per lr) in the same
    passes and comes back as the one with the best dev score (``choose_lr``: a tie keeps the
    earlier lr), with ``lr`` and ``lr_search`` recording the choice; only it is scored on test.

    Args:
        backbone: the frozen model.
        problems: the problems (few-shot data, initial prompt, optional own config and
            gradient transform).
        config: settings of the problems without their own, and ``rows_per_pass`` for the run
            (0: measured per backbone and device, see ``promptinit.throughput``).
        progress: one progress bar over the steps of every (problem, lr) run, with the number
            of active runs.

    Returns:
        One ``TuneResult`` per problem, in order; equal to ``tune_prompt``'s to rounding.

    Example:
        >>> probs = [TuneProblem(sample_few_shot(t, s), init) for t in tasks for s in SEEDS]
        >>> results = tune_prompts(backbone, probs, TuneConfig(steps=300, lr=[0.5, 0.4, 0.3, 0.2]))
    """
    configs = [p.config or config for p in problems]
    runs = [
        dataclasses.replace(_start(backbone, p, c), problem=i, rungs=halving_rungs(cfg))
        for i, (p, cfg) in enumerate(zip(problems, configs, strict=True))
        for c in cfg.candidates()
    ]
    min_rows = max([r.config.eval_batch_size for r in runs], default=1)  # the one-by-one scoring pass

    def score(items: Sequence[tuple[torch.Tensor, Sequence[Example], str]]) -> list[float]:
        return evaluate_many(backbone, items, rows_per_pass=config.rows_per_pass, min_rows=min_rows)

    _train(backbone, runs, score, config.rows_per_pass, progress)
    on_dev = iter([r.on_dev() for r in runs])  # in problem order, each problem's lrs in a row
    kept = [choose_lr(cfg, [next(on_dev) for _ in cfg.lrs]) for cfg in configs]
    tests = score([(k.tuned_prompt, p.fewshot.test, k.metric) for k, p in zip(kept, problems, strict=True)])
    return [dataclasses.replace(k, test=test) for k, test in zip(kept, tests, strict=True)]


def _train(backbone: Backbone, runs: Sequence[_Run], score: Callable, rows_per_pass: int, progress: bool) -> None:
    """Every run's dev-scored tuning loop (``tune_prompts``), in shared passes; updates the runs.

    Args:
        backbone: the frozen model.
        runs: the runs, one per (problem, lr).
        score: ``evaluate_many`` of ``(prompt, examples, metric)`` items with the run's pass size.
        rows_per_pass: rows per training pass (0: measured).
        progress: one progress bar over all run-steps, with the number of active runs.
    """
    for r, dev in zip(runs, score([(r.prompt, r.fewshot.dev, r.metric) for r in runs]), strict=True):
        r.init_dev = r.best_dev = dev
        r.best = r.prompt.detach().clone()
        r.curve.append({"step": 0, "train_loss": float("nan"), "dev": dev})
    bar = progress_bar(
        total=sum(r.config.steps for r in runs),
        desc=f"tune {len(runs)} prompts",
        unit="step",
        disable=not progress,
        leave=False,
    )
    active, step = list(runs), 0
    while active:
        step += 1
        batches = [next(r.batches) for r in active]
        lengths = [[r.lengths[ex.uid] for ex in b] for r, b in zip(active, batches, strict=True)]
        contexts: Sequence[torch.Tensor | None]
        if any(getattr(r.grad_transform, "takes_context", False) for r in active):  # SUPMER's per-batch ψ gate
            losses, grads, contexts = train_step_with_context(
                backbone, [r.prompt for r in active], batches, lengths, rows_per_pass
            )
        else:
            losses, grads = train_step(backbone, [r.prompt for r in active], batches, lengths, rows_per_pass)
            contexts = [None] * len(active)
        for r, loss, grad, context in zip(active, losses, grads, contexts, strict=True):
            if r.grad_transform is None:
                r.prompt.grad = grad
            elif getattr(r.grad_transform, "takes_context", False):
                r.prompt.grad = r.grad_transform(grad, context)
            else:
                r.prompt.grad = r.grad_transform(grad)
            r.optimizer.step()
            r.running.append(loss)
        due = [r for r in active if step % r.config.eval_every == 0 or step == r.config.steps]
        for r, dev in zip(due, score([(r.prompt, r.fewshot.dev, r.metric) for r in due]), strict=True):
            r.record(step, dev)
        _halve(active, step)
        bar.update(len(active))
        for r in active:
            if r.stopped and step < r.config.steps and not bar.disable:
                bar.total -= r.config.steps - step  # its remaining steps will not run
        active = [r for r in active if not r.stopped and step < r.config.steps]
        bar.set_postfix(active=f"{len(active)}/{len(runs)}")
    bar.close()


def _halve(active: Sequence[_Run], step: int) -> None:
    """Successive halving (``TuneConfig.lr_halving``): at a rung, each problem's live lr runs
    beyond the number it keeps stop, the lowest best-dev first (a tie stops the later lr)."""
    for _, group in groupby(active, key=lambda r: r.problem):  # a problem's lr runs are adjacent
        live = [r for r in group if not r.stopped]
        keep = live[0].rungs.get(step) if live else None
        if keep is not None and len(live) > keep:
            for r in sorted(live, key=lambda r: -r.best_dev)[keep:]:  # stable: ties keep the earlier lr
                r.stopped = True


# --------------------------------------------------------------------------- passes


def passes(
    rows: Sequence[Row], group: Callable[[Row], Hashable], tokens: Callable[[Row], int], size: Callable[[int], int]
) -> list[list[Row]]:
    """Cut rows into passes: rows of one group only, longest first, ``size(tokens)`` rows each.

    Args:
        rows: (problem, example) pairs.
        group: rows with different keys never share a pass (the prompt length L, and for
            scoring whether the example has options).
        tokens: a row's length in tokens; rows are sorted by it so a pass pads little.
        size: rows per pass for passes whose longest row has this many tokens.

    Returns:
        The passes, each a list of rows.
    """
    out: list[list[Row]] = []
    keyed = sorted(rows, key=lambda r: (repr(group(r)), -tokens(r), r))
    for _, grouped in groupby(keyed, key=lambda r: repr(group(r))):
        same = list(grouped)
        i = 0
        while i < len(same):
            n = size(tokens(same[i]))
            out.append(same[i : i + n])
            i += n
    return out


def _row_prompts(backbone: Backbone, prompts: Sequence[torch.Tensor], owner: Sequence[int]):
    """``(owners, index, prompt)`` of a pass whose row r belongs to problem ``owner[r]``:
    the distinct owners, each row's position among them, and the prompt to pass: [B, L, d]
    with each row's own, or the plain [L, d] when one problem owns the whole pass (exactly
    what ``tune_prompt`` passes)."""
    owners = sorted(set(owner))
    local = {k: i for i, k in enumerate(owners)}
    index = torch.tensor([local[k] for k in owner], device=backbone.device)
    if len(owners) == 1:
        return owners, index, prompts[owners[0]]
    stacked = torch.stack([prompts[k].to(backbone.device, backbone.dtype) for k in owners])
    return owners, index, stacked[index]


def train_step(
    backbone: Backbone,
    prompts: Sequence[torch.Tensor],
    batches: Sequence[Sequence[Example]],
    lengths: Sequence[Sequence[int]] | None = None,
    rows_per_pass: int | None = None,
) -> tuple[list[float], list[torch.Tensor]]:
    """Losses and gradients of N problems' batches, in shared passes.

    Args:
        backbone: the frozen model.
        prompts: one leaf prompt [L_k, d] per problem.
        batches: one batch of examples per problem.
        lengths: tokens of each example (without the prompt), to sort rows; None: counted.
        rows_per_pass: rows per pass (0 or None: measured, see ``promptinit.throughput``).

    Returns:
        ``(losses, grads)``: per problem, the mean loss over its batch and its gradient
        (that of this loss alone), each as a separate ``tune_prompt`` step computes it.
    """
    losses, grads, _ = _train_step(backbone, prompts, batches, lengths, rows_per_pass, with_context=False)
    return losses, grads


def train_step_with_context(
    backbone: Backbone,
    prompts: Sequence[torch.Tensor],
    batches: Sequence[Sequence[Example]],
    lengths: Sequence[Sequence[int]] | None = None,
    rows_per_pass: int | None = None,
) -> tuple[list[float], list[torch.Tensor], list[torch.Tensor]]:
    """``train_step`` plus each problem's batch context for SUPMER's ψ gate: the mean final
    hidden state over its batch's target tokens (``Backbone.loss_with_context``), [d] each."""
    return _train_step(backbone, prompts, batches, lengths, rows_per_pass, with_context=True)


def _train_step(backbone, prompts, batches, lengths, rows_per_pass, with_context: bool):
    if lengths is None:
        lengths = [example_tokens(backbone, b) for b in batches]
    grads = [torch.zeros_like(p) for p in prompts]
    loss_sums = [0.0] * len(prompts)
    h_sums: list = [0.0] * len(prompts)
    counts: list = [0.0] * len(prompts)
    rows = [(k, j) for k, b in enumerate(batches) for j in range(len(b))]

    def L(r: Row) -> int:  # the prompt length of row r
        return prompts[r[0]].shape[-2]

    floor = max(len(b) for b in batches)  # one-by-one, each batch is one pass
    for chunk in passes(
        rows,
        L,
        lambda r: L(r) + lengths[r[0]][r[1]],
        lambda t: throughput.rows_per_pass(backbone, "train", t, floor=floor, override=rows_per_pass),
    ):
        owners, index, row_prompts = _row_prompts(backbone, prompts, [k for k, _ in chunk])
        batch = backbone.encode([batches[k][j] for k, j in chunk])
        with compiled.passes(backbone):  # PROMPTINIT_COMPILE=on: this pass's forward runs compiled
            if with_context:
                per, h_sum, count = backbone.loss_with_context(row_prompts, batch)
            else:
                per = backbone.loss(row_prompts, batch, per_example=True)
        if with_context:
            h_by = torch.zeros(len(owners), h_sum.shape[-1], dtype=h_sum.dtype, device=h_sum.device)
            h_by = h_by.index_add(0, index, h_sum)
            n_by = torch.zeros(len(owners), dtype=count.dtype, device=count.device).index_add(0, index, count)
            for i, k in enumerate(owners):
                h_sums[k] = h_sums[k] + h_by[i]
                counts[k] = counts[k] + n_by[i]
        # each row weighs 1 / (its problem's batch size): the sum over a problem's rows is its mean loss
        weight = torch.tensor([1.0 / len(batches[k]) for k, _ in chunk], dtype=per.dtype, device=per.device)
        weighted = per * weight
        for k, g in zip(owners, torch.autograd.grad(weighted.sum(), [prompts[k] for k in owners]), strict=True):
            grads[k] += g
        sums = torch.zeros(len(owners), dtype=per.dtype, device=per.device).index_add(0, index, weighted.detach())
        for k, s in zip(owners, sums.tolist(), strict=True):
            loss_sums[k] += s
    contexts = [h / n for h, n in zip(h_sums, counts, strict=True)] if with_context else []
    return loss_sums, grads, contexts


# --------------------------------------------------------------------------- scoring


def evaluate_many(
    backbone: Backbone,
    items: Sequence[tuple[torch.Tensor, Sequence[Example], str]],
    *,
    rows_per_pass: int | None = None,
    min_rows: int = 32,
) -> list[float]:
    """Score many (prompt, examples, metric) items in shared passes; ``evaluate`` of each.

    Rows of one pass may carry different prompts (rank classification keeps its per-row prefix
    cache; generation decodes every row greedily). Rows with and without options, and prompts
    of different lengths, run in separate passes.

    Args:
        backbone: the frozen model.
        items: ``(prompt [L, d], examples, metric)`` per item.
        rows_per_pass: examples per pass (0 or None: measured, see ``promptinit.throughput``).
        min_rows: the measured rule never makes passes smaller than this (the one-by-one
            ``evaluate`` pass, ``eval_batch_size``).

    Returns:
        The metric of each item (in [0, 1]), equal to ``evaluate`` of it to rounding.
    """
    prompts = [p.detach() for p, _, _ in items]
    exs = [list(e) for _, e, _ in items]
    lengths = [example_tokens(backbone, e, with_options=True) for e in exs]
    preds: list[list[str | None]] = [[None] * len(e) for e in exs]
    rows = [(i, j) for i, e in enumerate(exs) for j in range(len(e))]

    def L(r: Row) -> int:  # the prompt length of row r
        return prompts[r[0]].shape[-2]

    def size(t: int) -> int:
        return throughput.rows_per_pass(backbone, "score", t, floor=min_rows, override=rows_per_pass)

    for chunk in passes(
        rows, lambda r: (L(r), bool(exs[r[0]][r[1]].options)), lambda r: L(r) + lengths[r[0]][r[1]], size
    ):
        _, _, row_prompts = _row_prompts(backbone, prompts, [i for i, _ in chunk])
        with compiled.passes(backbone):  # PROMPTINIT_COMPILE=on: the prompt-and-input prefix runs compiled
            out = backbone.predict(row_prompts, [exs[i][j] for i, j in chunk], batch_size=len(chunk))
        for (i, j), pred in zip(chunk, out, strict=True):
            preds[i][j] = pred
    # every row was predicted above: no None is left
    filled = cast(list[list[str]], preds)
    return [metrics.compute(m, filled[i], [ex.references for ex in exs[i]]) for i, (_, _, m) in enumerate(items)]
