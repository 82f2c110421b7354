"""The inner loop shared by MAML, FoMAML, Reptile (and SUPMER), and task-batched losses.

The prompt is an input of the frozen model, not a weight, so T tasks can be adapted at once:
stack their prompts into [T, L, d], give every example of the concatenated batch its own
task's prompt, and sum the per-task mean losses. The gradient of that sum with respect to
row t of the stacked prompt is exactly task t's own gradient, because no other task's loss
depends on that row. One batched forward/backward thus replaces T small ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from promptinit.backbones import Backbone, Batch
from promptinit.tasks.task import Example

LossFn = Callable[[torch.Tensor, "TaskBatch"], torch.Tensor]


@dataclass
class TaskBatch:
    """The examples of several tasks in one padded batch.

    Attributes:
        batch: the encoded examples of all tasks, task after task.
        owner: [B] index of the task each example belongs to.
        n_tasks: T.
    """

    batch: Batch
    owner: torch.Tensor
    n_tasks: int

    @staticmethod
    def encode(backbone: Backbone, groups: Sequence[Sequence[Example]]) -> TaskBatch:
        """Encode one group of examples per task into a single batch."""
        examples = [ex for g in groups for ex in g]
        owner = torch.tensor([t for t, g in enumerate(groups) for _ in g], device=backbone.device)
        return TaskBatch(backbone.encode(examples), owner, len(groups))


def task_losses(backbone: Backbone, prompt: torch.Tensor, tb: TaskBatch) -> torch.Tensor:
    """Mean loss of each task: [T].

    Args:
        backbone: the frozen model.
        prompt: [L, d] shared by every task, or [T, L, d], one per task.
        tb: the tasks' examples.

    Returns:
        [T] per-task mean target-token NLL (each example weighs equally within its task).
    """
    per_prompt = prompt[tb.owner] if prompt.dim() == 3 else prompt
    per = backbone.loss(per_prompt, tb.batch, per_example=True)
    sums = torch.zeros(tb.n_tasks, dtype=per.dtype, device=per.device).index_add(0, tb.owner, per)
    counts = torch.bincount(tb.owner, minlength=tb.n_tasks).to(per.dtype)
    return sums / counts


def summed_task_loss(backbone: Backbone) -> LossFn:
    """``loss_fn(prompt, tb) = sum_t L_t(prompt_t)``: its gradient in row t is task t's own."""
    return lambda prompt, tb: task_losses(backbone, prompt, tb).sum()


@dataclass
class Adapted:
    """Result of the inner loop.

    Attributes:
        prompt: the adapted prompt(s), same shape as the input; part of the autograd graph of
            the initial prompt when ``create_graph`` was set, else a detached leaf that
            requires grad (so a first-order query gradient can be taken at it).
        losses: the inner loss before each step (detached).
    """

    prompt: torch.Tensor
    losses: list[torch.Tensor]


def adapt(
    prompt: torch.Tensor,
    loss_fn: LossFn,
    batches: Sequence[TaskBatch],
    lr: float,
    create_graph: bool,
    grad_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Adapted:
    """Plain SGD on the prompt, one step per batch: ``p <- p - lr * psi(grad loss_fn(p, batch))``.

    Args:
        prompt: the initial prompt [L, d] or stacked [T, L, d]. With ``create_graph`` it must
            be part of a graph that requires grad (e.g. the meta-parameter, or an expanded view
            of it); it is never modified.
        loss_fn: ``loss_fn(p, batch) -> scalar``.
        batches: one batch per inner step.
        lr: inner learning rate (SGD step size).
        create_graph: keep the graph of every inner gradient, so that a later backward from
            the query loss differentiates through the whole trajectory (second-order MAML,
            Finn et al. 2017). False detaches each step (FoMAML, Reptile).
        grad_transform: ``psi`` applied to each inner gradient (SUPMER's meta-gradient
            regulariser); identity when None. It is differentiated through with ``create_graph``.

    Returns:
        ``Adapted(prompt, losses)``.

    Reference:
        Finn et al. 2017, "Model-Agnostic Meta-Learning"; learn2learn's ``maml_update``.
    """
    p = prompt if create_graph else prompt.detach().clone().requires_grad_(True)
    losses = []
    for batch in batches:
        loss = loss_fn(p, batch)
        (grad,) = torch.autograd.grad(loss, p, create_graph=create_graph)
        if grad_transform is not None:
            grad = grad_transform(grad)
        p = p - lr * grad
        if not create_graph:
            p = p.detach().requires_grad_(True)
        losses.append(loss.detach())
    return Adapted(p, losses)
