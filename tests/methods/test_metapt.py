"""MetaPT: every grouping builds meta-tasks and trains; the step is MAML's on those tasks;
exact resumption."""
from __future__ import annotations

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.methods import build_method, load_checkpoint, make_config, save_checkpoint
from promptinit.methods.metapt import MetaPT, pretraining_pool  # noqa: F401 (registers metapt)
from promptinit.paths import CACHE_ENV
from promptinit.selfsup import clustering
from tests.conftest import CAUSAL, tiny_backbone
from tests.methods.conftest import source_tasks
from tests.methods.test_supmer import hashed_bow

CHEAP = {"num_clusters": 4, "meta_batch_size": 2, "inner_batch_size": 2, "query_batch_size": 2, "inner_lr": 0.1,
         "outer_lr": 0.03, "outer_optimizer": "adam"}


@pytest.fixture(autouse=True)
def _cache_and_encoder(tmp_path, monkeypatch):
    """A fresh cache per test and a fast sentence encoder (the real one is tested in tests/selfsup)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(clustering, "encode_sentences", lambda texts, *a, **k: hashed_bow(texts))


@pytest.mark.parametrize("grouping", ["kmeans", "lda", "random", "by-label"])
def test_every_grouping_builds_meta_tasks_and_a_few_steps_run(grouping):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    tasks = source_tasks(3, n=40)
    m = build_method("metapt", bb, tasks, {**CHEAP, "grouping": grouping}, seed=0)
    n_groups = len(m.groups)
    assert n_groups == (6 if grouping == "by-label" else 4)  # by-label: one group per label word
    assert sum(len(g.examples) for g in m.groups) == 120
    batch = m.sample()
    for mt in batch:
        group = next(g for g in m.groups if g.name == mt.task)
        used = [ex.uid for b in mt.support for ex in b] + [ex.uid for ex in mt.query]
        assert len(set(used)) == len(used) == 4  # support and query disjoint
        assert set(used) <= {ex.uid for ex in group.examples}
    start = m.prompt.clone()
    for _ in range(2):
        metrics = m.step()
    assert torch.isfinite(torch.tensor(list(metrics.values()))).all()
    assert not torch.equal(m.prompt, start)


def test_meta_gradient_is_mamls_on_the_groups():
    bb = tiny_backbone(CAUSAL, "float64", prompt_length=3)
    m = build_method("metapt", bb, source_tasks(3, n=40), {**CHEAP, "grouping": "random"}, seed=1)
    maml = build_method("maml", bb, source_tasks(3, n=40), {"inner_lr": 0.1, "meta_batch_size": 2}, seed=1)
    tasks = m.sample()
    torch.testing.assert_close(m.meta_gradient(tasks)[0], maml.meta_gradient(tasks)[0], rtol=0, atol=0)


def test_checkpoint_round_trip_resumes_bit_for_bit(tmp_path):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    tasks = source_tasks(3, n=40)
    cfg = {**CHEAP, "grouping": "kmeans", "inner_steps": 2}
    straight = build_method("metapt", bb, tasks, cfg, seed=5)
    for _ in range(6):
        straight.step()
    first = build_method("metapt", bb, tasks, cfg, seed=5)
    for _ in range(3):
        first.step()
    save_checkpoint(first, tmp_path / "ckpt")
    resumed = load_checkpoint(build_method("metapt", bb, tasks, cfg, seed=9), tmp_path / "ckpt")
    for _ in range(3):
        resumed.step()
    assert torch.equal(resumed.prompt, straight.prompt)
    assert resumed.sampler.count == straight.sampler.count == 6 * CHEAP["meta_batch_size"]


def test_pretraining_pool_caps_each_task_reproducibly():
    tasks = source_tasks(2, n=120)
    a, b = pretraining_pool(tasks, 50, seed=0), pretraining_pool(tasks, 50, seed=0)
    assert [len(t.examples) for t in a] == [50, 50] and [t.examples for t in a] == [t.examples for t in b]
    assert pretraining_pool(tasks, 50, seed=1)[0].examples != a[0].examples
    assert pretraining_pool(tasks, None, seed=0)[0] is tasks[0]
    with pytest.raises(PromptinitError, match="source tasks"):
        pretraining_pool([], 50, seed=0)


@pytest.mark.parametrize("field,value", [("grouping", "spectral"), ("num_clusters", 1), ("inner_lr", 0),
                                         ("first_order", "no"), ("max_examples_per_task", 0)])
def test_bad_setting_raises_naming_the_field(field, value):
    with pytest.raises(PromptinitError, match=field):
        make_config("metapt", {field: value})


def test_defaults():
    c = make_config("metapt")
    assert (c.grouping, c.num_clusters, c.inner_lr, c.outer_lr, c.first_order) == ("kmeans", 10, 3e-5, 0.5, False)
