"""Sentence embeddings and K-means clusters, cached on disk so a sweep computes them once.

Cache layout under ``cache_dir("selfsup")``:

- ``embeddings/<key>.npy`` (+ ``.json``): float32 [N, D] L2-normalised sentence embeddings,
  key = sha(texts key, encoder name, encoder weights, sentence-transformers/transformers/torch
  versions). For a corpus the texts key is its fingerprint, so changing K reuses the embeddings.
- ``kmeans/<key>/{labels.npy, centroids.npy, meta.json}``: key = sha(embeddings key, K, seed,
  n_init, scikit-learn version).

Every file is written to a temporary name and renamed, so an interrupted run never leaves a
cache entry a later run would trust. ``encode_sentences`` is the only function that runs the
encoder; tests patch it to assert a second construction does no embedding work.

Timing on the default corpus (6,000 sentences, 404 documents) on a shared 2-core CPU:
all-MiniLM-L6-v2 costs ~8 ms of CPU per sentence (~120 sentences per CPU-second; sentences
average ~20 words), so encoding took 70 s at load average ~3 and 196 s at ~6; K-means with
K = 50 takes ~1 s on one thread. Both happen once: a cached rerun does neither.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from promptinit.errors import PromptinitError
from promptinit.files import atomic_write, atomic_write_json
from promptinit.fingerprints import digest, files_fingerprint, library_versions
from promptinit.paths import cache_dir
from promptinit.progress import bars_enabled, quiet_hf_progress
from promptinit.selfsup.corpus import Corpus

DEFAULT_ENCODER = "all-minilm-l6-v2"

Encoder = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class ClusterConfig:
    """How sentences are embedded and clustered.

    Attributes:
        k: number of K-means clusters (SUPMER uses 250 on a large corpus; 50 suits the
            6,000-sentence default corpus, ~120 sentences per cluster).
        encoder: sentence-transformers model: a packaged name, a local folder or a hub id.
        seed: K-means initialisation.
        n_init: K-means restarts (the best inertia is kept).
        batch_size: sentences per encoder forward pass.
        threads: OpenMP/BLAS threads for K-means. 1 by default: on a shared 2-core machine
            the nested OpenMP + BLAS threads oversubscribe (6,000 x 384, K = 50: 14 s with all
            threads vs 1 s with one); raise it for large corpora on many cores. Not part of the
            cache key.
    """

    k: int = 50  # clusters
    encoder: str = DEFAULT_ENCODER
    seed: int = 0
    n_init: int = 3  # restarts
    batch_size: int = 64  # sentences
    threads: int | None = 1  # K-means threads; None = all cores

    def __post_init__(self) -> None:
        if self.k < 2:
            raise PromptinitError(f"field 'k': {self.k} must be >= 2 (one cluster has no negatives)")
        if self.n_init < 1 or self.batch_size < 1:
            raise PromptinitError(f"fields 'n_init'/'batch_size': {self.n_init}/{self.batch_size} must be >= 1")


def _sha(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def texts_key(texts: Sequence[str]) -> str:
    """Content key of a list of texts (order matters)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def encoder_id(name: str) -> str:
    """What decides an encoder's embeddings: its name, its weights (hashed, where they are in a
    local folder; a hub id stands for its weights) and the versions of the code that runs it."""
    from promptinit.assets import ALIASES

    where = _local_or_hub(name)
    weights = files_fingerprint(where) if Path(where).is_dir() else "hub"
    return digest(
        ALIASES.get(name, name),
        weights,
        library_versions("sentence-transformers", "transformers", "torch", "tokenizers"),
    )


def _embeddings_key(texts_key_: str, encoder: str, n: int) -> str:
    return _sha("emb", texts_key_, encoder_id(encoder), n)


# ----------------------------------------------------------------------------- atomic writes
def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file, atomically (``promptinit.files.atomic_write``)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write(path, buffer.getvalue())


def atomic_save_json(path: Path, obj: object) -> None:
    """Write ``obj`` as the selfsup cache's JSON (indent 1, sorted keys), atomically."""
    atomic_write_json(path, obj, indent=1, sort_keys=True)


# ----------------------------------------------------------------------------- encoding
def encode_sentences(
    texts: Sequence[str], encoder: str = DEFAULT_ENCODER, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """Run a sentence-transformers encoder (the one place that does embedding work).

    Args:
        texts: sentences.
        encoder: packaged name, local folder or hub id.
        batch_size: sentences per forward pass.
        progress: show sentence-transformers' progress bar (batches, on stderr; never under ``-q``).

    Returns:
        float32 [N, D], L2-normalised rows.
    """
    model = _load_encoder(_local_or_hub(encoder))
    if not texts:
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.zeros((0, get_dim()), np.float32)
    # one call: sentence-transformers sorts all texts by length, so batches carry little padding
    emb = model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=progress and bars_enabled(),
    )
    return np.asarray(emb, dtype=np.float32)


def _local_or_hub(name: str) -> str:
    from promptinit.assets import resolve_model

    try:
        return resolve_model(name)
    except PromptinitError:
        return name  # e.g. "all-mpnet-base-v2": sentence-transformers resolves short hub names itself


_ENCODERS: dict[str, object] = {}


def _load_encoder(path: str):
    from sentence_transformers import SentenceTransformer

    if path not in _ENCODERS:
        try:
            # a "Loading weights" bar per load is noise next to ours
            with quiet_hf_progress("transformers"):
                _ENCODERS[path] = SentenceTransformer(path)  # CUDA when available, else CPU
        except OSError as err:
            raise PromptinitError(
                f"encoder {path!r} could not be loaded ({err}); use a local folder or a packaged name"
            ) from err
    return _ENCODERS[path]


def embed_texts(
    texts: Sequence[str],
    encoder: str = DEFAULT_ENCODER,
    *,
    key: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    encode_fn: Encoder | None = None,
) -> np.ndarray:
    """Sentence embeddings, computed once per (texts, encoder) and cached on disk.

    Args:
        texts: the sentences.
        encoder: encoder name (part of the cache key).
        key: content key of ``texts`` (e.g. a corpus fingerprint); hashed from the texts if omitted.
        batch_size: sentences per forward pass.
        progress: progress bar while encoding.
        encode_fn: replaces ``encode_sentences`` (tests, custom encoders); called as
            ``encode_fn(texts)``.

    Returns:
        float32 [N, D] L2-normalised rows.
    """
    key = _embeddings_key(key or texts_key(texts), encoder, len(texts))
    folder = cache_dir("selfsup", "embeddings")
    path = folder / f"{key}.npy"
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(texts):
            return emb
    t0 = time.perf_counter()
    if encode_fn is not None:
        emb = np.asarray(encode_fn(list(texts)), dtype=np.float32)
    else:
        emb = encode_sentences(texts, encoder, batch_size=batch_size, progress=progress)
    if emb.shape[0] != len(texts):
        raise ValueError(f"encoder returned {emb.shape[0]} embeddings for {len(texts)} texts")
    atomic_save_npy(path, emb)
    atomic_save_json(
        folder / f"{key}.json",
        {"encoder": encoder, "n": len(texts), "dim": int(emb.shape[1]), "seconds": round(time.perf_counter() - t0, 2)},
    )
    return emb


# ----------------------------------------------------------------------------- clustering
@dataclass(frozen=True, eq=False)
class Clusters:
    """K-means clusters of a corpus's sentences.

    Attributes:
        labels: [N] cluster id of each sentence.
        centroids: [K, D] K-means centroids in the sentence-encoder space.
        embeddings: [N, D] the sentence embeddings clustered.
        config: the settings.
        key: cache key (depends on the corpus fingerprint, the encoder, K, seed, n_init).
        timings: seconds spent here (``encode``, ``kmeans``; 0 when read from the cache).
    """

    labels: np.ndarray
    centroids: np.ndarray
    embeddings: np.ndarray
    config: ClusterConfig
    key: str
    timings: dict = field(default_factory=dict)
    _members: list = field(init=False, repr=False)  # set in __post_init__

    def __post_init__(self) -> None:
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(self.k + 1))
        object.__setattr__(self, "_members", [order[bounds[c] : bounds[c + 1]] for c in range(self.k)])

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def members(self, c: int) -> np.ndarray:
        """Sentence indices of cluster ``c``, ascending."""
        return self._members[c]

    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)


def kmeans(
    embeddings: np.ndarray, k: int, seed: int = 0, n_init: int = 3, threads: int | None = 1
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn K-means. Returns ``(labels [N], centroids [K, D])``."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    if k > len(embeddings):
        raise PromptinitError(f"field 'k': {k} clusters for {len(embeddings)} sentences; use k <= {len(embeddings)}")
    with threadpool_limits(limits=threads):
        km = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(embeddings)
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32)


def cluster_texts(
    texts: Sequence[str],
    config: ClusterConfig,
    *,
    key: str | None = None,
    progress: bool = True,
    encode_fn: Encoder | None = None,
) -> Clusters:
    """Embed texts (cached) and K-means them (cached). See ``cluster_corpus``."""
    tk = key or texts_key(texts)
    t0 = time.perf_counter()
    emb = embed_texts(
        texts, config.encoder, key=tk, batch_size=config.batch_size, progress=progress, encode_fn=encode_fn
    )
    t_enc = time.perf_counter() - t0
    ckey = _sha(
        "kmeans",
        _embeddings_key(tk, config.encoder, len(texts)),
        config.k,
        config.seed,
        config.n_init,
        library_versions("scikit-learn"),
    )
    folder = cache_dir("selfsup", "kmeans") / ckey
    if (folder / "meta.json").exists():
        labels, centroids = np.load(folder / "labels.npy"), np.load(folder / "centroids.npy")
        return Clusters(labels, centroids, emb, config, ckey, {"encode": t_enc, "kmeans": 0.0})
    t0 = time.perf_counter()
    labels, centroids = kmeans(emb, config.k, config.seed, config.n_init, config.threads)
    t_km = time.perf_counter() - t0
    # meta.json is written last: it is the marker of a complete entry
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(folder / "labels.npy", labels)
    atomic_save_npy(folder / "centroids.npy", centroids)
    atomic_save_json(
        folder / "meta.json",
        {
            **asdict(config),
            "texts_key": tk,
            "n": len(texts),
            "sizes": np.bincount(labels, minlength=config.k).tolist(),
            "kmeans_seconds": round(t_km, 2),
        },
    )
    return Clusters(labels, centroids, emb, config, ckey, {"encode": t_enc, "kmeans": t_km})


def cluster_corpus(
    corpus: Corpus, config: ClusterConfig | None = None, *, progress: bool = True, encode_fn: Encoder | None = None
) -> Clusters:
    """Cluster a corpus's sentences, reusing cached embeddings and assignments.

    Args:
        corpus: the sentences (its fingerprint keys the cache).
        config: encoder, K, seed; ``ClusterConfig()`` when omitted.
        progress: progress bar while encoding.
        encode_fn: replaces the sentence-transformers encoder (called only on a cache miss).

    Returns:
        ``Clusters`` with labels, centroids and the embeddings.
    """
    return cluster_texts(
        corpus.sentences, config or ClusterConfig(), key=corpus.fingerprint, progress=progress, encode_fn=encode_fn
    )
