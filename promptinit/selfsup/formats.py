"""The five SUPMER self-supervised task formats and a seeded sampler of meta-tasks.

Every meta-task but scc is drawn from one cluster: its *anchor* sentences all come from that
cluster (the partners of nsp/nss follow the document, so they may lie elsewhere). An scc task
is one 4-way classification over four clusters, its anchors drawn from all four. Formats, as
in DESIGN.md ("SUPMER") and the released code (``pretrain/metatask/*.py``):

========  ===================  ===================================================================
format    kind                 example
========  ===================  ===================================================================
``nsp``   classification       anchor + a second sentence -> ``yes`` (the next sentence of the same
                               document), ``maybe`` (same document, not adjacent), ``no`` (another
                               document); the three labels equally often.
``nss``   multiple choice (6)  anchor + options: 1 next sentence (the answer), 1 same document not
                               adjacent, 4 from 4 other documents; answer = the letter.
``scsp``  classification       anchor + a second sentence -> ``yes`` (same cluster) / ``no`` (another
                               cluster); balanced.
``scss``  multiple choice (4)  anchor + 1 same-cluster option (the answer) + 3 from 3 other clusters.
``scc``   multiple choice (4)  anchor + the task's 4 clusters, each shown as one marker ``<c0>`` ...
                               ``<c3>`` whose input embedding is replaced by the cluster's vector
                               (``promptinit.selfsup.scc``); answer = the letter of the anchor's
                               cluster. The 4 clusters and their order are fixed for the task and
                               the anchors come from all 4, equally often.
========  ===================  ===================================================================

scc follows the released code's ``SentClusterClassifiTask`` (4 clusters per task,
``CLASSIFY_NUM=4``; the options in the task's cluster order; label = which of the 4; its
support and query hold k sentences of each cluster, 4 x 4 = 16). Where it must differ, with
text-only examples:

- the clusters are markers in an English question (``(A) <c0>`` ...) whose embeddings are
  replaced by backbone-space cluster vectors, not the sentence-encoder centroid written into
  the T5 input (``promptinit.selfsup.scc``); the code's input is
  ``sentence ? A . [c] . B . [c] ... ? The correct one is <extra_id_0>``;
- the labels are balanced to within one when the set size is not a multiple of 4 (the code:
  exactly k per cluster);
- the aug set has its own 4 clusters, drawn like the task's, as a set never equal to the
  task's (the code draws them independently, so they may coincide; the other formats'
  aug cluster always differs, see below);
- the clusters are drawn among those with enough unused sentences, and the support, query and
  aug sets share no sentence (the code samples support and query of one cluster without
  overlap, the aug set independently).

Choices made here (not fixed by the paper):

- "Other document" sentences (nsp ``no``, nss distractors) are taken from the *same cluster*
  when it has them, so a task stays on one topic and the negatives are not trivially
  off-topic; otherwise from anywhere in the corpus.
- Same-cluster partners (scsp ``yes``, scss answer) prefer another document, so "same topic"
  cannot be solved by recognising the same article.
- The answer's position among the letters is balanced within each set, like the labels.
- The aug query set comes from another cluster (the released code draws it uniformly, so it
  may be the task's own; a same-cluster aug set would make the mixup trivial).
- Support, query and aug query share no sentence (anchor, partner or option). Within a set no
  sentence is used twice.
- Option sentences of nss/scss are cut to ``max_option_words`` words (with "...") so that a
  7-sentence input stays well inside the backbone's input budget; the anchor is never cut.
- Templates are plain English questions ending in ``Answer:``; the targets are the labels or
  letters, scored by log-likelihood like any classification / multiple-choice task.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from promptinit.errors import PromptinitError
from promptinit.selfsup.clustering import Clusters
from promptinit.selfsup.corpus import Corpus
from promptinit.selfsup.metatask import MetaTask, balanced, rng_state, set_rng_state
from promptinit.tasks.task import Example, TaskKind, content_id


class Format(str, Enum):
    NSP = "nsp"
    NSS = "nss"
    SCSP = "scsp"
    SCSS = "scss"
    SCC = "scc"


FORMATS: tuple[str, ...] = tuple(f.value for f in Format)
LETTERS = "ABCDEFGH"
NSP_LABELS = ("yes", "maybe", "no")
SCSP_LABELS = ("yes", "no")
N_OPTIONS = {Format.NSS: 6, Format.SCSS: 4, Format.SCC: 4}
KIND = {
    Format.NSP: TaskKind.CLASSIFICATION,
    Format.SCSP: TaskKind.CLASSIFICATION,
    Format.NSS: TaskKind.MULTIPLE_CHOICE,
    Format.SCSS: TaskKind.MULTIPLE_CHOICE,
    Format.SCC: TaskKind.MULTIPLE_CHOICE,
}
LABELS = {Format.NSP: NSP_LABELS, Format.SCSP: SCSP_LABELS}

NSP_TEMPLATE = (
    "Sentence 1: {a}\nSentence 2: {b}\nDoes sentence 2 come right after sentence 1 (yes), "
    "elsewhere in the same text (maybe), or from another text (no)?\nAnswer:"
)
NSS_TEMPLATE = "Sentence: {a}\nWhich option comes right after this sentence?\n{options}\nAnswer:"
SCSP_TEMPLATE = "Sentence 1: {a}\nSentence 2: {b}\nAre the two sentences about the same topic?\nAnswer:"
SCSS_TEMPLATE = "Sentence: {a}\nWhich option is about the same topic as this sentence?\n{options}\nAnswer:"
SCC_TEMPLATE = "Sentence: {a}\nWhich topic does this sentence belong to?\n{options}\nAnswer:"


def marker(slot: int) -> str:
    """The text marker of scc option ``slot`` (its embedding is replaced by a cluster vector)."""
    return f"<c{slot}>"


class _Exhausted(Exception):
    """The cluster has too few usable sentences for this set; the sampler tries another."""


@dataclass
class _Built:
    example: Example
    sentences: tuple[int, ...]
    clusters: tuple[int, ...] = ()


class _Builder:
    """Builds the examples of one set; ``used`` grows with every sentence it consumes."""

    def __init__(self, corpus: Corpus, clusters: Clusters, rng: random.Random, max_option_words: int):
        self.corpus, self.clusters, self.rng = corpus, clusters, rng
        self.max_option_words = max_option_words
        self.k = clusters.k

    # --------------------------------------------------------------- helpers
    def _text(self, i: int, cut: bool = False) -> str:
        s = self.corpus.sentences[i]
        words = s.split()
        if cut and len(words) > self.max_option_words:
            return " ".join(words[: self.max_option_words]) + " ..."
        return s

    def _options_block(self, texts: Sequence[str]) -> str:
        return "\n".join(f"({LETTERS[j]}) {t}" for j, t in enumerate(texts))

    def _shuffled(self, c: int, used: set[int]) -> list[int]:
        cands = [int(i) for i in self.clusters.members(c) if int(i) not in used]
        self.rng.shuffle(cands)
        return cands

    def _pick(self, pool: Sequence[int]) -> int | None:
        return pool[self.rng.randrange(len(pool))] if pool else None

    def _other_docs(self, a: int, c: int, n: int, used: set[int]) -> list[int] | None:
        """``n`` sentences from ``n`` distinct documents other than ``a``'s, same cluster first."""
        doc = self.corpus.doc
        out: list[int] = []
        docs = {int(doc[a])}
        for j in self._shuffled(c, used):
            if int(doc[j]) not in docs:
                out.append(j)
                docs.add(int(doc[j]))
                if len(out) == n:
                    return out
        for _ in range(50 * n):  # fall back to the whole corpus
            j = self.rng.randrange(len(self.corpus))
            if j not in used and int(doc[j]) not in docs:
                out.append(j)
                docs.add(int(doc[j]))
                if len(out) == n:
                    return out
        return None

    def _same_cluster(self, a: int, c: int, used: set[int]) -> int | None:
        pool = [j for j in self.clusters.members(c).tolist() if j != a and j not in used]
        other_doc = [j for j in pool if self.corpus.doc[j] != self.corpus.doc[a]]
        return self._pick(other_doc or pool)

    def _other_clusters(self, c: int, n: int, used: set[int]) -> list[tuple[int, int]] | None:
        """``n`` (cluster, sentence) pairs from ``n`` distinct clusters other than ``c``."""
        order = [x for x in range(self.k) if x != c]
        self.rng.shuffle(order)
        out = []
        for x in order:
            j = self._pick([i for i in self.clusters.members(x).tolist() if i not in used])
            if j is not None:
                out.append((x, j))
                if len(out) == n:
                    return out
        return None

    def _first(self, anchors: list[int], make) -> _Built:
        """Build from the first anchor that works (it leaves the list; the others may suit
        another label)."""
        for idx, a in enumerate(anchors):
            built = make(a)
            if built is not None:
                del anchors[idx]
                return built
        raise _Exhausted

    # --------------------------------------------------------------- formats
    def build(self, fmt: Format, c: int | tuple[int, ...], n: int, used: set[int]) -> list[_Built]:
        """``n`` examples of one set, anchored in cluster ``c`` (scc: in the task's clusters)."""
        if fmt is Format.SCC:
            return self._scc_set(c if isinstance(c, tuple) else (c,), n, used)
        if isinstance(c, tuple):
            raise PromptinitError(f"format {fmt.value}: one anchor cluster, not {c}")
        anchors = self._shuffled(c, used)
        method = getattr(self, f"_{fmt.value}")
        if fmt in LABELS:
            targets = balanced(list(LABELS[fmt]), n, self.rng)
        else:
            targets = balanced(list(range(N_OPTIONS[fmt])), n, self.rng)
        out = []
        for t in targets:
            anchors[:] = [a for a in anchors if a not in used]
            b = self._first(anchors, lambda a, t=t: method(a, c, t, used))  # _first calls it before t moves on
            used.update(b.sentences)
            out.append(b)
        return out

    def _nsp(self, a: int, c: int, label: str, used: set[int]) -> _Built | None:
        if label == "yes":
            b = self.corpus.next_sentence(a)
            b = b if b is not None and b not in used else None
        elif label == "maybe":
            b = self._pick([j for j in self.corpus.far_in_doc(a) if j not in used])
        else:
            found = self._other_docs(a, c, 1, used | {a})
            b = found[0] if found else None
        if b is None:
            return None
        text = NSP_TEMPLATE.format(a=self._text(a), b=self._text(b))
        return _Built(Example(text, label, NSP_LABELS), (a, b))

    def _nss(self, a: int, c: int, answer: int, used: set[int]) -> _Built | None:
        nxt = self.corpus.next_sentence(a)
        if nxt is None or nxt in used:
            return None
        far = self._pick([j for j in self.corpus.far_in_doc(a) if j not in used])
        if far is None:
            return None
        others = self._other_docs(a, c, 4, used | {a, nxt, far})
        if others is None:
            return None
        distractors = [far, *others]
        self.rng.shuffle(distractors)
        opts = distractors[:answer] + [nxt] + distractors[answer:]
        text = NSS_TEMPLATE.format(a=self._text(a), options=self._options_block([self._text(j, True) for j in opts]))
        letters = tuple(LETTERS[: len(opts)])
        return _Built(Example(text, letters[answer], letters), (a, *opts))

    def _scsp(self, a: int, c: int, label: str, used: set[int]) -> _Built | None:
        if label == "yes":
            b = self._same_cluster(a, c, used)
        else:
            found = self._other_clusters(c, 1, used | {a})
            b = found[0][1] if found else None
        if b is None:
            return None
        text = SCSP_TEMPLATE.format(a=self._text(a), b=self._text(b))
        return _Built(Example(text, label, SCSP_LABELS), (a, b))

    def _scss(self, a: int, c: int, answer: int, used: set[int]) -> _Built | None:
        pos = self._same_cluster(a, c, used)
        if pos is None:
            return None
        negs = self._other_clusters(c, 3, used | {a, pos})
        if negs is None:
            return None
        distractors = [j for _, j in negs]
        opts = distractors[:answer] + [pos] + distractors[answer:]
        text = SCSS_TEMPLATE.format(a=self._text(a), options=self._options_block([self._text(j, True) for j in opts]))
        letters = tuple(LETTERS[: len(opts)])
        return _Built(Example(text, letters[answer], letters), (a, *opts))

    def _scc_set(self, classes: tuple[int, ...], n: int, used: set[int]) -> list[_Built]:
        """One scc set: each example's anchor from one of ``classes`` (balanced), options the
        same ``classes`` in the same order, answer = the anchor's class."""
        pools = [self._shuffled(c, used) for c in classes]
        out = []
        for t in balanced(list(range(len(classes))), n, self.rng):
            pool = pools[t]
            while pool and pool[-1] in used:
                pool.pop()
            if not pool:
                raise _Exhausted
            b = self._scc(pool.pop(), classes, t)
            used.update(b.sentences)
            out.append(b)
        return out

    def _scc(self, a: int, classes: tuple[int, ...], answer: int) -> _Built:
        letters = tuple(LETTERS[: len(classes)])
        text = SCC_TEMPLATE.format(
            a=self._text(a), options=self._options_block([marker(s) for s in range(len(classes))])
        )
        # the marker text is the same for every example, so the clusters go into the uid
        uid = content_id(text, letters[answer], *letters, "clusters", *map(str, classes))
        return _Built(Example(text, letters[answer], letters, uid=uid), (a,), classes)


class SelfSupTaskSampler:
    """Draws SUPMER meta-tasks, deterministically from a seed, with checkpointable state.

    Each ``sample()`` picks a format (uniformly from ``formats``), a cluster and a different
    "aug" cluster (uniformly among clusters with enough sentences; for scc four clusters and
    four aug clusters, not the same set), then builds ``n_support`` support, ``n_query`` query
    and ``n_query`` aug-query examples, pairwise sentence-disjoint.

    Args:
        corpus: the sentences and their documents.
        clusters: K-means clusters of ``corpus``.
        formats: subset of ``FORMATS``.
        n_support: support examples per task.
        n_query: query (and aug query) examples per task.
        seed: the RNG seed.
        max_option_words: nss/scss option sentences are cut to this many words.

    Example:
        >>> sampler = SelfSupTaskSampler(corpus, clusters, ["nsp", "scc"], 4, 4, seed=0)
        >>> task = sampler.sample()
        >>> state = sampler.state_dict()   # JSON-serialisable; load_state_dict resumes exactly

    References:
        Pan et al. 2023, "Self-Supervised Meta-Prompt Learning with Meta-Gradient
        Regularization for Few-shot Generalization" (SUPMER).
    """

    def __init__(
        self,
        corpus: Corpus,
        clusters: Clusters,
        formats: Sequence[str] = FORMATS,
        n_support: int = 4,
        n_query: int = 4,
        seed: int = 0,
        max_option_words: int = 24,
    ):
        if len(clusters.labels) != len(corpus):
            raise PromptinitError(
                f"clusters cover {len(clusters.labels)} sentences but the corpus has {len(corpus)}; "
                "cluster this corpus (cluster_corpus(corpus, ...))"
            )
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise PromptinitError(f"field 'formats': {list(formats)} must be a non-empty subset of {list(FORMATS)}")
        if n_support < 1 or n_query < 1:
            raise PromptinitError(f"fields 'n_support'/'n_query': {n_support}/{n_query} must be >= 1")
        if clusters.k < 5:
            raise PromptinitError(
                f"field 'k': {clusters.k} clusters; scc/scss need >= 5 (1 + 3 others + an aug cluster)"
            )
        self.corpus, self.clusters = corpus, clusters
        self.formats = [Format(f) for f in formats]
        self.n_support, self.n_query, self.seed = n_support, n_query, seed
        self.max_option_words = max_option_words
        self.count = 0
        self._rng = random.Random(seed)
        need = n_support + 2 * n_query
        self._eligible = [c for c in range(clusters.k) if len(clusters.members(c)) >= need]
        if any(f is not Format.SCC for f in self.formats) and len(self._eligible) < 2:
            raise PromptinitError(
                f"only {len(self._eligible)} clusters have >= {need} sentences (n_support + 2 n_query); "
                "use a smaller k, a bigger corpus or fewer examples per task"
            )
        # an scc cluster serves a quarter of each set; it may be among the task's and the aug set's
        n_cls = N_OPTIONS[Format.SCC]
        need_scc = -(-n_support // n_cls) + 2 * -(-n_query // n_cls)
        self._scc_eligible = [c for c in range(clusters.k) if len(clusters.members(c)) >= need_scc]
        if Format.SCC in self.formats and len(self._scc_eligible) <= n_cls:
            raise PromptinitError(
                f"only {len(self._scc_eligible)} clusters have >= {need_scc} sentences; scc needs {n_cls + 1} "
                f"(its {n_cls} classes and another set for the aug query); use a smaller k or a bigger corpus"
            )

    def sample(self, max_tries: int = 20) -> MetaTask:
        """The next meta-task (support, query and aug query sets from one format)."""
        fmt = self._rng.choice(self.formats)
        n_cls = N_OPTIONS[Format.SCC]
        for _ in range(max_tries):
            classes: tuple[int, ...] = ()
            aug_classes: tuple[int, ...] = ()
            c: int | tuple[int, ...]
            aug: int | tuple[int, ...]
            if fmt is Format.SCC:
                classes = tuple(self._rng.sample(self._scc_eligible, n_cls))
                aug_classes = classes
                while set(aug_classes) == set(classes):
                    aug_classes = tuple(self._rng.sample(self._scc_eligible, n_cls))
                c, aug = classes, aug_classes
                cluster, aug_cluster = classes[0], aug_classes[0]
            else:
                cluster, aug_cluster = self._rng.sample(self._eligible, 2)
                c, aug = cluster, aug_cluster
            builder = _Builder(self.corpus, self.clusters, self._rng, self.max_option_words)
            used: set[int] = set()
            try:
                support = builder.build(fmt, c, self.n_support, used)
                query = builder.build(fmt, c, self.n_query, used)
                aug_query = builder.build(fmt, aug, self.n_query, used)
            except _Exhausted:
                continue
            self.count += 1
            built = support + query + aug_query
            return MetaTask(
                format=fmt.value,
                cluster=cluster,
                kind=KIND[fmt],
                support=tuple(b.example for b in support),
                query=tuple(b.example for b in query),
                aug_query=tuple(b.example for b in aug_query),
                aug_cluster=aug_cluster,
                labels=LABELS.get(fmt, ()),
                sentences={b.example.uid: b.sentences for b in built},
                option_clusters={b.example.uid: b.clusters for b in built if b.clusters},
                classes=classes,
                aug_classes=aug_classes,
            )
        raise PromptinitError(
            f"format {fmt.value!r}: no cluster yielded {self.n_support}+{self.n_query}+{self.n_query} examples in "
            f"{max_tries} tries; use a bigger corpus, a smaller k or fewer examples per task"
        )

    def state_dict(self) -> dict:
        """Plain JSON values: the RNG state, the number of tasks drawn and the settings."""
        return {
            "rng": rng_state(self._rng),
            "count": self.count,
            "seed": self.seed,
            "formats": [f.value for f in self.formats],
            "n_support": self.n_support,
            "n_query": self.n_query,
            "clusters": self.clusters.key,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``; the next ``sample()`` equals the uninterrupted run's."""
        if state.get("clusters") not in (None, self.clusters.key):
            raise PromptinitError(
                f"sampler state was saved for clusters {state['clusters']} but these are {self.clusters.key}; "
                "rebuild the corpus and clusters with the checkpoint's settings"
            )
        set_rng_state(self._rng, state["rng"])
        self.count = int(state["count"])
