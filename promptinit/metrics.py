"""Task metrics, each in [0, 1]: accuracy, macro-F1, exact match, token F1, ROUGE-L."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Sequence

from promptinit.tasks.task import Metric

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def accuracy(preds: Sequence[str], golds: Sequence[Sequence[str]]) -> float:
    return sum(p == g[0] for p, g in zip(preds, golds, strict=True)) / max(len(preds), 1)


def macro_f1(preds: Sequence[str], golds: Sequence[Sequence[str]]) -> float:
    from sklearn.metrics import f1_score

    # Average over the gold classes only; a predicted label that never occurs in gold
    # still costs precision of nothing and recall of the class it should have been.
    labels = sorted({g[0] for g in golds})
    return float(f1_score([g[0] for g in golds], list(preds), labels=labels, average="macro", zero_division=0))


def _max_over_refs(fn: Callable[[str, str], float]):
    def metric(preds: Sequence[str], golds: Sequence[Sequence[str]]) -> float:
        return sum(max(fn(p, r) for r in refs) for p, refs in zip(preds, golds, strict=True)) / max(len(preds), 1)

    return metric


def _em(pred: str, ref: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(ref))


def _token_f1(pred: str, ref: str) -> float:
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return float(p == r)
    common = sum((collections.Counter(p) & collections.Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def _rouge_l(pred: str, ref: str) -> float:
    return _rouge_scorer().score(ref, pred)["rougeL"].fmeasure


_SCORER = None


def _rouge_scorer():
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _SCORER


METRICS: dict[Metric, Callable[[Sequence[str], Sequence[Sequence[str]]], float]] = {
    Metric.ACCURACY: accuracy,
    Metric.MACRO_F1: macro_f1,
    Metric.EXACT_MATCH: _max_over_refs(_em),
    Metric.TOKEN_F1: _max_over_refs(_token_f1),
    Metric.ROUGE_L: _max_over_refs(_rouge_l),
}


def compute(metric: Metric | str, preds: Sequence[str], golds: Sequence[Sequence[str]]) -> float:
    """Score predictions against references (``golds[i]`` lists every acceptable answer)."""
    return METRICS[Metric(metric)](preds, golds)
