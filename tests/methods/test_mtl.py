"""Multi-task prompt tuning lowers the multi-task loss."""
from __future__ import annotations

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.methods import build_method
from promptinit.methods.inner import TaskBatch, task_losses
from tests.conftest import tiny_backbone
from tests.methods.conftest import source_tasks


def _multitask_loss(bb, prompt, method) -> float:
    """Mean over source tasks of the loss on their full few-shot train + dev pools (seed 100)."""
    groups = []
    for name in method.sampler.names:
        fs = method.sampler.fewshot(name, 100)
        groups.append(fs.train + fs.dev)
    with torch.no_grad():
        return task_losses(bb, prompt, TaskBatch.encode(bb, groups)).mean().item()


def test_mtl_lowers_multitask_loss():
    """Bounds measured over the method seed (initial prompt and batches), 80 steps:
    seeds 0..4: after/before = 0.415, 0.423, 0.445, 0.493, 0.430 (range 0.078), bound
    0.493 + 3 * 0.078 = 0.727 -> 0.73; last/first 10 step losses = 0.558, 0.521, 0.539, 0.553,
    0.461 (range 0.097), bound 0.558 + 3 * 0.097 = 0.849 -> 0.85. (At 40 steps after/before
    ranged 0.479-0.631: 3 ranges above that is > 1, a bound no untrained prompt could fail.)
    """
    bb = tiny_backbone()
    m = build_method("mtl", bb, source_tasks(), {"batch_size": 8, "meta_batch_size": 2, "seeds": [100]}, seed=0)
    before = _multitask_loss(bb, m.prompt, m)
    losses = [m.step()["train/loss"] for _ in range(80)]
    after = _multitask_loss(bb, m.prompt, m)
    assert after < 0.73 * before, (before, after)
    assert sum(losses[-10:]) < 0.85 * sum(losses[:10]), losses


def test_mtl_gradient_is_mean_of_task_gradients():
    bb = tiny_backbone(dtype="float64")
    m = build_method("mtl", bb, source_tasks(), {"batch_size": 6, "meta_batch_size": 3}, seed=1)
    meta_tasks = m.sample()
    grad, metrics = m.meta_gradient(meta_tasks)
    ref = torch.zeros_like(grad)
    for mt in meta_tasks:
        p = m.prompt.clone().requires_grad_(True)
        assert len(mt.support[0]) == 2
        ref += torch.autograd.grad(bb.loss(p, bb.encode(mt.support[0])), p)[0] / 3
    torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)


def test_the_preset_is_qins_and_twenty_epochs_become_steps():
    """Qin §5.3: lr 0.5, batch 4, 20 epochs over the pooled train + dev sets of every source task
    and few-shot draw (qcwthu/transferfile CrossFit_multi/cli_multitask_ddp_prompt_cls2cls.sh)."""
    import math

    from promptinit.methods import make_config
    from promptinit.tasks.fewshot import sample_few_shot

    c = make_config("mtl")
    assert (c.lr, c.batch_size, c.epochs, c.steps, c.optimizer) == (0.5, 4, 20.0, 0, "adafactor")
    assert c.draws == 4 and c.task_sampling == "proportional"
    tasks, seeds = source_tasks(), [100, 13]
    pooled = sum(len(fs.train) + len(fs.dev) for t in tasks for fs in (sample_few_shot(t, s) for s in seeds))
    m = build_method("mtl", tiny_backbone(), tasks, {"seeds": seeds}, seed=0)
    assert m.config.steps == math.ceil(20 * pooled / 4) > 0
    assert build_method("mtl", tiny_backbone(), tasks, {"seeds": seeds, "steps": 7}, seed=0).config.steps == 7


def test_pooled_sampling_draws_each_example_on_its_own_and_averages_over_examples():
    """meta_batch_size 0: ``batch_size`` draws of one example (a task drawn by pool size each
    time, with replacement), so the gradient is the plain mean over the batch's examples, as
    in Qin's code (a RandomSampler over the pooled data)."""
    bb = tiny_backbone(dtype="float64")
    m = build_method("mtl", bb, source_tasks(), {"steps": 1}, seed=3)
    meta_tasks = m.sample()
    assert len(meta_tasks) == 4 and all(len(t.support[0]) == 1 for t in meta_tasks)
    grad, _ = m.meta_gradient(meta_tasks)
    p = m.prompt.clone().requires_grad_(True)
    pooled = [t.support[0][0] for t in meta_tasks]
    losses = torch.stack([bb.loss(p, bb.encode([ex])) for ex in pooled])
    torch.testing.assert_close(grad, torch.autograd.grad(losses.mean(), p)[0], rtol=1e-10, atol=1e-12)
    with pytest.raises(PromptinitError, match="meta_batch_size"):
        build_method("mtl", bb, source_tasks(), {"batch_size": 6, "meta_batch_size": 4}, seed=0)
