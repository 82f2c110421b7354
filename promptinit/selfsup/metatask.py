"""A meta-task (support, query, aug query) and the seeded RNG helpers the samplers share."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promptinit.tasks.task import Example, Metric, Task, TaskKind


@dataclass(frozen=True)
class MetaTask:
    """One meta-task: adapt on ``support``, evaluate on ``query``.

    Attributes:
        format: how it was made (``nsp``, ``nss``, ``scsp``, ``scss``, ``scc``, or
            ``metapt-<grouping>``).
        cluster: the cluster (or group) its examples are drawn from.
        kind: classification (shared ``labels``) or multiple choice (letters per example).
        support: examples for the inner update.
        query: examples for the outer loss; shares no sentence with ``support``.
        aug_query: SUPMER curriculum mixup partner: the same format drawn from
            ``aug_cluster`` (empty for MetaPT).
        aug_cluster: the other cluster, ``-1`` when there is no aug set.
        labels: the verbalizer for classification formats, else empty.
        sentences: example uid -> corpus sentence indices it uses (anchor first, then the
            partner or the options in display order); empty for MetaPT.
        option_clusters: scc only: example uid -> the cluster id shown at each marker
            ``<c0>``, ``<c1>``, ... (see ``promptinit.selfsup.scc``).
        classes: scc only: the task's four clusters in option order (the cluster of (A)
            first); ``cluster`` is the first of them.
        aug_classes: scc only: the aug query set's four clusters; ``aug_cluster`` is the first.
    """

    format: str
    cluster: int
    kind: TaskKind
    support: tuple[Example, ...]
    query: tuple[Example, ...]
    aug_query: tuple[Example, ...] = ()
    aug_cluster: int = -1
    labels: tuple[str, ...] = ()
    sentences: Mapping[str, tuple[int, ...]] = field(default_factory=dict, compare=False, hash=False)
    option_clusters: Mapping[str, tuple[int, ...]] = field(default_factory=dict, compare=False, hash=False)
    classes: tuple[int, ...] = ()
    aug_classes: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.format}/" + "+".join(f"c{c}" for c in self.clusters)

    @property
    def clusters(self) -> tuple[int, ...]:
        """Every cluster the task's anchor sentences come from (one; four for scc)."""
        return self.classes or (self.cluster,)

    @property
    def aug_clusters(self) -> tuple[int, ...]:
        """Every cluster the aug query set's anchors come from (empty without an aug set)."""
        return self.aug_classes or ((self.aug_cluster,) if self.aug_cluster >= 0 else ())

    def as_task(self) -> Task:
        """Support + query as a ``Task`` that any backbone scores (scc markers stay text)."""
        return Task(
            self.name,
            self.kind,
            Metric.ACCURACY,
            self.support + self.query,
            labels=self.labels,
            source=f"selfsup:{self.format}",
        )


def rng_state(rng: random.Random) -> list[Any]:
    """``random.Random`` state as plain JSON values."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list[Any]) -> None:
    """Inverse of ``rng_state``."""
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


def balanced(values: list, n: int, rng: random.Random) -> list:
    """``n`` values in random order whose counts differ by at most one."""
    out: list = []
    while len(out) < n:
        block = list(values)
        rng.shuffle(block)
        out += block
    out = out[:n]
    rng.shuffle(out)
    return out
