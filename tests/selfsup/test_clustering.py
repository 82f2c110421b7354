import json

import numpy as np
import pytest

from promptinit.errors import PromptinitError
from promptinit.paths import cache_dir
from promptinit.selfsup import clustering
from promptinit.selfsup.clustering import ClusterConfig, cluster_corpus


def _no_encoding(*args, **kwargs):
    raise AssertionError("the encoder ran although the embeddings are cached")


def test_clusters_cover_the_corpus_with_k_groups(corpus, clusters):
    K = clusters.k
    assert clusters.k == K and clusters.labels.shape == (len(corpus),)
    assert clusters.embeddings.shape == (len(corpus), 384)
    assert np.allclose(np.linalg.norm(clusters.embeddings, axis=1), 1.0, atol=1e-4)
    assert clusters.sizes().sum() == len(corpus) and (clusters.sizes() > 0).all()
    assert sorted(np.concatenate([clusters.members(c) for c in range(K)]).tolist()) == list(range(len(corpus)))


def test_second_construction_does_no_embedding_work(corpus, clusters, monkeypatch):
    K = clusters.k
    monkeypatch.setattr(clustering, "encode_sentences", _no_encoding)
    again = cluster_corpus(corpus, ClusterConfig(k=K, seed=0), progress=False, encode_fn=None)
    assert again.key == clusters.key and again.timings["kmeans"] == 0.0
    assert np.array_equal(again.labels, clusters.labels)
    assert np.array_equal(again.embeddings, clusters.embeddings)
    # another K re-runs K-means only: the embeddings are keyed by corpus and encoder, not K
    other = cluster_corpus(corpus, ClusterConfig(k=K + 2, seed=0), progress=False)
    assert other.k == K + 2 and other.key != clusters.key


def test_cache_entries_are_complete_files(clusters):
    meta = json.loads((cache_dir("selfsup", "kmeans") / clusters.key / "meta.json").read_text())
    assert meta["k"] == clusters.k and sum(meta["sizes"]) == len(clusters.labels)
    assert not list(cache_dir("selfsup").rglob("*.tmp"))  # atomic writes leave no temp files


def test_injected_encoder_is_used_once_per_key(corpus):
    calls = []

    def fake(texts):
        calls.append(len(texts))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(len(texts), 16)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cfg = ClusterConfig(k=4, encoder="fake-encoder")
    first = cluster_corpus(corpus, cfg, encode_fn=fake)
    second = cluster_corpus(corpus, cfg, encode_fn=fake)
    assert calls == [len(corpus)] and np.array_equal(first.labels, second.labels)


def test_bad_k_is_refused(corpus):
    with pytest.raises(PromptinitError, match="'k'"):
        ClusterConfig(k=1)
    with pytest.raises(PromptinitError, match="k <= "):
        cluster_corpus(corpus, ClusterConfig(k=len(corpus) + 1, encoder="fake-encoder"),
                       encode_fn=lambda t: np.eye(len(t), 8, dtype=np.float32))
