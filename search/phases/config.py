"""The sweep YAML: a pydantic model, validated completely before Ray starts.

Every problem becomes one line ``<file>: field '<a.b>': <problem>`` (a ``PromptinitError``,
exit code 2). Unknown fields are refused, so a typo never silently falls back to a default.
See ``configs/sweep/demo.yaml`` for an annotated example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from promptinit.errors import PromptinitError, read_yaml

SWEEP_DIR = Path(__file__).resolve().parents[2] / "configs" / "sweep"
DEFAULT_CONFIG = SWEEP_DIR / "demo.yaml"


class Strict(BaseModel):
    """A config block: unknown fields are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _tune_config(values: dict[str, Any]):
    from promptinit.evaluation import TuneConfig

    known = {f.name for f in dataclasses.fields(TuneConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"field {unknown[0]!r}: unknown tuning setting; known: {', '.join(sorted(known))}")
    try:
        return TuneConfig(**values)
    except PromptinitError as err:
        raise ValueError(str(err)) from None


class Evaluation(Strict):
    """Downstream prompt tuning used to score a prompt (validation during the search, target after)."""

    seeds: list[int] = Field(min_length=1, description="few-shot seeds (paper: 100, 13, 21, 42, 87)")
    tuning: dict[str, Any] = Field(
        default_factory=dict,
        description="TuneConfig fields (steps, ...); `lr` one value or a list chosen on dev per task and seed "
        "(Qin et al.: [0.5, 0.4, 0.3, 0.2])",
    )
    tasks: int | list[str] | None = Field(
        None, description="use only the first N of the partition's tasks, or these named ones (CPU budgets)"
    )

    @field_validator("tuning")
    @classmethod
    def _tuning(cls, v: dict[str, Any]) -> dict[str, Any]:
        _tune_config(v)
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: int | list[str] | None) -> int | list[str] | None:
        if isinstance(v, int) and v <= 0 or isinstance(v, list) and not v:
            raise ValueError(f"give a number > 0 or a non-empty list of task names, got {v!r}")
        return v

    def tune_config(self):
        return _tune_config(self.tuning)

    def tuning_dict(self) -> dict[str, Any]:
        """``tune_config()`` as plain fields (they travel to Ray workers and into job keys)."""
        return self.tune_config().key_fields()

    def select(self, names: tuple[str, ...], field: str) -> list[str]:
        """The partition's task names this evaluation uses (``field`` names them in errors)."""
        if self.tasks is None:
            return list(names)
        if isinstance(self.tasks, int):
            return list(names)[: self.tasks]
        unknown = [t for t in self.tasks if t not in names]
        if unknown:
            raise PromptinitError(
                f"field '{field}.tasks': {unknown} not among the partition's {field} tasks {list(names)}"
            )
        return list(self.tasks)


class Validation(Evaluation):
    """The search objective, and the fresh few-shot seeds its top trials are re-scored on."""

    rescore_seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="fresh few-shot seeds the top-k trials of each method are re-scored on before the choice "
        "(default: the paper's seeds 100, 13, 21, 42, 87 that `seeds` does not use)",
    )

    @model_validator(mode="after")
    def _fresh(self) -> Validation:
        reused = sorted(set(self.rescore_seeds or ()) & set(self.seeds))
        if reused:
            raise ValueError(
                f"field 'rescore_seeds': {reused} also in `seeds`; re-scoring needs fresh seeds "
                "(a seed the search chose on would favour its choice)"
            )
        if len(set(self.rescore_seeds or ())) != len(self.rescore_seeds or ()):
            raise ValueError(f"field 'rescore_seeds': a seed is listed twice: {self.rescore_seeds}")
        if not self.fresh_seeds():
            raise ValueError("field 'rescore_seeds': the paper's five seeds are all in `seeds`; name fresh ones here")
        return self

    def fresh_seeds(self) -> list[int]:
        from promptinit.tasks.fewshot import SEEDS

        return list(self.rescore_seeds) if self.rescore_seeds else [s for s in SEEDS if s not in self.seeds]


class Target(Evaluation):
    """The final comparison with PT, over few-shot seeds and upstream (meta-training) seeds."""

    upstream_seeds: list[int] = Field(
        [1, 2, 3],
        min_length=1,
        description="seeds each method's chosen configuration is meta-trained with afresh for the target "
        "evaluation, never the search's `seed` (its run is the one the search selected); >= 3 lets the "
        "interval cover the variance of meta-training",
    )

    @field_validator("upstream_seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"a seed is listed twice: {v}")
        return v


class Budget(Strict):
    num_samples: int = Field(8, gt=0, description="trials in total, all methods together")
    steps: list[int] | None = Field(
        None, description="choices of upstream outer steps per trial (default: the paper's 2500/5000/10000)"
    )
    steps_per_report: int = Field(50, gt=0, description="outer steps between validation reports (ASHA's unit)")
    max_concurrent_trials: int | None = Field(None, gt=0)
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError("empty search space (an empty list of steps)")
            if any(s <= 0 for s in v):
                raise ValueError(f"steps must be > 0, got {v}")
        return v


class Search(Strict):
    algorithm: Literal["tpe", "random"] = Field(
        "tpe",
        description="Optuna sampler: tpe (TPESampler) or random (RandomSampler); the scheduler, the paper "
        "defaults first and the budget stay the same, so two sweeps differing only here spend "
        "the same compute. TPE samples at random until `startup_trials` trials have "
        "finished, so with one seed both propose the same configurations until then (`replay` saves "
        "computing those twice)",
    )
    startup_trials: int = Field(
        10,
        ge=1,
        description="tpe: trials sampled at random before TPE models the results "
        "(Optuna's n_startup_trials, default 10)",
    )
    seed: int = Field(0, description="seed of the Optuna sampler (tpe or random)")
    points_to_evaluate: bool = Field(True, description="start with each method's paper defaults")
    replay: bool = Field(
        True,
        description="a trial that a sibling sweep (a folder beside this sweep's) already ran with the same "
        "inputs, config and code is replayed from its reports and checkpoints instead of computed again; its "
        "trial-seconds still count in the search's cost (trainables/replay.py). false: compute every trial",
    )
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per method: setting -> value | [choices] | {low, high, log}"
    )
    objective: Literal["delta", "arg"] = Field(
        "delta",
        description="what the search maximises on the validation tasks: delta, the mean test-score difference "
        "to PT in points, or arg, the Average Relative Gain over PT in %; every trial reports both. delta by "
        "measurement (docs/objective.md): its per-trial few-shot-seed SE was 1.4-3.4 points where ARG's was "
        "2.6-11.5, as one low PT score inflates every relative gain on its task",
    )
    top_k: int = Field(
        3, ge=1, description="best trials per method re-scored on fresh validation seeds before the choice"
    )
    calibrate: int = Field(
        0,
        ge=0,
        description="also target-score this many of each method's trials (their search checkpoints), spread "
        "over the validation ranking, to measure whether the search objective predicts the target "
        "(Spearman rho in calibration.md and the report); 0: off",
    )
    calibrate_seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="the few-shot seeds of target.seeds the calibrated trials are scored on (default: all of "
        "them); fewer seeds cost less and leave each trial's target difference noisier",
    )


class Scheduler(Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, gt=0, description="reports a trial runs before ASHA may stop it")
    reduction_factor: float = Field(2, gt=1)


class Resources(Strict):
    cpu: float = Field(1, gt=0, description="CPUs per trial")
    gpu: float | Literal["auto"] = Field(
        "auto", description="GPUs per trial, a fraction <= 1 shares a GPU; auto: 0.25 when the cluster has GPUs, else 0"
    )

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, v: Any) -> float | str:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"expected a GPU fraction between 0 and 1 or `auto`, got {v!r}")
        if isinstance(v, (int, float)) and not 0 <= v <= 1:
            raise ValueError(f"GPU fraction per trial must be between 0 and 1, got {v}; use a fraction such as 0.5")
        return v


class Failure(Strict):
    max_failures: int = Field(1, ge=0, description="retries of a failed trial from its last checkpoint")


class Checkpointing(Strict):
    num_to_keep: int = Field(2, gt=0, description="best checkpoints kept per trial (by val/arg)")


class LocalRay(Strict):
    """Used only when the sweep starts its own local Ray (no RAY_ADDRESS, not a job)."""

    num_cpus: int | None = Field(None, gt=0)
    num_gpus: int | None = Field(None, ge=0)
    object_store_memory: int | None = Field(None, gt=0, description="bytes")


class SourceSelection(Strict):
    """Keep the source tasks most similar to the targets (Qin et al. 2023, appendix A.7).

    Similarity is that of tuned per-task prompts (``promptinit.similarity``); a list of k is
    searched like any hyperparameter, so the choice of sources becomes part of the sweep.
    """

    prompts: str = Field(description="folder of per-task tuned prompts: <task>.safetensors or export folders")
    k: int | list[int] = Field(description="keep the k most similar source tasks; a list of k is searched")
    rank: int = Field(4, gt=0, description="rank of each prompt's subspace")

    @field_validator("k")
    @classmethod
    def _k(cls, v: int | list[int]) -> int | list[int]:
        ks = v if isinstance(v, list) else [v]
        if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"give k >= 1 or a list of distinct k >= 1, got {v!r}")
        return v

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(self.k) if isinstance(self.k, list) else (self.k,)


class SweepConfig(Strict):
    """A sweep: which model, partition and methods, how much budget, where results go."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="sweep dir <storage_path>/<name>; MLflow experiment")
    model: str
    prompt_length: int = Field(20, gt=0)
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on a CPU with native bf16 (AVX512-BF16/AMX), else float32"
    )
    attn_implementation: Literal["eager", "sdpa"] = "eager"
    max_input_tokens: int = Field(256, gt=0)
    partition: str = Field(description="a name in configs/partitions or a YAML path")
    catalog: str | None = Field(None, description="task catalog file (default configs/tasks.yaml)")
    source_selection: SourceSelection | None = Field(
        None, description="use only the sources most similar to the targets"
    )
    methods: list[str] | Literal["all"] = "all"
    seed: int = Field(0, description="the methods' seed (initial prompt, meta-batches)")
    budget: Budget = Budget()
    search: Search = Search()
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    validation: Validation
    target: Target
    failure: Failure = Failure()
    checkpoint: Checkpointing = Checkpointing()
    tracking_uri: str | None = Field(
        None, description="MLflow; MLFLOW_TRACKING_URI wins; default sqlite in the sweep dir"
    )
    storage_path: str = Field("runs", description="Tune storage (made absolute); shared storage on a cluster")
    ray: LocalRay = LocalRay()

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> list[str]:
        from promptinit.spaces import BASELINE, available_methods

        available = available_methods()
        if v == "all":
            return available
        if not isinstance(v, list) or not all(isinstance(m, str) for m in v):
            raise ValueError(f"expected `all` or a list of method names, got {v!r}")
        if not v:
            raise ValueError("empty search space: name at least one method (or `all`)")
        for m in v:
            if m == BASELINE:
                raise ValueError(f"{m!r} is the baseline every ARG is measured against; it has nothing to search")
            if m not in available:
                raise ValueError(f"unknown method {m!r}; available: {', '.join(available)}")
        if len(set(v)) != len(v):
            raise ValueError(f"a method is listed twice: {v}")
        return list(v)

    @model_validator(mode="after")
    def _space(self) -> SweepConfig:
        from promptinit.spaces import build_space, check_space

        check_space(build_space(self.methods, self.search.space, self.budget.steps))
        return self

    @model_validator(mode="after")
    def _calibrate_seeds(self) -> SweepConfig:
        chosen = self.search.calibrate_seeds or []
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"field 'search.calibrate_seeds': a seed is listed twice: {chosen}")
        foreign = [s for s in chosen if s not in self.target.seeds]
        if foreign:
            raise ValueError(
                f"field 'search.calibrate_seeds': {foreign} not in target.seeds {self.target.seeds}; "
                "calibration compares each trial with PT on the target pairs, so use seeds from there"
            )
        return self

    def calibration_seeds(self) -> list[int]:
        """The few-shot seeds calibrated trials are scored on (``search.calibrate_seeds``, else all)."""
        return list(self.search.calibrate_seeds or self.target.seeds)

    def space(self):
        """The define-by-run ``SweepSpace``."""
        import dataclasses

        from promptinit.spaces import build_space

        space = build_space(self.methods, self.search.space, self.budget.steps)
        if self.source_selection is None:
            return space
        return dataclasses.replace(space, source_counts=self.source_selection.counts)

    def ranked_sources(self, partition) -> list[tuple[str, float]]:
        """The partition's source tasks, most similar to its targets first, with their scores
        (all of them, in the partition's order, without ``source_selection``)."""
        if self.source_selection is None:
            return [(name, float("nan")) for name in partition.source]
        from promptinit.similarity import load_task_prompts, rank_sources

        sel = self.source_selection
        prompts = load_task_prompts(sel.prompts)
        ranked = rank_sources(partition.target, partition.source, prompts, sel.rank)
        too_many = [k for k in sel.counts if k > len(ranked)]
        if too_many:
            raise PromptinitError(
                f"field 'source_selection.k': {too_many[0]} sources asked, but the partition has "
                f"{len(ranked)}; use 1..{len(ranked)}"
            )
        return ranked

    @property
    def sweep_dir(self) -> Path:
        return Path(self.storage_path).expanduser().resolve() / self.name

    def smoke(self) -> SweepConfig:
        """A minutes-long version: one trial per method, a few steps, one seed, tiny tuning."""

        def tiny(ev: Evaluation, **more: Any) -> Evaluation:
            t = dict(ev.tuning)
            t.update(steps=min(t.get("steps", 3000), 2), eval_every=1, test_size=min(t.get("test_size", 200), 16))
            return ev.model_copy(
                update={
                    "seeds": ev.seeds[:1],
                    "tuning": t,
                    "tasks": ev.tasks[:1] if isinstance(ev.tasks, list) else 1,
                    **more,
                }
            )

        budget = self.budget.model_copy(update={"num_samples": len(self.methods), "steps": [2], "steps_per_report": 2})
        # Every phase still runs: a re-score on one fresh seed, two upstream seeds (one retrained).
        return self.model_copy(
            update={
                "name": f"{self.name}-smoke",
                "budget": budget,
                "validation": tiny(self.validation, rescore_seeds=self.validation.fresh_seeds()[:1]),
                "target": tiny(self.target, upstream_seeds=self.target.upstream_seeds[:2]),
            }
        )


def _format(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "missing":
        msg = "missing (required)"
    elif kind == "extra_forbidden":
        msg = f"unknown field (value {err.get('input')!r}); check its spelling"
    elif not kind.startswith(("value_error", "assertion_error")) and "input" in err:
        msg = f"{msg} (got {err['input']!r})"
    if msg.startswith("field '"):  # a nested check named its field: prefix where that sits
        return msg.replace("field '", f"field '{loc}.", 1) if loc else msg
    return f"field {loc!r}: {msg}" if loc else msg


def load_sweep_config(
    path: str | Path, model: type[SweepConfig] = SweepConfig, folder: Path = SWEEP_DIR
) -> SweepConfig:
    """Read and validate a sweep YAML, including its partition file and search space.

    Args:
        path: the YAML file.
        model: the config class (``search.study.StudyConfig`` for a study).
        folder: where the shipped configs of that kind live (named when ``path`` is missing).

    Returns:
        The validated config.

    Raises:
        PromptinitError: one line ``<file>: field '<a.b>': <problem>``.
    """
    file = Path(path).expanduser()
    where = str(path)
    if not file.is_file():
        kind = model.__name__.removesuffix("Config").lower()  # sweep, study
        raise PromptinitError(
            f"{where}: no such {kind} file (configs in {folder}: "
            f"{', '.join(p.name for p in sorted(folder.glob('*.yaml')))})"
        )
    raw = read_yaml(file, where)
    if not isinstance(raw, dict):
        raise PromptinitError(f"{where}: expected a mapping of sweep settings (name, model, partition, ...)")
    for key in ("partition", "catalog", "model"):
        raw[key] = _relative_to(file.parent, raw.get(key))
    selection = raw.get("source_selection")
    if isinstance(selection, dict) and isinstance(selection.get("prompts"), str):
        prompts = Path(selection["prompts"]).expanduser()
        if not prompts.is_absolute() and (file.parent / prompts).is_dir():
            selection["prompts"] = str((file.parent / prompts).resolve())
    try:
        config = model.model_validate(raw)
    except ValidationError as e:
        raise PromptinitError(f"{where}: {_format(e.errors()[0])}") from None
    except PromptinitError as e:
        raise PromptinitError(f"{where}: {e}") from None
    _check_tasks(config, where)
    return config


def _check_tasks(config: SweepConfig, where: str) -> None:
    """The catalog, the partition, the tasks the config selects and the source ranking load
    (names and files only, no task data); each problem one line naming its field."""
    if config.catalog is not None and not Path(config.catalog).expanduser().is_file():
        raise PromptinitError(f"{where}: field 'catalog': {config.catalog}: no such task catalog file")
    from promptinit.tasks.catalog import load_catalog

    try:
        load_catalog(config.catalog)
    except PromptinitError as e:
        raise PromptinitError(f"{where}: field 'catalog': {e}") from None
    try:
        partition = load_partition(config)
    except PromptinitError as e:
        raise PromptinitError(f"{where}: field 'partition': {e}") from None
    try:
        config.validation.select(partition.validation, "validation")
        config.target.select(partition.target, "target")
    except PromptinitError as e:
        raise PromptinitError(f"{where}: {e}") from None
    try:
        config.ranked_sources(partition)
    except PromptinitError as e:
        msg = str(e) if str(e).startswith("field") else f"field 'source_selection': {e}"
        raise PromptinitError(f"{where}: {msg}") from None


def check_storage(config: SweepConfig, where: str) -> None:
    """``storage_path`` can hold the sweep folder: no file in the way, the first existing folder
    on the way writable. Nothing is created here.

    Raises:
        PromptinitError: ``<file>: field 'storage_path'`` (or ``'name'``): the problem and the fix.
    """
    import os

    sweep_dir = config.sweep_dir
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise PromptinitError(
            f"{where}: field 'name': {sweep_dir} is a file, not a sweep folder; change `name` or move the file"
        )
    existing = sweep_dir  # the folder the sweep writes into, or the first one that exists on its way
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PromptinitError(
            f"{where}: field 'storage_path': {existing} is a file, not a folder; "
            "point storage_path at a folder (it is created if missing)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PromptinitError(
            f"{where}: field 'storage_path': {existing} is not writable; choose a folder you can write to"
        )


def check_model(config: SweepConfig, where: str):
    """The sweep's model resolves and its config loads (no weights): a bad ``model`` fails here,
    before Ray starts, not in every trial.

    Returns:
        The model's ``promptinit.export.ModelInfo``.

    Raises:
        PromptinitError: ``<file>: field 'model': ...``.
    """
    from promptinit.export import ModelInfo

    try:
        return ModelInfo.from_name(config.model, config.prompt_length)
    except PromptinitError as e:
        raise PromptinitError(f"{where}: field 'model': {e}") from None


def _relative_to(folder: Path, value: Any) -> Any:
    # A relative file path (a YAML file, a model's .gguf) names a file next to the sweep YAML when
    # one is there, else in the working directory, and becomes absolute: configs work from any
    # working directory, and Ray's trials, which run elsewhere, find the same file. Plain names
    # (`tiny`, `smollm2-135m`) stay names.
    if not isinstance(value, str) or not value.lower().endswith((".yaml", ".yml", ".gguf")):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return value
    candidate = folder / path
    return str(candidate.resolve()) if candidate.is_file() else str(path.resolve()) if path.is_file() else value


def load_partition(config: SweepConfig):
    """The sweep's partition (names only, checked against the catalog; no task data loaded)."""
    from promptinit.tasks.partitions import load_partition as load

    return load(config.partition, config.catalog)


def config_dict(config: SweepConfig) -> dict[str, Any]:
    """Plain values (for MLflow params and the sweep's metadata file)."""
    return config.model_dump(mode="json")
