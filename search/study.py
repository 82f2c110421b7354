#!/usr/bin/env python
"""A study: does a meta-learned initialisation beat plain prompt tuning, and does searching
its hyperparameters pay? Every arm tuned on the same target (task, seed) pairs, with intervals.

    python search/study.py --config configs/study/cpu.yaml [--resume]
    promptinit report runs/cpu-study --out docs/results/cpu-study

A study YAML is a sweep YAML (``search/sweep.py``: model, partition, validation, target, budget,
search, scheduler, resources) whose ``methods`` are the searched ones, plus a ``study`` block
(``StudySection``). The phases, each printed as it goes and each finished job kept on disk:

1. **curves**: PT (vocabulary init) on every target (task, curve seed, lr of ``target.tuning.lr``)
   for ``target.tuning.steps`` steps, dev every ``eval_every``: PT's learning curves. The
   downstream step count of every arm is the first evaluation step whose mean best-dev-so-far
   (lr chosen on dev per pair) is within ``study.curves.tolerance`` points of the last one's.
2. **baselines**: PT from the vocabulary init (the baseline every arm is compared with) and PT
   from the class-label init, tuned on every target (task, seed).
3. **presets**, two arms at a time: each arm of ``study.presets`` (a method at its paper
   defaults, ``spaces``, with the stated budget cuts in ``settings`` and ``steps``) meta-trained
   once per ``target.upstream_seeds`` (a round's arms side by side), then each arm tuned on every
   target (task, seed), its row published when its jobs are done.
4. **searches**: for each searched method x ``study.algorithms`` (TPE + ASHA, random + ASHA: the
   same trials, steps and scheduler, so the same compute budget) a whole sweep in
   ``<study>/sweeps/``: its search on the validation tasks, re-score, choice, upstream seeds and
   target scores, with the study's downstream tuning.

Every downstream tuning chooses its lr on dev per problem from ``target.tuning.lr``. After each
arm, ``arg_table.{md,csv}`` and ``target_scores.csv`` (the arms done so far against PT, 95 % CIs)
and ``study.json`` are rewritten in the study folder, which ``promptinit report`` turns into the
study's report. ``--resume`` continues an interrupted study: finished jobs and finished sweeps are
kept, an interrupted sweep resumes. The config must be the one the study ran with, except that it
may add arms under ``study.presets`` (for example ablations decided on later) and change the search
space of a method whose sweeps have not finished (a budget cut after a sweep failed, say on memory:
that method's unfinished sweeps start afresh).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Literal

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "search":
    sys.path.pop(0)  # as in sweep.py: search/config.py must not shadow top-level modules
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import Field, model_validator  # noqa: E402

from analysis import preset_label  # noqa: E402
from promptinit.errors import PromptinitError  # noqa: E402
from search.config import SweepConfig, _Strict, config_dict  # noqa: E402

STUDY_DIR = ROOT / "configs" / "study"
META_FILE = "promptinit-study.json"  # the validated config, the sub-sweeps and the arms
CURVES_CSV = "pt_curves.csv"  # promptinit.curves records
CURVES_MD = "pt_curves.md"
RESULT_FILE = "study.json"  # the chosen step count, the arms, their cuts, times
SWEEPS = "sweeps"  # <study>/sweeps/<study>-<method>-<algorithm>/: the search arms
PT_LABELS = "pt (class labels)"
ALGORITHM_LABEL = {"tpe": "TPE + ASHA", "random": "random + ASHA"}
ROUND = 2  # preset arms meta-trained side by side (their upstream seeds fill the cores), then tuned


class Curves(_Strict):
    seeds: list[int] | None = Field(None, min_length=2, description="few-shot seeds of the curves (default: target.seeds)")
    tolerance: float = Field(1.0, ge=0, description="points below the last evaluation's selected mean")


class Preset(_Strict):
    method: str | None = Field(None, description="the method (default: the arm's name), e.g. for an ablation arm")
    steps: int = Field(gt=0, description="upstream outer steps (the method's schedule spans them)")
    settings: dict[str, Any] = Field(default_factory=dict, description="the paper defaults this arm changes")
    cut: str = Field("", description="why those settings differ from the paper (stated in study.json and the report)")

    def method_of(self, arm: str) -> str:
        return self.method or arm


class StudySection(_Strict):
    curves: Curves = Curves()
    labels: bool = Field(True, description="the PT arm from the class-label init (Lester et al. 2021)")
    presets: dict[str, Preset] = Field(default_factory=dict, description="arm name -> a method at its paper preset")
    algorithms: list[Literal["tpe", "random"]] = Field(
        default_factory=lambda: ["tpe", "random"], description="one sweep per searched method and algorithm")


class StudyConfig(SweepConfig):
    """A sweep config (its ``methods`` are the searched ones) plus the ``study`` block."""

    study: StudySection

    @model_validator(mode="after")
    def _presets(self) -> "StudyConfig":
        from spaces import ALL_SPACES

        for arm, p in self.study.presets.items():
            if p.method_of(arm) not in ALL_SPACES:
                raise ValueError(f"field 'study.presets.{arm}.method': unknown method {p.method_of(arm)!r}; "
                                 f"known: {', '.join(ALL_SPACES)}")
            try:
                preset_settings(self, arm, p)
            except PromptinitError as err:
                msg = str(err)
                raise ValueError(msg if msg.startswith("field '") else f"field 'study.presets.{arm}': {msg}") from None
        if not self.target.tuning.get("steps") or self.target.tuning.get("eval_every", 50) > self.target.tuning["steps"]:
            raise ValueError("field 'target.tuning': give `steps` (the curves' length) >= `eval_every`")
        return self

    @property
    def curve_seeds(self) -> list[int]:
        return list(self.study.curves.seeds or self.target.seeds)

    def sub_sweep(self, method: str, algorithm: str, steps: int) -> dict:
        """The sweep config (plain values) of one search arm, downstream tuning for ``steps``."""
        raw = config_dict(self)
        raw.pop("study")
        raw.update(name=sweep_folder(self, method, algorithm).name, methods=[method], storage_path=str(self.sweep_dir / SWEEPS))
        raw["search"]["algorithm"] = algorithm
        raw["search"]["space"] = {k: v for k, v in raw["search"]["space"].items() if k == method}
        raw["target"]["tuning"]["steps"] = steps
        return raw


def preset_settings(cfg: SweepConfig, arm: str, preset: Preset) -> dict:
    """An arm's method at its paper defaults (``spaces``: the sweep's overrides of that method,
    then the arm's own settings) with ``steps`` outer steps, as a trial's settings."""
    from spaces import build_space, check_space

    method = preset.method_of(arm)
    for name, value in preset.settings.items():
        if isinstance(value, (list, dict)):  # a choice or a range would be searched, and a preset searches nothing
            raise PromptinitError(f"field 'study.presets.{arm}.settings.{name}': {value!r}: a preset fixes its settings; "
                                  "give one value")
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
    from search.config import load_sweep_config

    return load_sweep_config(path, StudyConfig, STUDY_DIR)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="search/study.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(STUDY_DIR / "cpu.yaml"), help="study YAML (default: configs/study/cpu.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted study of this config")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- phases


def curves_phase(ctx, cfg: StudyConfig, target) -> tuple[int, Any]:
    """PT's dev curves on the targets (one job per task); returns the chosen step count and the
    summary, and writes ``pt_curves.{csv,md}`` (``promptinit report`` draws them)."""
    from promptinit import curves
    from search.final import Job
    from trainables.scoring import curve_job

    tuning = dict(cfg.target.tuning)
    seeds = cfg.curve_seeds
    jobs = [Job(f"PT curves {t.name}, seeds {' '.join(map(str, seeds))}", curve_job,
                dict(backbone=ctx.backbone, tasks=[t], seeds=seeds, tuning=tuning),
                {"backbone": ctx.backbone, "task": t.fingerprint, "seeds": seeds, "tuning": tuning, "curves": True})
            for t in target]
    records = [r for value in ctx.runner.run("curves", jobs) for r in value]
    summary = curves.summarize(records)
    # at least one evaluation's worth: a curve already flat at the initial prompt still gets tuned
    enough = max(curves.enough_steps(summary, cfg.study.curves.tolerance / 100), cfg.target.tuning.get("eval_every", 50))
    folder = cfg.sweep_dir
    curves.write_csv(records, folder / CURVES_CSV)
    (folder / CURVES_MD).write_text(curves.markdown(summary))
    print(f"\nPT's dev curves (best dev so far, %, mean over {len(summary.pairs)} pairs [95 % CI]):\n"
          f"{curves.markdown(summary)}\ndownstream steps: {enough} (the first evaluation within "
          f"{cfg.study.curves.tolerance:g} points of step {summary.steps[-1]}'s)", flush=True)
    return enough, summary


def preset_checkpoints(ctx, cfg: StudyConfig, arms: list[str]) -> tuple[dict, dict]:
    """The preset ``arms`` meta-trained with every upstream seed (side by side): ``({arm:
    Candidate}, {(arm, upstream seed): folder})``."""
    from promptinit.fingerprints import digest
    from search.final import Candidate, Job
    from spaces.space import METHOD_KEY
    from trainables.scoring import prepare_job, train_job

    chosen, jobs, keys, prepare = {}, [], [], []
    sources = [t.fingerprint for t in ctx.source]
    for arm in arms:
        p = cfg.study.presets[arm]
        m, settings = p.method_of(arm), preset_settings(cfg, arm, p)
        chosen[arm] = Candidate(m, "preset", None, float("nan"), {}, settings, {METHOD_KEY: m, m: settings})
        if _prepares(m):
            prepare.append(Job(f"prepare {arm}", prepare_job, dict(backbone=ctx.backbone, name=m, settings=settings,
                                                                  source_tasks=ctx.source, seed=ctx.seed),
                               {"backbone": ctx.backbone, "prepare": m, "settings": settings, "sources": sources}))
        for u in cfg.target.upstream_seeds:
            key = {"backbone": ctx.backbone, "method": m, "settings": settings, "steps": p.steps, "upstream_seed": u,
                   "sources": sources}
            folder = cfg.sweep_dir / "upstream" / f"{arm}-seed{u}-{digest(key, ctx.runner.code)}"
            method = {"name": m, "settings": settings, "source_tasks": ctx.source, "seed": u}
            jobs.append(Job(f"{arm} preset, upstream seed {u} ({p.steps} steps)", train_job,
                            dict(backbone=ctx.backbone, method=method, steps=p.steps, folder=str(folder)), key,
                            valid=lambda value: Path(value).is_dir()))
            keys.append((arm, u))
    if prepare:
        ctx.runner.run("prepare", prepare)  # corpora and clusters built once, not by parallel seeds
    return chosen, dict(zip(keys, ctx.runner.run("upstream", jobs, title=f"upstream {', '.join(arms)}")))


def _prepares(method: str) -> bool:
    from spaces import ALL_SPACES

    return ALL_SPACES[method].prepare


def search_arms(cfg: StudyConfig, steps: int) -> Iterator[list[dict]]:
    """Run (or resume, or keep) every search sweep; yields each one's target rows, labelled by arm."""
    import yaml

    from analysis import load_sweep
    from search import sweep

    configs = cfg.sweep_dir / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    for m in cfg.methods:
        for algorithm in cfg.study.algorithms:
            raw = cfg.sub_sweep(m, algorithm, steps)
            folder = sweep_folder(cfg, m, algorithm)
            path = configs / f"{raw['name']}.yaml"
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            if not (folder / "arg_table.csv").is_file():
                resume = (folder / sweep.TUNER_FILE).is_file()
                if folder.exists() and not resume:
                    # it died before Tune saved anything (no trial to keep), maybe while MLflow was
                    # creating its store in the folder: start it afresh
                    print(f"{folder}: an interrupted start (no {sweep.TUNER_FILE}); starting that sweep afresh", flush=True)
                    shutil.rmtree(folder)
                print(f"\n== search arm {m}, {ALGORITHM_LABEL[algorithm]}: sweep {folder}"
                      + (" (resumed)" if resume else ""), flush=True)
                code = sweep.main(["--config", str(path), *(["--resume"] if resume else [])])
                if code:
                    raise PromptinitError(f"{path}: the search arm's sweep failed (exit code {code}); fix the error above "
                                          "and run the study again with --resume")
            targets = load_sweep(folder).targets
            yield [{**r, "sweep": cfg.name, "method": arm_label(m, algorithm)} for r in targets.to_dict("records")]


def sweep_folder(cfg: StudyConfig, method: str, algorithm: str) -> Path:
    return cfg.sweep_dir / SWEEPS / f"{cfg.name}-{method}-{algorithm}"


def arm_label(method: str, algorithm: str) -> str:
    return f"{method} ({ALGORITHM_LABEL[algorithm]})"


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    cfg = load_study_config(args.config)
    from search import final, sweep
    from search.config import check_model, check_storage, load_partition

    check_storage(cfg, str(args.config))
    meta_path = cfg.sweep_dir / META_FILE
    if args.resume and not meta_path.is_file():
        raise PromptinitError(f"{cfg.sweep_dir}: nothing to resume (no {META_FILE}); run without --resume")
    if not args.resume and meta_path.is_file():
        raise PromptinitError(f"{args.config}: field 'name': a study already ran in {cfg.sweep_dir}; pass --resume to "
                              "continue it, or change `name`")
    added: list[str] = []
    respaced: list[str] = []
    if args.resume:
        from promptinit.errors import read_json

        finished = {m for m in cfg.methods for a in cfg.study.algorithms if (sweep_folder(cfg, m, a) / "arg_table.csv").is_file()}
        plan = resume_plan(read_json(meta_path).get("config"), json.loads(json.dumps(config_dict(cfg))), finished)
        if plan is None:
            raise PromptinitError(f"{args.config}: the config differs from the one {cfg.sweep_dir} ran with "
                                  f"({meta_path}) by more than new arms under `study.presets` and the search space of "
                                  "a method whose sweeps have not finished; resume with that config, or change `name` "
                                  "for a new study")
        added, respaced = plan
    check_model(cfg, str(args.config))
    partition = load_partition(cfg)
    from promptinit.tasks.catalog import load_task

    def tasks(names):
        return tuple(load_task(t, cfg.catalog) for t in names)

    source = tasks(partition.source)
    validation = tasks(cfg.validation.select(partition.validation, "validation"))
    target = tasks(cfg.target.select(partition.target, "target"))
    sweep.check_metapt_pool(cfg, str(args.config), (*validation, *target))
    for arm, p in cfg.study.presets.items():
        if p.method_of(arm) == "metapt":
            sweep.refuse_leaky_pool([preset_settings(cfg, arm, p).get("pool")],
                                    f"{args.config}: field 'study.presets.{arm}'", (*validation, *target))
    if cfg.study.labels:
        unlabelled = [t.name for t in target if not t.labels]
        if unlabelled:
            raise PromptinitError(f"{args.config}: field 'study.labels': target task {unlabelled[0]!r} has no class "
                                  "labels for the class-label init; set `labels: false` or choose classification targets")

    cfg.sweep_dir.mkdir(parents=True, exist_ok=True)
    for m in respaced:  # an interrupted sweep cannot go on under another space: it starts afresh
        for folder in (sweep_folder(cfg, m, a) for a in cfg.study.algorithms):
            if folder.exists():
                print(f"resume: {m}'s search space changed; removing its unfinished sweep {folder}, which starts afresh",
                      flush=True)
                shutil.rmtree(folder)
    if not args.resume or added or respaced:
        meta_path.write_text(json.dumps({"config": config_dict(cfg), "partition": partition.name}, indent=1))
    print(f"study {cfg.name}: {cfg.sweep_dir}", flush=True)
    if added:
        print(f"resume: arms added to the config since the last run: {', '.join(added)}", flush=True)

    from promptinit.backbones import BackboneConfig

    sweep.connect_ray(cfg)
    cpu, gpu = sweep.trial_resources(cfg)
    backbone = dataclasses.asdict(BackboneConfig(cfg.model, prompt_length=cfg.prompt_length, dtype=cfg.dtype,
                                                 attn_implementation=cfg.attn_implementation,
                                                 max_input_tokens=cfg.max_input_tokens))
    ctx = final.Context(backbone, source, cfg.seed, final.Runner(cfg.sweep_dir / final.FINAL_DIR, cpu, gpu))
    times = {}

    t0 = time.perf_counter()
    steps, _ = curves_phase(ctx, cfg, target)
    times["curves_s"] = time.perf_counter() - t0
    tuning = {**cfg.target.tuning, "steps": steps}
    from promptinit.evaluation import TuneConfig

    tuning = dataclasses.asdict(TuneConfig(**tuning))

    from analysis import write_target_table
    from trainables.scoring import held_out_sizes

    seeds = list(cfg.target.seeds)
    common = {"sweep": cfg.name, "partition": partition.name, "n_test": held_out_sizes(target, seeds, tuning["test_size"])}
    rows: list[dict] = []
    arms = [*([PT_LABELS] if cfg.study.labels else []), *map(preset_label, cfg.study.presets),
            *(arm_label(m, a) for m in cfg.methods for a in cfg.study.algorithms)]

    def publish(finished: bool = False) -> Any:
        """The table of the arms done so far, and ``study.json``: a long study's results arrive arm by arm."""
        table = write_target_table(rows, cfg.sweep_dir)
        times["wall_s"] = time.perf_counter() - t_start
        result = {
            "finished": finished, "downstream_steps": steps, "tuning": tuning, "target_seeds": seeds,
            "upstream_seeds": cfg.target.upstream_seeds, "targets": [t.name for t in target], "arms": arms,
            "done": [r["method"] for r in rows],
            "presets": {preset_label(arm): {"method": p.method_of(arm), "steps": p.steps,
                                            "settings": preset_settings(cfg, arm, p), "cut": p.cut}
                        for arm, p in cfg.study.presets.items()},
            "searches": {arm_label(m, a): f"{SWEEPS}/{cfg.name}-{m}-{a}"  # relative to the study folder
                         for m in cfg.methods for a in cfg.study.algorithms},
            "times": times, "cpu_s_jobs": kept_cpu_seconds(ctx.runner.folder),
        }
        (cfg.sweep_dir / RESULT_FILE).write_text(json.dumps(result, indent=1, default=str))
        return table

    # The baselines first, then the presets two arms at a time (their upstream runs side by side,
    # then each arm's target jobs), then the searches: each arm's row is in the table once it is
    # done. A study spans sessions; an arm's row must not wait for its round's other arm.
    t0 = time.perf_counter()
    jobs = final._pt_jobs(ctx, target, seeds, tuning)
    if cfg.study.labels:  # side by side with PT's jobs: an even number of jobs fills the cores
        jobs += [final._score(ctx, "PT from class labels", t, seeds, tuning, ({"init": "labels"}, {"init": "labels"}))
                 for t in target]
    values = ctx.runner.run("baselines", jobs)
    common["baseline"] = final._merge(values[:len(target)])
    if cfg.study.labels:
        rows.append({**common, "method": PT_LABELS, "trial_id": "", "scores": final._merge(values[len(target):])})
    publish()
    names = list(cfg.study.presets)
    for i in range(0, len(names), ROUND):
        chosen, checkpoints = preset_checkpoints(ctx, cfg, names[i:i + ROUND])
        for arm, c in chosen.items():  # arm by arm: a row is published as soon as its jobs are done
            mine = {k: v for k, v in checkpoints.items() if k[0] == arm}
            scores, _ = final.target_scores(ctx, {arm: c}, mine, target, seeds, tuning)
            rows.append({**common, "method": preset_label(arm), "trial_id": "preset", "settings": c.settings,
                         "scores": scores[arm]})
            publish()
    times["presets_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for arm_rows in search_arms(cfg, steps):
        rows += arm_rows
        publish()
    times["searches_s"] = time.perf_counter() - t0
    table = publish(finished=True)
    print(f"\n{table.text}\nstudy finished in {times['wall_s']:.0f} s this run; "
          f"report: promptinit report {cfg.sweep_dir}", flush=True)
    return 0


def added_arms(earlier: dict | None, now: dict) -> list[str] | None:
    """The preset arms ``now`` adds to the config a study ran with, or None when it changes anything
    else. Added arms change no finished job (jobs are keyed by their content), so a resumed study
    keeps every finished arm and runs the new ones in their place among the presets."""
    if not isinstance(earlier, dict):
        return None
    old, new = earlier.get("study", {}).get("presets", {}), now["study"]["presets"]
    if any(new.get(arm) != p for arm, p in old.items()):
        return None

    def rest(config: dict) -> dict:
        return {**config, "study": {**config.get("study", {}), "presets": None}}

    return [arm for arm in new if arm not in old] if rest(earlier) == rest(now) else None


def resume_plan(earlier: dict | None, now: dict, finished: set[str]) -> tuple[list[str], list[str]] | None:
    """What a resumed study takes from a changed config: ``(added preset arms, searched methods
    whose search space changed)``, or None when the change is anything else, or changes the space
    of a method in ``finished`` (a method with a finished sweep: its arm is done under the old
    space). A changed space is a budget decision taken after a sweep failed (say, trials that ran
    out of memory); that method's unfinished sweeps start afresh under it, every other job is kept."""
    if not isinstance(earlier, dict):
        return None
    old, new = earlier.get("search", {}).get("space", {}), now["search"]["space"]
    respaced = sorted(m for m in {*old, *new} if old.get(m) != new.get(m))
    if finished & set(respaced):
        return None
    added = added_arms({**earlier, "search": {**earlier.get("search", {}), "space": new}}, now)
    return None if added is None else (added, respaced)


def kept_cpu_seconds(folder: Path) -> float:
    """CPU seconds of every job kept in the study's job folder (all runs of the study so far)."""
    total = 0.0
    for path in Path(folder).glob("*.json"):
        try:
            total += float(json.loads(path.read_text()).get("cpu_s", 0.0))
        except (ValueError, OSError, AttributeError):
            continue
    return total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except PromptinitError as err:
        print(f"study: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
