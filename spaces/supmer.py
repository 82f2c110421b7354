"""Search space of SUPMER (Pan et al. 2023, "Self-supervised Meta-Prompt Learning with
Meta-Gradient Regularization for Few-shot Generalization", EMNLP Findings).

Defaults from the paper and its released code: Adam on the prompt θ with lr 0.1 and on the
regulariser φ with lr 1e-4, inner lr 0.1, 4 tasks per outer step, curriculum mixup with
α = 1 and m = 2. The ranges span one order of magnitude around each learning rate. The setting
names are the fields of ``promptinit.methods`` SUPMER config; the space joins a sweep only
when ``supmer`` is registered.
"""
from __future__ import annotations

from spaces.params import Choice, Float
from spaces.qin import PAPER_STEPS
from spaces.space import MethodSpace

REFERENCE = "Pan et al. 2023, SUPMER (EMNLP Findings), sec. 4.1 and released code"

SUPMER = MethodSpace(
    "supmer",
    {
        "outer_lr": Float(0.03, 0.3, log=True),
        "phi_lr": Float(3e-5, 3e-4, log=True),
        "inner_lr": Float(0.03, 0.3, log=True),
        "meta_batch_size": Choice((2, 4, 8)),
        "mixup_m": Choice((1.5, 2.0, 3.0)),
        "steps": PAPER_STEPS,
    },
    defaults={"outer_lr": 0.1, "phi_lr": 1e-4, "inner_lr": 0.1, "meta_batch_size": 4, "mixup_m": 2.0,
              "steps": 5000},
    reference=REFERENCE,
    prepare=True,  # corpus / embeddings / clusters are cached on disk: fill the cache once
)

SPACES = {"supmer": SUPMER}
