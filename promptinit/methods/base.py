"""The shape every upstream method shares, and the registry that builds one from a name.

A method is a small class with explicit state. It is built from a frozen backbone, the
source tasks and a config dataclass; ``step()`` runs one outer step and returns metrics;
``prompt`` is the current initialisation; ``state_dict()`` / ``load_state_dict()`` restore
it exactly (the next step after a reload equals the uninterrupted run's).

A checkpoint is one dict of tensors and plain values (``{"prompt", "optimizer", "step",
"rng", "config", ...}``), saved as safetensors + JSON by ``save_checkpoint``, never a pickle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from promptinit.backbones import Backbone
from promptinit.errors import PromptinitError
from promptinit.tasks.task import Task

if TYPE_CHECKING:
    from promptinit.methods.common import TrainState


class Method(str, Enum):
    PT = "pt"  # no upstream: the baseline
    MTL = "mtl"
    MAML = "maml"
    FOMAML = "fomaml"
    REPTILE = "reptile"
    SUPMER = "supmer"
    METAPT = "metapt"


class UpstreamMethod(Protocol):
    name: ClassVar[str]
    prompt: torch.Tensor  # [L, d], the current initialisation
    state: TrainState  # prompt, outer optimizer, step, rng
    config: Any  # the method's config dataclass

    def step(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Registered:
    config_cls: type
    method_cls: type


REGISTRY: dict[str, Registered] = {}


def register(name: str, config_cls: type):
    """Class decorator: ``@register("maml", MAMLConfig)``."""

    def deco(cls):
        REGISTRY[name] = Registered(config_cls, cls)
        cls.name = name
        return cls

    return deco


def make_config(name: str, values: Mapping[str, Any] | None = None):
    """Build a method's config dataclass from plain values, naming unknown fields."""
    if name not in REGISTRY:
        raise PromptinitError(f"method {name!r} is unknown; known methods: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name].config_cls
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PromptinitError(f"method {name!r}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def build_method(
    name: str,
    backbone: Backbone,
    tasks: Sequence[Task],
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    **extra: Any,
) -> UpstreamMethod:
    """Build method ``name`` over source ``tasks`` with ``config`` (plain dict of settings)."""
    cfg = make_config(name, config)
    return REGISTRY[name].method_cls(backbone, list(tasks), cfg, seed=seed, **extra)
