"""BIG-bench task files: extraction from the sdist, lookup, and the errors that say what to run."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest

from promptinit.assets import bigbench
from promptinit.errors import PromptinitError


def _sdist(path, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_real_cache_has_the_catalog_tasks(bigbench_files):
    assert json.loads(bigbench.bigbench_task_path("strategyqa").read_text())["examples"]
    assert bigbench.bigbench_task_path("natural_instructions/subtask018_mctaco_temporal_reasoning_presence").is_file()
    with pytest.raises(PromptinitError, match="no_such_task.*check the name"):
        bigbench.bigbench_task_path("no_such_task")


def test_extracts_only_task_json_files_once(tmp_path, monkeypatch, capsys):
    prefix = "bigbench-1.0.0/bigbench/benchmark_tasks/"
    sdist = tmp_path / "bigbench-1.0.0.tar.gz"
    _sdist(sdist, {
        prefix + "toy/task.json": '{"examples": []}',
        prefix + "toy/README.md": "not copied",
        prefix + "suite/sub/task.json": "{}",
        "bigbench-1.0.0/setup.py": "not copied",
    })
    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(bigbench.SDIST_ENV, str(sdist))
    with pytest.raises(PromptinitError, match=r"python -m promptinit\.assets\.bigbench"):
        bigbench.bigbench_task_path("toy")
    assert bigbench.main() == 0
    root = bigbench.tasks_cache()
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        ".complete", "suite/sub/task.json", "toy/task.json"]
    assert "extracting" in capsys.readouterr().out
    assert bigbench.bigbench_task_path("suite/sub") == root / "suite/sub/task.json"
    sdist.unlink()  # a second run must not need the tarball
    assert bigbench.ensure_extracted() == root


def test_pip_failure_says_to_use_an_older_pip(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path))
    monkeypatch.delenv(bigbench.SDIST_ENV, raising=False)
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: invalid metadata")
    monkeypatch.setattr(bigbench.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(PromptinitError, match=r"pip<25"):
        bigbench.ensure_extracted()
    assert not bigbench.is_extracted()
