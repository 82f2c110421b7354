import json
from collections import Counter

import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.selfsup.formats import FORMATS, LETTERS, SelfSupTaskSampler
from promptinit.tasks.task import TaskKind

N = 6  # examples per set: divisible by 2, 3 and 6, so "balanced" means exactly equal counts


def _tasks(corpus, clusters, fmt, n_tasks=4, seed=0):
    sampler = SelfSupTaskSampler(corpus, clusters, [fmt], n_support=N, n_query=N, seed=seed)
    return [sampler.sample() for _ in range(n_tasks)]


def _sets(task):
    return {"support": task.support, "query": task.query, "aug_query": task.aug_query}


def test_nsp_yes_is_adjacent_maybe_same_document_no_other_document(corpus, clusters):
    for task in _tasks(corpus, clusters, "nsp"):
        for name, examples in _sets(task).items():
            assert Counter(ex.target for ex in examples) == {"yes": 2, "maybe": 2, "no": 2}, name
            for ex in examples:
                a, b = task.sentences[ex.uid]
                assert corpus.sentences[a] in ex.input and corpus.sentences[b] in ex.input
                if ex.target == "yes":
                    assert corpus.doc[a] == corpus.doc[b] and corpus.pos[b] == corpus.pos[a] + 1
                elif ex.target == "maybe":
                    assert corpus.doc[a] == corpus.doc[b] and abs(int(corpus.pos[b]) - int(corpus.pos[a])) >= 2
                else:
                    assert corpus.doc[a] != corpus.doc[b]


def test_nss_has_one_adjacent_one_same_document_and_four_other_documents(corpus, clusters):
    for task in _tasks(corpus, clusters, "nss"):
        for examples in _sets(task).values():
            assert Counter(ex.target for ex in examples) == Counter(LETTERS[:6])  # answer position balanced
            for ex in examples:
                a, *opts = task.sentences[ex.uid]
                assert ex.options == tuple(LETTERS[:6]) and len(opts) == 6
                answer = opts[ex.answer_index]
                assert corpus.doc[answer] == corpus.doc[a] and corpus.pos[answer] == corpus.pos[a] + 1
                others = [o for o in opts if o != answer]
                same_doc = [o for o in others if corpus.doc[o] == corpus.doc[a]]
                assert len(same_doc) == 1 and abs(int(corpus.pos[same_doc[0]]) - int(corpus.pos[a])) >= 2
                other_docs = {int(corpus.doc[o]) for o in others if corpus.doc[o] != corpus.doc[a]}
                assert len(other_docs) == 4


def test_scsp_and_scss_positives_share_the_cluster_and_negatives_do_not(corpus, clusters):
    label = clusters.labels
    for task in _tasks(corpus, clusters, "scsp"):
        for examples in _sets(task).values():
            assert Counter(ex.target for ex in examples) == {"yes": 3, "no": 3}
            for ex in examples:
                a, b = task.sentences[ex.uid]
                assert (label[a] == label[b]) == (ex.target == "yes")
    for task in _tasks(corpus, clusters, "scss"):
        for examples in _sets(task).values():
            assert max(Counter(ex.target for ex in examples).values()) - min(
                Counter(ex.target for ex in examples).values()) <= 1
            for ex in examples:
                a, *opts = task.sentences[ex.uid]
                assert len(opts) == 4
                for j, o in enumerate(opts):
                    assert (label[o] == label[a]) == (j == ex.answer_index)
                negatives = [label[o] for j, o in enumerate(opts) if j != ex.answer_index]
                assert len(set(negatives)) == 3  # three distinct other clusters


def test_scc_task_is_one_four_way_classification_over_four_fixed_clusters(corpus, clusters):
    """As the released code's SentClusterClassifiTask: the task's 4 clusters are its classes, in
    one option order for all its examples; the anchors come from all 4 (N = 6 per set: counts
    2, 2, 1, 1); the answer is the anchor's cluster. The aug set has its own 4 clusters."""
    for task in _tasks(corpus, clusters, "scc", n_tasks=6):
        assert len(task.classes) == len(set(task.classes)) == 4 and len(task.aug_classes) == 4
        assert set(task.classes) != set(task.aug_classes)
        assert (task.cluster, task.aug_cluster) == (task.classes[0], task.aug_classes[0])
        assert task.clusters == task.classes and task.aug_clusters == task.aug_classes
        assert task.name == "scc/" + "+".join(f"c{c}" for c in task.classes)
        for name, examples in _sets(task).items():
            classes = task.aug_classes if name == "aug_query" else task.classes
            anchors = []
            for ex in examples:
                (a,) = task.sentences[ex.uid]
                assert task.option_clusters[ex.uid] == classes  # the same options, in the same order
                assert classes[ex.answer_index] == clusters.labels[a]  # label = which of the 4
                assert all(f"<c{j}>" in ex.input for j in range(4))
                anchors.append(int(clusters.labels[a]))
            assert sorted(Counter(anchors).values()) == [1, 1, 2, 2]  # all four clusters, balanced


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_task_is_drawn_from_its_clusters_and_sets_share_no_sentence(corpus, clusters, fmt):
    for task in _tasks(corpus, clusters, fmt, n_tasks=3, seed=7):
        assert task.format == fmt and set(task.clusters) != set(task.aug_clusters)  # the aug set is elsewhere
        assert len(task.clusters) == (4 if fmt == "scc" else 1)  # one cluster per task; scc: its 4 classes
        assert len(task.support) == len(task.query) == len(task.aug_query) == N
        used = {}
        for name, examples in _sets(task).items():
            allowed = task.aug_clusters if name == "aug_query" else task.clusters
            used[name] = set()
            for ex in examples:
                ids = task.sentences[ex.uid]
                assert clusters.labels[ids[0]] in allowed  # the anchor
                assert not used[name] & set(ids)  # no sentence twice within a set
                used[name] |= set(ids)
        assert not used["support"] & used["query"]
        assert not (used["support"] | used["query"]) & used["aug_query"]
        assert task.kind is (TaskKind.CLASSIFICATION if fmt in ("nsp", "scsp") else TaskKind.MULTIPLE_CHOICE)
        assert len(task.as_task().examples) == 2 * N


def test_sampler_state_round_trip_gives_the_same_next_task(corpus, clusters):
    def make(seed):
        return SelfSupTaskSampler(corpus, clusters, FORMATS, n_support=4, n_query=4, seed=seed)

    def sets(tasks):
        return [(t.format, t.cluster, t.support, t.query, t.aug_query) for t in tasks]

    a = make(3)
    first = [a.sample() for _ in range(3)]
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON, as a checkpoint stores it
    expected = [a.sample() for _ in range(3)]
    b = make(99)
    b.load_state_dict(state)
    assert sets(b.sample() for _ in range(3)) == sets(expected)
    assert b.count == a.count == 6
    c = make(3)
    assert sets(c.sample() for _ in range(3)) == sets(first)  # same seed, same tasks


def test_sampler_refuses_bad_settings(corpus, clusters):
    with pytest.raises(PromptinitError, match="formats"):
        SelfSupTaskSampler(corpus, clusters, ["nsp", "cloze"])
    with pytest.raises(PromptinitError, match="n_support"):
        SelfSupTaskSampler(corpus, clusters, n_support=0)
    with pytest.raises(PromptinitError, match="smaller k"):
        SelfSupTaskSampler(corpus, clusters, n_support=200, n_query=200)
    # scc needs its 4 classes and another set of 4 for the aug query: 5 clusters big enough
    fifth = sorted((len(clusters.members(c)) for c in range(clusters.k)), reverse=True)[4]
    with pytest.raises(PromptinitError, match="scc needs 5"):  # each class needs fifth + 1 + 2 sentences
        SelfSupTaskSampler(corpus, clusters, ["scc"], n_support=4 * (fifth + 1), n_query=4)
    SelfSupTaskSampler(corpus, clusters, ["scc"], n_support=4 * (fifth - 2), n_query=4).sample()


def test_backbone_scores_selfsup_tasks_and_scc_markers_take_cluster_vectors(corpus, clusters):
    from promptinit.backbones import Backbone, BackboneConfig
    from promptinit.selfsup.scc import cluster_input_vectors, encode_with_markers

    bb = Backbone(BackboneConfig("tiny-llama", prompt_length=4, device="cpu", max_input_tokens=1024))
    prompt = bb.init_prompt("vocab", seed=0)
    nsp = _tasks(corpus, clusters, "nsp", n_tasks=1)[0]
    assert torch.isfinite(bb.loss(prompt, bb.encode(nsp.support[:2])))
    assert [len(s) for s in bb.score_options(prompt, nsp.support[:2])] == [3, 3]

    vectors = cluster_input_vectors(bb, corpus, clusters, max_sentences=16)
    table_norm = bb.model.get_input_embeddings().weight.norm(dim=1).mean()
    assert vectors.shape == (clusters.k, bb.hidden_size)
    assert torch.allclose(vectors.norm(dim=1), table_norm.expand(clusters.k), rtol=1e-4)
    assert torch.equal(cluster_input_vectors(bb, corpus, clusters, max_sentences=16), vectors)  # cached

    scc = _tasks(corpus, clusters, "scc", n_tasks=1)[0]
    batch, inj = encode_with_markers(bb, scc.support[:3], scc.option_clusters, vectors)
    assert inj.rows.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert (batch.input_ids[inj.rows, inj.cols] == bb.tokenizer.unk_token_id).all()
    emb = bb.embed(batch.input_ids)
    out = inj.apply(emb)
    changed = (out != emb).any(-1).nonzero().tolist()
    assert changed == sorted([r, c] for r, c in zip(inj.rows.tolist(), inj.cols.tolist()))
    for r in range(3):
        shown = scc.option_clusters[scc.support[r].uid]
        assert torch.equal(out[r, inj.cols[inj.rows == r]], vectors[list(shown)])
