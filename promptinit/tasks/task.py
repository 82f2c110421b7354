"""The one text-to-text task type every loader produces and every backbone scores."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum


class TaskKind(str, Enum):
    CLASSIFICATION = "classification"  # fixed label set shared by all examples (a verbalizer)
    MULTIPLE_CHOICE = "multiple_choice"  # each example brings its own options
    GENERATION = "generation"  # open answer, greedy decoding


class Metric(str, Enum):
    ACCURACY = "accuracy"
    MACRO_F1 = "macro_f1"
    EXACT_MATCH = "exact_match"
    TOKEN_F1 = "token_f1"
    ROUGE_L = "rouge_l"


def content_id(*parts: str) -> str:
    """Stable id of an example's content (used for de-duplication and disjointness checks)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Example:
    """One rendered example.

    Attributes:
        input: the input text with the task's template already applied.
        target: the gold answer text; for classification / multiple choice one of ``options``.
        options: answer candidates, scored by log-likelihood; empty for generation.
        references: all acceptable answers for generation metrics (``target`` is the first).
        uid: content id; two examples with the same uid are the same example.
    """

    input: str
    target: str
    options: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    uid: str = ""

    def __post_init__(self) -> None:
        if not self.uid:
            object.__setattr__(self, "uid", content_id(self.input, self.target, *self.options))
        if not self.references:
            object.__setattr__(self, "references", (self.target,))
        if self.options and self.target not in self.options:
            raise ValueError(
                f"Example target {self.target!r} is not one of its options {list(self.options)}; "
                "fix the verbalizer or the label column."
            )

    @property
    def answer_index(self) -> int:
        """Index of ``target`` in ``options`` (classification and multiple choice)."""
        return self.options.index(self.target)


@dataclass(frozen=True)
class Task:
    """A named, typed task with all its (de-duplicated) examples.

    Attributes:
        name: catalog name.
        kind: classification, multiple_choice or generation.
        metric: the metric reported on test.
        examples: every usable example (train/dev/test are sampled from these).
        test_examples: a held-out split shipped by the source, if any; otherwise the sampler
            holds out part of ``examples`` by content hash.
        labels: the verbalizer of a classification task (all options), else empty.
    """

    name: str
    kind: TaskKind
    metric: Metric
    examples: tuple[Example, ...]
    test_examples: tuple[Example, ...] = ()
    labels: tuple[str, ...] = ()
    source: str = ""  # where it came from, for humans and fingerprints
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def fingerprint(self) -> str:
        """Hash of the task's content: changes whenever an example or the split changes."""
        h = hashlib.sha256(f"{self.name}|{self.kind.value}|{self.metric.value}".encode())
        for ex in self.examples:
            h.update(ex.uid.encode())
        h.update(b"|test|")
        for ex in self.test_examples:
            h.update(ex.uid.encode())
        return h.hexdigest()[:16]
