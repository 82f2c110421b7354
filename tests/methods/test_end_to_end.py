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


# A short, gentle downstream budget: the baseline has room to improve on, and its result does not
# hinge on rounding. (With the former lr 0.3 Adafactor, PT from the vocabulary init on tgt4 with
# seed 13 scored 0.60 test with one thread, 0.53 with two, and 0.53 or 0.85 tuned in a batch with
# other problems: the comparison was with a coin flip. With Adam at 0.03 all four baseline
# scores, 0.717 / 0.817 / 0.717 / 0.65, are the same in every one of those ways.) Upstream
# settings chosen for the tiny random model (its embeddings have std 0.3: Adam steps of 0.03
# are gentle).
TUNE = TuneConfig(lr=0.03, optimizer="adam", steps=20, eval_every=5, test_size=60)
UPSTREAM = {
    "mtl": ({"lr": 0.03, "optimizer": "adam", "batch_size": 16, "meta_batch_size": 4}, 400),
    "maml": ({"inner_lr": 0.1, "outer_lr": 0.03, "outer_optimizer": "adam", "inner_batch_size": 4,
              "query_batch_size": 4, "meta_batch_size": 4}, 400),
}
# Lower bounds on ARG (mean over the few-shot seeds 100, 13) and on its smallest per-seed value,
# measured over the upstream seed (initial prompt and meta-batches) 0..4:
#   mtl  ARG 0.359, 0.321, 0.341, 0.314, 0.337 (range 0.045): 0.314 - 3 * 0.045 = 0.179 -> 0.17
#        min per seed 0.349, 0.317, 0.333, 0.292, 0.302 (range 0.057): 0.292 - 3 * 0.057 = 0.121 -> 0.12
#   maml ARG 0.342, 0.340, 0.281, 0.327, 0.334 (range 0.061): 0.281 - 3 * 0.061 = 0.098 -> 0.09
#        min per seed 0.326, 0.337, 0.256, 0.294, 0.320 (range 0.081): 0.256 - 3 * 0.081 = 0.013 -> 0.01
# (200 upstream steps and the former tuning: ARG ranged 0.50-0.88 (mtl), 0.30-0.75 (maml), a
# spread no bound above 0 survives.)
BOUNDS = {"mtl": (0.17, 0.12), "maml": (0.09, 0.01)}


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
    mean_bound, seed_bound = BOUNDS[name]
    assert arg.mean > mean_bound, (str(arg), {k: (r.test, baseline[k].test) for k, r in results.items()})
    assert min(arg.per_seed.values()) > seed_bound, arg.per_seed
