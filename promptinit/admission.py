"""Which validation candidates a partition keeps: the tasks on which plain prompt tuning learns.

A hyperparameter search scores every trial on the partition's validation tasks. A task on which
even plain prompt tuning (PT) stays at the majority-class rate, or one it already solves, cannot
tell a good initialisation from a bad one: there the search compares noise. The admission rule
keeps a candidate only when PT, at the validation budget (the tuning the search validates with),
reaches on the dev examples

    mean PT dev accuracy >= mean majority-class rate + margin   (default 10 points)
    mean PT dev accuracy <= ceiling                             (default 90 %)

with both means taken over the few-shot seeds, each seed's majority rate counted on that seed's
own dev examples. The rule reads PT's dev scores only, never a test score (``pt_baseline`` also
scores the candidates' test sets, for the search to reuse; the rule ignores them) and never a
method's score, so it favours no method and sees no target task.

PT's dev score is ``TuneResult.dev`` of ``promptinit.evaluation.pt_baseline``: the best dev
accuracy over its evaluations (the initial prompt's included), the prompt a search's PT baseline
would keep. The record keeps the initial prompt's dev accuracy beside it: where the two are equal,
the sampled-vocabulary prompt was already above the majority rate and 20 steps did not improve it.
All candidates' (task, seed) problems run as one batched computation and land in the PT-baseline
cache, which a search with the same backbone and validation tuning then reuses.

Example:
    >>> verdicts = admit(backbone, [load_task(n) for n in partition.validation_candidates],
    ...                  seeds=(100, 13, 21), config=validation_budget())
    >>> [v.task for v in verdicts if v.admitted]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptinit.errors import PromptinitError
from promptinit.files import atomic_write
from promptinit.tasks.partitions import Admission, CandidateScore, Partition, SeedScore, render_partition
from promptinit.tasks.task import Example, Metric, Task, TaskKind

if TYPE_CHECKING:  # torch-heavy: imported where used, so `promptinit --help` stays fast
    from promptinit.backbones import Backbone
    from promptinit.tuning import TuneConfig

# The CPU study's validation tuning (configs/study/cpu.yaml, `validation.tuning`): the budget the
# search validates with. TuneConfig fields; ``validation_budget()`` builds the config.
VALIDATION_TUNING: dict[str, Any] = {
    "lr": 0.3,
    "batch_size": 4,
    "steps": 20,
    "eval_every": 20,
    "eval_batch_size": 32,
    "test_size": 100,
    "rows_per_pass": 32,
}
SEEDS: tuple[int, ...] = (100, 13, 21)  # few-shot seeds the rule averages over
BLOCK_START = "# --- admission: written by `promptinit admit`"
BLOCK_END = "# --- end of admission"
_DIGITS = 4  # decimals kept in the partition file
_EPS = 1e-9  # accuracies are multiples of 1/len(dev): compare without float residue


def validation_budget() -> TuneConfig:
    """``VALIDATION_TUNING`` as a ``TuneConfig``."""
    from promptinit.tuning import TuneConfig

    return TuneConfig(**VALIDATION_TUNING)


@dataclass(frozen=True)
class AdmissionRule:
    """The thresholds of the rule (fractions of 1, not percent).

    Attributes:
        margin: accuracy a task needs above its dev majority-class rate (0.10 = 10 points).
        ceiling: highest PT dev accuracy admitted (a task PT already solves cannot rank methods).
    """

    margin: float = 0.10  # accuracy above the majority-class rate
    ceiling: float = 0.90  # accuracy

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"field 'margin': {self.margin} must be in [0, 1), e.g. 0.1 for 10 points")
        if not 0.0 < self.ceiling <= 1.0:
            raise ValueError(f"field 'ceiling': {self.ceiling} must be in (0, 1], e.g. 0.9 for 90 %")

    def describe(self) -> str:
        return (
            f"PT dev accuracy >= dev majority-class rate + {100 * self.margin:g} points, "
            f"and <= {100 * self.ceiling:g} % (means over the few-shot seeds)"
        )

    def judge(self, task: str, seeds: Mapping[int, SeedScore]) -> Verdict:
        """Admit or refuse one candidate from its per-seed scores.

        Args:
            task: the candidate's name.
            seeds: few-shot seed -> PT's dev accuracy and the majority rate of that dev set.

        Returns:
            The verdict, with the means it was decided on and, when refused, why.
        """
        if not seeds:
            raise ValueError(f"task {task!r}: no seeds to judge")
        pt = sum(s.pt_dev for s in seeds.values()) / len(seeds)
        majority = sum(s.majority for s in seeds.values()) / len(seeds)
        gain = pt - majority
        if gain < self.margin - _EPS:
            reason = f"{100 * gain:+.1f} points over the majority rate, below the {100 * self.margin:g} needed"
        elif pt > self.ceiling + _EPS:
            reason = f"PT dev {100 * pt:.1f} % is above the {100 * self.ceiling:g} % ceiling"
        else:
            reason = ""
        return Verdict(task, pt, majority, dict(seeds), admitted=not reason, reason=reason)


@dataclass(frozen=True)
class Verdict:
    """The rule's decision on one candidate.

    Attributes:
        task: the candidate.
        pt_dev: PT's dev accuracy, mean over seeds.
        majority: the dev majority-class rate, mean over seeds.
        seeds: the same per few-shot seed.
        admitted: whether it becomes a validation task.
        reason: why it was refused (empty when admitted).
    """

    task: str
    pt_dev: float
    majority: float
    seeds: dict[int, SeedScore]
    admitted: bool
    reason: str = ""

    def score(self) -> CandidateScore:
        """What the partition file records, rounded to ``_DIGITS`` decimals."""
        return CandidateScore(
            pt_dev=round(self.pt_dev, _DIGITS),
            majority=round(self.majority, _DIGITS),
            seeds={
                s: SeedScore(
                    pt_dev=round(v.pt_dev, _DIGITS),
                    majority=round(v.majority, _DIGITS),
                    init_dev=None if v.init_dev is None else round(v.init_dev, _DIGITS),
                )
                for s, v in self.seeds.items()
            },
            reason=self.reason,
        )


def majority_rate(examples: Sequence[Example]) -> float:
    """Share of the most frequent answer: the accuracy of always giving it.

    Classification counts labels; multiple choice counts answer positions (options are the
    example's own, so the best constant answer is a position, e.g. always the first).

    Args:
        examples: classification or multiple-choice examples (a dev set).

    Returns:
        The majority-class rate in [0, 1].
    """
    if not examples:
        raise ValueError("no examples: the majority rate of an empty dev set is undefined")
    if any(not ex.options for ex in examples):
        raise ValueError("generation examples have no classes; the rule needs classification or multiple choice")
    counts = Counter(ex.answer_index for ex in examples)
    return max(counts.values()) / len(examples)


def check_candidate(task: Task) -> None:
    """Raise unless the rule applies to ``task``: accuracy on classes or options."""
    if task.kind is TaskKind.GENERATION or task.metric is not Metric.ACCURACY:
        raise PromptinitError(
            f"task {task.name!r} is {task.kind.value} scored by {task.metric.value}; the admission rule compares "
            "accuracy with a majority-class rate, so candidates must be classification or multiple-choice "
            "tasks scored by accuracy"
        )


def admit(
    backbone: Backbone,
    tasks: Sequence[Task],
    seeds: Sequence[int] = SEEDS,
    config: TuneConfig | None = None,
    rule: AdmissionRule | None = None,
    *,
    progress: bool = True,
) -> list[Verdict]:
    """Run PT on every candidate and seed (one batched run, cached) and judge each candidate.

    Args:
        backbone: the frozen model the search will use.
        tasks: the validation candidates (classification or multiple choice, accuracy).
        seeds: few-shot seeds; the rule averages over them.
        config: PT's tuning, one learning rate; default ``validation_budget()``.
        rule: the thresholds; default ``AdmissionRule()`` (10 points, 90 %).
        progress: show the tuning progress bar.

    Returns:
        One verdict per task, in order.
    """
    from promptinit import evaluation

    config = config or validation_budget()
    for task in tasks:
        check_candidate(task)
    if config.selects_lr:
        raise PromptinitError(f"field 'lr': {list(config.lrs)}; the rule scores PT at one learning rate")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise PromptinitError(f"field 'seeds': {list(seeds)}; give distinct few-shot seeds")
    results = evaluation.pt_baseline(backbone, tasks, seeds, config, progress=progress)
    verdicts = []
    for task in tasks:
        per_seed = {}
        for seed in seeds:
            dev = config.few_shot(task, seed).dev  # the dev set PT was scored on
            run = results[(task.name, seed)]
            per_seed[seed] = SeedScore(pt_dev=run.dev, majority=majority_rate(dev), init_dev=run.init_dev)
        verdicts.append((rule or AdmissionRule()).judge(task.name, per_seed))
    return verdicts


def admitted_partition(
    partition: Partition,
    verdicts: Sequence[Verdict],
    rule: AdmissionRule,
    *,
    model: str,
    backbone: Mapping[str, Any],
    seeds: Sequence[int],
    config: TuneConfig,
) -> Partition:
    """``partition`` with ``validation`` the admitted ``validation_candidates`` and ``target`` its
    hand-listed targets followed by the admitted ``target_candidates`` (each in candidate order),
    and the ``admission`` / ``target_admission`` records of the numbers.

    Raises:
        PromptinitError: the verdicts are not one per candidate.
    """
    by_task = {v.task: v for v in verdicts}
    judged = (*partition.validation_candidates, *partition.target_candidates)
    if sorted(by_task) != sorted(judged) or len(by_task) != len(verdicts):
        raise PromptinitError(f"verdicts on {sorted(by_task)} do not match the candidates {sorted(judged)} once each")

    def admitted(names: Sequence[str]) -> tuple[str, ...]:
        return tuple(n for n in names if by_task[n].admitted)

    def record(names: Sequence[str]) -> dict[str, Any]:
        return Admission(
            rule=rule.describe(),
            margin=rule.margin,
            ceiling=rule.ceiling,
            model=model,
            backbone=dict(backbone),
            seeds=list(seeds),
            tuning=_plain(config.key_fields()),
            admitted={n: by_task[n].score() for n in names if by_task[n].admitted},
            refused={n: by_task[n].score() for n in names if not by_task[n].admitted},
        ).model_dump()

    body = partition.model_dump()
    if partition.validation_candidates:
        body |= {
            "validation": admitted(partition.validation_candidates),
            "admission": record(partition.validation_candidates),
        }
    if partition.target_candidates:
        body |= {
            "target": (*partition.fixed_targets, *admitted(partition.target_candidates)),
            "target_admission": record(partition.target_candidates),
        }
    return Partition.model_validate(body)


def write_admitted(path: str | Path, partition: Partition, verdicts: Sequence[Verdict], date: str = "") -> Path:
    """Write the admitted partition to ``path`` at once (``promptinit.files.atomic_write``).

    The file's leading comments are kept; a block between ``BLOCK_START`` and ``BLOCK_END``
    (replacing an earlier one) lists each candidate's numbers for a reader.

    Args:
        path: the partition file (read for its comments, then replaced).
        partition: ``admitted_partition``'s result.
        verdicts: the verdicts it was made from (for the comment block).
        date: shown in the block, e.g. ``2026-12-05``.

    Returns:
        ``path``.
    """
    path = Path(path)
    header = _leading_comments(path.read_text(encoding="utf-8")) if path.is_file() else []
    record = partition.admission or partition.target_admission
    assert record is not None
    block = admission_comments(record, verdicts, date, targets=partition.target_candidates)
    return atomic_write(path, render_partition(partition, "\n".join([*header, *block])))


def admission_comments(
    record: Admission, verdicts: Sequence[Verdict], date: str = "", targets: Sequence[str] = ()
) -> list[str]:
    """The comment block above a partition's fields: the rule, the budget and one line per
    candidate, the validation candidates first, then the ``targets`` candidates under a line of their own."""
    tuning = record.tuning
    lines = [
        BLOCK_START + (f" on {date}" if date else "") + " ---",
        f"# Rule: {record.rule}.",
        f"# PT on {record.model} ({', '.join(f'{k} {v}' for k, v in record.backbone.items())}), "
        f"lr {tuning.get('lr')}, {tuning.get('steps')} steps, batch {tuning.get('batch_size')}, "
        f"few-shot seeds {', '.join(map(str, record.seeds))}.",
    ]
    width = max((len(v.task) for v in verdicts), default=0)
    ordered = [v for v in verdicts if v.task not in targets] + [v for v in verdicts if v.task in targets]
    for i, v in enumerate(ordered):
        if v.task in targets and (i == 0 or ordered[i - 1].task not in targets):
            lines.append("# Target candidates (an admitted one is appended to `target`; the hand-listed targets stay):")
        verdict = "admitted" if v.admitted else "refused "
        line = f"#   {verdict} {v.task:<{width}}  PT dev {100 * v.pt_dev:5.1f} %  majority {100 * v.majority:5.1f} %"
        inits = [s.init_dev for s in v.seeds.values() if s.init_dev is not None]
        if inits:
            line += f"  (initial prompt {100 * sum(inits) / len(inits):.1f} %)"
        lines.append(line + (f"  ({v.reason})" if v.reason else ""))
    return [*lines, BLOCK_END]


def _leading_comments(text: str) -> list[str]:
    """The file's comment lines before its first field, without an earlier admission block."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(BLOCK_START):
            inside = True
        elif line.startswith(BLOCK_END):
            inside = False
        elif not line.strip() or line.lstrip().startswith("#"):
            if not inside:
                out.append(line)
        else:
            break
    while out and not out[-1].strip():
        out.pop()
    return out


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as YAML-safe plain values (tuples as lists, NaN as None)."""

    def one(v: Any) -> Any:
        if isinstance(v, tuple):
            return [one(x) for x in v]
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    return {k: one(v) for k, v in values.items()}
