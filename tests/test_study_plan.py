"""``benchmarks/study_plan.py``: a study's planned CPU seconds per arm and phase, against a hand count
on configs/study/smoke-v2.yaml."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
study_plan = load_benchmark("study_plan")


def test_plan_of_the_smoke_v2_study_by_hand():
    """smoke-v2: 2 targets x 2 seeds = 4 pairs, one lr, start 2 steps, curves to 6, upstream seeds 1
    and 2, presets of 2 steps, searches of 3 trials x 2 steps (one report each), 1 validation task x
    1 seed, top 1 re-scored on 1 seed, 2 calibrated on 1 of the 2 seeds. Unit costs 1 CPU s per outer step and per
    run-step, 10 per validation problem; end budget 4 steps.

    PT: curves 4 x 6 = 24, start 4 x 2 = 8, end 4 x 4 = 16; labels (start only) 8.
    Presets: upstream 2 x 2 = 4 each; start 4 pairs x 2 seeds x 2 steps = 16 each; end 32 for mtl and
    maml only (fomaml, reptile, supmer are start-only): 52 + 52 + 20 x 3 = 164.
    Each search: trials 3 reports x 2 steps = 6, validation 3 x 10 = 30, re-score 10, calibration
    2 trials x 2 pairs x 2 steps = 8, choice upstream 4, start 16, end 32: 106; MAML's searches
    validate for 4 steps (``study.validation``), so their validation is 60 and re-score 20: 146;
    2 x 106 + 2 x 146 = 504. Total 24 + 8 + 16 + 8 + 164 + 504 = 724 CPU s; with end 6:
    + 8 + 2 x 16 + 4 x 16 = 828."""
    plan = study_plan
    from promptinit.search.phases.study_config import load_study_config

    cfg = load_study_config(ROOT / "configs" / "study" / "smoke-v2.yaml")
    methods = ("mtl", "maml", "fomaml", "reptile", "supmer")
    units = plan.Units({m: 1.0 for m in methods}, run_step=1.0, validation_problem=10.0)
    rows = plan.plan(cfg, units, end=4)
    assert sum(s for _, _, s in rows) == 724
    by = {(arm, phase): s for arm, phase, s in rows}
    assert by[("mtl (TPE + ASHA)", "calibration: 2 trials x 1 seeds")] == 8
    assert ("fomaml (preset)", "tuning, end") not in by and by[("maml (preset)", "tuning, end")] == 32
    halved = plan.plan(cfg, plan.Units({m: 1.0 for m in methods}, 1.0, 10.0, halving=0.5), end=4)
    assert by[("PT", "curves (to the cap)")] == dict(((a, p), s) for a, p, s in halved)[("PT", "curves (to the cap)")]
    assert dict(((a, p), s) for a, p, s in halved)[("PT", "tuning, end")] == 8  # halving: the tuning only
    text = plan.markdown({4: rows, 6: plan.plan(cfg, units, end=6)}, cores=2)
    assert sum(s for _, _, s in plan.plan(cfg, units, end=6)) == 828
    assert "| **total** | | **0.2** | **0.2** |" in text and "| PT | tuning, end | 0.00 | 0.01 |" in text


def test_a_method_validated_longer_costs_its_searches_validation_in_proportion():
    """smoke-v2 validates for 2 steps and its MAML searches for 4 (``study.validation``); without
    it they cost what MTL's do, moved to 6 steps their validation and re-score rows cost 3x MTL's
    (linear in the steps), the rest the same."""
    from promptinit.search.phases.study_config import load_study_config

    cfg = load_study_config(ROOT / "configs" / "study" / "smoke-v2.yaml")
    units = study_plan.Units({"mtl": 1.0, "maml": 1.0}, run_step=1.0, validation_problem=10.0)

    def validated(maml: dict):
        return cfg.model_copy(update={"study": cfg.study.model_copy(update={"validation": maml})})

    for c, ratio in ((validated({}), 1), (cfg, 2), (validated({"maml": {"steps": 6}}), 3)):
        mtl, maml = (study_plan._search(c, a, units, 4, 1.0) for a in cfg.arms() if a.kind == "search"
                     and a.algorithm == "tpe")
        assert [m[2] * (ratio if i in (1, 2) else 1) for i, m in enumerate(mtl)] == [m[2] for m in maml]


def test_replay_saving_of_the_smoke_v2_study_by_hand(tmp_path):
    """smoke-v2 searches mtl and maml by TPE, then random; TPE's start-up is 1 trial (the paper
    defaults), so each random search may replay 1 of its 3 trials: a third of its trials (6 CPU s)
    and validation (30 for MTL; 60 for MAML, validated for 4 steps) = 12 CPU s for MTL, 22 for
    MAML, 34 in all; 22 once the mtl random search has reports in the study folder (it replayed,
    or computed, what it shared); 0 with replay off."""
    from promptinit.search.phases.study_config import load_study_config

    cfg = load_study_config(ROOT / "configs" / "study" / "smoke-v2.yaml")
    units = study_plan.Units({"mtl": 1.0, "maml": 1.0}, run_step=1.0, validation_problem=10.0)
    assert study_plan.replay_saving(cfg, units) == 34
    assert study_plan.replay_saving(cfg, units, tmp_path) == 34
    trial = tmp_path / "sweeps" / f"{cfg.name}-mtl-random" / "mtl_0001"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text("")
    assert study_plan.replay_saving(cfg, units, tmp_path) == 22
    off = cfg.model_copy(update={"search": cfg.search.model_copy(update={"replay": False})})
    assert study_plan.replay_saving(off, units) == 0


def test_asha_reports():
    plan = study_plan
    assert plan.asha_reports(16, 4, 2) == 16 + 8 + 4 + 2
    assert plan.asha_reports(3, 1, 2) == 3 and plan.asha_reports(2, 3, 2) == 2 + 1 + 1  # at least one goes on


def test_study_units_are_what_a_running_study_measured_and_the_base_elsewhere(tmp_path):
    """Per outer step from its kept upstream runs (MAML here), per downstream run-step from its
    kept target problems that tuned (the 0.3 CPU s record reads a cache and is left out), per
    validation problem from its searches' kept PT validation problems; the rest stays the base's."""
    import json

    final = tmp_path / "final"
    final.mkdir()
    jobs = {
        "upstream-a": {"key": {"method": "maml", "steps": 500, "settings": {}}, "cpu_s": 2700.0},
        "upstream-b": {"key": {"method": "maml", "steps": 500, "settings": {}}, "cpu_s": 2800.0},
        "target-a": {"key": {"tuning": {"lr": 0.3, "steps": 60}}, "cpu_s": 50.0},
        "target-b": {"key": {"tuning": {"lr": [0.5, 0.3], "steps": 300}}, "cpu_s": 500.0},
        "target-c": {"key": {"tuning": {"lr": 0.3, "steps": 300}}, "cpu_s": 0.3},
    }
    for name, job in jobs.items():
        (final / f"{name}.json").write_text(json.dumps(job))
    base = study_plan.Units({"maml": 2.94, "mtl": 0.49}, 0.596, 17.0)
    units = study_plan.study_units(tmp_path, base)
    assert units.upstream_step == {"maml": 5.5, "mtl": 0.49}
    assert abs(units.run_step - 550 / (60 + 2 * 300)) < 1e-12 and units.validation_problem == 17.0
    # A search's kept PT validation problems (PT at the validation recipe) price a validation
    # problem: the mean of their CPU s (v2's: 35-39 against the plan's 17, 7 Dec).
    sweep = tmp_path / "sweeps" / "s-mtl-tpe" / "final"
    sweep.mkdir(parents=True)
    for name, cpu_s in (("validation PT-1", 35.0), ("validation PT-2", 40.0), ("upstream-x", 9.0)):
        (sweep / f"{name}.json").write_text(json.dumps({"key": {"tuning": {"steps": 2}}, "cpu_s": cpu_s}))
    assert study_plan.study_units(tmp_path, base).validation_problem == 37.5
    # a method validated at another step count (study.validation: maml at 6 steps, smoke-v2's
    # recipe 2) counts at the study's: 111 CPU s at 6 steps is 37 at 2
    from promptinit.search.phases.study_config import load_study_config

    cfg = load_study_config(ROOT / "configs" / "study" / "smoke-v2.yaml")
    maml = tmp_path / "sweeps" / "s-maml-tpe" / "final"
    maml.mkdir(parents=True)
    (maml / "validation PT-3.json").write_text(json.dumps({"key": {"tuning": {"steps": 6}}, "cpu_s": 111.0}))
    # ... and one that read PT's curves' cache (study v2's MAML searches, 7 Dec: 0.002 CPU s) is left out
    (maml / "validation PT-4.json").write_text(json.dumps({"key": {"tuning": {"steps": 6}}, "cpu_s": 0.002}))
    assert study_plan.study_units(tmp_path, base, cfg).validation_problem == (35 + 40 + 37) / 3


def test_a_searched_methods_trial_reports_price_its_searches_once_measured(tmp_path):
    """Study v2's MAML searches validate for 60 steps, priced linearly until a trial reports (an
    upper bound: its first report cost 1,831 CPU s against about 2,400). Once a method's searches
    computed reports, the plan prices its trials' reports at their mean ``time/cpu_s`` (replayed
    reports, which cost nothing, left out): on smoke-v2 (1 validation problem per report, 2 outer
    steps of 1 CPU s) reports of 100 and 140 CPU s make a validation problem 118 CPU s."""
    import json

    from promptinit.search.phases.study_config import load_study_config

    cfg = load_study_config(ROOT / "configs" / "study" / "smoke-v2.yaml")
    sweep = tmp_path / "sweeps" / "s-maml-tpe"
    (sweep / "maml_1").mkdir(parents=True)
    (sweep / "promptinit-sweep.json").write_text(json.dumps({"config": {"methods": ["maml"]}}))
    reports = [{"time/cpu_s": 100.0}, {"time/cpu_s": 140.0}, {"replay/of": "s-maml-random/maml_2"}]
    (sweep / "maml_1" / "result.json").write_text("\n".join(map(json.dumps, reports)) + "\n")
    base = study_plan.Units({"mtl": 1.0, "maml": 1.0}, run_step=1.0, validation_problem=10.0)
    units = study_plan.study_units(tmp_path, base, cfg)
    assert units.report_s == {"maml": 120.0} and units.validation_problem == 10.0
    tpe = {a.method: a for a in cfg.arms() if a.kind == "search" and a.algorithm == "tpe"}
    maml = study_plan._search(cfg, tpe["maml"], units, 4, 1.0)
    assert [row[2] for row in maml[1:3]] == [3 * 118.0, 118.0]  # 3 reports (no ASHA rung past 1); re-score
    assert study_plan._search(cfg, tpe["mtl"], units, 4, 1.0) == study_plan._search(cfg, tpe["mtl"], base, 4, 1.0)
