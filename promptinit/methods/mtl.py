"""Multi-task prompt tuning over the source tasks (the strong baseline of meta prompt tuning).

One shared prompt is tuned on a mixture of the source tasks, using each few-shot draw's train
and dev sets together (there is no support / query split to respect).

The defaults are Qin et al.'s recipe (docs/fidelity.md, section 2): lr 0.5, batch 4, Adafactor,
20 epochs over the pooled train + dev sets of every source task and few-shot draw, and a batch
drawn example by example from that pool (their RandomSampler; here each example's task is drawn
in proportion to its pool, with replacement, then the example, so a task's share of a batch
follows its pool size).

Reference:
    Qin, Li, Zhao, Joty 2023, "Learning to Initialize: Can Meta Learning Improve Cross-task
    Generalization in Prompt Tuning?" (ACL), §5.3 and qcwthu/transferfile
    allcode_0628/CrossFit_multi/cli_multitask_ddp_prompt_cls2cls.sh (grid lr 0.2 / 0.3 / 0.5,
    batch 2 / 4 / 6 / 8, epochs 5 / 10 / 20). Wu, Logan IV, Walsh, Bhagia, Groeneveld, Singh,
    Beltagy 2022, "Continued Pretraining for Better Zero- and Few-Shot Promptability" (EMNLP)
    find multi-task prompt training a strong rival of MAML-style meta-learning.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from promptinit.backbones.backbone import Backbone
from promptinit.errors import PromptinitError
from promptinit.meta import MetaTask
from promptinit.methods.base import Method, register
from promptinit.methods.common import (
    OPTIMIZERS,
    TRAIN_LOSS,
    PromptMethod,
    SourceConfig,
    check_choice,
    check_int,
    check_positive,
    outer_optimizer,
)
from promptinit.methods.inner import TaskBatch, task_losses
from promptinit.tasks.task import Task


@dataclass(frozen=True)
class MTLConfig(SourceConfig):
    """Multi-task prompt tuning (defaults: Qin et al. 2023, §5.3).

    Attributes:
        steps: outer steps; 0 (the default): ``epochs`` passes over the pooled data, worked
            out when the method is built from its source tasks. A sweep's ``budget.steps`` sets it.
        epochs: passes over the pooled train + dev examples of every source task and few-shot
            draw, when ``steps`` is 0 (Qin: 20).
        lr: optimizer step size.
        optimizer: adafactor | adam | sgd.
        batch_size: examples per step.
        meta_batch_size: task draws per step, each giving ``batch_size / meta_batch_size``
            examples; 0: ``batch_size`` draws of one example (Qin's pooled sampling).
        task_sampling: ``proportional`` (a task's share follows its pool size, as when examples
            are drawn from the pooled data) or ``uniform``.
    """

    steps: int = 0  # 0: `epochs` passes over the pooled source data
    epochs: float = 20.0  # Qin §5.3: 20 epochs (grid 5 / 10 / 20)
    lr: float = 0.5  # Qin §5.3: 0.5 (grid 0.2 / 0.3 / 0.5)
    optimizer: str = "adafactor"  # adafactor (fixed lr) | adam | sgd
    batch_size: int = 4  # Qin §5.3: 4 (grid 2 / 4 / 6 / 8)
    meta_batch_size: int = 0  # 0: one draw per example, as a RandomSampler over the pooled data
    task_sampling: str = "proportional"  # tasks weighted by pool size, as pooled sampling does

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "lr")
        check_int(self, "batch_size")
        check_int(self, "meta_batch_size", minimum=0)
        if not isinstance(self.epochs, (int, float)) or isinstance(self.epochs, bool) or self.epochs < 0:
            raise PromptinitError(f"MTLConfig: field 'epochs': {self.epochs!r} must be a number >= 0")
        check_choice(self, "optimizer", OPTIMIZERS)
        if self.batch_size % self.draws:
            raise PromptinitError(
                f"MTLConfig: field 'batch_size': {self.batch_size} is not a multiple of meta_batch_size "
                f"{self.meta_batch_size}; set batch_size to a multiple of it (e.g. {2 * self.meta_batch_size}), "
                "or meta_batch_size to 0"
            )

    @property
    def draws(self) -> int:
        """Task draws per step (``meta_batch_size``, or ``batch_size`` when that is 0)."""
        return self.meta_batch_size or self.batch_size


@register(Method.MTL.value, MTLConfig)
class MTL(PromptMethod[MetaTask]):
    """Multi-task prompt tuning: minimise the mean of the per-task losses with one prompt.

    Args:
        backbone: the frozen model.
        tasks: source tasks.
        config: ``MTLConfig``.
        seed: initial prompt and batch generator.
    """

    config: MTLConfig

    def __init__(
        self,
        backbone: Backbone,
        tasks: Sequence[Task],
        config: MTLConfig,
        seed: int = 0,
        init: torch.Tensor | None = None,
    ):
        super().__init__(backbone, tasks, config, seed, init)
        if config.steps == 0:
            sampler = self.source_sampler
            pooled = sum(sampler.pool_size(name, s) for name in sampler.names for s in config.seeds)
            self.config = dataclasses.replace(config, steps=math.ceil(config.epochs * pooled / config.batch_size))

    def _make_optimizer(self, prompt: torch.Tensor):
        return outer_optimizer(prompt, self.config.optimizer, self.config.lr)

    def sample(self) -> list[MetaTask]:
        c = self.config
        return self.source_sampler.sample_mixed(self.state.rng, c.draws, c.batch_size // c.draws)

    def meta_gradient(
        self, meta_tasks: Sequence[MetaTask], task_batched: bool | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Gradient of the mean over tasks of each task's mean loss.

        Returns:
            ``(grad [L, d], {"train/loss"})``.
        """
        phi = self.state.prompt
        c = self.config
        groups = self._task_groups(
            meta_tasks, task_batched, c.batch_size // c.draws, [ex for t in meta_tasks for ex in t.support[0]]
        )
        grad, total = torch.zeros_like(phi), 0.0
        for tasks in groups:
            loss = task_losses(self.backbone, phi, TaskBatch.encode(self.backbone, [t.support[0] for t in tasks])).sum()
            (g,) = torch.autograd.grad(loss, phi)
            grad += g
            total += loss.item()
        n = len(meta_tasks)
        return grad / n, {TRAIN_LOSS: total / n}
