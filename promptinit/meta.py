"""Meta-task sampling over source tasks.

A meta-task is one source task seen through one few-shot draw: its support batches come from
the draw's train set and its query batch from the draw's dev set (CrossFit few-shot splits,
as in Qin et al. 2023). Every few-shot seed is usable, so a source task offers up to five
different support / query pools. An outer step draws a meta-batch of such tasks.

Sampling is a pure function of a ``random.Random`` that the method owns, so a method's
checkpoint (which stores that generator's state) replays the same meta-batches after a reload.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from promptinit.errors import PromptinitError
from promptinit.tasks.fewshot import SEEDS, FewShot, sample_few_shot
from promptinit.tasks.task import Example, Task


class TaskSampling(str, Enum):
    UNIFORM = "uniform"  # every source task equally often
    PROPORTIONAL = "proportional"  # in proportion to its few-shot pool size (train + dev)


@dataclass(frozen=True)
class MetaTask:
    """One task of a meta-batch.

    Attributes:
        task: source task name.
        seed: the few-shot draw the examples come from.
        support: one batch per inner step, from the draw's train set.
        query: one batch from the draw's dev set (disjoint from ``support``).
    """

    task: str
    seed: int
    support: tuple[tuple[Example, ...], ...]
    query: tuple[Example, ...]


def _draw(rng: random.Random, pool: Sequence[Example], k: int) -> tuple[Example, ...]:
    # Without replacement when the pool allows it; a pool smaller than the batch is drawn
    # with replacement rather than silently giving a smaller batch.
    return tuple(rng.sample(pool, k) if k <= len(pool) else rng.choices(pool, k=k))


class MetaTaskSampler:
    """Draws meta-batches of (support, query) tasks from the few-shot pools of source tasks.

    Args:
        tasks: the source tasks (names must be unique).
        seeds: the few-shot seeds whose draws may be used (default: all five).
        sampling: ``uniform`` or ``proportional`` task sampling.

    Example:
        >>> sampler = MetaTaskSampler(source_tasks)
        >>> batch = sampler.sample(random.Random(0), n_tasks=4, support_batch=2, inner_steps=1,
        ...                        query_batch=2)
    """

    def __init__(
        self, tasks: Sequence[Task], seeds: Sequence[int] = SEEDS, sampling: str | TaskSampling = TaskSampling.UNIFORM
    ):
        if not tasks:
            raise PromptinitError("no source tasks: a method needs at least one (check the partition's `source:` list)")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise PromptinitError(f"source tasks repeat a name: {sorted({n for n in names if names.count(n) > 1})}")
        if not seeds:
            raise PromptinitError("field 'seeds': empty; give at least one few-shot seed, e.g. [100]")
        self.tasks = {t.name: t for t in tasks}
        self.names = names
        self.seeds = tuple(int(s) for s in seeds)
        self.sampling = TaskSampling(sampling)
        self._draws: dict[tuple[str, int], FewShot] = {}
        # Few-shot draws are deterministic, so computing them lazily keeps results identical.
        self.weights = [self.pool_size(n) for n in names] if self.sampling is TaskSampling.PROPORTIONAL else None

    def fewshot(self, name: str, seed: int) -> FewShot:
        """The few-shot draw of source task ``name`` for ``seed`` (computed once)."""
        key = (name, seed)
        if key not in self._draws:
            # test_size=1: the held-out test set is never used upstream; keep it small.
            self._draws[key] = sample_few_shot(self.tasks[name], seed, test_size=1)
        return self._draws[key]

    def pool_size(self, name: str, seed: int | None = None) -> int:
        """Train + dev examples of a task's few-shot draw (default: the first seed's)."""
        fs = self.fewshot(name, self.seeds[0] if seed is None else seed)
        return len(fs.train) + len(fs.dev)

    def _pick_tasks(self, rng: random.Random, n: int) -> list[str]:
        if self.weights is not None:
            return rng.choices(self.names, weights=self.weights, k=n)
        if n <= len(self.names):
            return rng.sample(self.names, n)  # distinct tasks when there are enough
        return rng.choices(self.names, k=n)

    def sample(
        self, rng: random.Random, n_tasks: int, support_batch: int, inner_steps: int, query_batch: int
    ) -> list[MetaTask]:
        """Draw a meta-batch.

        Args:
            rng: the method's generator (advanced in place).
            n_tasks: tasks in the meta-batch.
            support_batch: support examples per inner step.
            inner_steps: support batches per task (one per inner step).
            query_batch: query examples per task (0: no query batch).

        Returns:
            ``n_tasks`` meta-tasks.
        """
        out = []
        for name in self._pick_tasks(rng, n_tasks):
            seed = rng.choice(self.seeds)
            fs = self.fewshot(name, seed)
            support = tuple(_draw(rng, fs.train, support_batch) for _ in range(inner_steps))
            query = _draw(rng, fs.dev, query_batch) if query_batch else ()
            out.append(MetaTask(name, seed, support, query))
        return out

    def sample_mixed(self, rng: random.Random, n_tasks: int, batch: int) -> list[MetaTask]:
        """Draw ``n_tasks`` tasks with ``batch`` examples each from train and dev together
        (multi-task learning uses both pools). The examples are in ``support[0]``."""
        out = []
        for name in self._pick_tasks(rng, n_tasks):
            seed = rng.choice(self.seeds)
            fs = self.fewshot(name, seed)
            out.append(MetaTask(name, seed, (_draw(rng, fs.train + fs.dev, batch),), ()))
        return out
