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


def test_pip_failure_says_to_use_an_older_pip_and_falls_back_to_the_shipped_subset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path))
    monkeypatch.delenv(bigbench.SDIST_ENV, raising=False)
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: invalid metadata")
    monkeypatch.setattr(bigbench.subprocess, "run", lambda *a, **k: failed)
    bigbench.ensure_extracted()
    out = capsys.readouterr().out
    assert "pip<25" in out and "invalid metadata" in out and bigbench.SUBSET.name in out
    assert (bigbench.tasks_cache() / bigbench.MARKER).read_text().startswith(bigbench.SUBSET_NOTE)


def test_the_shipped_subset_holds_every_bigbench_task_the_catalog_and_corpus_use():
    from pathlib import Path

    import yaml

    from promptinit.selfsup.corpus import DEFAULT_SOURCES

    catalog = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "tasks.yaml").read_text())
    wanted = {t["source"]["task"] for t in catalog["tasks"] if t["source"]["type"] == "bigbench"}
    wanted |= {s.removeprefix("bigbench:") for s in DEFAULT_SOURCES if s.startswith("bigbench:")} | {"topical_chat"}
    with tarfile.open(bigbench.SUBSET, mode="r:xz") as tar:
        shipped = {m.name.removesuffix("/task.json") for m in tar.getmembers() if m.isfile()}
    assert wanted <= shipped, sorted(wanted - shipped)


def test_without_the_sdist_the_cache_is_filled_from_the_shipped_subset(tmp_path, monkeypatch, capsys, bigbench_files):
    """The index stopped serving bigbench 1.0.0 (4 Dec 2026): install still works, with the
    catalog's tasks, byte for byte those of the cache install.sh filled (from the sdist where it
    could still be downloaded, as on the machine the subset was written on)."""
    def no_index(dest):
        raise PromptinitError("`pip download --no-deps bigbench==1.0.0` failed (No matching distribution found)")

    full = bigbench.tasks_cache()
    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(bigbench.SDIST_ENV, raising=False)
    monkeypatch.setattr(bigbench, "_download_sdist", no_index)
    assert bigbench.main() == 0
    assert "shipped with promptinit" in capsys.readouterr().out
    strategyqa = bigbench.bigbench_task_path("strategyqa")
    assert strategyqa.read_bytes() == (full / "strategyqa" / "task.json").read_bytes()
    with pytest.raises(PromptinitError, match=r"'arithmetic': not among the catalog's tasks .*PROMPTINIT_BIGBENCH_SDIST"):
        bigbench.bigbench_task_path("arithmetic")
