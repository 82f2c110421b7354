"""Meta-task sampling: support from few-shot train pools, query from dev pools."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from promptinit.errors import PromptinitError
from promptinit.meta import MetaTaskSampler
from promptinit.tasks.fewshot import SEEDS
from tests.conftest import keyword_task
from tests.methods.conftest import source_tasks


def test_support_comes_from_train_and_query_from_dev_of_the_same_draw():
    sampler = MetaTaskSampler(source_tasks())
    rng = random.Random(0)
    for _ in range(20):
        for mt in sampler.sample(rng, n_tasks=3, support_batch=4, inner_steps=2, query_batch=3):
            fs = sampler.fewshot(mt.task, mt.seed)
            assert len(mt.support) == 2 and all(len(b) == 4 for b in mt.support)
            assert len(mt.query) == 3
            assert all(ex in fs.train for b in mt.support for ex in b)
            assert all(ex in fs.dev for ex in mt.query)
            assert not {e.uid for b in mt.support for e in b} & {e.uid for e in mt.query}


def test_meta_batch_has_distinct_tasks_and_uses_every_seed():
    sampler = MetaTaskSampler(source_tasks())
    rng = random.Random(1)
    seeds = set()
    for _ in range(30):
        batch = sampler.sample(rng, n_tasks=3, support_batch=2, inner_steps=1, query_batch=2)
        assert len({mt.task for mt in batch}) == 3
        seeds |= {mt.seed for mt in batch}
    assert seeds == set(SEEDS)


def test_sampling_is_a_function_of_the_generator():
    a = MetaTaskSampler(source_tasks()).sample(random.Random(5), 2, 2, 3, 2)
    b = MetaTaskSampler(source_tasks()).sample(random.Random(5), 2, 2, 3, 2)
    assert a == b


def test_proportional_sampling_favours_larger_pools():
    small = keyword_task("small", n=40, seed=1)  # ~14 train examples per class pair
    big = keyword_task("big", n=400, seed=2, words=("x", "y"), labels=("p", "q"))
    big_multi = keyword_task("big4", n=400, seed=3, words=("u", "v"), labels=("r", "s"))
    sampler = MetaTaskSampler([small, big, big_multi], sampling="proportional")
    assert sampler.weights[0] < sampler.weights[1]
    counts = Counter(mt.task for mt in sampler.sample(random.Random(0), 3000, 1, 1, 0))
    expected = sampler.weights[0] / sum(sampler.weights)
    assert counts["small"] / 3000 == pytest.approx(expected, abs=0.03)
    uniform = Counter(mt.task for mt in MetaTaskSampler([small, big]).sample(random.Random(0), 1000, 1, 1, 0))
    assert uniform["small"] == pytest.approx(500, abs=60)


def test_empty_or_repeated_sources_are_refused():
    with pytest.raises(PromptinitError, match="no source tasks"):
        MetaTaskSampler([])
    with pytest.raises(PromptinitError, match="repeat"):
        MetaTaskSampler([keyword_task("a"), keyword_task("a")])
