"""The four kinds of search-space entry, and how a sweep YAML overrides one.

A method's space is a table ``{setting: Float | Int | Choice | Fixed}``. The define-by-run
function (``spaces.SweepSpace``) walks that table and calls ``trial.suggest_*`` for each
searched entry; ``Fixed`` entries become constants of the trial's config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from promptinit.errors import PromptinitError


@dataclass(frozen=True)
class Float:
    """A float range; ``log=True`` samples uniformly in log space."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def nearest(self, value: float) -> float:
        return float(min(max(value, self.low), self.high))


@dataclass(frozen=True)
class Int:
    """An integer range, both ends included."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high

    def nearest(self, value: int) -> int:
        return int(min(max(round(value), self.low), self.high))


@dataclass(frozen=True)
class Choice:
    """A categorical choice among plain values (numbers or strings)."""

    options: tuple

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def contains(self, value: Any) -> bool:
        return value in self.options

    def nearest(self, value: Any) -> Any:
        if value in self.options:
            return value
        numeric = [o for o in self.options if isinstance(o, (int, float)) and not isinstance(o, bool)]
        if numeric and isinstance(value, (int, float)):
            # Compare on a log scale: 3e-5 is nearer 2e-5 than 1e-3 is.
            return min(numeric, key=lambda o: abs(math.log(max(o, 1e-30)) - math.log(max(value, 1e-30))))
        return self.options[0]


@dataclass(frozen=True)
class Fixed:
    """A constant: not searched, passed to every trial of the method."""

    value: Any

    def contains(self, value: Any) -> bool:
        return value == self.value

    def nearest(self, value: Any) -> Any:
        return self.value


Param = Float | Int | Choice | Fixed


def parse_override(value: Any, field: str) -> Param:
    """Read one sweep-YAML override of a space entry.

    Forms: a scalar fixes the setting (``outer_optimizer: adam``); a list is a categorical
    choice (``steps: [20, 40]``); a mapping ``{low, high, log}`` is a range (ints when both
    ends are ints).

    Args:
        value: the YAML value.
        field: the field's dotted path, for error messages.

    Returns:
        The entry.

    Raises:
        PromptinitError: naming ``field``: empty choice lists, empty or reversed ranges,
            unknown keys.
    """
    if isinstance(value, list):
        if not value:
            raise PromptinitError(f"field {field!r}: empty search space (an empty list); give at least one value")
        if any(isinstance(v, (list, dict)) for v in value):
            raise PromptinitError(f"field {field!r}: choices must be plain values, got {value!r}")
        return Choice(tuple(value)) if len(value) > 1 else Fixed(value[0])
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"low", "high", "log"})
        if unknown or not {"low", "high"} <= set(value):
            raise PromptinitError(
                f"field {field!r}: a range is {{low: ..., high: ..., log: true|false}}, got {value!r}"
            )
        low, high, log = value["low"], value["high"], bool(value.get("log", False))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise PromptinitError(f"field {field!r}: low and high must be numbers, got {low!r} and {high!r}")
        if low > high:
            raise PromptinitError(f"field {field!r}: empty search space (low {low} > high {high})")
        if log and low <= 0:
            raise PromptinitError(f"field {field!r}: a log range needs low > 0, got {low}")
        if low == high:
            return Fixed(low)
        if isinstance(low, int) and isinstance(high, int):
            return Int(low, high, log)
        return Float(float(low), float(high), log)
    return Fixed(value)
