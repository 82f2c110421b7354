"""Search space of MetaPT (Huang et al. 2022, "Learning a Better Initialization for Soft
Prompts via Meta-Learning"): prompt-MAML over meta-tasks made by clustering a labelled
pre-training set.

The paper's best setting: K-means with K = 10 (K-means > LDA > random > by-label). The MAML
learning rates use Qin et al.'s ranges. The setting names are the fields of
``promptinit.methods`` MetaPT config; the space joins a sweep only when ``metapt`` is
registered.
"""
from __future__ import annotations

from spaces.params import Choice, Float
from spaces.qin import PAPER_STEPS
from spaces.space import MethodSpace

REFERENCE = "Huang et al. 2022, MetaPT (arXiv:2205.12471), sec. 3 and 4"

METAPT = MethodSpace(
    "metapt",
    {
        "num_clusters": Choice((5, 10, 20)),
        "grouping": Choice(("kmeans", "lda")),
        "inner_lr": Float(2e-5, 5e-5, log=True),
        "outer_lr": Float(0.2, 0.5),
        "steps": PAPER_STEPS,
    },
    defaults={"num_clusters": 10, "grouping": "kmeans", "inner_lr": 3e-5, "outer_lr": 0.5, "steps": 5000},
    reference=REFERENCE,
    prepare=True,  # corpus / embeddings / clusters are cached on disk: fill the cache once
)

SPACES = {"metapt": METAPT}
