"""A method's search space and the define-by-run function of a whole sweep.

Trial configs look like ``{"method": "maml", "maml": {"inner_lr": 3.1e-5, ...}}``: Optuna
parameters are named ``<method>/<setting>`` and the searcher (``promptinit.search.phases.searcher``) nests the ``/``
into that nesting, so a setting of one method never shares a name (and a TPE model) with
another method's, and the trainable reads ``config[config["method"]]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from promptinit.errors import PromptinitError
from promptinit.spaces.params import Choice, Fixed, Param, parse_override

METHOD_KEY = "method"  # the first (categorical) choice when a sweep has several methods
SOURCES_KEY = "sources"  # how many source tasks a trial uses, most similar to the targets first


def param_name(method: str, setting: str) -> str:
    """The Optuna parameter name of a method's setting."""
    return f"{method}/{setting}"


@dataclass(frozen=True)
class MethodSpace:
    """One method's space: ``params`` to search or fix, and the paper's ``defaults``.

    Attributes:
        method: the registry name (``maml``).
        params: setting -> ``Float | Int | Choice | Fixed``; the setting names are the fields
            of the method's config dataclass.
        defaults: the paper's values of the searched settings (``points_to_evaluate``).
        reference: where the ranges and defaults come from.
        prepare: build the method once before the trials (its on-disk caches: corpus,
            embeddings, clusters), so concurrent trials read them instead of computing them.
    """

    method: str
    params: dict[str, Param]
    defaults: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    prepare: bool = False

    def sample(self, trial) -> dict[str, Any]:
        """Define-by-run: suggest every searched setting; return the fixed ones as constants.

        No computation happens here (Optuna runs it in the driver for every trial).
        """
        constants = {}
        for name, entry in self.params.items():
            if isinstance(entry, Fixed):
                constants[param_name(self.method, name)] = entry.value
            else:
                entry.suggest(trial, param_name(self.method, name))
        return constants

    def searched(self) -> dict[str, Param]:
        return {k: v for k, v in self.params.items() if not isinstance(v, Fixed)}

    def default_point(self) -> dict[str, Any]:
        """The paper's defaults as Optuna parameters, each moved into the (overridden) range."""
        point = {}
        for name, entry in self.searched().items():
            if name in self.defaults:
                point[param_name(self.method, name)] = entry.nearest(self.defaults[name])
        return point

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A method config (plain dict) from a flat Optuna point plus the fixed settings."""
        out = {k: v.value for k, v in self.params.items() if isinstance(v, Fixed)}
        prefix = f"{self.method}/"
        out.update({k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)})
        return out

    def with_overrides(
        self, overrides: Mapping[str, Any], where: str, steps: Sequence[int] | None = None
    ) -> MethodSpace:
        """This space with a sweep YAML's entries replaced.

        Args:
            overrides: setting -> YAML value (scalar fixes it, list is a choice, mapping a range).
            where: dotted field path of ``overrides`` for error messages.
            steps: the sweep's budget of upstream steps (replaces ``steps`` in every method).
        """
        params = dict(self.params)
        if steps is not None and "steps" in params:
            params["steps"] = Choice(tuple(steps)) if len(steps) > 1 else Fixed(steps[0])
        for name, value in overrides.items():
            params[name] = parse_override(value, f"{where}.{name}")
        return replace(self, params=params)


@dataclass(frozen=True)
class SweepSpace:
    """The define-by-run function of a sweep: the method first, then its own space.

    A picklable object rather than a closure, because Tune pickles the searcher (and this
    function with it) into the experiment state that ``--resume`` restores.
    """

    spaces: tuple[MethodSpace, ...]
    source_counts: tuple[int, ...] = ()  # choices of k (top-k similar sources); () = all sources

    def __post_init__(self) -> None:
        if not self.spaces:
            raise PromptinitError("empty search space: name at least one method")

    @property
    def methods(self) -> list[str]:
        return [s.method for s in self.spaces]

    def space(self, method: str) -> MethodSpace:
        for s in self.spaces:
            if s.method == method:
                return s
        raise KeyError(method)

    def __call__(self, trial) -> dict[str, Any]:
        if len(self.spaces) > 1:
            method = trial.suggest_categorical(METHOD_KEY, self.methods)
        else:
            method = self.methods[0]
        config = {METHOD_KEY: method, **self.space(method).sample(trial)}
        if len(self.source_counts) > 1:
            config[SOURCES_KEY] = trial.suggest_categorical(SOURCES_KEY, list(self.source_counts))
        elif self.source_counts:
            config[SOURCES_KEY] = self.source_counts[0]
        return config

    def points_to_evaluate(self) -> list[dict[str, Any]]:
        """One point per method: the paper's defaults (Optuna parameter names)."""
        points = []
        for s in self.spaces:
            point = s.default_point()
            if len(self.spaces) > 1:
                point = {METHOD_KEY: s.method, **point}
            if len(self.source_counts) > 1:  # the largest k: nearest to the papers (every source task)
                point[SOURCES_KEY] = max(self.source_counts)
            if point:
                points.append(point)
        return points


def trial_settings(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(method, settings)`` of a trial config produced by ``SweepSpace``."""
    method = config[METHOD_KEY]
    return method, dict(config.get(method) or {})


def trial_sources(config: Mapping[str, Any], sources: Sequence[Any]) -> list[Any]:
    """The source tasks a trial uses: the first ``config["sources"]`` (the sweep orders them
    most similar to the targets first), or all of them."""
    return list(sources)[: config.get(SOURCES_KEY) or len(sources)]
