"""MetaPT: prompt-MAML over meta-tasks made by clustering a labelled pre-training set.

The source tasks' examples are pooled and grouped (``promptinit.selfsup.metapt_groups``):
K-means on sentence embeddings (the paper's best, K = 10), LDA topics, a random split, or one
group per gold label (the ablation: K-means > LDA > random > by-label). Each group is one
meta-task; an outer step draws ``meta_batch_size`` groups with disjoint support and query
examples and runs MAML's update (``promptinit.methods.maml``: second order by default,
``first_order`` for FoMAML), so MetaPT differs from MAML only in where its tasks come from.

Choices made here:

- The pre-training set is the ``tasks`` passed in (a partition's source tasks), at most
  ``max_examples_per_task`` examples of each (a seeded sample), which bounds the one-off
  embedding cost (~120 sentences per CPU-second); the groupings are cached on disk.
- ``cluster_seed`` seeds K-means / LDA / the random split and the per-task sample; the method
  seed draws the meta-batches, so trials with different seeds share one cached grouping.
- Support and query of a task never share an example; ``inner_steps`` support batches of
  ``inner_batch_size`` examples are drawn together (all disjoint).

Reference:
    Huang et al. 2022, "Learning a Better Initialization for Soft Prompts via Meta-Learning"
    (MetaPT); Finn et al. 2017 (MAML).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from promptinit.backbones import Backbone
from promptinit.errors import PromptinitError
from promptinit.meta import MetaTask
from promptinit.methods.base import Method, register
from promptinit.methods.common import OPTIMIZERS, check_choice, check_int, check_positive, check_rows_per_pass
from promptinit.methods.maml import MAML
from promptinit.selfsup.clustering import DEFAULT_ENCODER
from promptinit.selfsup.metapt_groups import GroupConfig, Grouping, GroupTaskSampler, build_groups
from promptinit.tasks.task import Task


@dataclass(frozen=True)
class MetaPTConfig:
    """MetaPT settings (grouping from Huang et al. 2022; MAML settings from Qin et al. 2023).

    Attributes:
        steps: outer steps of a full run.
        grouping: kmeans | lda | random | by-label.
        num_clusters: K (ignored by by-label).
        encoder: sentence encoder of the K-means grouping.
        cluster_seed: grouping seed (and which examples the per-task cap keeps).
        max_examples_per_task: cap on each source task's examples in the pre-training pool
            (None: all).
        inner_lr: inner SGD step size.
        inner_steps: inner SGD steps per task.
        inner_batch_size: support examples per inner step.
        query_batch_size: query examples per task.
        meta_batch_size: tasks (groups) per outer step.
        outer_lr: outer learning rate.
        outer_optimizer: adafactor | adam | sgd.
        first_order: drop MAML's second-order terms.
        task_batched: batched passes over the meta-batch.
        rows_per_pass: rows per batched pass; 0: measured per backbone and device
            (``promptinit.throughput``).
    """

    steps: int = 5000  # outer steps
    grouping: str = Grouping.KMEANS.value
    num_clusters: int = 10  # K
    encoder: str = DEFAULT_ENCODER
    cluster_seed: int = 0
    max_examples_per_task: int | None = 500  # examples
    inner_lr: float = 3e-5  # grid 2e-5 / 3e-5 / 5e-5
    inner_steps: int = 1
    inner_batch_size: int = 4  # support examples per inner step
    query_batch_size: int = 4  # query examples per task
    meta_batch_size: int = 4  # groups per outer step
    outer_lr: float = 0.5
    outer_optimizer: str = "adafactor"
    first_order: bool = False
    task_batched: bool = True
    rows_per_pass: int = 0  # rows per pass; 0: measured per backbone and device

    def __post_init__(self) -> None:
        check_int(self, "steps", minimum=0)
        check_choice(self, "grouping", [g.value for g in Grouping])
        check_int(self, "num_clusters", minimum=2)
        check_int(self, "cluster_seed", minimum=0)
        if self.max_examples_per_task is not None:
            check_int(self, "max_examples_per_task")
        check_positive(self, "inner_lr", "outer_lr")
        check_int(self, "inner_steps", "inner_batch_size", "query_batch_size", "meta_batch_size")
        check_choice(self, "outer_optimizer", OPTIMIZERS)
        for name in ("first_order", "task_batched"):
            if not isinstance(getattr(self, name), bool):
                raise PromptinitError(f"MetaPTConfig: field {name!r}: {getattr(self, name)!r} must be true or false")
        check_rows_per_pass(self)


def pretraining_pool(tasks: Sequence[Task], cap: int | None, seed: int) -> list[Task]:
    """The source tasks, each cut to at most ``cap`` examples (a seeded sample, original order)."""
    if not tasks:
        raise PromptinitError("MetaPT needs a labelled pre-training set: pass source tasks (a partition's `source:`)")
    out = []
    for t in tasks:
        if cap is None or len(t.examples) <= cap:
            out.append(t)
            continue
        keep = sorted(random.Random(f"{seed}:{t.name}").sample(range(len(t.examples)), cap))
        out.append(Task(t.name, t.kind, t.metric, tuple(t.examples[i] for i in keep), labels=t.labels,
                        source=t.source))
    return out


@register(Method.METAPT.value, MetaPTConfig)
class MetaPT(MAML):
    """Prompt-MAML over clustered groups of a labelled pre-training set.

    Args:
        backbone: the frozen model.
        tasks: the labelled pre-training tasks (pooled, then grouped).
        config: ``MetaPTConfig``.
        seed: the initial prompt and the meta-batch draws.
        init: start from this prompt [L, d].

    Example:
        >>> m = build_method("metapt", backbone, source_tasks, {"grouping": "kmeans", "num_clusters": 10})
        >>> for _ in range(100):
        ...     m.step()
    """

    config: MetaPTConfig

    def __init__(self, backbone: Backbone, tasks: Sequence[Task], config: MetaPTConfig, seed: int = 0,
                 init: torch.Tensor | None = None):
        super().__init__(backbone, tasks, config, seed=seed, init=init)
        c = config
        pool = pretraining_pool(tasks, c.max_examples_per_task, c.cluster_seed)
        self.groups = build_groups(
            pool, GroupConfig(grouping=c.grouping, k=c.num_clusters, encoder=c.encoder, seed=c.cluster_seed),
            progress=False,
        )
        self.sampler = GroupTaskSampler(self.groups, n_support=c.inner_batch_size * c.inner_steps,
                                        n_query=c.query_batch_size, seed=seed)

    def sample(self) -> list[MetaTask]:
        """``meta_batch_size`` groups, each with ``inner_steps`` support batches and a query batch."""
        c, out = self.config, []
        for _ in range(c.meta_batch_size):
            t = self.sampler.sample()
            b = c.inner_batch_size
            support = tuple(t.support[i * b : (i + 1) * b] for i in range(c.inner_steps))
            out.append(MetaTask(self.groups[t.cluster].name, 0, support, t.query))
        return out

    def state_dict(self) -> dict[str, Any]:
        """The base snapshot plus the group sampler's state."""
        state = super().state_dict()
        state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.sampler.load_state_dict(dict(state["sampler"]))
