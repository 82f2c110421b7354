"""ψ_φ, the meta-gradient regulariser: shapes, norms, gradients, storage and downstream use."""
from __future__ import annotations

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.methods.mgr import CODE_RANK, KEYS, MetaGradRegulariser, code_rank, load_regulariser, save_regulariser


def _psi(dim=16, rank=4, dtype=torch.float32, seed=0):
    return MetaGradRegulariser(dim, rank=rank, gate_hidden=5, seed=seed, dtype=dtype)


def test_shapes_and_gate_range():
    psi = _psi()
    g, h = torch.randn(3, 7, 16), torch.randn(3, 16)
    out, gamma = psi(g, h)
    assert out.shape == g.shape and out.dtype == g.dtype and gamma.shape == (3,)
    assert ((gamma > 0) & (gamma < 1)).all()
    single, gamma1 = psi(g[1], h[1])  # one [L, d] block with its [d] context
    assert single.shape == (7, 16) and gamma1.shape == ()
    torch.testing.assert_close(single, out[1])
    assert {k for k, _ in psi.named_parameters()} == {"V1", "U1", "b1", "V2", "U2", "b2", "W1", "W2"}
    assert psi.U1.shape == (16, 4) and psi.V1.shape == (4, 16) and psi.W1.shape == (5, 16) and psi.W2.shape == (1, 5)
    with pytest.raises(PromptinitError, match="do not fit"):
        psi(torch.randn(3, 7, 15), torch.randn(3, 15))


def test_transform_keeps_each_rows_norm_and_psi_never_grows_it():
    psi = _psi()
    torch.nn.init.normal_(psi.b1)  # non-trivial biases
    torch.nn.init.normal_(psi.b2)
    g = torch.randn(4, 6, 16) * torch.logspace(-4, 1, 6)[None, :, None]  # rows of very different norms
    x = psi.direction(g)
    torch.testing.assert_close(x.norm(dim=-1), g.norm(dim=-1), rtol=1e-5, atol=0)
    assert (x >= 0).all()  # the outer ReLU
    out, gamma = psi(g, torch.randn(4, 16))
    assert (out.norm(dim=-1) <= g.norm(dim=-1) * (1 + 1e-5)).all()  # a convex mix of two vectors of norm ‖g‖
    torch.testing.assert_close(out, (1 - gamma)[:, None, None] * x + gamma[:, None, None] * g)


def test_psi_is_positively_homogeneous_and_keeps_zero_rows():
    psi = _psi()
    torch.nn.init.normal_(psi.b2)
    g, h = torch.randn(2, 3, 16), torch.randn(2, 16)
    g[0, 1] = 0
    out, _ = psi(g, h)
    assert torch.equal(out[0, 1], torch.zeros(16))
    torch.testing.assert_close(psi(1e-3 * g, h)[0], 1e-3 * out)
    torch.testing.assert_close(psi(g, 100 * h)[1], psi(g, h)[1])  # the gate reads the context's direction


def test_gradients_reach_every_parameter_and_the_gate():
    psi = _psi()
    g, h = torch.randn(3, 5, 16), torch.randn(3, 16)
    out, gamma = psi(g, h)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in psi.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    psi.zero_grad()
    ((psi.gate(h) - 0.9) ** 2).sum().backward()  # the auxiliary gate loss trains W1, W2 only
    assert psi.W1.grad.abs().sum() > 0 and psi.W2.grad.abs().sum() > 0
    assert psi.U1.grad is None or psi.U1.grad.abs().sum() == 0


def test_gradients_match_finite_differences_in_float64():
    psi = _psi(dim=6, rank=3, dtype=torch.float64, seed=1)
    torch.nn.init.normal_(psi.b1, std=0.3)
    torch.nn.init.normal_(psi.b2, std=0.3)
    g, h = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    names = [n for n, _ in psi.named_parameters()]

    def f(*params):
        out, gamma = torch.func.functional_call(psi, dict(zip(names, params)), (g, h))
        return (out.sin().sum() + (gamma - 0.3).pow(2).sum()).reshape(1)

    assert torch.autograd.gradcheck(f, tuple(p.detach().clone().requires_grad_(True) for p in psi.parameters()))


def test_default_rank_is_the_released_codes_min_1920_d():
    assert CODE_RANK == 1920 and code_rank(576) == 576 and code_rank(2048) == 1920
    psi = MetaGradRegulariser(24, gate_hidden=3)
    assert psi.V1.shape == (24, 24) and psi.U2.shape == (24, 24)  # full rank for d <= 1920


def test_downstream_gate_reads_each_batch_context_by_default():
    psi = _psi()
    transform = psi.as_grad_transform()  # no reference context needed
    assert transform.takes_context
    g, h1, h2 = torch.randn(7, 16), torch.randn(16), torch.randn(16)
    torch.testing.assert_close(transform(g, h1), psi(g, h1)[0], rtol=0, atol=0)
    torch.testing.assert_close(transform(g, h2), psi(g, h2)[0], rtol=0, atol=0)
    assert not torch.allclose(transform(g, h1), transform(g, h2))  # the gate follows the batch
    assert not transform(g.clone().requires_grad_(), h1).requires_grad
    with pytest.raises(PromptinitError, match="current batch"):
        transform(g)
    with pytest.raises(PromptinitError, match="downstream_context"):
        psi.as_grad_transform(context="epoch")


def test_reference_context_is_the_running_mean_and_drives_the_downstream_transform():
    psi = _psi()
    with pytest.raises(PromptinitError, match="reference context"):
        psi.as_grad_transform(context="reference")
    a, b = torch.randn(3, 16), torch.randn(5, 16)
    psi.update_reference(a)
    psi.update_reference(b)
    torch.testing.assert_close(psi.h_ref, torch.cat([a, b]).mean(0))
    assert int(psi.h_count) == 8
    g = torch.randn(7, 16)
    transform = psi.as_grad_transform(context="reference")
    assert not transform.takes_context
    torch.testing.assert_close(transform(g), psi(g, psi.h_ref)[0])
    assert not transform(g.requires_grad_()).requires_grad
    other = torch.randn(16)
    fixed = psi.as_grad_transform(other)
    assert not fixed.takes_context
    torch.testing.assert_close(fixed(g), psi(g, other)[0])


def test_tensors_round_trip_through_safetensors_and_export_folders(tmp_path):
    from promptinit.export import PSI, export_prompt

    psi = _psi(seed=3)
    psi.update_reference(torch.randn(4, 16))
    tensors = psi.tensors()
    assert set(tensors) == set(KEYS)
    back = MetaGradRegulariser.from_tensors(tensors)
    g, h = torch.randn(5, 16), torch.randn(16)
    torch.testing.assert_close(back.as_grad_transform(context="reference")(g),
                               psi.as_grad_transform(context="reference")(g), rtol=0, atol=0)
    torch.testing.assert_close(back.as_grad_transform()(g, h), psi.as_grad_transform()(g, h), rtol=0, atol=0)
    path = save_regulariser(psi, tmp_path / "psi.safetensors")
    expected = psi.as_grad_transform(context="reference")(g)
    torch.testing.assert_close(load_regulariser(path).as_grad_transform(context="reference")(g), expected,
                               rtol=0, atol=0)
    info = {"name": "toy", "family": "causal", "hidden_size": 16, "num_layers": 1, "num_attention_heads": 1,
            "base_model_name_or_path": "toy"}
    folder = export_prompt(torch.randn(4, 16), info, tmp_path / "export", method="supmer", hyperparameters={},
                           metrics={}, model_name="toy", task_fingerprints={}, psi_state=tensors)
    assert (folder / PSI).is_file()
    torch.testing.assert_close(load_regulariser(folder).as_grad_transform(context="reference")(g), expected,
                               rtol=0, atol=0)
    with pytest.raises(PromptinitError, match="shape"):
        _psi(rank=5).load_tensors(tensors)
    with pytest.raises(PromptinitError, match="no such"):
        load_regulariser(tmp_path / "missing.safetensors")
