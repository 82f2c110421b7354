"""What one downstream prompt-tuning run is: its settings, its result, its optimiser and the
batches it draws.

Shared by ``promptinit.batched`` (many runs in shared passes) and ``promptinit.evaluation``
(one run at a time, the PT baseline, ARG). Imports point one way: evaluation -> batched ->
tuning.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch

from promptinit.errors import PromptinitError
from promptinit.tasks.fewshot import FewShot, sample_few_shot
from promptinit.tasks.task import Example, Task

# g -> g'; one with ``takes_context = True`` (SUPMER's ψ) is called as g, h -> g', h the batch's
# mean target hidden state (``Backbone.loss_with_context``).
GradTransform = Callable[..., torch.Tensor]
LR_FIX = "give one learning rate > 0 or a list of distinct ones, e.g. [0.5, 0.4, 0.3, 0.2] (Qin et al.)"


@dataclass(frozen=True)
class TuneConfig:
    """Downstream prompt tuning (Qin et al.: lr 0.3, batch 8, 3000 steps, eval every 50).

    Attributes:
        lr: learning rate of the prompt; or a non-empty list of distinct ones (Qin et al. tune
            with each of 0.5, 0.4, 0.3, 0.2): every problem (task, seed, initial prompt) is
            tuned once per lr and the run with the best dev score is kept (``choose_lr``); a
            tie keeps the earlier lr in the list, as Qin et al.'s strict ``>``. Stored as a
            tuple of floats; a single number is kept as given (its cache key is unchanged).
        optimizer: ``adafactor`` (the papers'), ``adam`` or ``sgd``.
        batch_size: training examples per step.
        steps: optimisation steps.
        eval_every: steps between dev evaluations (the best-on-dev prompt is kept).
        eval_batch_size: examples per scoring pass of ``tune_prompt``.
        test_size: cap on the held-out test set.
        patience: stop after this many evaluations without a dev improvement (None: never).
        rows_per_pass: rows per forward pass when many problems are tuned and scored at once
            (``promptinit.batched``); 0: measured once per backbone and device
            (``promptinit.throughput``). Changes the speed, not the results (beyond rounding).
        lr_halving: successive halving over the candidate learning rates: at each rung
            (``halving_rungs``) a problem keeps the better half of its lr runs by best dev
            score so far and stops the others; the choice is then made among every run as
            without it. Off by default (see ``benchmarks/lr_halving.py`` for what it changes).
        test_per_seed: each few-shot seed scores on its own draw of ``test_size`` held-out
            examples (``sample_few_shot``), so intervals over seeds cover the test sample's
            variance; off: one draw shared by every seed (the papers' scripts, and every run
            before 5 Dec 2026).
    """

    lr: float | tuple[float, ...] = 0.3  # one lr, or candidates chosen on dev per problem
    optimizer: str = "adafactor"
    batch_size: int = 8
    steps: int = 3000
    eval_every: int = 50
    eval_batch_size: int = 32
    test_size: int = 200
    patience: int | None = None
    rows_per_pass: int = 0  # rows per pass; 0: measured per backbone and device
    lr_halving: bool = False  # successive halving over the candidate lrs (see halving_rungs)
    test_per_seed: bool = False  # each few-shot seed draws its own test sample

    def __post_init__(self) -> None:
        if self.optimizer not in ("adafactor", "adam", "sgd"):
            raise PromptinitError(f"field 'optimizer': {self.optimizer!r} is not adafactor, adam or sgd")
        object.__setattr__(self, "lr", _checked_lr(self.lr))  # frozen: a list is stored as a tuple
        for name in ("batch_size", "steps", "eval_every"):
            if getattr(self, name) <= 0:
                raise PromptinitError(f"field {name!r}: {getattr(self, name)} must be > 0")
        rows = self.rows_per_pass
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise PromptinitError(
                f"field 'rows_per_pass': {rows!r} must be an integer >= 1, or 0 to measure it per backbone and device"
            )

    @property
    def selects_lr(self) -> bool:
        """Whether ``lr`` lists candidates to choose from on dev."""
        return isinstance(self.lr, tuple)

    @property
    def lrs(self) -> tuple[float, ...]:
        """The candidate learning rates: ``(lr,)`` for a single one."""
        return self.lr if isinstance(self.lr, tuple) else (self.lr,)

    @property
    def single_lr(self) -> float:
        """The learning rate of a config with one (each of ``candidates()``)."""
        if isinstance(self.lr, tuple):
            raise PromptinitError(f"field 'lr': {list(self.lr)} lists candidates; tune each of candidates()")
        return self.lr

    def few_shot(self, task: Task, seed: int) -> FewShot:
        """The train, dev and test sets a problem on (``task``, ``seed``) tunes and scores on."""
        return sample_few_shot(task, seed, test_size=self.test_size, test_per_seed=self.test_per_seed)

    def key_fields(self) -> dict:
        """The fields as a dict, for job keys and Ray workers; ``test_per_seed`` only when on, so
        the keys of runs made before the setting existed still hold."""
        fields = dataclasses.asdict(self)
        if not self.test_per_seed:
            del fields["test_per_seed"]
        return fields

    def candidates(self) -> list[TuneConfig]:
        """One config per candidate lr, in ``lr``'s order (``[self]`` for a single lr)."""
        return [dataclasses.replace(self, lr=lr) for lr in self.lrs] if self.selects_lr else [self]


def halving_rungs(config: TuneConfig) -> dict[int, int]:
    """Successive halving's rungs: ``{step: lr runs a problem keeps after that step}``.

    With k candidate learning rates there are ``ceil(log2 k)`` rungs, at ``i / (rungs + 1)`` of
    the steps (i = 1, 2, ...), each moved up to the next dev evaluation; after rung i a problem
    keeps ``ceil(k / 2**i)`` runs. With 4 lrs and 60 steps evaluated every 10: 2 runs after
    step 20, 1 after step 40, so 4x20 + 2x20 + 1x20 = 140 run-steps instead of 240 (0.58x).
    Empty when ``lr_halving`` is off or there is one lr.
    """
    k = len(config.lrs)
    if not config.lr_halving or k < 2:
        return {}
    rungs = math.ceil(math.log2(k))
    out: dict[int, int] = {}
    for i in range(1, rungs + 1):
        target = math.ceil(config.steps * i / (rungs + 1))
        step = min(config.steps, math.ceil(target / config.eval_every) * config.eval_every)
        if step < config.steps:
            out[step] = min(out.get(step, k), math.ceil(k / 2**i))
    return out


def _one_lr(value: object) -> float:
    """A learning rate: a finite number > 0 (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PromptinitError(f"field 'lr': {value!r} is not a number; {LR_FIX}")
    if not math.isfinite(value) or value <= 0:
        raise PromptinitError(f"field 'lr': {value!r} must be > 0 and finite; {LR_FIX}")
    return cast(float, value)  # any real number, kept as given (an int lr keeps its cache key)


def _checked_lr(lr: object) -> float | tuple[float, ...]:
    """``TuneConfig.lr`` as stored: one number as given, several as a tuple of distinct floats."""
    if not isinstance(lr, (list, tuple)):
        return _one_lr(lr)
    if not lr:
        raise PromptinitError(f"field 'lr': an empty list; {LR_FIX}")
    values = tuple(float(_one_lr(v)) for v in lr)
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise PromptinitError(f"field 'lr': {list(lr)} lists {twice} twice; {LR_FIX}")
    return values


@dataclass
class TuneResult:
    """Outcome of tuning one task from one initialisation.

    With several learning rates (``TuneConfig.lr`` a list) this is the run chosen on dev:
    ``lr`` is its learning rate and ``lr_search`` holds every candidate's
    ``{"lr", "dev", "best_step", "steps"}`` in the list's order (``steps``: how far it ran;
    fewer than the config's when successive halving or patience stopped it).
    """

    task: str
    seed: int
    metric: str
    init_dev: float  # dev score of the initial prompt
    dev: float  # best dev score
    test: float  # test score of the best-on-dev prompt
    best_step: int
    curve: list[dict] = field(default_factory=list)  # {"step", "train_loss", "dev"}
    prompt: torch.Tensor | None = field(default=None, repr=False)
    lr: float | None = None  # learning rate of this run (the one chosen on dev, for several)
    lr_search: list[dict] = field(default_factory=list)  # {"lr", "dev", "best_step", "steps"} per lr; [] for one lr

    @property
    def tuned_prompt(self) -> torch.Tensor:
        """``prompt``, which a run tuned in this process carries (a cached summary has none)."""
        if self.prompt is None:
            raise PromptinitError(f"{self.task} seed {self.seed}: this result carries no prompt (read from a cache?)")
        return self.prompt

    def summary(self) -> dict:
        """Every field but the prompt tensor, as plain values (what the baseline cache stores)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "prompt"}


def make_optimizer(params: Iterable[torch.Tensor], name: str, lr: float) -> torch.optim.Optimizer:
    """Adafactor with a fixed lr (as in T5 prompt tuning), Adam or SGD."""
    params = list(params)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def choose_lr(config: TuneConfig, runs: Sequence[TuneResult]) -> TuneResult:
    """The run with the best dev score among one problem's runs, one per candidate lr.

    A tie keeps the earlier lr in ``config.lr``'s order: Qin et al.'s loop over learning rates
    (``tune_hps_singletask_ddp_prompt_cls2cls.py``) replaces its best only on a strictly
    higher dev score.

    Args:
        config: the problem's settings; ``runs[i]`` was tuned with ``config.lrs[i]``.
        runs: the problem's runs (their ``test`` is not needed).

    Returns:
        The kept run, with ``lr`` set and, when ``config`` lists several, ``lr_search``.
    """
    if len(runs) != len(config.lrs):
        raise ValueError(f"{len(runs)} runs for the {len(config.lrs)} learning rates {config.lrs}")
    best = 0
    for i, run in enumerate(runs):
        if run.dev > runs[best].dev:  # strictly higher: a tie keeps the earlier lr
            best = i
    search = [
        {"lr": lr, "dev": r.dev, "best_step": r.best_step, "steps": r.curve[-1]["step"] if r.curve else None}
        for lr, r in zip(config.lrs, runs, strict=True)
    ]
    return dataclasses.replace(runs[best], lr=config.lrs[best], lr_search=search if config.selects_lr else [])


def train_batches(examples: Sequence[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """The endless stream of training batches one tuning run draws, epoch by epoch.

    ``tune_prompt`` and every problem of ``promptinit.batched.tune_prompts`` draw from this
    stream, so a problem sees the same batches in both.

    Args:
        examples: the few-shot train set.
        batch_size: examples per batch.
        seed: seeds the shuffling: the same seed draws the same batches.

    Returns:
        An endless iterator of batches; each epoch is shuffled anew and its ragged tail dropped
        so every step sees a full batch (a train set of ``batch_size`` or fewer is one batch).
    """
    rng = random.Random(seed)
    while True:
        order = list(examples)
        rng.shuffle(order)
        if len(order) <= batch_size:
            yield order
            continue
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield order[i : i + batch_size]
