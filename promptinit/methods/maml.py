"""MAML and FoMAML over source tasks, with the soft prompt as the meta-parameter.

Per task: ``inner_steps`` SGD steps on support batches from φ give φ'; the outer loss is the
query loss at φ'. MAML differentiates through the whole inner trajectory (second order,
``create_graph=True``); FoMAML takes the query gradient at φ' as the meta-gradient.

Reference:
    Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks";
    Qin et al. 2023, "Learning to Initialize: Can Meta Learning Improve Cross-task
    Generalization in Prompt Tuning?" (MPT; defaults below).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from promptinit.meta import MetaTask
from promptinit.methods.base import Method, register
from promptinit.methods.common import (
    QUERY_LOSS,
    SUPPORT_LOSS,
    InnerLoopConfig,
    PromptMethod,
    check_int,
    outer_optimizer,
)
from promptinit.methods.inner import TaskBatch, adapt, summed_task_loss, task_losses


@dataclass(frozen=True)
class MAMLConfig(InnerLoopConfig):
    """MAML (Qin et al. 2023: inner lr 3e-5, outer lr 0.5 Adafactor, inner batch 2, 1 step).

    Attributes:
        query_batch_size: query examples per task (from the few-shot dev pool).
        first_order: drop the second-order terms (FoMAML).
    """

    query_batch_size: int = 2  # query examples per task per outer step
    first_order: bool = False  # True: FoMAML (inner trajectory detached)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self, "query_batch_size")


@dataclass(frozen=True)
class FoMAMLConfig(MAMLConfig):
    """FoMAML (Qin et al. 2023: inner batch 4, 1 inner step)."""

    inner_batch_size: int = 4  # support examples per task per inner step
    query_batch_size: int = 4  # query examples per task per outer step
    first_order: bool = True


@register(Method.MAML.value, MAMLConfig)
class MAML(PromptMethod[MetaTask]):
    """Prompt-MAML: learns φ so that a few SGD steps on a task's support set fit its query set.

    Args:
        backbone: the frozen model.
        tasks: source tasks.
        config: ``MAMLConfig`` (``first_order`` selects FoMAML).
        seed: initial prompt and meta-batch generator.

    Example:
        >>> m = build_method("maml", backbone, source_tasks, {"inner_lr": 1e-4}, seed=0)
        >>> for _ in range(100):
        ...     metrics = m.step()
        >>> init = m.prompt
    """

    config: MAMLConfig

    def _make_optimizer(self, prompt: torch.Tensor):
        return outer_optimizer(prompt, self.config.outer_optimizer, self.config.outer_lr)

    def sample(self) -> list[MetaTask]:
        c = self.config
        return self.source_sampler.sample(
            self.state.rng, c.meta_batch_size, c.inner_batch_size, c.inner_steps, c.query_batch_size
        )

    def meta_gradient(
        self, meta_tasks: Sequence[MetaTask], task_batched: bool | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Meta-gradient of the mean post-adaptation query loss over ``meta_tasks``.

        Args:
            meta_tasks: the meta-batch.
            task_batched: batched passes over the tasks (default: the config's setting; how
                many tasks share a pass follows ``rows_per_pass``) or one pass per task; the two
                agree to rounding.

        Returns:
            ``(grad [L, d], {"meta/query_loss", "meta/support_loss"})``.
        """
        c = self.config
        groups = self._task_groups(
            meta_tasks,
            task_batched,
            max(c.inner_batch_size, c.query_batch_size),
            [ex for t in meta_tasks for ex in (*t.support[0], *t.query)],
        )
        phi = self.state.prompt
        grad = torch.zeros_like(phi)
        query_sum = support_sum = 0.0
        for group in groups:
            g, q, s = self._group(phi, group)
            grad += g
            query_sum += q
            support_sum += s
        n = len(meta_tasks)
        return grad / n, {QUERY_LOSS: query_sum / n, SUPPORT_LOSS: support_sum / n}

    def _group(self, phi: torch.Tensor, tasks: list[MetaTask]) -> tuple[torch.Tensor, float, float]:
        """Sum over ``tasks`` of their meta-gradients, query losses and first support losses."""
        c, bb, T = self.config, self.backbone, len(tasks)
        supports = [TaskBatch.encode(bb, [t.support[i] for t in tasks]) for i in range(c.inner_steps)]
        query = TaskBatch.encode(bb, [t.query for t in tasks])
        # One prompt row per task; a single task keeps the plain [L, d] prompt (no gather).
        start = phi if T == 1 else phi.expand(T, *phi.shape)
        adapted = adapt(start, summed_task_loss(bb), supports, c.inner_lr, create_graph=not c.first_order)
        q = task_losses(bb, adapted.prompt, query).sum()
        if c.first_order:
            (g,) = torch.autograd.grad(q, adapted.prompt)
            g = g.sum(0) if g.dim() == 3 else g
        else:
            (g,) = torch.autograd.grad(q, phi)
        return g.detach(), q.item(), adapted.losses[0].item()


@register(Method.FOMAML.value, FoMAMLConfig)
class FoMAML(MAML):
    """First-order MAML: the query gradient at the adapted prompt is the meta-gradient."""
