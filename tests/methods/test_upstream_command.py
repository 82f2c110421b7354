"""`promptinit upstream` run the way a user runs it, on a tiny model and a tiny partition."""
from __future__ import annotations

import json

import pytest
import torch

from promptinit.backbones import load_prompt
from promptinit.cli import main
from promptinit.paths import CACHE_ENV
from promptinit.tasks.catalog import CONFIGS_ENV
from tests.methods.test_end_to_end import VOCABULARIES, rule_task

NAMES = ["src0", "src1", "src2", "tgt0", "val0"]


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A catalog of local JSON-lines tasks and a partition over them."""
    folder = tmp_path / "configs"
    (folder / "partitions").mkdir(parents=True)
    entries = []
    for i, name in enumerate(NAMES):
        task = rule_task(name, VOCABULARIES[i], seed=i, n=120)
        rows = [json.dumps({"text": ex.input, "label": ex.target}) for ex in task.examples]
        (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
        entries.append(f"  - name: {name}\n    kind: classification\n"
                       f"    source: {{type: hf, data_files: {name}.jsonl, target_column: label}}\n"
                       f"    template: \"{{text}}\"\n    options: [\"yes\", \"no\"]\n")
    (folder / "tasks.yaml").write_text("tasks:\n" + "".join(entries))
    (folder / "partitions" / "mini.yaml").write_text(
        "source: [src0, src1, src2]\ntarget: [tgt0]\nvalidation: [val0]\n")
    monkeypatch.setenv(CONFIGS_ENV, str(folder))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return folder


BASE = ["upstream", "--model", "tiny-llama", "--prompt-length", "4", "--device", "cpu", "--partition", "mini",
        "--seeds", "100", "--tune-steps", "4", "--eval-every", "2", "--test-size", "20", "--no-progress"]


def test_upstream_writes_prompt_checkpoint_and_reports_arg(configs, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(BASE + ["--method", "maml", "--steps", "3", "--out", str(out),
                        "--set", "inner_lr=1e-3", "--set", "meta_batch_size=2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "tgt0" in printed and "ARG" in printed
    report = json.loads((out / "upstream.json").read_text())
    assert report["steps"] == 3 and report["config"]["inner_lr"] == 1e-3
    assert set(report["arg"]) >= {"mean", "per_task"} and "std" not in report["arg"]
    assert {"diff", "arg", "p_improve", "p_value", "n_pairs"} <= set(report["comparison"])
    prompt = load_prompt(out / "prompt.safetensors", expected_shape=(4, 64))
    assert (out / "checkpoint" / "state.json").is_file()
    assert torch.isfinite(prompt).all()


def test_upstream_resume_continues_the_same_run(configs, tmp_path):
    common = BASE + ["--method", "reptile", "--set", "inner_steps=2", "--set", "inner_lr=0.1",
                     "--set", "meta_batch_size=2", "--no-eval"]
    assert main(common + ["--steps", "4", "--out", str(tmp_path / "straight")]) == 0
    assert main(common + ["--steps", "2", "--out", str(tmp_path / "split")]) == 0
    assert main(common + ["--steps", "4", "--out", str(tmp_path / "split"), "--resume"]) == 0
    a = load_prompt(tmp_path / "straight" / "prompt.safetensors")
    b = load_prompt(tmp_path / "split" / "prompt.safetensors")
    assert torch.equal(a, b)


@pytest.mark.parametrize("argv,needle", [
    (["--method", "mamal"], "'mamal' is unknown"),
    (["--method", "maml", "--set", "inner_lr=fast"], "inner_lr=fast"),
    (["--method", "maml", "--set", "innr_lr=1"], "innr_lr"),
    (["--method", "maml", "--set", "inner_lr=-1"], "field 'inner_lr'"),
    (["--method", "maml", "--set", "noequals"], "KEY=VALUE"),
    (["--method", "maml", "--set", "seeds=13,x"], "seeds=13,x: not a tuple"),
])
def test_upstream_user_errors_are_one_line_exit_2(configs, argv, needle, capsys):
    assert main(BASE + argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_upstream_supmer_saves_psi_and_tunes_the_targets_with_it(configs, tmp_path, monkeypatch):
    from promptinit.methods.mgr import load_regulariser
    from promptinit.selfsup import clustering
    from tests.methods.test_supmer import CHEAP, hashed_bow

    monkeypatch.setattr(clustering, "encode_sentences", lambda texts, *a, **k: hashed_bow(texts))
    out = tmp_path / "supmer"
    settings = [f"{k}={v}" for k, v in CHEAP.items() if k != "formats"] + [
        "formats=nsp,scsp", "corpus_sources=bbc", "max_sentences=300", "cluster_seed=0"]
    assert main(BASE + ["--method", "supmer", "--steps", "2", "--out", str(out),
                        *[a for s in settings for a in ("--set", s)]]) == 0
    report = json.loads((out / "upstream.json").read_text())
    assert report["downstream_psi"] is True and report["config"]["use_mgr"] is True
    psi = load_regulariser(out / "psi.safetensors")
    assert psi.dim == 64 and int(psi.h_count) > 0  # the gate's reference context was collected
    assert set(report["arg"]) >= {"mean", "per_task"} and "std" not in report["arg"]
    assert {"diff", "arg", "p_improve", "p_value", "n_pairs"} <= set(report["comparison"])
