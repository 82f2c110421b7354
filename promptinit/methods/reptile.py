"""Reptile over source tasks, with the soft prompt as the meta-parameter.

Per task: ``inner_steps`` SGD steps on support batches from φ give φ'. The outer optimizer
descends the pseudo-gradient ``φ - mean_t φ'_t``, i.e. moves φ toward the adapted prompts
(with outer SGD at lr ε this is exactly Reptile's ``φ <- φ + ε (mean φ' - φ)``).

Reference:
    Nichol et al. 2018, "On First-Order Meta-Learning Algorithms";
    Qin et al. 2023 (MPT: inner batch 4, 10 inner steps, grid 2..10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from promptinit.meta import MetaTask
from promptinit.methods.base import Method, register
from promptinit.methods.common import SUPPORT_LOSS, InnerLoopConfig, PromptMethod, outer_optimizer
from promptinit.methods.inner import TaskBatch, adapt, summed_task_loss

ADAPTED_LOSS = "meta/adapted_support_loss"  # inner loss before the last inner step


@dataclass(frozen=True)
class ReptileConfig(InnerLoopConfig):
    """Reptile (Qin et al. 2023: inner batch 4, 10 inner steps, outer lr 0.5 Adafactor)."""

    inner_steps: int = 10  # SGD steps per task (grid 2..10)
    inner_batch_size: int = 4  # support examples per task per inner step


@register(Method.REPTILE.value, ReptileConfig)
class Reptile(PromptMethod[MetaTask]):
    """Prompt-Reptile: moves φ toward the prompts adapted by k inner steps on each task.

    Args:
        backbone: the frozen model.
        tasks: source tasks.
        config: ``ReptileConfig``.
        seed: initial prompt and meta-batch generator.
    """

    config: ReptileConfig

    def _make_optimizer(self, prompt: torch.Tensor):
        return outer_optimizer(prompt, self.config.outer_optimizer, self.config.outer_lr)

    def sample(self) -> list[MetaTask]:
        c = self.config
        return self.source_sampler.sample(self.state.rng, c.meta_batch_size, c.inner_batch_size, c.inner_steps, 0)

    def meta_gradient(
        self, meta_tasks: Sequence[MetaTask], task_batched: bool | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Reptile's pseudo-gradient ``φ - mean_t φ'_t``.

        Returns:
            ``(pseudo_grad [L, d], {"meta/support_loss", "meta/adapted_support_loss"})``.
        """
        c, bb, phi = self.config, self.backbone, self.state.prompt.detach()
        groups = self._task_groups(
            meta_tasks, task_batched, c.inner_batch_size, [ex for t in meta_tasks for ex in t.support[0]]
        )
        adapted_sum = torch.zeros_like(phi)
        first = last = 0.0
        for tasks in groups:
            T = len(tasks)
            supports = [TaskBatch.encode(bb, [t.support[i] for t in tasks]) for i in range(c.inner_steps)]
            start = phi if T == 1 else phi.expand(T, *phi.shape)
            adapted = adapt(start, summed_task_loss(bb), supports, c.inner_lr, create_graph=False)
            p = adapted.prompt.detach()
            adapted_sum += p.sum(0) if p.dim() == 3 else p
            first += adapted.losses[0].item()
            last += adapted.losses[-1].item()
        n = len(meta_tasks)
        return phi - adapted_sum / n, {SUPPORT_LOSS: first / n, ADAPTED_LOSS: last / n}
