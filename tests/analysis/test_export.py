"""PEFT export: learned prompts load in ``PeftModel`` and give promptinit's own logits; bad
exports are refused with one line naming the file and the field."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from promptinit.backbones import Backbone, BackboneConfig
from promptinit.backbones.backbone import IGNORE
from promptinit.errors import PromptinitError
from promptinit.export import (
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA, PSI, ModelInfo, export_prompt, load_export, load_psi,
)
from tests.conftest import keyword_task

TOL = 1e-5


def learned_prompt(bb: Backbone, steps: int = 3) -> tuple[torch.Tensor, float, float]:
    """A few Adam steps of prompt tuning on a keyword task: (prompt, first loss, last loss)."""
    task = keyword_task()
    batch = bb.encode(task.examples[:8])
    prompt = bb.init_prompt("vocab", seed=0).requires_grad_()
    opt = torch.optim.Adam([prompt], lr=0.05)
    losses = []
    for _ in range(steps + 1):
        loss = bb.loss(prompt, batch)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return prompt.detach(), losses[0], losses[-1]


def export(bb: Backbone, prompt: torch.Tensor, out: Path, **kw) -> Path:
    args = dict(method="mtl", hyperparameters={"lr": 0.05, "steps": 3}, metrics={"validation": {"arg": 0.1}},
                model_name=bb.config.model, task_fingerprints={"keyword": "0123"})
    args.update(kw)
    return export_prompt(prompt, bb, out, **args)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_exported_prompt_in_peft_gives_promptinits_logits(model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from promptinit.assets import resolve_model

    bb = Backbone(BackboneConfig(model, prompt_length=4, device="cpu"))
    prompt, first, last = learned_prompt(bb)
    assert last < first  # the prompt was learned, not just initialised
    folder = export(bb, prompt, tmp_path / "exp")

    cls = AutoModelForSeq2SeqLM if bb.family.value == "seq2seq" else AutoModelForCausalLM
    base = cls.from_pretrained(resolve_model(model), attn_implementation="eager")  # a fresh copy, same folder
    peft_model = PeftModel.from_pretrained(base, str(folder)).eval()
    batch = bb.encode(keyword_task().examples[8:12])
    emb, mask = bb._prepend(prompt, batch.input_ids, batch.attention_mask)
    with torch.no_grad():
        if bb.family.value == "causal":
            ours = bb.model(inputs_embeds=emb, attention_mask=mask).logits
            theirs = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            # promptinit's loss from PEFT's logits: position L + j - 1 predicts token j.
            shifted = theirs[:, bb.config.prompt_length - 1:-1]
            labels = batch.labels
        else:
            ours = bb.model(inputs_embeds=emb, attention_mask=mask, labels=batch.labels).logits
            theirs = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).logits
            shifted, labels = theirs, batch.labels
        per_tok = F.cross_entropy(shifted.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
        count = (labels != IGNORE).sum(1)
        peft_loss = (per_tok.sum(1) / count).mean()
        our_loss = bb.loss(prompt, batch)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=TOL, rtol=0), (ours - theirs).abs().max()
    assert abs(peft_loss.item() - our_loss.item()) < TOL


def test_export_round_trip_with_metadata_and_psi(tmp_path):
    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu"))
    prompt = torch.randn(4, 64)
    psi = {"U1": torch.randn(8, 64), "b1": torch.zeros(8)}
    folder = export(bb, prompt, tmp_path / "supmer", method="supmer", psi_state=psi, extra={"trial_id": "abc"})
    assert sorted(p.name for p in folder.iterdir()) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA, PSI])
    ex = load_export(folder, bb)
    assert torch.equal(ex.prompt, prompt)
    assert ex.config["task_type"] == "CAUSAL_LM" and ex.config["num_transformer_submodules"] == 1
    assert ex.metadata["method"] == "supmer" and ex.metadata["extra"] == {"trial_id": "abc"}
    assert ex.metadata["task_fingerprints"] == {"keyword": "0123"}
    assert ex.metadata["task_set_fingerprint"] and ex.metadata["data_fingerprint"]
    assert {"torch", "transformers", "peft"} <= set(ex.metadata["versions"])
    assert set(ex.psi) == set(psi) and all(torch.equal(ex.psi[k], psi[k]) for k in psi)
    assert set(load_psi(folder)) == set(psi)
    # Seq2seq: one transformer submodule too (the prompt goes to the encoder only).
    t5 = Backbone(BackboneConfig("tiny-t5", prompt_length=4, device="cpu"))
    cfg = json.loads((export(t5, prompt, tmp_path / "t5") / ADAPTER_CONFIG).read_text())
    assert cfg["task_type"] == "SEQ_2_SEQ_LM" and cfg["num_transformer_submodules"] == 1


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_mismatched_token_dim_names_file_and_field(tmp_path):
    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu"))
    folder = export(bb, torch.randn(4, 64), tmp_path / "exp")
    other = ModelInfo("other", "causal", hidden_size=32, num_layers=2, num_attention_heads=4,
                      base_model_name_or_path="x", prompt_length=4)
    with pytest.raises(PromptinitError) as err:
        load_export(folder, other)
    msg = one_line(err)
    assert f"{ADAPTER_CONFIG}: field 'token_dim': 64" in msg and "32" in msg


def test_mismatched_prompt_length_names_file_and_field(tmp_path):
    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu"))
    folder = export(bb, torch.randn(4, 64), tmp_path / "exp")
    longer = Backbone(BackboneConfig("tiny-llama", prompt_length=8, device="cpu"))
    with pytest.raises(PromptinitError) as err:
        load_export(folder, longer)
    assert f"{ADAPTER_CONFIG}: field 'num_virtual_tokens': 4" in one_line(err)
    # A config edited by hand to a wrong width is caught against the model too.
    cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**cfg, "token_dim": 128}))
    with pytest.raises(PromptinitError) as err:
        load_export(folder, bb)
    assert "field 'token_dim': 128" in one_line(err)
    # And a seq2seq model refuses a causal export.
    with pytest.raises(PromptinitError) as err:
        load_export(folder, Backbone(BackboneConfig("tiny-t5", prompt_length=4, device="cpu")))
    assert "field 'task_type'" in one_line(err)


def test_tensor_shape_that_disagrees_with_config_is_refused(tmp_path):
    from safetensors.torch import save_file

    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu"))
    folder = export(bb, torch.randn(4, 64), tmp_path / "exp")
    (folder / METADATA).unlink()  # a plain PEFT folder: no hashes to catch the swap first
    save_file({"prompt_embeddings": torch.randn(5, 64)}, str(folder / ADAPTER_WEIGHTS))
    with pytest.raises(PromptinitError) as err:
        load_export(folder, bb)
    msg = one_line(err)
    assert f"{ADAPTER_WEIGHTS}: field 'prompt_embeddings': shape [5, 64]" in msg
    # A prompt whose width does not fit the model is not exported at all.
    with pytest.raises(PromptinitError, match="hidden size 64"):
        export(bb, torch.randn(4, 32), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("with_metadata", [True, False])
def test_truncated_safetensors_is_refused(tmp_path, with_metadata):
    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu"))
    folder = export(bb, torch.randn(4, 64), tmp_path / "exp")
    if not with_metadata:
        (folder / METADATA).unlink()
    data = (folder / ADAPTER_WEIGHTS).read_bytes()
    (folder / ADAPTER_WEIGHTS).write_bytes(data[: len(data) - 100])
    with pytest.raises(PromptinitError) as err:
        load_export(folder, bb)
    msg = one_line(err)
    assert ADAPTER_WEIGHTS in msg and ("truncated" in msg or "sha256" in msg)


def test_interrupted_export_keeps_the_previous_one(tmp_path, monkeypatch):
    import promptinit.export as E

    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu"))
    old = torch.randn(4, 64)
    folder = export(bb, old, tmp_path / "exp")
    real = E._write_json

    def crash(path, doc):
        if path.name == METADATA:
            raise KeyboardInterrupt  # killed while writing the last file
        real(path, doc)

    monkeypatch.setattr(E, "_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        export(bb, torch.randn(4, 64), folder)
    assert sorted(os.listdir(tmp_path)) == ["exp"]  # no temporary folder left behind
    assert torch.equal(load_export(folder, bb).prompt, old)
