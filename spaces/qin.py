"""Search spaces of Qin et al. (2023), "Learning to Initialize: Can Meta Learning Improve
Cross-task Generalization in Prompt Tuning?" (ACL), section 4 and appendix A.

Their grid: inner lr {2e-5, 3e-5, 5e-5}, outer lr {0.2, 0.3, 0.5}, steps {2500, 5000, 10000},
Reptile inner steps {2..10}; MTL lr {0.2, 0.3, 0.5}, batch {2, 4, 6, 8}, epochs {5, 10, 20}.
Their defaults (T5-Large, Adafactor outer optimiser): inner lr 3e-5, outer lr 0.5, 5000 steps,
inner batch 2 / 4 / 4 and inner steps 1 / 1 / 10 for MAML / FoMAML / Reptile; MTL (§5.3) lr 0.5,
batch 4, 20 epochs. We search the continuous hyperparameters over the grid's range (log scale
for the inner lr) so TPE can interpolate; the defaults are the first points evaluated.

MAML's and FoMAML's inner steps are searched over 1-10 although Qin fixes them at 1: Wu et al.
2022 ("Continued Pretraining for Better Zero- and Few-Shot Promptability", EMNLP) adapt with 7
(allenai/better-promptability configs/fomaml.jsonnet). Every value the papers use is reachable;
the default stays Qin's 1. docs/fidelity.md has every value with its source.
"""

from __future__ import annotations

from promptinit.spaces.params import Choice, Fixed, Float, Int, Param
from promptinit.spaces.space import MethodSpace

REFERENCE = "Qin et al. 2023, Learning to Initialize (ACL), sec. 4 and app. A"
PAPER_STEPS = Choice((2500, 5000, 10000))  # upstream outer steps; sweeps cut this with budget.steps
INNER_STEPS = Int(1, 10)  # MAML / FoMAML: Qin 1, Wu et al. 2022 7

_META: dict[str, Param] = {
    "inner_lr": Float(2e-5, 5e-5, log=True),
    "outer_lr": Float(0.2, 0.5),
    "steps": PAPER_STEPS,
    "inner_batch_size": Choice((2, 4, 8)),
    "outer_optimizer": Fixed("adafactor"),
}

MAML = MethodSpace(
    "maml",
    {**_META, "inner_steps": INNER_STEPS},
    defaults={"inner_lr": 3e-5, "outer_lr": 0.5, "steps": 5000, "inner_batch_size": 2, "inner_steps": 1},
    reference=REFERENCE,
)

FOMAML = MethodSpace(
    "fomaml",
    {**_META, "inner_steps": INNER_STEPS},
    defaults={"inner_lr": 3e-5, "outer_lr": 0.5, "steps": 5000, "inner_batch_size": 4, "inner_steps": 1},
    reference=REFERENCE,
)

REPTILE = MethodSpace(
    "reptile",
    {**_META, "inner_steps": Int(2, 10)},
    defaults={"inner_lr": 3e-5, "outer_lr": 0.5, "steps": 5000, "inner_batch_size": 4, "inner_steps": 10},
    reference=REFERENCE,
)

# MTL (§5.3): lr 0.5, batch 4, Adafactor, 20 epochs. In a sweep the epochs {5, 10, 20} become
# outer steps (the trainable reports every N steps, ASHA's unit, and an epoch depends on the
# source pool's size); `promptinit upstream` and the library keep the epochs.
MTL = MethodSpace(
    "mtl",
    {"lr": Float(0.2, 0.5), "batch_size": Choice((2, 4, 6, 8)), "steps": PAPER_STEPS, "optimizer": Fixed("adafactor")},
    defaults={"lr": 0.5, "batch_size": 4, "steps": 5000},
    reference=REFERENCE,
)

SPACES = {s.method: s for s in (MTL, MAML, FOMAML, REPTILE)}
