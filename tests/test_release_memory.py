"""``trainables.trainable.release_memory``: what a trial freed goes back to the OS before the
actor's next trial (Tune reuses actors). Without it glibc keeps freed heap pages resident: study
v2's MTL actors grew to 8-9 GB by their second trial; ``malloc_trim(0)`` returned 6 GB of them."""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
import torch

from promptinit.trainables.trainable import release_memory

STATUS = Path("/proc/self/status")


def resident_mb() -> float:
    return int(STATUS.read_text().split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(not STATUS.exists() or not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="glibc on Linux")
def test_freed_tensors_leave_the_resident_set():
    """5,000 tensors of 64 KB (320 MB) live on the heap; freed, they stay resident until the trim.
    Measured here: 1.63 GB -> 0.37 GB for 20,000 of them (7 Dec)."""
    held = [torch.ones(16_000) for _ in range(5_000)]
    last = held[-1]  # the heap's top stays in use: a plain top-of-heap trim would return nothing
    del held
    before = resident_mb()
    assert release_memory() == 1
    assert before - resident_mb() > 160, (before, resident_mb())  # at least half of the 320 MB freed
    assert last.sum() == 16_000
