"""Additive Backbone helpers for SUPMER: the seq2seq encoder / decoder halves (encoder-output
mixup) and the loss with its hidden-state context (ψ's downstream gate)."""
from __future__ import annotations

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.tasks.task import Example
from tests.conftest import CAUSAL, SEQ2SEQ, tiny_backbone

EXAMPLES = [Example("a short one ->", "yes", ()), Example("a somewhat longer input here ->", "maybe not", ())]


def test_encoder_then_decoder_equals_target_hidden():
    bb = tiny_backbone(SEQ2SEQ, "float64")
    batch = bb.encode(EXAMPLES)
    prompt = bb.init_prompt("vocab", seed=0).expand(2, -1, -1)  # one prompt row per example
    enc, mask = bb.encoder_states(prompt, batch)
    assert enc.shape[:2] == mask.shape == (2, bb.config.prompt_length + batch.input_ids.shape[1])
    h, labels, rows = bb.decoder_target_hidden(enc, mask, batch.labels)
    ref_h, ref_labels, ref_rows = bb.target_hidden(prompt, batch)
    assert torch.equal(h, ref_h) and torch.equal(labels, ref_labels) and torch.equal(rows, ref_rows)
    # an additive float mask (0 keep, finfo.min drop) is the same mask
    bias = torch.zeros(mask.shape, dtype=enc.dtype).masked_fill(~mask.bool(), torch.finfo(enc.dtype).min)
    bias = bias[:, None, None, :]
    torch.testing.assert_close(bb.decoder_target_hidden(enc, bias, batch.labels)[0], ref_h, rtol=1e-13, atol=0)


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_loss_with_context_is_the_loss_and_the_mean_target_hidden_state(model):
    bb = tiny_backbone(model, "float64")
    batch = bb.encode(EXAMPLES)
    prompt = bb.init_prompt("vocab", seed=1).requires_grad_(True)
    per, h_sum, count = bb.loss_with_context(prompt, batch)
    assert torch.equal(per, bb.loss(prompt, batch, per_example=True))
    assert per.requires_grad and not h_sum.requires_grad
    h, _, rows = bb.target_hidden(prompt, batch)
    for i in range(len(EXAMPLES)):
        torch.testing.assert_close(h_sum[i] / count[i], h.detach()[rows == i].mean(0))
    assert count.tolist() == [float((rows == i).sum()) for i in range(len(EXAMPLES))]


def test_causal_backbone_has_no_encoder_half():
    bb = tiny_backbone(CAUSAL)
    with pytest.raises(PromptinitError, match="encoder"):
        bb.encoder_states(bb.init_prompt("vocab"), bb.encode(EXAMPLES))
