"""Self-supervised and clustered meta-tasks for SUPMER and MetaPT.

Stages, one module each:

- ``corpus``: unlabelled documents of sentences (default: BIG-bench topical_chat conversations,
  fables and play dialogue: text no catalog task uses).
- ``clustering``: sentence embeddings + K-means, cached on disk.
- ``formats``: the five SUPMER task formats (nsp, nss, scsp, scss, scc) and a seeded sampler of
  meta-tasks with a support, a query and an "aug" query set.
- ``scc``: the cluster vectors placed at the scc marker positions (backbone input space).
- ``plot``: a 2-D projection PNG of the clusters.
- ``metapt_groups``: MetaPT meta-tasks by K-means, LDA, random or by-label grouping.
"""

from promptinit.selfsup.clustering import ClusterConfig, Clusters, cluster_corpus, embed_texts
from promptinit.selfsup.corpus import Corpus, CorpusConfig, build_corpus, corpus_from_texts, split_sentences
from promptinit.selfsup.formats import FORMATS, Format, SelfSupTaskSampler
from promptinit.selfsup.metapt_groups import GroupConfig, Grouping, GroupTaskSampler, build_groups
from promptinit.selfsup.metatask import MetaTask

__all__ = [
    "FORMATS",
    "ClusterConfig",
    "Clusters",
    "Corpus",
    "CorpusConfig",
    "Format",
    "GroupConfig",
    "GroupTaskSampler",
    "Grouping",
    "MetaTask",
    "SelfSupTaskSampler",
    "build_corpus",
    "build_groups",
    "cluster_corpus",
    "corpus_from_texts",
    "embed_texts",
    "split_sentences",
]
