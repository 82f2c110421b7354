"""Search space of SUPMER (Pan et al. 2023, "Self-supervised Meta-Prompt Learning with
Meta-Gradient Regularization for Few-shot Generalization", EMNLP Findings).

Defaults from the paper and its released code (beepkh/SUPMER ``scripts/meta-train.sh``):
Adam on the prompt θ with lr 0.1 and on the regulariser φ with lr 1e-4, both decaying
linearly to 0, inner lr 0.1, 4 tasks per outer step, 100,000 outer steps, curriculum mixup
with α = 1 and m = 2. The ranges span one order of magnitude around each learning rate. The
settings not listed here (16 support / 16 query examples, ψ at the code's rank, the schedule)
are the config's defaults. The paper has no grid of steps, so ``steps`` is fixed to the
released run's; a sweep's ``budget.steps`` replaces it (the linear schedule then decays over
the budget). The setting names are the fields of ``promptinit.methods`` SUPMER config; the
space joins a sweep only when ``supmer`` is registered.
"""

from __future__ import annotations

from promptinit.spaces.params import Choice, Fixed, Float
from promptinit.spaces.space import MethodSpace

REFERENCE = "Pan et al. 2023, SUPMER (EMNLP Findings), sec. 4.1 and released code"
PAPER_STEPS = Fixed(100_000)  # scripts/meta-train.sh TOTAL_STEPS; sweeps cut this with budget.steps

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
    defaults={"outer_lr": 0.1, "phi_lr": 1e-4, "inner_lr": 0.1, "meta_batch_size": 4, "mixup_m": 2.0, "steps": 100_000},
    reference=REFERENCE,
    prepare=True,  # corpus / embeddings / clusters are cached on disk: fill the cache once
)

SPACES = {"supmer": SUPMER}
