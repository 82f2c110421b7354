"""Fixtures for the method tests: a few small source tasks and cheap method settings."""
from __future__ import annotations

import random

import pytest

from promptinit.methods.base import Method
from tests.conftest import keyword_task

# Cheap settings per method (small meta-batches, few inner steps), used wherever a test runs
# every method; the maths does not depend on the sizes.
CHEAP = {
    Method.PT.value: {},
    Method.MTL.value: {"batch_size": 4, "meta_batch_size": 2},
    Method.MAML.value: {"meta_batch_size": 2, "inner_lr": 0.1},
    Method.FOMAML.value: {"meta_batch_size": 2, "inner_batch_size": 2, "query_batch_size": 2, "inner_lr": 0.1},
    Method.REPTILE.value: {"meta_batch_size": 2, "inner_steps": 3, "inner_batch_size": 2, "inner_lr": 0.1},
}
ALL_METHODS = list(CHEAP)


def source_tasks(n_tasks: int = 3, n: int = 120):
    """Keyword tasks with different keywords and label words (and so different lengths)."""
    words = [("good", "bad"), ("sunny", "rainy"), ("up", "down"), ("hot", "cold")]
    labels = [("yes", "no"), ("positive", "negative"), ("true", "false"), ("a", "b")]
    return [keyword_task(f"src{i}", n=n, seed=i, words=words[i], labels=labels[i]) for i in range(n_tasks)]



@pytest.fixture
def tasks():
    return source_tasks()


def peek(method):
    """The meta-batch ``method.step()`` would draw next, without advancing its generator."""
    saved = method.state.rng.getstate()
    batch = method.sample()
    method.state.rng.setstate(saved)
    return batch


def rng_copy(method) -> random.Random:
    r = random.Random()
    r.setstate(method.state.rng.getstate())
    return r
