"""Ray Tune trainables: thin wrappers that run a promptinit method and report its validation
metrics (``val/delta``, ``val/arg``).
Needs the ``platform`` extra (Ray)."""

from promptinit.extras import require_platform

require_platform("promptinit.trainables")
# after the check, so a missing Ray reads as the install hint, not as an ImportError from Tune
from promptinit.trainables.metrics import MODE, OBJECTIVES  # noqa: E402 - see above
from promptinit.trainables.trainable import Shared, make_trainable, train_prompt_init  # noqa: E402 - see above

__all__ = ["MODE", "OBJECTIVES", "Shared", "make_trainable", "train_prompt_init"]
