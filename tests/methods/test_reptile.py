"""Reptile: one outer step against its closed form."""
from __future__ import annotations

import torch

from promptinit.methods import build_method
from tests.conftest import CAUSAL, SEQ2SEQ, tiny_backbone
from tests.methods.conftest import peek, source_tasks
import pytest


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_reptile_step_equals_closed_form(model):
    bb = tiny_backbone(model, "float64")
    lr, eps, k = 0.05, 0.3, 3
    m = build_method("reptile", bb, source_tasks(), {"inner_lr": lr, "inner_steps": k, "inner_batch_size": 2,
                                                      "meta_batch_size": 3, "outer_optimizer": "sgd",
                                                      "outer_lr": eps}, seed=0)
    phi = m.prompt.clone()
    adapted = []
    for mt in peek(m):
        assert len(mt.support) == k
        p = phi.clone().requires_grad_(True)
        for batch in mt.support:
            (g,) = torch.autograd.grad(bb.loss(p, bb.encode(batch)), p)
            p = (p - lr * g).detach().requires_grad_(True)
        adapted.append(p.detach())
    m.step()
    # Nichol et al. 2018: phi <- phi + eps * (mean_t phi'_t - phi)
    expected = phi + eps * (torch.stack(adapted).mean(0) - phi)
    torch.testing.assert_close(m.prompt, expected, rtol=0, atol=1e-12)
    assert not torch.equal(m.prompt, phi)
