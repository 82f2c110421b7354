"""CrossFit few-shot sampling: sizes, determinism, disjointness."""
from __future__ import annotations

from collections import Counter

import pytest

from promptinit.errors import PromptinitError
from promptinit.tasks import SEEDS, Example, Metric, Task, TaskKind, sample_few_shot


def _classification(per_label: int = 100, labels=("neg", "neu", "pos"), test=()) -> Task:
    examples = tuple(Example(f"text {lab} {i}", lab, options=labels) for lab in labels for i in range(per_label))
    return Task("toy_cls", TaskKind.CLASSIFICATION, Metric.ACCURACY, examples, test_examples=tuple(test), labels=labels)


def _multiple_choice(n: int = 400) -> Task:
    examples = tuple(Example(f"question {i}", f"a{i}", options=(f"a{i}", f"b{i}")) for i in range(n))
    return Task("toy_mc", TaskKind.MULTIPLE_CHOICE, Metric.ACCURACY, examples)


def _ids(split) -> list[str]:
    return [e.uid for e in split]


def test_same_seed_gives_the_same_draw():
    task = _classification()
    a, b = sample_few_shot(task, 13), sample_few_shot(task, 13)
    assert _ids(a.train) == _ids(b.train) and _ids(a.dev) == _ids(b.dev) and _ids(a.test) == _ids(b.test)


def test_different_seeds_give_different_draws_but_the_same_test_set():
    task = _multiple_choice()
    draws = [sample_few_shot(task, s) for s in SEEDS]
    assert len({tuple(sorted(_ids(d.train))) for d in draws}) == len(SEEDS)
    assert len({tuple(_ids(d.test)) for d in draws}) == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_train_dev_test_are_disjoint(seed):
    for task in (_classification(), _multiple_choice()):
        fs = sample_few_shot(task, seed)
        splits = [set(_ids(fs.train)), set(_ids(fs.dev)), set(_ids(fs.test))]
        assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
        inputs = [{e.input for e in s} for s in (fs.train, fs.dev, fs.test)]
        assert not (inputs[0] & inputs[1] or inputs[0] & inputs[2] or inputs[1] & inputs[2])


def test_classification_draws_16_per_class_for_train_and_dev():
    fs = sample_few_shot(_classification(), 100)
    assert Counter(e.target for e in fs.train) == {"neg": 16, "neu": 16, "pos": 16}
    assert Counter(e.target for e in fs.dev) == {"neg": 16, "neu": 16, "pos": 16}


def test_other_kinds_draw_32_plus_32_and_test_is_capped():
    fs = sample_few_shot(_multiple_choice(), 42, test_size=50)
    assert (len(fs.train), len(fs.dev), len(fs.test)) == (32, 32, 50)
    assert len(sample_few_shot(_multiple_choice(), 42, test_size=None).test) > 50


def test_a_shipped_test_split_is_used_as_test():
    shipped = [Example(f"held out {i}", "pos", options=("neg", "neu", "pos")) for i in range(10)]
    fs = sample_few_shot(_classification(test=shipped), 21)
    assert {e.input for e in fs.test} == {e.input for e in shipped}


def test_too_few_examples_raise():
    with pytest.raises(PromptinitError, match="too few examples"):
        sample_few_shot(_classification(per_label=1, labels=("a", "b")), 13)


def test_each_seed_can_draw_its_own_test_sample():
    """``test_per_seed``: the capped test sample depends on the few-shot seed (so intervals over
    seeds cover test-sample variance); off, every seed scores on the same sample. Train and dev
    do not depend on the setting."""
    from tests.conftest import keyword_task

    task = keyword_task(n=400)
    shared = {s: sample_few_shot(task, s, test_size=50) for s in (100, 13)}
    own = {s: sample_few_shot(task, s, test_size=50, test_per_seed=True) for s in (100, 13)}
    assert shared[100].test == shared[13].test
    assert set(own[100].test) != set(own[13].test) and len(own[100].test) == len(own[13].test) == 50
    assert own[100].test == sample_few_shot(task, 100, test_size=50, test_per_seed=True).test  # repeatable
    held_out = set(sample_few_shot(task, 100, test_size=None).test)
    for s in (100, 13):
        assert (own[s].train, own[s].dev) == (shared[s].train, shared[s].dev)
        assert set(own[s].test) <= held_out


def test_the_setting_enters_keys_only_when_on():
    """Off, ``TuneConfig.key_fields`` (job keys, Ray payloads) and the PT-baseline cache key are
    what they were before the setting existed; on, both change."""
    from promptinit.evaluation import _tuning_key
    from promptinit.tuning import TuneConfig

    off, on = TuneConfig(steps=20), TuneConfig(steps=20, test_per_seed=True)
    assert "test_per_seed" not in off.key_fields() and on.key_fields()["test_per_seed"] is True
    assert TuneConfig(**off.key_fields()) == off and TuneConfig(**on.key_fields()) == on
    assert "test_per_seed" not in _tuning_key(off) and _tuning_key(on) != _tuning_key(off)
