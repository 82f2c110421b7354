"""Plain prompt tuning: no upstream learning (the baseline every method is compared with).

Its initialisation is the sampled-vocabulary prompt of Lester et al. 2021, which the PT
baseline of ``promptinit.evaluation`` also starts from; ``step()`` changes nothing, so the
platform can run, checkpoint and evaluate it like any other method.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptinit.methods.base import Method, register
from promptinit.methods.common import PromptMethod, check_int, normalize_numbers


@dataclass(frozen=True)
class PTConfig:
    """Plain prompt tuning has nothing to learn upstream.

    Attributes:
        steps: outer steps of a run (each a no-op; 0 by default).
    """

    steps: int = 0  # outer steps (no-ops)

    def __post_init__(self) -> None:
        normalize_numbers(self)
        check_int(self, "steps", minimum=0)


@register(Method.PT.value, PTConfig)
class PT(PromptMethod):
    """The sampled-vocabulary initialisation; ``step()`` only counts.

    Args:
        backbone: the frozen model.
        tasks: ignored (kept for the common constructor).
        config: ``PTConfig``.
        seed: which vocabulary tokens are sampled.
    """

    def step(self) -> dict[str, float]:
        # Counting keeps resumption and chunked trainables uniform across methods.
        self.state.step += 1
        return {}
