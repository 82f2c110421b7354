"""What the upstream methods share: config checks, explicit training state, the outer step.

Every method keeps its state in one ``TrainState`` (prompt, outer optimizer, step counter,
random generator). ``step()`` is the same for all of them: draw a meta-batch, ask the method
for the (meta-)gradient of the prompt, let the outer optimizer apply it. The methods differ
only in ``sample()`` and ``meta_gradient()``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import numbers
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import torch

from promptinit.backbones import Backbone
from promptinit.errors import PromptinitError
from promptinit.meta import MetaTaskSampler, TaskSampling
from promptinit.tasks.fewshot import SEEDS
from promptinit.tasks.task import Example, Task
from promptinit.tuning import make_optimizer

OPTIMIZERS = ("adafactor", "adam", "sgd")
T = TypeVar("T")
# what a method's sample() draws and its meta_gradient() takes (SUPMER: self-supervised tasks)
MetaTaskT = TypeVar("MetaTaskT")

# Metric names (constants, so trainables and sweeps refer to the same strings).
QUERY_LOSS = "meta/query_loss"
SUPPORT_LOSS = "meta/support_loss"
TRAIN_LOSS = "train/loss"
GRAD_NORM = "meta/grad_norm"

# Settings a resumed run may change: the run length does not alter any step's result, the
# pass size only its rounding. (A method whose schedule spans the run, SUPMER with its linear
# lr decay, refuses another ``steps`` in its own ``load_state_dict``.)
RESUMABLE = frozenset({"steps", "rows_per_pass"})


# --------------------------------------------------------------------------- config checks


def check_positive(cfg: Any, *names: str) -> None:
    """Raise naming the field, its value and the fix when a setting is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise PromptinitError(
                f"{type(cfg).__name__}: field {name!r}: {value!r} must be a number > 0; "
                f"set {name} to a positive value (default {_default(cfg, name)!r})"
            )


def check_int(cfg: Any, *names: str, minimum: int = 1) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise PromptinitError(
                f"{type(cfg).__name__}: field {name!r}: {value!r} must be an integer >= {minimum}; "
                f"set {name} to e.g. {_default(cfg, name)!r}"
            )


def check_choice(cfg: Any, name: str, choices: Sequence[str]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise PromptinitError(
            f"{type(cfg).__name__}: field {name!r}: {value!r} is not one of {', '.join(choices)}; "
            f"set {name} to one of them (default {_default(cfg, name)!r})"
        )


def check_rows_per_pass(cfg: Any) -> None:
    """``rows_per_pass``: 0 (measured per backbone and device) or a fixed row count >= 1."""
    value = cfg.rows_per_pass
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PromptinitError(
            f"{type(cfg).__name__}: field 'rows_per_pass': {value!r} must be an integer >= 1, or 0 to measure "
            "the best pass size per backbone and device"
        )


def normalize_numbers(cfg: Any) -> None:
    """Give numeric fields the built-in type of their default (YAML's ``1`` for a float field,
    numpy integers from a search space), so configs compare and serialise predictably."""
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if isinstance(value, bool) or isinstance(default, bool):
            continue
        if isinstance(default, float) and isinstance(value, numbers.Real):
            object.__setattr__(cfg, f.name, float(value))
        elif isinstance(default, int) and isinstance(value, numbers.Integral):
            object.__setattr__(cfg, f.name, int(value))


def _default(cfg: Any, name: str) -> Any:
    f = cfg.__dataclass_fields__[name]
    return f.default if f.default is not dataclasses.MISSING else None


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class SourceConfig:
    """Settings every method that learns from source tasks shares.

    Attributes:
        steps: outer steps of a full run (Qin et al. 2023: 5000; grid 2500 / 5000 / 10000).
        task_sampling: ``uniform`` or ``proportional`` (to the few-shot pool size).
        seeds: few-shot draws whose train / dev sets form the support / query pools.
        task_batched: run the T tasks of a meta-batch as batched forward/backward passes, each
            example carrying its own task's prompt (same result as task by task, faster); how
            many tasks share a pass follows ``rows_per_pass``.
        rows_per_pass: rows per batched pass; 0: the rule of ``promptinit.throughput``
            (measured once per backbone and device, never fewer rows than one task's).
    """

    steps: int = 5000  # outer steps
    task_sampling: str = "uniform"  # uniform | proportional
    seeds: tuple[int, ...] = SEEDS  # few-shot seeds usable as support / query pools
    task_batched: bool = True  # batched passes over the meta-batch
    rows_per_pass: int = 0  # rows per pass; 0: measured per backbone and device

    def __post_init__(self) -> None:
        # Tune / YAML give lists; a frozen config keeps a hashable tuple.
        object.__setattr__(self, "seeds", tuple(self.seeds) if isinstance(self.seeds, (list, tuple)) else self.seeds)
        normalize_numbers(self)
        check_int(self, "steps", minimum=0)
        check_choice(self, "task_sampling", [s.value for s in TaskSampling])
        if (
            not isinstance(self.seeds, tuple)
            or not self.seeds
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in self.seeds)
        ):
            raise PromptinitError(
                f"{type(self).__name__}: field 'seeds': {self.seeds!r} must be a non-empty list of integer "
                f"few-shot seeds, e.g. {list(SEEDS)}"
            )
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not isinstance(self.task_batched, bool):
            raise PromptinitError(
                f"{type(self).__name__}: field 'task_batched': {self.task_batched!r} must be true or false"
            )
        check_rows_per_pass(self)


@dataclass(frozen=True)
class InnerLoopConfig(SourceConfig):
    """Settings of the methods that adapt the prompt per task with inner SGD steps.

    Defaults are Qin et al. 2023's MAML settings (T5-Large, 100 prompt vectors).
    """

    inner_lr: float = 3e-5  # SGD step size on the prompt in the inner loop (grid 2e-5 / 3e-5 / 5e-5)
    inner_steps: int = 1  # SGD steps per task
    inner_batch_size: int = 2  # support examples per task per inner step
    meta_batch_size: int = 4  # tasks per outer step
    outer_lr: float = 0.5  # outer optimizer step size (grid 0.2 / 0.3 / 0.5)
    outer_optimizer: str = "adafactor"  # adafactor (the paper's, fixed lr) | adam | sgd

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "inner_lr", "outer_lr")
        check_int(self, "inner_steps", "inner_batch_size", "meta_batch_size")
        check_choice(self, "outer_optimizer", OPTIMIZERS)


def config_dict(config: Any) -> dict[str, Any]:
    """A config as plain JSON values (tuples become lists), for checkpoints and comparisons."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


# --------------------------------------------------------------------------- state


@dataclass
class TrainState:
    """Everything a method changes while it runs.

    Attributes:
        prompt: the meta-parameter φ [L, d], a leaf tensor that requires grad.
        optimizer: the outer optimizer over ``prompt`` (None for methods without one).
        step: outer steps done.
        rng: the generator that draws meta-batches.
    """

    prompt: torch.Tensor
    optimizer: torch.optim.Optimizer | None
    step: int
    rng: random.Random


def _rng_to_plain(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_plain(value: Sequence) -> tuple:
    version, internal, gauss = value
    return (int(version), tuple(int(v) for v in internal), gauss)


class PromptMethod(Generic[MetaTaskT]):
    """Base of the upstream methods: explicit state and the shared outer step.

    Args:
        backbone: the frozen model.
        tasks: source tasks.
        config: the method's config dataclass.
        seed: seeds the initial prompt (sampled vocabulary, as the PT baseline) and the
            meta-batch generator.
        init: start from this prompt [L, d] instead of the sampled-vocabulary one.
    """

    name: ClassVar[str]

    def __init__(
        self, backbone: Backbone, tasks: Sequence[Task], config: Any, seed: int = 0, init: torch.Tensor | None = None
    ):
        self.backbone = backbone
        self.config = config
        self.seed = seed
        self.sampler = (
            MetaTaskSampler(tasks, config.seeds, config.task_sampling) if isinstance(config, SourceConfig) else None
        )
        start = init if init is not None else backbone.init_prompt("vocab", seed=seed)
        expected = (backbone.config.prompt_length, backbone.hidden_size)
        if tuple(start.shape) != expected:
            raise PromptinitError(
                f"init prompt shape {list(start.shape)} does not match the model's [L, d] = {list(expected)}"
            )
        prompt = start.detach().clone().to(backbone.device).requires_grad_(True)
        self.state = TrainState(prompt, self._make_optimizer(prompt), 0, random.Random(seed))

    # ------------------------------------------------------------------ to override
    def _make_optimizer(self, prompt: torch.Tensor) -> torch.optim.Optimizer | None:
        return None

    def sample(self) -> list[MetaTaskT]:
        """Draw the next meta-batch with the method's generator. A method either overrides this and
        ``meta_gradient`` (MAML, MTL, Reptile, SUPMER) or ``step`` itself (PT, which has no meta-batch),
        so the hooks are not abstract."""
        raise NotImplementedError(f"{type(self).__name__} overrides neither sample() nor step()")

    def meta_gradient(
        self, meta_tasks: Sequence[MetaTaskT], task_batched: bool | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The direction the outer optimizer descends, for this meta-batch, and metrics (see ``sample``)."""
        raise NotImplementedError(f"{type(self).__name__} overrides neither meta_gradient() nor step()")

    # ------------------------------------------------------------------ shared
    @property
    def prompt(self) -> torch.Tensor:
        """The current initialisation φ [L, d] (detached)."""
        return self.state.prompt.detach()

    @property
    def source_sampler(self) -> MetaTaskSampler:
        """The sampler of the source tasks (methods with a ``SourceConfig``)."""
        if not isinstance(self.sampler, MetaTaskSampler):
            raise PromptinitError(f"method {self.name!r} draws no source tasks (its config is not a SourceConfig)")
        return self.sampler

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """``state.optimizer``, which every method that takes an outer step has."""
        if self.state.optimizer is None:
            raise PromptinitError(f"method {self.name!r} has no outer optimizer")
        return self.state.optimizer

    def _batched(self, task_batched: bool | None) -> bool:
        return self.config.task_batched if task_batched is None else task_batched

    def _task_groups(
        self, items: Sequence[T], task_batched: bool | None, rows_per_item: int, examples: Sequence[Example] = ()
    ) -> list[list[T]]:
        """The meta-batch cut into the groups that share a pass.

        One item per group when ``task_batched`` is off; otherwise as many items as one pass of
        ``promptinit.throughput.rows_per_pass`` rows holds (the rule every batched pass follows:
        measured per backbone and device, never fewer rows than one item's), or the config's
        ``rows_per_pass``.

        Args:
            items: the tasks (or their indices).
            task_batched: the call's choice (None: the config's).
            rows_per_item: rows one item puts in a pass (its largest batch).
            examples: examples of the meta-batch, whose longest one sizes the pass.
        """
        from promptinit.throughput import example_tokens, rows_per_pass

        items = list(items)
        if not self._batched(task_batched):
            return [[x] for x in items]
        bb = self.backbone
        tokens = bb.config.prompt_length + max(example_tokens(bb, examples)) if examples else None
        setting = getattr(self.config, "rows_per_pass", 0)
        rows = rows_per_pass(bb, "train", tokens, floor=rows_per_item, override=setting)
        per = max(1, rows // rows_per_item)
        return [items[i : i + per] for i in range(0, len(items), per)]

    def step(self) -> dict[str, float]:
        """One outer step: draw a meta-batch, compute the meta-gradient, apply it.

        Returns:
            Metrics by name (``meta/query_loss``, ``meta/support_loss``, ``train/loss``, ...).
        """
        grad, metrics = self.meta_gradient(self.sample())
        p = self.state.prompt
        p.grad = grad.to(p.dtype)
        self.optimizer.step()
        p.grad = None
        self.state.step += 1
        metrics[GRAD_NORM] = float(grad.norm())
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """A snapshot that ``load_state_dict`` restores exactly (tensors are copies).

        Returns:
            ``{"method", "config", "prompt", "optimizer", "step", "rng"}``.
        """
        opt = self.state.optimizer
        return {
            "method": self.name,
            "config": config_dict(self.config),
            "prompt": self.state.prompt.detach().clone(),
            # deepcopy: the optimizer updates its state tensors in place on the next step
            "optimizer": copy.deepcopy(opt.state_dict()) if opt is not None else None,
            "step": self.state.step,
            "rng": {"python": _rng_to_plain(self.state.rng)},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` snapshot; the next ``step()`` equals the original run's.

        Raises:
            PromptinitError: the snapshot is of another method, config (other than the run
                length ``steps``) or prompt shape.
        """
        if state.get("method") != self.name:
            raise PromptinitError(f"checkpoint is of method {state.get('method')!r}, not {self.name!r}")
        mine, theirs = config_dict(self.config), dict(state.get("config") or {})
        differ = sorted(k for k in (set(mine) | set(theirs)) - RESUMABLE if mine.get(k) != theirs.get(k))
        if differ:
            k = differ[0]
            raise PromptinitError(
                f"checkpoint config differs in {differ}: field {k!r} is {theirs.get(k)!r} there, "
                f"{mine.get(k)!r} here; resume with the checkpoint's settings"
            )
        prompt = state["prompt"]
        if tuple(prompt.shape) != tuple(self.state.prompt.shape):
            raise PromptinitError(
                f"checkpoint prompt shape {list(prompt.shape)} does not match {list(self.state.prompt.shape)}"
            )
        with torch.no_grad():
            self.state.prompt.copy_(prompt.to(self.state.prompt.dtype))
        if self.state.optimizer is not None:
            # deepcopy: Optimizer.load_state_dict keeps the given tensors, which later steps
            # would then modify under the caller's feet.
            self.state.optimizer.load_state_dict(copy.deepcopy(dict(state["optimizer"])))
        self.state.step = int(state["step"])
        self.state.rng.setstate(_rng_from_plain(state["rng"]["python"]))


def outer_optimizer(prompt: torch.Tensor, name: str, lr: float) -> torch.optim.Optimizer:
    """The outer optimizer (Adafactor with a fixed lr, as Qin et al.; Adam; SGD)."""
    return make_optimizer([prompt], name, lr)
