"""Search space of MetaPT (Huang et al. 2022, "Learning a Better Initialization for Soft
Prompts via Meta-Learning"): prompt-MAML over meta-tasks made by clustering a labelled
pre-training set.

The default point is the paper's preset (``promptinit.methods.metapt.MetaPTConfig()``, values
per the issue's reading of the paper, not re-verified): K-means with K = 10 (K-means > LDA >
random > by-label), inner lr α = 0.08, outer lr β = 0.025 with AdamW, on the single-domain
sentiment pool, with early stopping (patience 6). The learning rates are searched
log-uniformly over a factor of 4 either side of the paper's values (the audit found no
search range in the paper). ``steps`` is the run's maximum length (early stopping usually
ends it sooner), fixed at 5000 unless the sweep's budget replaces it. The fixed entries are
the config's defaults, repeated so every trial logs them and a sweep YAML can override them
(``search.space.metapt.pool: sources`` when a target task is built from the sentiment
corpus). The setting names are the fields of ``promptinit.methods`` MetaPT config; the space
joins a sweep only when ``metapt`` is registered.
"""

from __future__ import annotations

from promptinit.spaces.params import Choice, Fixed, Float
from promptinit.spaces.space import MethodSpace

REFERENCE = "Huang et al. 2022, MetaPT (arXiv:2205.12471), sec. 3 and 4"
INNER_LR, OUTER_LR = 0.08, 0.025  # α, β of the paper

METAPT = MethodSpace(
    "metapt",
    {
        "num_clusters": Choice((5, 10, 20)),
        "grouping": Choice(("kmeans", "lda")),
        "inner_lr": Float(INNER_LR / 4, INNER_LR * 4, log=True),
        "outer_lr": Float(OUTER_LR / 4, OUTER_LR * 4, log=True),
        "steps": Fixed(5000),
        "pool": Fixed("sentiment"),
        "outer_optimizer": Fixed("adamw"),
        "patience": Fixed(6),
    },
    defaults={"num_clusters": 10, "grouping": "kmeans", "inner_lr": INNER_LR, "outer_lr": OUTER_LR},
    reference=REFERENCE,
    prepare=True,  # corpus / embeddings / clusters are cached on disk: fill the cache once
)

SPACES = {"metapt": METAPT}
