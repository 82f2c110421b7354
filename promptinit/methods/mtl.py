"""Multi-task prompt tuning over the source tasks (the strong baseline of meta prompt tuning).

One shared prompt is tuned on a mixture of the source tasks, using each few-shot draw's train
and dev sets together (there is no support / query split to respect).

Reference:
    Qin et al. 2023 (MPT: lr 0.3, batch 8, Adafactor; grid lr 0.2 / 0.3 / 0.5,
    batch 2 / 4 / 6 / 8); Wu et al. 2022, "Adversarial Soft Prompt Tuning ..." observe that
    multi-task learning with a prompt often beats MAML-style meta-learning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from promptinit.errors import PromptinitError
from promptinit.meta import MetaTask
from promptinit.methods.base import Method, register
from promptinit.methods.common import (
    OPTIMIZERS, TRAIN_LOSS, PromptMethod, SourceConfig, check_choice, check_int, check_positive,
    outer_optimizer,
)
from promptinit.methods.inner import TaskBatch, task_losses


@dataclass(frozen=True)
class MTLConfig(SourceConfig):
    """Multi-task prompt tuning (Qin et al. 2023 defaults: lr 0.3, batch 8, Adafactor).

    Attributes:
        lr: optimizer step size.
        optimizer: adafactor | adam | sgd.
        batch_size: examples per step, split evenly over ``meta_batch_size`` tasks.
        meta_batch_size: tasks per step (the batch mixes this many tasks).
    """

    lr: float = 0.3  # optimizer step size (grid 0.2 / 0.3 / 0.5)
    optimizer: str = "adafactor"  # adafactor (fixed lr) | adam | sgd
    batch_size: int = 8  # examples per step (grid 2 / 4 / 6 / 8)
    meta_batch_size: int = 2  # tasks per step; each contributes batch_size / meta_batch_size examples

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "lr")
        check_int(self, "batch_size", "meta_batch_size")
        check_choice(self, "optimizer", OPTIMIZERS)
        if self.batch_size % self.meta_batch_size:
            raise PromptinitError(
                f"MTLConfig: field 'batch_size': {self.batch_size} is not a multiple of meta_batch_size "
                f"{self.meta_batch_size}; set batch_size to a multiple of it (e.g. {2 * self.meta_batch_size})"
            )


@register(Method.MTL.value, MTLConfig)
class MTL(PromptMethod):
    """Multi-task prompt tuning: minimise the mean of the per-task losses with one prompt.

    Args:
        backbone: the frozen model.
        tasks: source tasks.
        config: ``MTLConfig``.
        seed: initial prompt and batch generator.
    """

    config: MTLConfig

    def _make_optimizer(self, prompt: torch.Tensor):
        return outer_optimizer(prompt, self.config.optimizer, self.config.lr)

    def sample(self) -> list[MetaTask]:
        c = self.config
        return self.sampler.sample_mixed(self.state.rng, c.meta_batch_size, c.batch_size // c.meta_batch_size)

    def meta_gradient(self, meta_tasks: Sequence[MetaTask], task_batched: bool | None = None
                      ) -> tuple[torch.Tensor, dict[str, float]]:
        """Gradient of the mean over tasks of each task's mean loss.

        Returns:
            ``(grad [L, d], {"train/loss"})``.
        """
        phi = self.state.prompt
        c = self.config
        groups = self._task_groups(meta_tasks, task_batched, c.batch_size // c.meta_batch_size,
                                   [ex for t in meta_tasks for ex in t.support[0]])
        grad, total = torch.zeros_like(phi), 0.0
        for tasks in groups:
            loss = task_losses(self.backbone, phi, TaskBatch.encode(self.backbone, [t.support[0] for t in tasks])).sum()
            (g,) = torch.autograd.grad(loss, phi)
            grad += g
            total += loss.item()
        n = len(meta_tasks)
        return grad / n, {TRAIN_LOSS: total / n}
