"""Curriculum mixup: the λ schedule, and the mixed loss against an independent computation."""
from __future__ import annotations

import random
import statistics

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.methods.inner import TaskBatch, task_losses
from promptinit.methods.mixup import (
    curriculum_b, draw_lambdas, ema, mixed_task_losses, qry_spt_similarity, sample_lambda,
)
from promptinit.tasks.task import Example
from tests.conftest import CAUSAL, SEQ2SEQ, tiny_backbone


def test_lambda_is_exactly_one_at_s_zero_and_draws_nothing():
    rng = random.Random(0)
    before = rng.getstate()
    assert [sample_lambda(rng, 0.0) for _ in range(100)] == [1.0] * 100
    assert rng.getstate() == before  # no draw: a run's stream does not depend on how long s stayed 0


def test_lambda_is_near_one_for_small_s():
    rng = random.Random(1)
    lams = [sample_lambda(rng, 0.01) for _ in range(2000)]
    assert min(lams) > 0 and max(lams) <= 1
    assert statistics.mean(lams) > 0.98  # b = 2^0.01 - 1 = 0.007: E[λ] = 1 / (1 + b) = 0.993


def test_mean_lambda_falls_as_s_grows_and_matches_the_beta_mean():
    rng = random.Random(2)
    means = []
    for s in (0.0, 0.25, 0.5, 0.75, 1.0):
        lams = [sample_lambda(rng, s) for _ in range(4000)]
        means.append(statistics.mean(lams))
        b = curriculum_b(s)
        assert statistics.mean(lams) == pytest.approx(1 / (1 + b), abs=0.02)  # E[Beta(1, b)] = 1 / (1 + b)
    assert all(a > b for a, b in zip(means, means[1:]))
    assert means[0] == 1.0 and means[-1] == pytest.approx(0.5, abs=0.02)


def test_curriculum_b_and_ema():
    assert curriculum_b(0.0) == 0.0 and curriculum_b(1.0) == 1.0
    assert curriculum_b(0.5, m=2.0) == pytest.approx(2**0.5 - 1)
    with pytest.raises(PromptinitError, match="mixup_m"):
        curriculum_b(0.5, m=1.0)
    assert ema(0.0, 0.8) == pytest.approx(0.4) and ema(0.4, 0.8, decay=0.5) == pytest.approx(0.6)


def test_fixed_and_none_modes_ignore_s_and_the_generator():
    rng = random.Random(3)
    state = rng.getstate()
    assert draw_lambdas(rng, 3, "none", s=0.9) == [1.0, 1.0, 1.0]
    assert draw_lambdas(rng, 3, "fixed", s=0.9, fixed=0.3) == [0.3, 0.3, 0.3]
    assert rng.getstate() == state
    assert len(set(draw_lambdas(rng, 5, "beta", s=0.9))) == 5


def test_qry_spt_similarity_maps_cosine_to_unit_interval():
    g = torch.randn(2, 3, 8)
    assert torch.allclose(qry_spt_similarity(g, g), torch.ones(2))
    assert torch.allclose(qry_spt_similarity(g, -g), torch.zeros(2), atol=1e-7)
    a = torch.zeros(1, 1, 4)
    a[..., 0] = 1
    b = torch.zeros(1, 1, 4)
    b[..., 1] = 2
    assert torch.allclose(qry_spt_similarity(a, b), torch.tensor([0.5]))


def _examples(targets: list[str], stem: str) -> list[Example]:
    return [Example(f"{stem} number {i} goes here ->", t, ()) for i, t in enumerate(targets)]


@pytest.fixture(scope="module", params=[CAUSAL, SEQ2SEQ])
def bb64(request):
    return tiny_backbone(request.param, "float64")


def _batches(bb):
    # two tasks of two examples; the aug targets are longer or shorter than the query targets
    query = [_examples(["yes", "no"], "alpha"), _examples(["maybe so", "A"], "beta")]
    aug = [_examples(["positive sentiment here", "no"], "gamma delta"), _examples(["B", "yes indeed"], "eps")]
    return TaskBatch.encode(bb, query), TaskBatch.encode(bb, aug), query, aug


def test_lambda_one_reproduces_the_plain_query_loss_exactly(bb64):
    q, a, _, _ = _batches(bb64)
    prompt = bb64.init_prompt("vocab", seed=0)
    plain = task_losses(bb64, prompt, q)
    none, _ = mixed_task_losses(bb64, prompt, q)
    ones, _ = mixed_task_losses(bb64, prompt, q, a, [1.0, 1.0])
    assert torch.equal(none, plain) and torch.equal(ones, plain)
    rows = prompt.expand(2, *prompt.shape)
    assert torch.equal(mixed_task_losses(bb64, rows, q)[0], task_losses(bb64, rows, q))


def _reference(bb, prompt, q_examples, a_examples, lam):
    """Example by example: target-position hidden states, aligned from the first answer token."""
    losses = []
    for exq, exa in zip(q_examples, a_examples):
        hq, yq, _ = bb.target_hidden(prompt, bb.encode([exq]))
        ha, ya, _ = bb.target_hidden(prompt, bb.encode([exa]))
        tok = []
        for j in range(len(yq)):
            if j < len(ya):
                h = lam * hq[j] + (1 - lam) * ha[j]
                logp = torch.log_softmax(bb.project(h), -1)
                tok.append(-(lam * logp[yq[j]] + (1 - lam) * logp[ya[j]]))
            else:
                tok.append(-torch.log_softmax(bb.project(hq[j]), -1)[yq[j]])
        losses.append(torch.stack(tok).mean())
    return torch.stack(losses).mean()


def test_mixed_loss_matches_an_independent_example_by_example_computation(bb64):
    q, a, q_ex, a_ex = _batches(bb64)
    prompt = bb64.init_prompt("vocab", seed=1)
    lams = [0.7, 0.25]
    losses, h_mean = mixed_task_losses(bb64, prompt, q, a, lams)
    for t in range(2):
        ref = _reference(bb64, prompt, q_ex[t], a_ex[t], lams[t])
        torch.testing.assert_close(losses[t], ref, rtol=1e-10, atol=1e-12)
    assert h_mean.shape == (2, bb64.hidden_size) and not h_mean.requires_grad


def test_lambda_zero_with_equal_target_lengths_is_the_aug_loss(bb64):
    query = [[Example("first input ->", "yes", ()), Example("second input ->", "no", ())]]
    # same target token counts pair by pair (tiny-llama's tokenizer is character level)
    aug = [[Example("another one ->", "yap", ()), Example("the last one ->", "on", ())]]
    q, a = TaskBatch.encode(bb64, query), TaskBatch.encode(bb64, aug)
    prompt = bb64.init_prompt("vocab", seed=2)
    mixed, _ = mixed_task_losses(bb64, prompt, q, a, [0.0])
    torch.testing.assert_close(mixed, task_losses(bb64, prompt, a), rtol=1e-12, atol=1e-12)


def test_mixed_loss_is_differentiable_in_per_task_prompts(bb64):
    q, a, _, _ = _batches(bb64)
    rows = bb64.init_prompt("vocab", seed=3).expand(2, -1, -1).clone().requires_grad_(True)
    losses, _ = mixed_task_losses(bb64, rows, q, a, [0.6, 0.9])
    (g,) = torch.autograd.grad(losses[0], rows)
    assert g[0].abs().sum() > 0 and g[1].abs().sum() == 0  # task 0's loss reads only its own row


def test_mismatched_aug_set_is_refused(bb64):
    q, _, _, _ = _batches(bb64)
    short = TaskBatch.encode(bb64, [_examples(["yes"], "x"), _examples(["no"], "y")])
    with pytest.raises(PromptinitError, match="pair one example"):
        mixed_task_losses(bb64, bb64.init_prompt("vocab"), q, short, [0.5, 0.5])
