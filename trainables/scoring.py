"""Score a prompt initialisation by downstream prompt tuning: ARG against the PT baseline.

Plain functions over the core library (no Ray): the trainable scores on the validation tasks
after every chunk of upstream steps, the sweep scores the best prompts on the target tasks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptinit.backbones import Backbone
from promptinit.batched import TuneProblem, tune_prompts
from promptinit.evaluation import ARG, TuneConfig, average_relative_gain
from promptinit.files import atomic_folder
from promptinit.stats import relative_gain
from promptinit.tasks.fewshot import sample_few_shot
from promptinit.tasks.task import Task

Key = tuple[str, int]  # (task name, few-shot seed)


@dataclass(frozen=True)
class MethodSpec:
    """An upstream method to build in a Ray worker (``promptinit.methods.build_method``).

    Attributes:
        name: the registry name (``maml``).
        settings: its settings.
        source_tasks: its meta-training tasks.
        seed: the upstream seed (initial prompt, meta-batches).
        checkpoint: a ``tune.Checkpoint`` or checkpoint folder to restore (``restore_method``), or None.
    """

    name: str
    settings: Mapping[str, Any]
    source_tasks: tuple[Task, ...]
    seed: int
    checkpoint: Any = None

    def build(self, backbone: Backbone):
        """The method, freshly built."""
        from promptinit.methods import build_method

        return build_method(self.name, backbone, list(self.source_tasks), dict(self.settings), seed=self.seed)


PROMPT_FILE = "prompt.safetensors"  # the prompt in every checkpoint folder (key prompt_embeddings)


def tuned_scores(
    backbone: Backbone,
    init: torch.Tensor,
    tasks: Sequence[Task],
    seeds: Sequence[int],
    tuning: TuneConfig,
    grad_transform: Callable | None = None,
) -> dict[Key, float]:
    """Test score per (task, seed) after tuning a prompt from ``init`` (best-on-dev prompt);
    the (task, seed) problems run as one batched computation (``promptinit.batched``)."""
    init = init.detach()
    keys = [(task, seed) for task in tasks for seed in seeds]
    problems = [TuneProblem(tuning.few_shot(task, seed), init, grad_transform=grad_transform) for task, seed in keys]
    results = tune_prompts(backbone, problems, tuning, progress=False)
    return {(task.name, seed): res.test for (task, seed), res in zip(keys, results, strict=True)}


def arg_against(scores: Mapping[Key, float], baseline: Mapping[Key, float]) -> ARG:
    """ARG of ``scores`` over the PT ``baseline`` (every key needs a baseline score)."""
    return average_relative_gain(dict(scores), dict(baseline))


def validation_metrics(scores: Mapping[Key, float], baseline: Mapping[Key, float]) -> dict[str, float]:
    """A trial's validation report from its scores and PT's: ARG (the objective) and its SE, the
    score difference to PT and its SE, the mean score, and each task's relative gain."""
    from promptinit.trainables import metrics as M

    arg = arg_against(scores, baseline)
    delta, delta_se = difference_against(scores, baseline)
    return {
        M.VAL_ARG: arg.mean,
        M.VAL_ARG_SE: arg_standard_error(scores, baseline),
        M.VAL_DELTA: delta,
        M.VAL_DELTA_SE: delta_se,
        M.VAL_SCORE: sum(scores.values()) / len(scores),
        **{f"val/rg/{task}": rg for task, rg in arg.per_task.items()},
    }


def arg_standard_error(scores: Mapping[Key, float], baseline: Mapping[Key, float]) -> float:
    """Standard error of ARG as a search objective: its few-shot-seed noise on a fixed task set.

    ARG is the mean of the (task, seed) pairs' relative gains (every task has the same seeds, as
    here). A search compares trials on the same tasks, so what makes two trials' ARG differ by
    chance is the seeds, not which tasks were drawn. With >= 2 seeds on every task the SE is the
    stratified one: ``sqrt(sum_t var_t / n_t) / T`` (``var_t`` the sample variance, ddof=1, of
    task t's n_t gains, T tasks). With one seed on some task the within-task spread cannot be
    measured, and it falls back to the pooled ``std(all gains, ddof=1) / sqrt(n pairs)``, which
    also counts the spread between tasks (larger). NaN with one pair. Relative gains use
    ``promptinit.stats.relative_gain`` (PT clamped as in ARG).
    """
    keys = sorted(scores)
    rg = relative_gain([scores[k] for k in keys], np.array([baseline[k] for k in keys], dtype=float))
    return _seed_standard_error(dict(zip(keys, (float(g) for g in rg), strict=True)))


def difference_against(scores: Mapping[Key, float], baseline: Mapping[Key, float]) -> tuple[float, float]:
    """The mean score difference to PT (tasks weigh equally: the mean over tasks of each task's
    mean over seeds) and its few-shot-seed standard error, as ``arg_standard_error`` computes it.

    The difference in score points does not divide by PT's score, so a seed on which PT happens to
    score low does not blow a gain up as it does in ARG (docs/objective.md measures both)."""
    diff = {k: float(scores[k]) - float(baseline[k]) for k in sorted(scores)}
    by_task: dict[str, list[float]] = {}
    for (task, _), d in diff.items():
        by_task.setdefault(task, []).append(d)
    return float(np.mean([np.mean(d) for d in by_task.values()])), _seed_standard_error(diff)


def _seed_standard_error(values: Mapping[Key, float]) -> float:
    """Stratified SE ``sqrt(sum_t var_t / n_t) / T`` of the mean over tasks of per-(task, seed)
    values; pooled ``std / sqrt(n)`` when some task has one seed; NaN with one value."""
    if len(values) < 2:
        return math.nan
    by_task: dict[str, list[float]] = {}
    for (task, _), v in values.items():
        by_task.setdefault(task, []).append(v)
    if min(len(v) for v in by_task.values()) < 2:
        return float(np.std(list(values.values()), ddof=1) / math.sqrt(len(values)))
    within = sum(float(np.var(v, ddof=1)) / len(v) for v in by_task.values())
    return math.sqrt(within) / len(by_task)


def held_out_sizes(tasks: Sequence[Task], seeds: Sequence[int], test_size: int | None) -> dict[Key, int]:
    """Test examples each (task, seed) score rests on: the size of ``sample_few_shot``'s capped
    held-out test set (the split the tuning scores on)."""
    return {(t.name, s): len(sample_few_shot(t, s, test_size=test_size).test) for t in tasks for s in seeds}


def curve_job(backbone: dict, tasks: Sequence[Task], seeds: Sequence[int], tuning: dict) -> list[dict]:
    """PT's dev curves (``promptinit.curves.pt_curves``) for a Ray task."""
    from promptinit.backbones import BackboneConfig
    from promptinit.curves import pt_curves

    return pt_curves(Backbone(BackboneConfig(**backbone)), tasks, seeds, TuneConfig(**tuning))


def score_problems(
    backbone: dict, task: Task, tuning: dict, problems: Sequence[tuple[Mapping[str, Any], int]]
) -> list[float]:
    """Every problem that tunes on ``task`` as one batched run (a Ray task of the phases after
    the search): PT's, each arm's and upstream seed's, each few-shot seed's and (with several
    learning rates in ``tuning``) each lr's runs share the model's passes.

    Args:
        backbone: ``BackboneConfig`` fields.
        task: the task every problem tunes on.
        tuning: ``TuneConfig`` fields, shared by every problem.
        problems: ``(start, few-shot seed)`` pairs; ``start`` is ``{}`` (PT, from the sampled
            vocabulary, with the on-disk baseline cache), ``{"init": "labels"}`` (the task's
            class-label init, Lester et al. 2021), ``{"init": prompt}``, or ``{"method":
            MethodSpec}`` (a method restored from its checkpoint, for a ψ that acts downstream).

    Returns:
        The test score of each problem, in order.
    """
    from promptinit.backbones import BackboneConfig
    from promptinit.evaluation import tune_with_baseline

    bb = Backbone(BackboneConfig(**backbone))
    config = TuneConfig(**tuning)
    restored: dict[int, Any] = {}  # a MethodSpec shared by several problems is restored once
    own: list[tuple[int, TuneProblem]] = []
    pt: list[tuple[int, int]] = []
    for i, (start, seed) in enumerate(problems):
        if not start:
            pt.append((i, seed))
            continue
        init, transform = _start_prompt(bb, task, seed, start, restored)
        own.append((i, TuneProblem(config.few_shot(task, seed), init, grad_transform=transform)))
    tuned, baseline = tune_with_baseline(bb, [p for _, p in own], [(task, s) for _, s in pt], config, progress=False)
    scores = [math.nan] * len(problems)
    for (i, _), res in zip(own, tuned, strict=True):
        scores[i] = res.test
    for i, seed in pt:
        scores[i] = baseline[(task.name, seed)].test
    return scores


def _start_prompt(
    bb: Backbone, task: Task, seed: int, start: Mapping[str, Any], restored: dict[int, Any]
) -> tuple[torch.Tensor, Callable | None]:
    """The initial prompt (and gradient transform) of one ``score_problems`` problem."""
    if "method" in start:
        spec = start["method"]
        if id(spec) not in restored:
            restored[id(spec)] = restore_method(bb, spec)
        m = restored[id(spec)]
        return m.prompt.detach(), grad_transform_of(m)
    init = start.get("init")
    if isinstance(init, str):
        if init != "labels":
            raise ValueError(f"init {init!r}: a prompt tensor or 'labels'")
        return bb.init_prompt("labels", seed=seed, labels=task.labels), None
    if not isinstance(init, torch.Tensor):
        raise ValueError(f"start {sorted(start)}: expected 'init' (a prompt or 'labels') or 'method'")
    return init.detach().to(bb.device), None


def timed(fn: Callable, **kwargs) -> tuple[object, float]:
    """``(fn(**kwargs), CPU seconds it took)``: Ray tasks report their cost with their result."""
    import time

    t0 = time.process_time()
    out = fn(**kwargs)
    return out, time.process_time() - t0


def restore_method(backbone: Backbone, method: MethodSpec):
    """Rebuild a method and load its state from a Tune checkpoint or a checkpoint folder
    (``train_job``'s; see ``score_problems``)."""
    from promptinit.methods.checkpoint import load_checkpoint

    m = method.build(backbone)
    with checkpoint_folder(method.checkpoint) as folder:
        load_checkpoint(m, folder)
    return m


@contextlib.contextmanager
def checkpoint_folder(checkpoint) -> Iterator[Path]:
    """A local folder holding ``checkpoint``: a ``tune.Checkpoint`` (downloaded when its storage
    is remote) or a path."""
    if isinstance(checkpoint, (str, Path)):
        yield Path(checkpoint)
        return
    with checkpoint.as_directory() as folder:
        yield Path(folder)


def train_job(backbone: dict, method: MethodSpec, steps: int, folder: str) -> str:
    """Meta-train a method afresh for ``steps`` outer steps and save it to ``folder``: its
    checkpoint (``promptinit.methods.checkpoint``) and its prompt (``PROMPT_FILE``), as a Tune
    checkpoint holds them. The folder appears complete or not at all.

    Args:
        backbone: ``BackboneConfig`` fields.
        method: the method (``MethodSpec``, no checkpoint); its seed draws the initial
            prompt and the meta-batches (the upstream seed).
        steps: outer steps (those of the checkpoint the search chose: its schedule still spans
            ``settings["steps"]``).
        folder: where the result goes.

    Returns:
        ``folder``.

    Raises:
        FloatingPointError: the run diverged (a NaN/inf loss or prompt).
    """
    from promptinit.backbones import BackboneConfig, save_prompt
    from promptinit.methods.checkpoint import save_checkpoint

    bb = Backbone(BackboneConfig(**backbone))
    m = method.build(bb)
    for step in range(1, steps + 1):
        if getattr(m, "stopped", False):  # MetaPT's early stopping, as in the search's run
            break
        out = m.step()
        if not all(math.isfinite(float(v)) for v in out.values()) or not bool(m.prompt.detach().isfinite().all()):
            raise FloatingPointError(
                f"{method.name} with upstream seed {method.seed} diverged at step {step}: "
                f"{ {k: float(v) for k, v in out.items()} }"
            )
    dest = Path(folder)
    with atomic_folder(dest) as tmp:  # a folder that is there is complete
        save_checkpoint(m, tmp)
        save_prompt(
            m.prompt, tmp / PROMPT_FILE, {"method": method.name, "step": str(steps), "upstream_seed": str(method.seed)}
        )
    return str(dest)


def grad_transform_of(method) -> Callable | None:
    """The method's downstream gradient transform (SUPMER's ψ), or None."""
    transform = getattr(method, "grad_transform", None)
    return transform if callable(transform) else None


def needs_restore(name: str) -> bool:
    """Whether downstream tuning of ``name``'s prompt needs the method itself (a grad_transform)."""
    from promptinit.methods import REGISTRY

    return hasattr(REGISTRY[name].method_cls, "grad_transform")


def prepare_job(backbone: dict, name: str, settings: dict, source_tasks: Sequence[Task], seed: int) -> float:
    """Build a method once so its on-disk caches (corpus, embeddings, clusters) exist before
    the trials start and do not compute them concurrently; returns the seconds it took."""
    import time

    from promptinit.backbones import BackboneConfig
    from promptinit.methods import build_method

    t0 = time.perf_counter()
    build_method(name, Backbone(BackboneConfig(**backbone)), list(source_tasks), settings, seed=seed)
    return time.perf_counter() - t0
