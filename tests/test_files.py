import json
import os
import stat

import pytest

from promptinit import files
from promptinit.files import atomic_folder, atomic_write, atomic_write_json


def test_atomic_write_writes_text_and_bytes_and_creates_folders(tmp_path):
    text = atomic_write(tmp_path / "a" / "b.txt", "héllo\n")
    data = atomic_write(tmp_path / "c.bin", b"\x00\x01")
    assert text.read_bytes() == "héllo\n".encode() and data.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.txt", "c.bin"]


def test_atomic_write_json_passes_dumps_arguments(tmp_path):
    path = atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [2]}, indent=1, sort_keys=True)
    assert path.read_text() == json.dumps({"b": 1, "a": [2]}, indent=1, sort_keys=True)


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    path = atomic_write(tmp_path / "atomic", "x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "keep.txt", "old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_unserialisable_json_leaves_nothing_behind(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "x.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "out"
    with atomic_folder(dest) as staging:
        (staging / "one").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(dest) as staging:
            (staging / "two").write_text("2")
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in dest.iterdir()] == ["one"]


def test_temp_files_are_named_after_their_target(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", spy)
    atomic_write(tmp_path / "target.json", "{}")
    assert seen[0].startswith("target.json.") and seen[0].endswith(files.TEMP_SUFFIX)
