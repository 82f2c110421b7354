"""Curriculum mixup: the λ schedule, and the mixed loss (final hidden states; T5 encoder outputs)
against independent computations."""
from __future__ import annotations

import random
import statistics

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.methods.inner import TaskBatch, task_losses
from promptinit.methods.mixup import (
    curriculum_b, draw_lambdas, ema, mix_encoder_outputs, mixed_task_losses, qry_spt_similarity, resolve_site,
    sample_lambda,
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


# ------------------------------------------------------------------ encoder-output mixup (seq2seq)


@pytest.fixture(scope="module")
def t5():
    return tiny_backbone(SEQ2SEQ, "float64")


def test_auto_site_is_encoder_output_for_seq2seq_and_final_hidden_for_causal(t5):
    assert resolve_site("auto", t5) == "encoder_output"
    causal = tiny_backbone(CAUSAL, "float64")
    assert resolve_site("auto", causal) == "final_hidden"
    assert resolve_site("final_hidden", t5) == "final_hidden"
    with pytest.raises(PromptinitError, match="mixup_site.*causal"):
        resolve_site("encoder_output", causal)
    with pytest.raises(PromptinitError, match="mixup_site"):
        resolve_site("embeddings", t5)


def test_encoder_output_mixup_at_lambda_one_and_zero_is_the_query_and_the_partner_loss(t5):
    # inputs and targets of different lengths pair by pair: the padded positions must not leak
    q, a, _, _ = _batches(t5)
    prompt = t5.init_prompt("vocab", seed=4)
    ones, _ = mixed_task_losses(t5, prompt, q, a, [1.0, 1.0], site="encoder_output")
    zeros, _ = mixed_task_losses(t5, prompt, q, a, [0.0, 0.0], site="encoder_output")
    torch.testing.assert_close(ones, task_losses(t5, prompt, q), rtol=1e-13, atol=0)
    torch.testing.assert_close(zeros, task_losses(t5, prompt, a), rtol=1e-13, atol=0)
    rows = prompt.expand(2, *prompt.shape)  # one prompt row per task, as a SUPMER step passes them
    both, _ = mixed_task_losses(t5, rows, q, a, [1.0, 0.0], site="encoder_output")
    torch.testing.assert_close(both, torch.stack([ones[0], zeros[1]]), rtol=1e-13, atol=0)


def _hf_mixed_loss(bb, prompt, ex_q, ex_a, lam):
    """Independent reference, straight through the Hugging Face model: encode both prompted
    inputs (of equal length), mix the encoder outputs, and let the model's own forward score
    each target on the mixture (its loss: mean cross-entropy over the target's tokens)."""
    from transformers.modeling_outputs import BaseModelOutput

    def enc(ex):
        ids = torch.tensor([bb.tokenizer(ex.input, add_special_tokens=False).input_ids])
        emb = torch.cat([prompt[None], bb.model.get_input_embeddings()(ids)], dim=1)
        return bb.model.get_encoder()(inputs_embeds=emb).last_hidden_state

    h_q, h_a = enc(ex_q), enc(ex_a)
    assert h_q.shape == h_a.shape
    mixed = BaseModelOutput(last_hidden_state=lam * h_q + (1 - lam) * h_a)

    def loss(ex):
        labels = torch.tensor([bb.tokenizer(ex.target, add_special_tokens=False).input_ids + [bb.eos_id]])
        return bb.model(encoder_outputs=mixed, labels=labels).loss

    return lam * loss(ex_q) + (1 - lam) * loss(ex_a)


def test_encoder_output_mixup_matches_the_model_forward_on_mixed_encoder_outputs(t5):
    # equal input lengths within each pair (every position is mixed), different target lengths
    q_ex = [[Example("abc ->", "yes", ()), Example("defgh ->", "no", ())]]
    a_ex = [[Example("xyz ->", "maybe", ()), Example("ijklm ->", "B", ())]]
    q, a = TaskBatch.encode(t5, q_ex), TaskBatch.encode(t5, a_ex)
    prompt = t5.init_prompt("vocab", seed=5)
    lam = 0.3
    losses, h_mean = mixed_task_losses(t5, prompt, q, a, [lam], site="encoder_output")
    ref = torch.stack([_hf_mixed_loss(t5, prompt, eq, ea, lam) for eq, ea in zip(q_ex[0], a_ex[0])]).mean()
    torch.testing.assert_close(losses[0], ref, rtol=1e-10, atol=1e-12)
    assert h_mean.shape == (1, t5.hidden_size) and not h_mean.requires_grad
    final, _ = mixed_task_losses(t5, prompt, q, a, [lam], site="final_hidden")
    assert not torch.allclose(final, losses)  # the two sites are different mixtures


def test_encoder_output_mixup_gradient_reaches_the_prompt_and_matches_finite_differences(t5):
    q, a, _, _ = _batches(t5)
    prompt = t5.init_prompt("vocab", seed=6).requires_grad_(True)

    def f(p):
        return mixed_task_losses(t5, p, q, a, [0.4, 0.7], site="encoder_output")[0].sum()

    (g,) = torch.autograd.grad(f(prompt), prompt)
    assert (g.norm(dim=-1) > 0).all()  # every prompt vector reaches the loss through the encoder
    v = torch.randn(prompt.shape, generator=torch.Generator().manual_seed(0), dtype=prompt.dtype)
    eps = 1e-6
    with torch.no_grad():
        fd = (f(prompt + eps * v) - f(prompt - eps * v)) / (2 * eps)
    torch.testing.assert_close((g * v).sum(), fd, rtol=1e-6, atol=1e-10)


def test_mixed_encoder_outputs_weigh_one_sided_positions_by_their_share():
    enc_q, enc_a = torch.randn(1, 3, 2, dtype=torch.float64), torch.randn(1, 4, 2, dtype=torch.float64)
    mask_q = torch.tensor([[1, 1, 0]])
    mask_a = torch.tensor([[1, 0, 1, 1]])
    enc, bias = mix_encoder_outputs(enc_q, mask_q, enc_a, mask_a, torch.tensor([0.25]))
    torch.testing.assert_close(enc[0, 0], 0.25 * enc_q[0, 0] + 0.75 * enc_a[0, 0])
    torch.testing.assert_close(enc[0, 1], enc_q[0, 1])  # query only
    torch.testing.assert_close(enc[0, 2:], enc_a[0, 2:])  # aug only
    low = torch.finfo(torch.float64).min
    assert bias.shape == (1, 1, 1, 4)
    torch.testing.assert_close(bias[0, 0, 0], torch.tensor([1.0, 0.25, 0.75, 0.75], dtype=torch.float64).log())
    _, bias1 = mix_encoder_outputs(enc_q, mask_q, enc_a, mask_a, torch.tensor([1.0]))
    assert bias1[0, 0, 0].tolist() == [0.0, 0.0, low, low]  # λ = 1: exactly the query's mask
