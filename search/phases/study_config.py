"""A study's config: a sweep config whose ``methods`` are the searched ones, plus the ``study`` block.

See ``search/study.py`` for what a study runs. Arms are typed (``Arm``): a label is built from
an arm, never parsed back.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from promptinit.errors import PromptinitError
from promptinit.search.phases.config import Strict, SweepConfig, Validation, config_dict, load_sweep_config

STUDY_DIR = Path(__file__).resolve().parents[2] / "configs" / "study"

META_FILE = "promptinit-study.json"  # the validated config, the sub-sweeps and the arms
CURVES_CSV = "pt_curves.csv"  # promptinit.curves records
CURVES_MD = "pt_curves.md"
RESULT_FILE = "study.json"  # the chosen step count, the arms, their cuts, times
SWEEPS = "sweeps"  # <study>/sweeps/<study>-<method>-<algorithm>/: the search arms
PT_LABELS = "pt (class labels)"
ALGORITHM_LABEL = {"tpe": "TPE + ASHA", "random": "random + ASHA"}
ROUND = 2  # preset arms meta-trained side by side (their upstream seeds fill the cores), then tuned


class Curves(Strict):
    seeds: list[int] | None = Field(
        None, min_length=2, description="few-shot seeds of the curves (default: target.seeds)"
    )
    tolerance: float = Field(1.0, ge=0, description="points of PT's selected mean dev that count as no gain")
    rule: Literal["last", "converged"] = Field(
        "last",
        description="how PT's dev curves give the step count (target.tuning.steps is the curves' length, the cap): "
        "`last`, the first evaluation within `tolerance` points of the last one's (the first study); `converged`, "
        "the first evaluation after `study.start_steps` at which PT gained less than `tolerance` points over "
        "the last quarter of its steps (promptinit.curves.converged_steps)",
    )


class Preset(Strict):
    method: str | None = Field(None, description="the method (default: the arm's name), e.g. for an ablation arm")
    steps: int = Field(gt=0, description="upstream outer steps (the method's schedule spans them)")
    settings: dict[str, Any] = Field(default_factory=dict, description="the paper defaults this arm changes")
    cut: str = Field("", description="why those settings differ from the paper (stated in study.json and the report)")

    def method_of(self, arm: str) -> str:
        return self.method or arm


class StudySection(Strict):
    curves: Curves = Curves()
    start_steps: int | None = Field(
        None,
        gt=0,
        description="a second, fixed downstream budget: every arm is tuned for this many steps too (a start) "
        "besides the step count of PT's curves (the end); each row's label says its budget ('· 60 steps'). "
        "None: one budget, the curves'",
    )
    start_only: list[str] = Field(
        default_factory=list,
        description="arms tuned at the start budget only (a stated cost cut): names under `presets`, or "
        "`labels` for PT from the class labels",
    )
    labels: bool = Field(True, description="the PT arm from the class-label init (Lester et al. 2021)")
    presets: dict[str, Preset] = Field(default_factory=dict, description="arm name -> a method at its paper preset")
    algorithms: list[Literal["tpe", "random"]] = Field(
        ["tpe", "random"],
        description="one sweep per searched method and algorithm",  # pydantic copies the default
    )
    validation: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="searched method -> `validation.tuning` fields its search sweeps validate with instead, "
        "e.g. {maml: {steps: 60}}: the target's own recipe where a cheaper proxy's rank agreement with it was "
        "measured below the bar (docs/objective.md); may change on a resume while none of the method's "
        "sweeps has finished (they start afresh)",
    )


class StudyConfig(SweepConfig):
    """A sweep config (its ``methods`` are the searched ones) plus the ``study`` block."""

    study: StudySection

    @model_validator(mode="after")
    def _presets(self) -> StudyConfig:
        from promptinit.spaces import ALL_SPACES

        for arm, p in self.study.presets.items():
            if p.method_of(arm) not in ALL_SPACES:
                raise ValueError(
                    f"field 'study.presets.{arm}.method': unknown method {p.method_of(arm)!r}; "
                    f"known: {', '.join(ALL_SPACES)}"
                )
            try:
                preset_settings(self, arm, p)
            except PromptinitError as err:
                msg = str(err)
                raise ValueError(msg if msg.startswith("field '") else f"field 'study.presets.{arm}': {msg}") from None
        if (
            not self.target.tuning.get("steps")
            or self.target.tuning.get("eval_every", 50) > self.target.tuning["steps"]
        ):
            raise ValueError("field 'target.tuning': give `steps` (the curves' length) >= `eval_every`")
        start = self.study.start_steps
        if start is not None and start >= self.target.tuning["steps"]:
            raise ValueError(
                f"field 'study.start_steps': {start} must be below target.tuning.steps "
                f"({self.target.tuning['steps']}, the curves' length and the cap of the other budget)"
            )
        for method in self.study.validation:
            if method not in self.methods:
                raise ValueError(
                    f"field 'study.validation.{method}': not a searched method; searched: {', '.join(self.methods)}"
                )
            try:
                self.validation_for(method)
            except ValidationError as err:
                msg = err.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"field 'study.validation.{method}': {msg}") from None
        arms = {*self.study.presets, *(["labels"] if self.study.labels else [])}
        for name in self.study.start_only:
            if start is None:
                raise ValueError("field 'study.start_only': needs `study.start_steps` (the budget those arms keep)")
            if name not in arms:
                raise ValueError(
                    f"field 'study.start_only': {name!r} is not an arm of this study; arms: {', '.join(sorted(arms))}"
                )
        return self

    @property
    def curve_seeds(self) -> list[int]:
        return list(self.study.curves.seeds or self.target.seeds)

    def sweep_folder(self, arm: Arm) -> Path:
        """A search arm's sweep folder: ``<study>/sweeps/<study>-<method>-<algorithm>``."""
        return self.sweep_dir / SWEEPS / f"{self.name}-{arm.method}-{arm.algorithm}"

    def validation_for(self, method: str) -> Validation:
        """The validation ``method``'s search sweeps use: ``validation`` with ``study.validation``'s
        fields for it."""
        raw = self.validation.model_dump()
        return Validation.model_validate({**raw, "tuning": {**raw["tuning"], **self.study.validation.get(method, {})}})

    def sub_sweep(self, arm: Arm, steps: int) -> SweepConfig:
        """The sweep config of one search arm, downstream tuning for ``steps``."""
        raw = config_dict(self)
        raw.pop("study")
        raw["validation"] = self.validation_for(arm.method).model_dump(mode="json")
        raw.update(name=self.sweep_folder(arm).name, methods=[arm.method], storage_path=str(self.sweep_dir / SWEEPS))
        raw["search"]["algorithm"] = arm.algorithm
        raw["search"]["space"] = {k: v for k, v in raw["search"]["space"].items() if k == arm.method}
        raw["target"]["tuning"]["steps"] = steps
        return SweepConfig.model_validate(raw)

    def arms(self) -> list[Arm]:
        """Every arm: PT from labels, presets, searches (``search/study.py``'s ``stages`` orders their runs)."""
        return [
            *([Arm("labels", "pt")] if self.study.labels else []),
            *(Arm("preset", p.method_of(name), name=name) for name, p in self.study.presets.items()),
            *(Arm("search", m, algorithm=a) for m in self.methods for a in self.study.algorithms),
        ]


@dataclass(frozen=True)
class Arm:
    """One arm of a study: PT from the class labels, a method at a preset, or a search.

    Attributes:
        kind: ``labels``, ``preset`` or ``search``.
        method: the method that trains it (``pt`` for the labels arm).
        name: a preset arm's name in ``study.presets`` (an ablation's differs from its method).
        algorithm: a search arm's sampler (``tpe`` or ``random``).
    """

    kind: Literal["labels", "preset", "search"]
    method: str
    name: str = ""
    algorithm: str = ""

    @property
    def label(self) -> str:
        """The arm's row in the study's tables."""
        from promptinit.analysis import preset_label

        if self.kind == "labels":
            return PT_LABELS
        if self.kind == "preset":
            return preset_label(self.name)
        return f"{self.method} ({ALGORITHM_LABEL[self.algorithm]})"

    @property
    def key(self) -> str:
        """The arm's name in ``study.start_only``: its preset name, ``labels``, or its searched method."""
        return self.name if self.kind == "preset" else "labels" if self.kind == "labels" else self.method

    def record(self) -> dict[str, str]:
        """The arm in ``study.json`` (the report reads its kind and method from here)."""
        return {
            "label": self.label,
            "kind": self.kind,
            "method": self.method,
            "name": self.name,
            "algorithm": self.algorithm,
        }


def preset_settings(cfg: SweepConfig, arm: str, preset: Preset) -> dict:
    """An arm's method at its paper defaults (``spaces``: the sweep's overrides of that method,
    then the arm's own settings) with ``steps`` outer steps, as a trial's settings."""
    from promptinit.spaces import build_space, check_space

    method = preset.method_of(arm)
    for name, value in preset.settings.items():
        if isinstance(value, (list, dict)):  # a choice or a range would be searched, and a preset searches nothing
            raise PromptinitError(
                f"field 'study.presets.{arm}.settings.{name}': {value!r}: a preset fixes its settings; give one value"
            )
    overrides = {**cfg.search.space.get(method, {}), **preset.settings}
    where = f"study.presets.{arm}.settings"
    space = build_space([method], {method: overrides}, [preset.steps], where=where)
    try:
        check_space(space, "@")
    except PromptinitError as err:  # check_space names '<where>.<method>'; the arm's settings are what to fix
        raise PromptinitError(str(err).replace(f"'@.{method}", f"'{where}")) from None
    one = space.space(method)
    return one.settings(one.default_point())


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML (see ``config.load_sweep_config``)."""
    cfg = load_sweep_config(path, StudyConfig, STUDY_DIR)
    assert isinstance(cfg, StudyConfig)  # the class it was validated with
    return cfg


def added_arms(earlier: dict | None, now: dict, unstarted: Collection[str] = ()) -> list[str] | None:
    """The preset arms ``now`` adds to the config a study ran with (or changes, among ``unstarted``:
    arms none of whose jobs ran), or None when it changes anything else. Such arms change no
    finished job (jobs are keyed by their content), so a resumed study keeps every finished arm
    and runs them in their place among the presets (a cut decided after measuring the cost, before
    the arm ran)."""
    if not isinstance(earlier, dict):
        return None
    old, new = earlier.get("study", {}).get("presets", {}), now["study"]["presets"]
    if any(new.get(arm) != p for arm, p in old.items() if not (arm in unstarted and arm in new)):
        return None

    def rest(config: dict) -> dict:
        return {**config, "study": {**config.get("study", {}), "presets": None}}

    return [arm for arm in new if new.get(arm) != old.get(arm)] if rest(earlier) == rest(now) else None


REPO = STUDY_DIR.parents[1]
PATH_FIELDS = ("partition", "catalog", "model")  # made absolute by load_sweep_config


def relocated(earlier: dict, now: dict) -> dict:
    """``earlier`` with its file fields read as ``now``'s where both name the same file of the
    project in another checkout (a study resumed from a new clone: its record holds the old clone's
    absolute paths). A file outside this checkout must keep its path."""
    moved = dict(earlier)
    for key in PATH_FIELDS:
        old, new = earlier.get(key), now.get(key)
        if not (isinstance(old, str) and isinstance(new, str)) or old == new:
            continue
        try:
            inside = Path(new).relative_to(REPO).parts
        except ValueError:
            continue
        if Path(old).is_absolute() and Path(old).parts[-len(inside) :] == inside:
            moved[key] = new
    return moved


def config_changes(earlier: dict | None, now: dict) -> list[str]:
    """The dotted fields (two levels deep) whose values differ between a study's recorded config
    and this one, for the error that refuses a resume."""
    if not isinstance(earlier, dict):
        return ["(no recorded config)"]
    earlier, out = relocated(earlier, now), []
    for key in sorted({*earlier, *now}):
        old, new = earlier.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            out += [f"{key}.{k}" for k in sorted({*old, *new}) if old.get(k) != new.get(k)]
        else:
            out.append(key)
    return out


def _changed(old: dict, new: dict) -> set[str]:
    """The keys whose values differ between two per-method mappings."""
    return {k for k in {*old, *new} if old.get(k) != new.get(k)}


def resume_plan(
    earlier: dict | None, now: dict, finished: set[str], unstarted: Collection[str] = (), searched: bool = False
) -> tuple[list[str], list[str]] | None:
    """What a resumed study takes from a changed config: ``(preset arms added, or changed among
    ``unstarted``, searched methods whose search space or validation changed)``, or None when the
    change is anything else, or changes the space or validation of a method in ``finished`` (a
    method with a finished sweep: its arm is done under the old ones). A changed space is a budget
    decision taken after a sweep failed (say, trials that ran out of memory); a changed
    ``study.validation`` one taken after a proxy's rank agreement with the target recipe was
    measured; that method's unfinished sweeps start afresh under it, every other job is kept.
    ``search.calibrate_seeds`` may change while no search sweep has started (``searched`` False):
    a cut of the calibration's cost. ``search.replay`` may change at any time, and a record from
    before it (or ``study.validation``) existed resumes."""
    if not isinstance(earlier, dict):
        return None
    earlier = relocated(earlier, now)
    search, section = earlier.get("search", {}), earlier.get("study", {})
    old, new = search.get("space", {}), now["search"]["space"]
    old_val, new_val = section.get("validation", {}), now["study"].get("validation", {})
    respaced = sorted(_changed(old, new) | _changed(old_val, new_val))
    if finished & set(respaced):
        return None
    earlier = {**earlier, "study": {**section, "validation": new_val}}
    calibrate_seeds = now["search"].get("calibrate_seeds")
    if searched and search.get("calibrate_seeds") != calibrate_seeds:
        return None
    # search.replay never changes a score (a replayed trial reports what it would compute): free
    search = {**search, "space": new, "calibrate_seeds": calibrate_seeds, "replay": now["search"].get("replay")}
    added = added_arms({**earlier, "search": search}, now, unstarted)
    return None if added is None else (added, respaced)
