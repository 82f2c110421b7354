"""Downstream prompt tuning, the PT baseline and Average Relative Gain.

Relative gain RG = (s_method - s_pt) / s_pt per target task and few-shot seed; ARG is the
mean over target tasks (Qin et al. 2023). How sure a difference is (95 % intervals over the
(task, seed) pairs) is ``promptinit.stats.compare``'s job.

What one tuning run is (``TuneConfig``, ``TuneResult``, its optimiser and batches) lives in
``promptinit.tuning``, shared with ``promptinit.batched``; ``TuneConfig`` and ``TuneResult``
can be imported from here as well.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# batched is used through its module, so tests can watch batched.tune_prompts where it is defined
from promptinit import batched, metrics, stats
from promptinit.backbones import Backbone
from promptinit.errors import PromptinitError
from promptinit.files import atomic_write_json
from promptinit.fingerprints import digest, source_fingerprint
from promptinit.paths import cache_dir
from promptinit.progress import progress_bar
from promptinit.tasks.fewshot import SEEDS, FewShot
from promptinit.tasks.task import Example, Task

# TuneConfig and TuneResult are this module's vocabulary, and many callers import them from here
from promptinit.tuning import (
    GradTransform,
    TuneConfig,
    TuneResult,
    choose_lr,
    halving_rungs,
    make_optimizer,
    train_batches,
)

# The code that decides a cached baseline's content: its source is part of the cache key.
BASELINE_CODE = (
    "promptinit.evaluation",
    "promptinit.tuning",
    "promptinit.batched",
    "promptinit.metrics",
    "promptinit.backbones.backbone",
    "promptinit.backbones.prompts",
    "promptinit.tasks.fewshot",
    "promptinit.tasks.task",
)
# Settings that change how fast a result comes, not what it is (beyond rounding): not cache keys.
SPEED_SETTINGS = ("rows_per_pass",)


def evaluate(
    backbone: Backbone, prompt: torch.Tensor, examples: Sequence[Example], metric: str, batch_size: int = 32
) -> float:
    """Score a prompt on examples with the task's metric (in [0, 1])."""
    preds = backbone.predict(prompt.detach(), list(examples), batch_size=batch_size)
    return metrics.compute(metric, preds, [ex.references for ex in examples])


def tune_prompt(
    backbone: Backbone,
    fewshot: FewShot,
    init: torch.Tensor,
    config: TuneConfig = TuneConfig(),
    *,
    grad_transform: GradTransform | None = None,
    progress: bool = True,
) -> TuneResult:
    """Tune a prompt on a few-shot train set, keep the best-on-dev prompt, score it on test.

    With several learning rates (``config.lr`` a list) the prompt is tuned once per lr, one
    run after the other, and the run with the best dev score is kept (``choose_lr``; a tie
    keeps the earlier lr); only its prompt is scored on test. With ``lr_halving`` the runs
    advance together and the trailing ones stop at each rung (``halving_rungs``).

    Args:
        backbone: the frozen model.
        fewshot: train / dev / test of one task and seed.
        init: the initial prompt [L, d] (not modified).
        config: tuning settings.
        grad_transform: optional map applied to the prompt gradient before each step
            (SUPMER's meta-gradient regulariser).
        progress: show a progress bar.

    Returns:
        A ``TuneResult`` with the best prompt, its ``lr`` and (several lrs) ``lr_search``.
    """
    if halving_rungs(config):  # the lr runs advance in step to be halved: the batched loop does that
        problem = batched.TuneProblem(fewshot, init, grad_transform=grad_transform)
        return batched.tune_prompts(backbone, [problem], config, progress=progress)[0]
    runs = [_tune_on_dev(backbone, fewshot, init, c, grad_transform, progress) for c in config.candidates()]
    kept = choose_lr(config, runs)
    kept.test = evaluate(backbone, kept.tuned_prompt, fewshot.test, kept.metric, config.eval_batch_size)
    return kept


def _tune_on_dev(
    backbone: Backbone,
    fewshot: FewShot,
    init: torch.Tensor,
    config: TuneConfig,
    grad_transform: GradTransform | None,
    progress: bool,
) -> TuneResult:
    """``tune_prompt`` with one lr, up to the best-on-dev prompt (``test`` left NaN)."""
    task = fewshot.task
    prompt = init.detach().clone().requires_grad_(True)
    opt = make_optimizer([prompt], config.optimizer, config.single_lr)

    def score(p: torch.Tensor, exs: Sequence[Example]) -> float:
        return evaluate(backbone, p, exs, task.metric.value, config.eval_batch_size)

    init_dev = best_dev = score(prompt, fewshot.dev)
    best, best_step, since_best = prompt.detach().clone(), 0, 0
    curve = [{"step": 0, "train_loss": float("nan"), "dev": init_dev}]
    batches = train_batches(fewshot.train, config.batch_size, fewshot.seed)
    bar = progress_bar(
        range(1, config.steps + 1),
        desc=f"tune {task.name} seed {fewshot.seed} lr {config.lr}",
        disable=not progress,
        leave=False,
    )
    running = []
    # SUPMER's ψ may read each batch's hidden states (the released code's downstream trainer)
    takes_context = getattr(grad_transform, "takes_context", False)
    for step in bar:
        batch = backbone.encode(next(batches))
        if takes_context and grad_transform is not None:
            per, h_sum, count = backbone.loss_with_context(prompt, batch)
            loss = per.mean()
            (grad,) = torch.autograd.grad(loss, prompt)
            prompt.grad = grad_transform(grad, h_sum.sum(0) / count.sum())
        else:
            loss = backbone.loss(prompt, batch)
            (grad,) = torch.autograd.grad(loss, prompt)
            prompt.grad = grad_transform(grad) if grad_transform else grad
        opt.step()
        running.append(loss.item())
        if step % config.eval_every == 0 or step == config.steps:
            dev = score(prompt, fewshot.dev)
            curve.append({"step": step, "train_loss": float(np.mean(running)), "dev": dev})
            running = []
            if dev > best_dev:
                best_dev, best, best_step, since_best = dev, prompt.detach().clone(), step, 0
            else:
                since_best += 1
            bar.set_postfix(loss=f"{curve[-1]['train_loss']:.3f}", dev=f"{dev:.3f}", best=f"{best_dev:.3f}")
            if config.patience is not None and since_best >= config.patience:
                break
    return TuneResult(
        task.name,
        fewshot.seed,
        task.metric.value,
        init_dev,
        best_dev,
        math.nan,
        best_step,
        curve,
        best,
        lr=config.single_lr,
    )


def finetune(
    backbone: Backbone,
    fewshot: FewShot,
    config: TuneConfig = TuneConfig(lr=1e-4, optimizer="adam"),
    *,
    progress: bool = True,
) -> TuneResult:
    """Full fine-tuning baseline (all weights, no prompt) for small models.

    The backbone's own frozen model is untouched: a copy is trained.
    """
    if config.selects_lr:
        raise PromptinitError(
            f"field 'lr': finetune takes one learning rate, got {list(config.lrs)}; call it once per lr"
        )
    tuned = copy.copy(backbone)
    tuned.model = copy.deepcopy(backbone.model).requires_grad_(True)
    no_prompt = torch.zeros(0, backbone.hidden_size, dtype=backbone.dtype, device=backbone.device)
    opt = make_optimizer(tuned.model.parameters(), config.optimizer, config.single_lr)
    task = fewshot.task

    def score(exs: Sequence[Example]) -> float:
        return evaluate(tuned, no_prompt, exs, task.metric.value, config.eval_batch_size)

    init_dev = best_dev = score(fewshot.dev)
    best_state, best_step = copy.deepcopy(tuned.model.state_dict()), 0
    curve = [{"step": 0, "train_loss": float("nan"), "dev": init_dev}]
    batches = train_batches(fewshot.train, config.batch_size, fewshot.seed)
    tuned.model.train()
    for step in progress_bar(
        range(1, config.steps + 1), desc=f"finetune {task.name}", disable=not progress, leave=False
    ):
        opt.zero_grad()
        loss = tuned.loss(no_prompt, tuned.encode(next(batches)))
        loss.backward()
        opt.step()
        if step % config.eval_every == 0 or step == config.steps:
            tuned.model.eval()
            dev = score(fewshot.dev)
            tuned.model.train()
            curve.append({"step": step, "train_loss": loss.item(), "dev": dev})
            if dev > best_dev:
                best_dev, best_step, best_state = dev, step, copy.deepcopy(tuned.model.state_dict())
    tuned.model.load_state_dict(best_state)
    tuned.model.eval()
    return TuneResult(
        task.name,
        fewshot.seed,
        task.metric.value,
        init_dev,
        best_dev,
        score(fewshot.test),
        best_step,
        curve,
        lr=config.single_lr,
    )


# ------------------------------------------------------------------------- ARG


def relative_gain(score: float, baseline: float) -> float:
    """RG = (s - s_pt) / s_pt, with the denominator clamped at ``promptinit.stats.MIN_BASELINE``."""
    return float(stats.relative_gain(score, baseline))


@dataclass(frozen=True)
class ARG:
    """Average Relative Gain over target tasks (point estimates; intervals: ``promptinit.stats``)."""

    mean: float
    per_seed: dict[int, float]  # per few-shot seed, the mean RG over tasks
    per_task: dict[str, float]  # RG per task, averaged over seeds

    def __str__(self) -> str:
        return f"{100 * self.mean:+.1f}"


def average_relative_gain(scores: dict[tuple[str, int], float], baseline: dict[tuple[str, int], float]) -> ARG:
    """ARG from test scores keyed by (task, seed); every key needs a baseline score.

    Args:
        scores: the method's test score per (task, seed).
        baseline: the PT baseline's test score per (task, seed).

    Returns:
        ``ARG``: per seed, the mean RG over tasks, and their mean.
    """
    missing = sorted(set(scores) - set(baseline))
    if missing:
        raise ValueError(f"no PT baseline for {missing[:3]}")
    rg = {k: relative_gain(v, baseline[k]) for k, v in scores.items()}
    seeds = sorted({s for _, s in rg})
    tasks = sorted({t for t, _ in rg})
    per_seed = {s: float(np.mean([v for (t, s2), v in rg.items() if s2 == s])) for s in seeds}
    per_task = {t: float(np.mean([v for (t2, _), v in rg.items() if t2 == t])) for t in tasks}
    return ARG(float(np.mean(list(per_seed.values()))), per_seed, per_task)


def _cache_key(*parts: object) -> str:
    return digest(source_fingerprint(*BASELINE_CODE), *parts, n=24)


def _tuning_key(config: TuneConfig) -> dict:
    key = {k: v for k, v in config.key_fields().items() if k not in SPEED_SETTINGS}
    if not config.lr_halving:  # added later: off, the key stays what it was before the setting existed
        del key["lr_halving"]
    return key


@dataclass
class _Missing:
    """A PT-baseline (task, seed) that is not on disk yet."""

    key: tuple[str, int]
    path: Path  # its cache file
    problem: batched.TuneProblem


def _baseline_plan(
    backbone: Backbone,
    tasks: Sequence[Task],
    seeds: Sequence[int],
    config: TuneConfig,
    use_cache: bool,
) -> tuple[dict[tuple[str, int], TuneResult | None], list[_Missing]]:
    """The cached baseline results, in (task, seed) order (None where missing), and the
    problems to tune for the missing ones."""
    found: dict[tuple[str, int], TuneResult | None] = {}
    missing: list[_Missing] = []
    folder = cache_dir("baselines")
    for task in tasks:
        for seed in seeds:
            key = _cache_key(backbone.fingerprint, task.fingerprint, seed, _tuning_key(config))
            path = folder / f"{task.name}-{seed}-{key}.json"
            found[(task.name, seed)] = None
            if use_cache and path.exists():
                found[(task.name, seed)] = TuneResult(**json.loads(path.read_text()))
                continue
            fs = config.few_shot(task, seed)
            problem = batched.TuneProblem(fs, backbone.init_prompt("vocab", seed=seed))
            missing.append(_Missing((task.name, seed), path, problem))
    return found, missing


def _filled(found: dict[tuple[str, int], TuneResult | None]) -> dict[tuple[str, int], TuneResult]:
    """``_baseline_plan``'s results once the missing ones are tuned, in the same order."""
    filled = {k: r for k, r in found.items() if r is not None}
    if len(filled) != len(found):
        raise RuntimeError(f"PT baseline: no result for {[k for k, r in found.items() if r is None]}")
    return filled


def _store_baseline(missing: _Missing, result: TuneResult) -> TuneResult:
    atomic_write_json(missing.path, result.summary())
    return TuneResult(**result.summary())


def pt_baseline(
    backbone: Backbone,
    tasks: Sequence[Task],
    seeds: Sequence[int] = SEEDS,
    config: TuneConfig = TuneConfig(),
    *,
    progress: bool = True,
    use_cache: bool = True,
) -> dict[tuple[str, int], TuneResult]:
    """The prompt-tuning baseline (sampled-vocabulary init) per (task, seed), cached on disk.

    The (task, seed) pairs not on disk are tuned together as one batched run
    (``promptinit.batched.tune_prompts``; each equals its own ``tune_prompt`` run to rounding)
    and each is written to its own file.

    The cache key covers the backbone (``Backbone.fingerprint``: model name and weights, dtype,
    device type, attention implementation, L, token caps, torch and transformers versions), the
    task content fingerprint, the seed, every tuning setting but the speed-only ones
    (``SPEED_SETTINGS``) and the source of the code that tunes and scores (``BASELINE_CODE``),
    so a result is computed once, reused by every trial and sweep that shares them, and never
    read by code it did not come from.
    """
    found, missing = _baseline_plan(backbone, tasks, seeds, config, use_cache)
    if missing:
        results = batched.tune_prompts(backbone, [m.problem for m in missing], config, progress=progress)
        for m, res in zip(missing, results, strict=True):
            found[m.key] = _store_baseline(m, res)
    return _filled(found)


def tune_with_baseline(
    backbone: Backbone,
    problems: Sequence[batched.TuneProblem],
    baseline: Sequence[tuple[Task, int]],
    config: TuneConfig,
    *,
    progress: bool = True,
) -> tuple[list[TuneResult], dict[tuple[str, int], TuneResult]]:
    """Tune ``problems`` and the PT baseline of the ``baseline`` (task, seed) pairs not yet on
    disk as one batched computation (``promptinit.batched.tune_prompts``), storing the new
    baseline results as ``pt_baseline`` does.

    Returns:
        ``(results of problems in order, {(task, seed): baseline result})``.
    """
    found: dict[tuple[str, int], TuneResult | None] = {}
    missing: list[_Missing] = []
    for task, seeds in seeds_by_task(baseline):
        cached, todo = _baseline_plan(backbone, [task], seeds, config, use_cache=True)
        found.update(cached)
        missing += todo
    tuned = batched.tune_prompts(backbone, [m.problem for m in missing] + list(problems), config, progress=progress)
    for m, res in zip(missing, tuned[: len(missing)], strict=True):
        found[m.key] = _store_baseline(m, res)
    return tuned[len(missing) :], _filled(found)


def seeds_by_task(pairs: Sequence[tuple[Task, int]]) -> list[tuple[Task, list[int]]]:
    """``[(task, seed), ...]`` as ``[(task, [seed, ...]), ...]`` in first-seen order (tasks by name)."""
    out: dict[str, tuple[Task, list[int]]] = {}
    for task, seed in pairs:
        out.setdefault(task.name, (task, []))[1].append(seed)
    return list(out.values())


def evaluate_init(
    backbone: Backbone,
    init: torch.Tensor,
    tasks: Sequence[Task],
    seeds: Sequence[int] = SEEDS,
    config: TuneConfig = TuneConfig(),
    *,
    grad_transform: GradTransform | None = None,
    progress: bool = True,
) -> tuple[ARG, dict[tuple[str, int], TuneResult], dict[tuple[str, int], TuneResult]]:
    """Tune every (task, seed) from ``init`` and compare with the cached PT baseline.

    The (task, seed) problems from ``init`` and the baseline's problems not yet on disk run as
    one batched computation (``promptinit.batched.tune_prompts``); every result equals its own
    ``tune_prompt`` run to rounding.

    Returns:
        ``(arg, results, baseline)``.
    """
    keys = [(task.name, seed) for task in tasks for seed in seeds]
    own = [
        batched.TuneProblem(config.few_shot(task, seed), init, grad_transform=grad_transform)
        for task in tasks
        for seed in seeds
    ]
    tuned, baseline = tune_with_baseline(
        backbone, own, [(t, s) for t in tasks for s in seeds], config, progress=progress
    )
    results = dict(zip(keys, tuned, strict=True))
    arg = average_relative_gain({k: r.test for k, r in results.items()}, {k: r.test for k, r in baseline.items()})
    return arg, results, baseline
