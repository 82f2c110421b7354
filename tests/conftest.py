"""Shared fixtures: tiny random backbones of both families and small synthetic tasks."""
from __future__ import annotations

import random

import pytest
import torch

from promptinit.backbones import Backbone, BackboneConfig
from promptinit.tasks.task import Example, Metric, Task, TaskKind

CAUSAL = "tiny-llama"
SEQ2SEQ = "tiny-t5"


def tiny_backbone(model: str = CAUSAL, dtype: str = "float32", prompt_length: int = 4) -> Backbone:
    return Backbone(BackboneConfig(model, prompt_length=prompt_length, dtype=dtype, device="cpu"))


@pytest.fixture(params=[CAUSAL, SEQ2SEQ])
def backbone64(request) -> Backbone:
    """A tiny backbone of each family in float64 (for gradient checks)."""
    return tiny_backbone(request.param, "float64")


def keyword_task(name: str = "keyword", n: int = 400, seed: int = 0, words=("good", "bad"),
                 labels=("yes", "no")) -> Task:
    """A learnable classification task: the label is given by the input's last word."""
    rng = random.Random(seed)
    fillers = ["the", "a", "movie", "plot", "was", "very", "film", "so", "it", "story", "really"]
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
