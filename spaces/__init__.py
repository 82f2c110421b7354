"""Optuna define-by-run search spaces, one per upstream method, with the papers' defaults.

``build_space(["maml", "reptile"], overrides)`` returns a ``SweepSpace``: called with an
Optuna trial it first picks the method (when there are several), then suggests that
method's settings, and returns the fixed settings as constants. ``points_to_evaluate()``
gives each method's paper defaults, so the first trials reproduce the papers.

Methods join when they are registered in ``promptinit.methods``; a space written for a method
that is not registered is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from promptinit.errors import PromptinitError
from promptinit.spaces.metapt import SPACES as _METAPT
from promptinit.spaces.params import Choice, Fixed, Float, Int, Param, parse_override
from promptinit.spaces.qin import SPACES as _QIN
from promptinit.spaces.space import (
    METHOD_KEY,
    SOURCES_KEY,
    MethodSpace,
    SweepSpace,
    param_name,
    trial_settings,
    trial_sources,
)
from promptinit.spaces.supmer import SPACES as _SUPMER

ALL_SPACES: dict[str, MethodSpace] = {**_QIN, **_SUPMER, **_METAPT}
BASELINE = "pt"  # no upstream learning and nothing to search: every ARG is measured against it

__all__ = [
    "ALL_SPACES",
    "BASELINE",
    "METHOD_KEY",
    "SOURCES_KEY",
    "Choice",
    "Fixed",
    "Float",
    "Int",
    "MethodSpace",
    "Param",
    "SweepSpace",
    "available_methods",
    "build_space",
    "check_space",
    "param_name",
    "parse_override",
    "trial_settings",
    "trial_sources",
]


def _registry() -> dict:
    import promptinit.methods  # noqa: F401 - importing the package registers every method
    from promptinit.methods.base import REGISTRY

    return REGISTRY


def available_methods() -> list[str]:
    """Searchable methods: registered in ``promptinit.methods`` and with a space here."""
    registry = _registry()
    return [m for m in ALL_SPACES if m in registry]


def build_space(
    methods: Sequence[str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    steps: Sequence[int] | None = None,
    where: str = "search.space",
) -> SweepSpace:
    """The sweep's define-by-run space.

    Args:
        methods: method names, in the order of the first categorical choice.
        overrides: per method, setting -> YAML value (see ``spaces.params.parse_override``).
        steps: choices of upstream steps for every method (the sweep's budget).
        where: dotted field path of ``overrides`` in the sweep YAML, for error messages.

    Returns:
        A picklable ``SweepSpace``.

    Raises:
        PromptinitError: no methods, a method without a space, or a bad override.
    """
    if not methods:
        raise PromptinitError("empty search space: name at least one method")
    # Settings for a method this installation does not have (yet) are kept for when it does.
    unavailable = set(ALL_SPACES) - set(available_methods())
    overrides = {m: v for m, v in (overrides or {}).items() if m not in unavailable or m in methods}
    extra = sorted(set(overrides) - set(methods))
    if extra:
        raise PromptinitError(
            f"field '{where}.{extra[0]}': {extra[0]!r} is not one of the sweep's methods {list(methods)}"
        )
    spaces = []
    for m in methods:
        if m not in ALL_SPACES:
            raise PromptinitError(
                f"method {m!r} has no search space; add one to spaces/ (known: {', '.join(ALL_SPACES)})"
            )
        spaces.append(ALL_SPACES[m].with_overrides(overrides.get(m) or {}, f"{where}.{m}", steps))
    return SweepSpace(tuple(spaces))


def check_space(space: SweepSpace, where: str = "search.space") -> None:
    """Refuse a space whose settings the method's config does not have or rejects.

    Every setting must be a field of the method's config dataclass, and the paper-default
    point (plus the fixed settings) must build a valid config.
    """
    from promptinit.methods.base import make_config

    registry = _registry()
    for s in space.spaces:
        if s.method not in registry:
            raise PromptinitError(f"method {s.method!r} is not available; available: {', '.join(available_methods())}")
        fields = {f.name for f in dataclasses.fields(registry[s.method].config_cls)}
        unknown = sorted(set(s.params) - fields)
        if unknown:
            raise PromptinitError(
                f"field '{where}.{s.method}.{unknown[0]}': {s.method} has no setting {unknown[0]!r}; "
                f"its settings: {', '.join(sorted(fields))}"
            )
        point = {
            **{
                param_name(s.method, k): v.low if isinstance(v, (Float, Int)) else v.options[0]
                for k, v in s.searched().items()
                if isinstance(v, (Float, Int, Choice))  # searched(): never Fixed
            },
            **s.default_point(),
        }
        try:
            make_config(s.method, s.settings(point))
        except (PromptinitError, ValueError, TypeError) as err:
            raise PromptinitError(f"field '{where}.{s.method}': {err}") from None
