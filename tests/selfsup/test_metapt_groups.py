import json
import pytest

from promptinit.errors import PromptinitError
from promptinit.selfsup import clustering
from promptinit.selfsup.metapt_groups import GroupConfig, GroupTaskSampler, build_groups, flatten
from promptinit.tasks.task import TaskKind


@pytest.mark.parametrize("grouping", ["kmeans", "lda", "random"])
def test_groupings_have_k_groups_that_cover_the_data_once(pretraining_tasks, grouping):
    examples = flatten(pretraining_tasks)
    groups = build_groups(pretraining_tasks, GroupConfig(grouping=grouping, k=4, seed=0), progress=False)
    assert len(groups) == 4
    uids = [ex.uid for g in groups for ex in g.examples]
    assert sorted(uids) == sorted(ex.uid for ex in examples)  # every example exactly once
    assert all(g.name.startswith(f"metapt-{grouping}-g") for g in groups)
    if grouping == "random":
        assert max(len(g.examples) for g in groups) - min(len(g.examples) for g in groups) <= 1


def test_by_label_makes_one_group_per_label(pretraining_tasks):
    groups = build_groups(pretraining_tasks, GroupConfig(grouping="by-label"))
    labels = {ex.target for t in pretraining_tasks for ex in t.examples}
    assert len(groups) == len(labels)
    assert all(len({ex.target for ex in g.examples}) == 1 for g in groups)
    # each label belongs to one task, so each group has one option set: classification
    assert {g.kind for g in groups} == {TaskKind.CLASSIFICATION}


def test_mixed_option_sets_make_multiple_choice_groups(pretraining_tasks):
    groups = build_groups(pretraining_tasks, GroupConfig(grouping="random", k=2))
    assert all(g.kind is TaskKind.MULTIPLE_CHOICE for g in groups)  # both tasks in each group


def test_kmeans_grouping_is_cached(pretraining_tasks, monkeypatch):
    cfg = GroupConfig(grouping="kmeans", k=4, seed=0)
    first = build_groups(pretraining_tasks, cfg, progress=False)

    def boom(*a, **k):
        raise AssertionError("encoder called although the grouping is cached")

    monkeypatch.setattr(clustering, "encode_sentences", boom)
    again = build_groups(pretraining_tasks, cfg, progress=False)
    assert [g.examples for g in again] == [g.examples for g in first]
    # a new K reuses the embeddings (same data key and encoder)
    assert len(build_groups(pretraining_tasks, GroupConfig(grouping="kmeans", k=3), progress=False)) == 3


def test_group_sampler_draws_disjoint_support_and_query_and_resumes(pretraining_tasks):
    groups = build_groups(pretraining_tasks, GroupConfig(grouping="random", k=4))
    a = GroupTaskSampler(groups, n_support=4, n_query=4, seed=0)
    a.sample()
    state = json.loads(json.dumps(a.state_dict()))
    expected = [a.sample() for _ in range(3)]
    for task in expected:
        assert task.format == "metapt-random" and len(task.support) == len(task.query) == 4
        assert not {e.uid for e in task.support} & {e.uid for e in task.query}
        assert set(task.support + task.query) <= set(groups[task.cluster].examples)
    b = GroupTaskSampler(groups, n_support=4, n_query=4, seed=5)
    b.load_state_dict(state)
    assert [(t.support, t.query) for t in (b.sample() for _ in range(3))] == [(t.support, t.query) for t in expected]


def test_bad_grouping_settings_are_refused(pretraining_tasks):
    with pytest.raises(PromptinitError, match="'grouping'"):
        GroupConfig(grouping="spectral")
    with pytest.raises(PromptinitError, match="k <= "):
        build_groups(pretraining_tasks[:1], GroupConfig(grouping="random", k=10_000))
    groups = build_groups(pretraining_tasks, GroupConfig(grouping="random", k=4))
    with pytest.raises(PromptinitError, match="smaller k"):
        GroupTaskSampler(groups, n_support=500, n_query=500)
