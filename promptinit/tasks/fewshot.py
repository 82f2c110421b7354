"""CrossFit-style few-shot sampling: deterministic, disjoint train / dev / test."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass

from promptinit.errors import PromptinitError
from promptinit.tasks.task import Example, Task, TaskKind

SEEDS: tuple[int, ...] = (100, 13, 21, 42, 87)
PER_CLASS = 16  # classification: examples per class in train and again in dev
PER_TASK = 32  # other kinds: examples in train and again in dev
HELD_OUT_FRACTION = 0.3  # share of a single-split source kept aside for test
TEST_SEED = 0  # the test subset does not depend on the few-shot seed


@dataclass(frozen=True)
class FewShot:
    """One few-shot draw of a task."""

    task: Task
    seed: int
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]

    @property
    def name(self) -> str:
        return self.task.name


def _is_held_out(ex: Example) -> bool:
    # Hash-based, so adding examples to a source never moves old ones between pools.
    digest = hashlib.sha256(ex.uid.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT_FRACTION


def split_pools(task: Task) -> tuple[list[Example], list[Example]]:
    """Split a task into (few-shot pool, held-out test pool), disjoint by uid and by input."""
    if task.test_examples:
        test = list(task.test_examples)
        test_inputs = {e.input for e in test}
        pool = [e for e in task.examples if e.input not in test_inputs]
    else:
        pool = [e for e in task.examples if not _is_held_out(e)]
        test = [e for e in task.examples if _is_held_out(e)]
    return pool, test


def sample_few_shot(
    task: Task,
    seed: int,
    *,
    per_class: int = PER_CLASS,
    per_task: int = PER_TASK,
    test_size: int | None = 200,
    test_per_seed: bool = False,
) -> FewShot:
    """Draw train and dev sets CrossFit-style and a capped held-out test set.

    Args:
        task: the task to sample from.
        seed: few-shot seed (the paper uses 100, 13, 21, 42, 87).
        per_class: classification: examples per class in train and in dev.
        per_task: other kinds: examples in train and in dev.
        test_size: cap on the test set (``None`` keeps all held-out examples).
        test_per_seed: draw the capped test set with the few-shot seed, so each seed scores on
            a sample of its own and an interval over seeds covers the test sample's variance;
            False: one sample (``TEST_SEED``) for every seed, as the papers' scripts.

    Returns:
        A ``FewShot`` whose train, dev and test share no example (checked).
    """
    pool, test = split_pools(task)
    rng = random.Random(seed)
    if task.kind is TaskKind.CLASSIFICATION:
        by_label: dict[str, list[Example]] = defaultdict(list)
        for ex in pool:
            by_label[ex.target].append(ex)
        train: list[Example] = []
        dev: list[Example] = []
        for label in sorted(by_label):
            items = by_label[label][:]
            rng.shuffle(items)
            k = min(per_class, len(items) // 2)
            train += items[:k]
            dev += items[k : 2 * k]
        rng.shuffle(train)
        rng.shuffle(dev)
    else:
        items = pool[:]
        rng.shuffle(items)
        k = min(per_task, len(items) // 2)
        train, dev = items[:k], items[k : 2 * k]
    if not train or not dev or not test:
        raise PromptinitError(
            f"task {task.name!r}: too few examples for a few-shot split "
            f"(pool {len(pool)}, held-out {len(test)}); give it a larger source or drop it from the catalog"
        )
    if test_size is not None and len(test) > test_size:
        test = random.Random(f"test/{seed}" if test_per_seed else TEST_SEED).sample(test, test_size)
    _check_disjoint(task.name, train, dev, test)
    return FewShot(task=task, seed=seed, train=tuple(train), dev=tuple(dev), test=tuple(test))


def _check_disjoint(name: str, *splits: list[Example]) -> None:
    for key in ("uid", "input"):
        seen: set[str] = set()
        for split in splits:
            values = {getattr(e, key) for e in split}
            if seen & values:
                raise AssertionError(f"task {name!r}: train/dev/test share an example ({key})")
            seen |= values
