"""Shared fixtures for the task tests."""
from __future__ import annotations

import pytest

from promptinit.assets.bigbench import is_extracted
from promptinit.paths import package_dir


@pytest.fixture(scope="session")
def bigbench_files() -> None:
    """Fail (not skip) when the BIG-bench task files are missing: the catalog needs them."""
    if not is_extracted() and package_dir("bigbench") is None:
        pytest.fail("BIG-bench task files are missing: run `python -m promptinit.assets.bigbench` (once, ~1 min)")
