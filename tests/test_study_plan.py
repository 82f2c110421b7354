"""``benchmarks/study_plan.py``: a study's planned CPU seconds per arm and phase, against a hand count
on configs/study/smoke-v2.yaml."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
study_plan = load_benchmark("study_plan")


def test_plan_of_the_smoke_v2_study_by_hand():
    """smoke-v2: 2 targets x 2 seeds = 4 pairs, 2 lrs, start 2 steps, curves to 6, upstream seeds 1 and
    2, presets of 2 steps, searches of 3 trials x 2 steps (one report each), 1 validation task x 1
    seed, top 1 re-scored on 1 seed, 2 calibrated. Unit costs 1 CPU s per outer step and per
    run-step, 10 per validation problem; end budget 4 steps.

    PT: curves 4 x 2 x 6 = 48, start 4 x 2 x 2 = 16, end 4 x 2 x 4 = 32; labels (start only) 16.
    Presets: upstream 2 x 2 = 4 each; start 4 pairs x 2 seeds x 2 lrs x 2 = 32 each; end 64 for mtl
    and maml only (fomaml, reptile, supmer are start-only): 100 + 100 + 36 x 3 = 308.
    Each search: trials 3 reports x 2 steps = 6, validation 3 x 10 = 30, re-score 10, calibration
    2 trials x 4 pairs x 2 lrs x 2 steps = 32, choice upstream 4, start 32, end 64: 178, x 4 = 712.
    Total 48 + 16 + 32 + 16 + 308 + 712 = 1,132 CPU s."""
    plan = study_plan
    from promptinit.search.phases.study_config import load_study_config

    cfg = load_study_config(ROOT / "configs" / "study" / "smoke-v2.yaml")
    methods = ("mtl", "maml", "fomaml", "reptile", "supmer")
    units = plan.Units({m: 1.0 for m in methods}, run_step=1.0, validation_problem=10.0)
    rows = plan.plan(cfg, units, end=4)
    assert sum(s for _, _, s in rows) == 1132
    by = {(arm, phase): s for arm, phase, s in rows}
    assert by[("mtl (TPE + ASHA)", "calibration: 2 trials")] == 32
    assert ("fomaml (preset)", "tuning, end") not in by and by[("maml (preset)", "tuning, end")] == 64
    halved = plan.plan(cfg, plan.Units({m: 1.0 for m in methods}, 1.0, 10.0, halving=0.5), end=4)
    assert by[("PT", "curves (to the cap)")] == dict(((a, p), s) for a, p, s in halved)[("PT", "curves (to the cap)")]
    assert dict(((a, p), s) for a, p, s in halved)[("PT", "tuning, end")] == 16  # halving: the tuning only
    text = plan.markdown({4: rows, 6: plan.plan(cfg, units, end=6)}, cores=2)
    assert "| **total** | | **1132.0** |" not in text and "| **total** | | **0.3** | **0.4** |" in text


def test_asha_reports():
    plan = study_plan
    assert plan.asha_reports(16, 4, 2) == 16 + 8 + 4 + 2
    assert plan.asha_reports(3, 1, 2) == 3 and plan.asha_reports(2, 3, 2) == 2 + 1 + 1  # at least one goes on
