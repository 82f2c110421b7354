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


def _reference_meta_gradient(bb, phi, meta_tasks, lr, first_order):
    """MAML's meta-gradient written out task by task with plain autograd (independent of the
    library's inner loop): SGD on each support batch, differentiated through (``create_graph``)
    unless ``first_order``, then the gradient of the query loss. Returns the mean gradient and
    the mean query loss over tasks."""
    total, query_loss = torch.zeros_like(phi), 0.0
    for mt in meta_tasks:
        start = phi.detach().clone().requires_grad_(True)
        p = start
        for batch in mt.support:
            (g,) = torch.autograd.grad(bb.loss(p, bb.encode(list(batch))), p, create_graph=not first_order)
            p = p - lr * g if not first_order else (p - lr * g).detach().requires_grad_(True)
        query = bb.loss(p, bb.encode(list(mt.query)))
        total += torch.autograd.grad(query, start if not first_order else p)[0]
        query_loss += query.item()
    return total / len(meta_tasks), query_loss / len(meta_tasks)


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_is_mamls_on_the_groups(first_order):
    bb = tiny_backbone(CAUSAL, "float64", prompt_length=3)
    cfg = {**CHEAP, "grouping": "random", "inner_steps": 2, "first_order": first_order}
    m = build_method("metapt", bb, source_tasks(3, n=40), cfg, seed=1)
    tasks = m.sample()
    assert all(len(mt.support) == 2 and len(mt.query) == 2 for mt in tasks)
    grad, metrics = m.meta_gradient(tasks)
    ref, query_loss = _reference_meta_gradient(bb, m.prompt, tasks, CHEAP["inner_lr"], first_order)
    torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-12)
    assert metrics["meta/query_loss"] == pytest.approx(query_loss, rel=1e-10)
    # the two variants differ by MAML's second-order terms, well above the tolerance
    other, _ = _reference_meta_gradient(bb, m.prompt, tasks, CHEAP["inner_lr"], not first_order)
    assert (grad - other).norm() > 1e-3 * grad.norm()


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
