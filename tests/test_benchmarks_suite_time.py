"""``benchmarks/suite_time.py``: it reads pytest's real summary line, in one process and in workers."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import load_benchmark

suite_time = load_benchmark("suite_time")

TESTS = """
import pytest

def test_a(): pass
def test_b(): pass
def test_c(): pass
def test_fails(): assert False
@pytest.mark.skip(reason="here")
def test_skipped(): pass
@pytest.fixture
def broken(): raise RuntimeError("setup")
def test_error(broken): pass
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_counts_come_from_pytests_own_summary(tmp_path, workers):
    """3 passed, 1 failed, 1 skipped, 1 error, as pytest prints them (xdist prints its own line)."""
    (tmp_path / "test_mixed.py").write_text(TESTS)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", workers,
                          "test_mixed.py"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1, out.stdout
    assert suite_time.outcome(out.stdout) == {"passed": 3, "failed": 1, "skipped": 1, "errors": 1}, out.stdout


def test_no_summary_counts_nothing():
    assert suite_time.outcome("ImportError while loading conftest\n") == dict.fromkeys(suite_time.COUNTS, 0)


def test_table_gives_each_mode_its_ratio_to_one_process():
    rows = [{"workers": 0, "wall_s": 2000.0, **dict.fromkeys(suite_time.COUNTS, 0)},
            {"workers": 2, "wall_s": 1250.0, **dict.fromkeys(suite_time.COUNTS, 0)}]
    lines = suite_time.table(rows).splitlines()
    assert lines[2].startswith("| one process | 1 | 2000 |") and lines[2].endswith("| 1.00x |")
    assert lines[3].startswith("| pytest-xdist | 2 | 1250 |") and lines[3].endswith("| 1.60x |")
