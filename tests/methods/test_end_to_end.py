"""End to end on a tiny model: inits learned on source tasks that share structure with the
targets beat the sampled-vocabulary PT baseline on those targets (positive ARG)."""
from __future__ import annotations


import pytest

from promptinit.evaluation import TuneConfig, evaluate_init
from promptinit.methods import build_method
from promptinit.paths import CACHE_ENV
from promptinit.tasks.task import Task
from tests.conftest import keyword_task, tiny_backbone

# Every task follows one rule (keyword "good" -> "yes", "bad" -> "no") but draws its
# surrounding words from its own vocabulary, so a prompt that learned the rule on the sources
# transfers to targets whose inputs it has never seen.
VOCABULARIES = [
    ["the", "a", "movie", "plot", "was", "very", "film", "so"],
    ["my", "day", "felt", "quite", "rather", "weather", "today", "is"],
    ["food", "at", "this", "place", "tasted", "really", "dish", "our"],
    ["new", "phone", "battery", "screen", "seems", "pretty", "design", "its"],
    ["hotel", "room", "staff", "were", "stay", "bed", "view", "clean"],  # target
    ["book", "ending", "author", "chapter", "writing", "felt", "story", "plain"],  # target
]


def rule_task(name: str, vocabulary: list[str], seed: int, n: int = 300) -> Task:
    return keyword_task(name, n=n, seed=seed, fillers=vocabulary)


# A short downstream budget, so the baseline has room to improve on; upstream settings chosen
# for the tiny random model (its embeddings have std 0.3: Adam steps of 0.03 are gentle).
TUNE = TuneConfig(lr=0.3, steps=20, eval_every=5, test_size=60)
UPSTREAM = {
    "mtl": ({"lr": 0.03, "optimizer": "adam", "batch_size": 16, "meta_batch_size": 4}, 200),
    "maml": ({"inner_lr": 0.1, "outer_lr": 0.03, "outer_optimizer": "adam", "inner_batch_size": 4,
              "query_batch_size": 4, "meta_batch_size": 4}, 200),
}


@pytest.mark.parametrize("name", list(UPSTREAM))
def test_meta_learned_init_beats_pt_baseline_on_related_targets(name, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # baselines (and tiny models) cached here
    bb = tiny_backbone(prompt_length=8)
    sources = [rule_task(f"src{i}", VOCABULARIES[i], seed=i) for i in range(4)]
    targets = [rule_task(f"tgt{i}", VOCABULARIES[i], seed=i) for i in (4, 5)]
    config, steps = UPSTREAM[name]
    method = build_method(name, bb, sources, config, seed=0)
    for _ in range(steps):
        method.step()
    arg, results, baseline = evaluate_init(bb, method.prompt, targets, (100, 13), TUNE, progress=False)
    assert arg.mean > 0.1, (str(arg), {k: (r.test, baseline[k].test) for k, r in results.items()})
    assert all(v > 0 for v in arg.per_seed.values()), arg.per_seed
