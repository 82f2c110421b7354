"""Ray Tune trainables: thin wrappers that run a promptinit method and report ``val/arg``.
Needs the ``platform`` extra (Ray)."""
from promptinit.extras import require_platform

require_platform("promptinit.trainables")
from promptinit.trainables.metrics import METRIC, MODE
from promptinit.trainables.trainable import Shared, make_trainable, train_prompt_init

__all__ = ["METRIC", "MODE", "Shared", "make_trainable", "train_prompt_init"]
