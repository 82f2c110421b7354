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


# --------------------------------------------------------------------------- SUPMER exports of a sweep need ψ


def supmer_checkpoint(folder: Path, psi="real", use_mgr: bool = True, method: str = "supmer") -> Path:
    """A trial checkpoint as ``trainables.train_prompt_init`` writes it for SUPMER: the method
    checkpoint (``state.json`` + ``tensors.safetensors`` with ψ under ``psi``) and the prompt."""
    from types import SimpleNamespace

    from promptinit.backbones import save_prompt
    from promptinit.methods.checkpoint import save_checkpoint
    from promptinit.methods.mgr import MetaGradRegulariser

    if psi == "real":
        psi = MetaGradRegulariser(64, rank=2, gate_hidden=4).tensors()
    state = {"method": method, "config": {"use_mgr": use_mgr, "downstream_mgr": True}, "prompt": torch.randn(4, 64),
             "step": 2}
    if method == "supmer":
        state["psi"] = psi
    save_checkpoint(SimpleNamespace(state_dict=lambda: state), folder)
    save_prompt(torch.randn(4, 64), folder / "prompt.safetensors")
    return folder


def sweep_info(checkpoint) -> dict:
    """What search/sweep.py hands to ``analysis.export.export_best``."""
    return {"hyperparameters": {"outer_lr": 0.03}, "trial_id": "s1", "checkpoint": checkpoint, "model": "tiny-llama",
            "prompt_length": 4, "task_fingerprints": {"keyword": "0123"}, "validation": {"arg": 0.1}}


def test_sweep_export_of_supmer_carries_psi_from_its_checkpoint(tmp_path):
    from promptinit.analysis.export import export_best
    from promptinit.methods.mgr import load_regulariser

    ckpt = supmer_checkpoint(tmp_path / "supmer_s1" / "checkpoint_000000")
    folder = export_best(tmp_path, "supmer", torch.randn(4, 64), sweep_info(str(ckpt)))
    ex = load_export(folder, ModelInfo.from_name("tiny-llama", 4))
    assert ex.psi is not None and load_regulariser(folder).dim == 64
    assert "psi" not in ex.metadata["extra"]  # no note: ψ is there


def _break_tensors(ckpt: Path) -> None:
    (ckpt / "tensors.safetensors").write_bytes(b"not the file state.json names")


BROKEN = [
    ("no-method-checkpoint", lambda ckpt: (ckpt / "state.json").unlink(), "state.json missing"),
    ("tensors-do-not-match", _break_tensors, "does not match state.json"),
]


@pytest.mark.parametrize("name,damage,problem", BROKEN, ids=[b[0] for b in BROKEN])
def test_supmer_export_from_an_unreadable_checkpoint_is_refused(tmp_path, name, damage, problem):
    from promptinit.analysis.export import export_best

    ckpt = supmer_checkpoint(tmp_path / "supmer_s1" / "checkpoint_000000")
    damage(ckpt)
    with pytest.raises(PromptinitError) as err:
        export_best(tmp_path, "supmer", torch.randn(4, 64), sweep_info(str(ckpt)))
    msg = one_line(err)
    assert f"{ckpt / 'state.json'}: field 'psi'" in msg and problem in msg and "--trial" in msg
    assert not (tmp_path / "exports" / "supmer").exists()  # nothing half-exported without ψ


@pytest.mark.parametrize("name,kwargs,problem", [
    ("not-a-supmer-checkpoint", {"method": "maml"}, "not a SUPMER checkpoint (method 'maml')"),
    ("psi-lost-although-use_mgr", {"psi": None, "use_mgr": True}, "empty although the trial's use_mgr is on"),
    ("psi-empty", {"psi": {}}, "not a non-empty dict of tensors"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_supmer_export_with_a_missing_or_corrupt_psi_is_refused(tmp_path, name, kwargs, problem):
    from promptinit.analysis.export import export_best

    ckpt = supmer_checkpoint(tmp_path / "ckpt", **kwargs)
    with pytest.raises(PromptinitError) as err:
        export_best(tmp_path, "supmer", torch.randn(4, 64), sweep_info(str(ckpt)))
    msg = one_line(err)
    assert f"{ckpt / 'state.json'}: field 'psi'" in msg and problem in msg and "--trial" in msg


@pytest.mark.parametrize("checkpoint", [None, "gs://bucket/sweep/supmer_s1/checkpoint_000000"])
def test_sweep_export_of_supmer_without_a_local_checkpoint_is_refused(tmp_path, checkpoint):
    from promptinit.analysis.export import export_best

    with pytest.raises(PromptinitError) as err:
        export_best(tmp_path, "supmer", torch.randn(4, 64), sweep_info(checkpoint))
    msg = one_line(err)
    assert "field 'checkpoint'" in msg and "ψ_φ" in msg and "promptinit export --method supmer" in msg


def test_supmer_trained_without_psi_exports_without_and_says_why(tmp_path):
    from promptinit.analysis.export import PSI_NOTE, export_best

    ckpt = supmer_checkpoint(tmp_path / "ckpt", psi=None, use_mgr=False)
    folder = export_best(tmp_path, "supmer", torch.randn(4, 64), sweep_info(str(ckpt)))
    ex = load_export(folder, ModelInfo.from_name("tiny-llama", 4))
    assert ex.psi is None and not (folder / PSI).exists()
    assert ex.metadata["extra"]["psi"] == PSI_NOTE and "use_mgr false" in PSI_NOTE


def test_promptinit_export_of_a_supmer_trial_without_psi_exits_2(tmp_path, monkeypatch, capsys):
    """``promptinit export --method supmer`` on a sweep whose best SUPMER checkpoint lost its
    method checkpoint: one error line, exit code 2, no export folder."""
    from tests.analysis.conftest import make_sweep
    from tests.analysis.test_report import cli

    sweep = make_sweep(tmp_path / "runs")
    trial = sweep / "supmer_s1"
    ckpt = supmer_checkpoint(trial / "checkpoint_000000")
    (ckpt / "state.json").unlink()
    config = {"method": "supmer", "supmer": {"outer_lr": 0.03, "steps": 2}}
    (trial / "params.json").write_text(json.dumps(config))
    (trial / "result.json").write_text(json.dumps({
        "val/arg": 0.4, "upstream/step": 2, "upstream/total_steps": 2, "checkpoint_dir_name": ckpt.name, "done": True,
        "training_iteration": 1, "trial_id": "s1", "time_total_s": 10.0, "config": config}) + "\n")
    out = tmp_path / "supmer-export"
    assert cli(["export", str(sweep), "--method", "supmer", "--out", str(out), "--no-mlflow"], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("promptinit export: error: ")
    assert f"{ckpt / 'state.json'}: field 'psi'" in err and "--trial" in err
    assert not out.exists()


# --------------------------------------------------------------------------- exports that travel


SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _sha256_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def packaged_stand_in(tmp_path: Path) -> Path:
    """A model folder as ``resolve_model("smollm2-135m")`` gives one (config + model.safetensors),
    with tiny-llama's small files standing in for the converted SmolLM2."""
    import shutil

    from promptinit.assets import resolve_model

    folder = tmp_path / "cache" / "models" / "smollm2-135m"
    shutil.copytree(resolve_model("tiny-llama"), folder)
    return folder


@pytest.mark.parametrize("name", ["smollm2-135m", "smollm2", SMOLLM2_HUB_ID])
def test_packaged_model_export_names_its_hub_id_and_keeps_path_and_weights_hash(tmp_path, name):
    from peft import PeftConfig, PromptTuningConfig
    from transformers import AutoConfig

    folder = packaged_stand_in(tmp_path)
    info = ModelInfo.from_hf_config(name, AutoConfig.from_pretrained(folder), str(folder), prompt_length=4)
    assert info.base_model_name_or_path == SMOLLM2_HUB_ID and info.local_path == str(folder.resolve())
    out = export_prompt(torch.randn(4, 64), info, tmp_path / "exp", method="mtl", hyperparameters={}, metrics={},
                        model_name=name, task_fingerprints={"keyword": "0123"})

    # The adapter config names the hub id, never this machine's cache, and PEFT reads it as prompt tuning.
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == SMOLLM2_HUB_ID and str(tmp_path) not in json.dumps(config)
    peft_config = PeftConfig.from_pretrained(str(out))
    assert isinstance(peft_config, PromptTuningConfig)
    assert peft_config.base_model_name_or_path == SMOLLM2_HUB_ID
    assert peft_config.num_virtual_tokens == 4 and peft_config.token_dim == 64

    # promptinit.json keeps where the weights were here and which weights they were.
    meta = json.loads((out / METADATA).read_text())
    assert meta["base_model_name_or_path"] == SMOLLM2_HUB_ID and meta["model"] == name
    assert meta["model_path"] == str(folder.resolve())
    assert meta["weights_sha256"] == {"model.safetensors": _sha256_file(folder / "model.safetensors")}
    assert len(meta["weights_fingerprint"]) == 16 and "GGUF" in meta["model_source"]
    assert load_export(out, info).prompt.shape == (4, 64)  # and it still loads against the model


def test_tiny_and_local_models_keep_their_path_and_record_their_weights(tmp_path):
    from peft import PeftConfig

    from promptinit.assets import resolve_model

    path = resolve_model("tiny-llama")
    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu"))
    out = export(bb, torch.randn(4, 64), tmp_path / "exp")
    assert PeftConfig.from_pretrained(str(out)).base_model_name_or_path == path  # no hub id: the folder
    meta = json.loads((out / METADATA).read_text())
    assert meta["model_path"] == str(Path(path).resolve())
    assert meta["weights_sha256"] == {"model.safetensors": _sha256_file(Path(path) / "model.safetensors")}
    assert "model_source" not in meta
    # A model known only by its fields (a hub id, no local folder) records no weights hash.
    info = ModelInfo("remote", "causal", hidden_size=64, num_layers=2, num_attention_heads=4,
                     base_model_name_or_path="org/remote", prompt_length=4)
    meta = json.loads((export_prompt(torch.randn(4, 64), info, tmp_path / "r2", method="mtl", hyperparameters={},
                                     metrics={}, model_name="org/remote", task_fingerprints={})
                       / METADATA).read_text())
    assert meta["model_path"] is None and meta["weights_sha256"] == {} and meta["weights_fingerprint"] is None
    assert json.loads((tmp_path / "r2" / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "org/remote"


def test_sweep_export_of_a_packaged_model_travels(tmp_path, monkeypatch):
    """``analysis.export.export_best`` (the sweep's export) writes the hub id of a packaged model."""
    import promptinit.assets as assets
    from promptinit.analysis.export import export_best

    folder = packaged_stand_in(tmp_path)
    real = assets.resolve_model
    # No GGUF conversion here: the stand-in folder is what the packaged name resolves to.
    monkeypatch.setattr(assets, "resolve_model", lambda name: str(folder) if name == "smollm2-135m" else real(name))
    out = export_best(tmp_path / "sweep", "mtl", torch.randn(4, 64), {
        "hyperparameters": {}, "trial_id": "t1", "model": "smollm2-135m", "prompt_length": 4,
        "task_fingerprints": {"keyword": "0123"}, "validation": {"arg": 0.1}})
    assert json.loads((out / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == SMOLLM2_HUB_ID
    meta = json.loads((out / METADATA).read_text())
    assert meta["model_path"] == str(folder.resolve()) and meta["weights_fingerprint"]


@pytest.mark.slow
def test_real_smollm2_export_names_the_hub_id_and_hashes_the_converted_weights(tmp_path):
    from peft import PeftConfig

    from promptinit.assets import resolve_model

    info = ModelInfo.from_name("smollm2-135m", 4)
    out = export_prompt(torch.randn(4, info.hidden_size), info, tmp_path / "exp", method="mtl", hyperparameters={},
                        metrics={}, model_name="smollm2-135m", task_fingerprints={})
    assert PeftConfig.from_pretrained(str(out)).base_model_name_or_path == SMOLLM2_HUB_ID
    meta = json.loads((out / METADATA).read_text())
    local = Path(resolve_model("smollm2-135m"))
    assert meta["model_path"] == str(local.resolve())
    assert meta["weights_sha256"]["model.safetensors"] == _sha256_file(local / "model.safetensors")


def test_a_corrupt_report_line_is_an_error_not_a_dropped_checkpoint(fake_sweep):
    """Choosing the best checkpoint reads every report; a garbled one in the middle (not the
    last, which may be being written) must stop the export rather than skip that checkpoint."""
    from promptinit.analysis.export import best_checkpoint
    from promptinit.analysis.results import load_sweep

    sweep = load_sweep(fake_sweep)  # read while intact; the damage happens after
    trial = next(p for p in fake_sweep.glob("maml_*") if len((p / "result.json").read_text().splitlines()) >= 2)
    lines = (trial / "result.json").read_text().splitlines()
    lines[0] = lines[0][: len(lines[0]) // 2]
    (trial / "result.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(PromptinitError, match=r"result\.json: line 1: not valid JSON"):
        best_checkpoint(sweep, "maml")


def test_packaged_models_record_their_hub_id():
    from promptinit.export import hub_id

    assert hub_id("smollm2") == hub_id("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("gemma3-270m") == "google/gemma-3-270m"
    assert hub_id("tiny-llama") is None and hub_id("/models/x.gguf") is None
