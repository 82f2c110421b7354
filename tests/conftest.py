"""Shared fixtures: tiny random backbones of both families and small synthetic tasks."""
from __future__ import annotations

import importlib.util
import os
import sys

import random
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from promptinit.assets import TINY_MODELS, resolve_model
from promptinit.backbones import Backbone, BackboneConfig
from promptinit.paths import CACHE_ENV, cache_dir
from promptinit.tasks.task import Example, Metric, Task, TaskKind

CAUSAL = "tiny-llama"
SEQ2SEQ = "tiny-t5"


def pytest_sessionstart(session):
    """Build the tiny models before any test captures output: the first build shows a progress
    bar on stderr, which would otherwise land in whichever test runs first and break the tests
    that check an error is one line (they then passed or failed by test order)."""
    for name in TINY_MODELS:
        resolve_model(name)


@pytest.fixture(autouse=True)
def _one_thread(request):
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    threads' spin-waiting makes each step ~20x slower. Slow tests (the real model) keep them,
    unless the suite runs in parallel workers (pytest-xdist, the default `-n 2`): then every core
    already has a worker, and a second thread would spin-wait against the other worker."""
    if request.node.get_closest_marker("slow") and not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextmanager
def fresh_cache(path: Path):
    """``PROMPTINIT_CACHE`` at ``path``, with the real cache's BIG-bench files and built models
    linked in: they are inputs of the tests that use this, not what is tested."""
    real = cache_dir()
    for sub in ("bigbench", "models"):
        if (real / sub).is_dir():
            (path / sub).symlink_to(real / sub, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(path))
        yield mp


def tiny_backbone(model: str = CAUSAL, dtype: str = "float32", prompt_length: int = 4) -> Backbone:
    return Backbone(BackboneConfig(model, prompt_length=prompt_length, dtype=dtype, device="cpu"))


@pytest.fixture(params=[CAUSAL, SEQ2SEQ])
def backbone64(request) -> Backbone:
    """A tiny backbone of each family in float64 (for gradient checks)."""
    return tiny_backbone(request.param, "float64")


FILLERS = ("the", "a", "movie", "plot", "was", "very", "film", "so", "it", "story", "really")


def keyword_task(name: str = "keyword", n: int = 400, seed: int = 0, words=("good", "bad"),
                 labels=("yes", "no"), fillers=FILLERS) -> Task:
    """A learnable classification task: the label is given by the input's last word."""
    rng = random.Random(seed)
    examples, seen = [], set()
    while len(examples) < n:
        k = rng.randrange(2)
        text = f"{' '.join(rng.sample(fillers, 3))} {words[k]} ->"
        if text not in seen:
            seen.add(text)
            examples.append(Example(text, labels[k], tuple(labels)))
    return Task(name, TaskKind.CLASSIFICATION, Metric.ACCURACY, tuple(examples), labels=tuple(labels))


@pytest.fixture
def tiny_task() -> Task:
    return keyword_task()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks/ is not a package), registered in
    ``sys.modules`` first, as its dataclasses need."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
