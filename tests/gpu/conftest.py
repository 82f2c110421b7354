"""GPU tests: skipped (with the reason) where torch sees no CUDA device, and a private local
Ray for the trial-packing test.

``benchmarks/gpu_check.sh`` runs them (``pytest -m gpu tests/gpu``) with the other GPU checks.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from tests.platform.conftest import kill_ray_under

NO_CUDA = ("needs a CUDA GPU: torch.cuda.is_available() is False here "
           "(run benchmarks/gpu_check.sh on a machine with one)")


def pytest_collection_modifyitems(config, items):
    # Every test marked `gpu`, wherever it lives; checked once, after collection, so collecting
    # the suite never touches CUDA.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture
def local_ray(monkeypatch):
    """The ``ray`` module, for a local Ray of this test alone.

    Its temp dir is a fresh short folder (Ray's socket paths must stay under ~107 characters),
    made under ``$TMPDIR`` so that a caller that owns ``$TMPDIR`` (gpu_check.sh) can clean up
    after a killed run; ``RAY_ADDRESS`` is unset, so ``ray.init`` never joins another cluster.
    Afterwards Ray is shut down and whatever it left running under that folder is killed.
    """
    import ray

    folder = Path(tempfile.mkdtemp(prefix="ray-"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        kill_ray_under(folder)
        shutil.rmtree(folder, ignore_errors=True)
