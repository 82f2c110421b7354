"""MAML / FoMAML: the meta-gradient against finite differences, `higher`, and its definition."""
from __future__ import annotations

import pytest
import torch

from promptinit.methods import build_method
from tests.conftest import CAUSAL, SEQ2SEQ, tiny_backbone
from tests.methods.conftest import peek, source_tasks

# Inner step sizes large enough that the second-order terms are far above the tolerance but
# small enough that the 3-step trajectory stays smooth at the finite-difference scale
# (tiny-llama's wide init makes its loss much more curved than tiny-t5's).
INNER_LRS = {CAUSAL: 0.1, SEQ2SEQ: 0.5}


def _lr(bb) -> float:
    return INNER_LRS[bb.config.model]


def _reference_query_loss(bb, phi, meta_tasks, lr):
    """Post-adaptation query loss, mean over tasks, computed task by task with plain SGD
    (independent of the library's inner loop). Differentiable in ``phi`` only through the
    trajectory if ``phi`` requires grad and ``keep_graph`` is set."""
    total = 0.0
    for mt in meta_tasks:
        p = phi.detach().clone().requires_grad_(True)
        for batch in mt.support:
            (g,) = torch.autograd.grad(bb.loss(p, bb.encode(batch)), p)
            p = (p - lr * g).detach().requires_grad_(True)
        with torch.no_grad():
            total = total + bb.loss(p, bb.encode(mt.query))
    return total / len(meta_tasks)


@pytest.fixture(scope="module", params=[CAUSAL, SEQ2SEQ])
def bb64(request):
    return tiny_backbone(request.param, "float64")


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_maml_meta_gradient_matches_finite_differences(bb64, inner_steps):
    m = build_method("maml", bb64, source_tasks(), {"inner_lr": _lr(bb64), "inner_steps": inner_steps,
                                                     "meta_batch_size": 2}, seed=0)
    meta_tasks = peek(m)
    grad, _ = m.meta_gradient(meta_tasks)
    first_order, _ = build_method("fomaml", bb64, source_tasks(), {"inner_lr": _lr(bb64), "inner_steps": inner_steps},
                                  seed=0).meta_gradient(meta_tasks)
    # The check only means something if the second-order terms are visible.
    assert (grad - first_order).norm() > 1e-3 * grad.norm()
    phi = m.prompt
    gen = torch.Generator().manual_seed(0)
    eps = 1e-6  # truncation error ~eps^2 (large curvature at this inner lr), rounding ~1e-16/eps
    for _ in range(2):
        v = torch.randn(phi.shape, generator=gen, dtype=torch.float64)
        fd = (_reference_query_loss(bb64, phi + eps * v, meta_tasks, _lr(bb64))
              - _reference_query_loss(bb64, phi - eps * v, meta_tasks, _lr(bb64))) / (2 * eps)
        analytic = (grad * v).sum()
        assert abs(fd - analytic) / abs(analytic) < 1e-5


class _PromptModule(torch.nn.Module):
    """Only the prompt is a parameter; `higher` cannot wrap a transformers model itself."""

    def __init__(self, prompt: torch.Tensor):
        super().__init__()
        self.prompt = torch.nn.Parameter(prompt.detach().clone())


def _higher_meta_gradient(bb, phi, meta_tasks, lr):
    higher = pytest.importorskip("higher")
    module = _PromptModule(phi)
    total = torch.zeros_like(phi)
    for mt in meta_tasks:
        opt = torch.optim.SGD(module.parameters(), lr=lr)
        with higher.innerloop_ctx(module, opt, copy_initial_weights=False) as (fmodule, diffopt):
            for batch in mt.support:
                diffopt.step(bb.loss(fmodule.prompt, bb.encode(batch)))
            query = bb.loss(fmodule.prompt, bb.encode(mt.query))
            (g,) = torch.autograd.grad(query, module.prompt)
        total += g
    return total / len(meta_tasks)


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_maml_meta_gradient_equals_higher(bb64, inner_steps):
    m = build_method("maml", bb64, source_tasks(), {"inner_lr": _lr(bb64), "inner_steps": inner_steps,
                                                     "meta_batch_size": 3}, seed=1)
    meta_tasks = peek(m)
    grad, _ = m.meta_gradient(meta_tasks)
    ref = _higher_meta_gradient(bb64, m.prompt, meta_tasks, _lr(bb64))
    torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-12)


def test_fomaml_gradient_is_query_gradient_at_adapted_prompt(bb64):
    m = build_method("fomaml", bb64, source_tasks(), {"inner_lr": _lr(bb64), "inner_steps": 2,
                                                       "meta_batch_size": 3}, seed=2)
    meta_tasks = peek(m)
    grad, metrics = m.meta_gradient(meta_tasks)
    ref, query = torch.zeros_like(grad), 0.0
    for mt in meta_tasks:
        p = m.prompt.clone().requires_grad_(True)
        for batch in mt.support:
            (g,) = torch.autograd.grad(bb64.loss(p, bb64.encode(batch)), p)
            p = (p - _lr(bb64) * g).detach().requires_grad_(True)
        q = bb64.loss(p, bb64.encode(mt.query))
        ref += torch.autograd.grad(q, p)[0] / len(meta_tasks)
        query += q.item() / len(meta_tasks)
    torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)
    assert metrics["meta/query_loss"] == pytest.approx(query, rel=1e-10)


def test_maml_outer_step_applies_meta_gradient_with_outer_sgd(bb64):
    m = build_method("maml", bb64, source_tasks(), {"inner_lr": _lr(bb64), "meta_batch_size": 2,
                                                     "outer_optimizer": "sgd", "outer_lr": 0.7}, seed=3)
    before = m.prompt.clone()
    grad, _ = m.meta_gradient(peek(m))
    m.step()
    torch.testing.assert_close(m.prompt, before - 0.7 * grad, rtol=0, atol=1e-12)
