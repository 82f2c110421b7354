"""The papers' findings judged by a study's numbers (``analysis.findings``): the verdict words,
MTL's strong-baseline rule, and the sensitivity test against a hand-computed Friedman statistic."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from promptinit.analysis import findings
from promptinit.stats import Interval, verdict

S60, S300 = " · 60 steps", " · 300 steps"


def _arm(label: str, diff: float, lo: float, hi: float, p_holm: float = 0.01, holm_ok: bool = True) -> dict:
    v = verdict(Interval(diff, lo, hi))
    return {
        "method": label,
        "diff_mean": diff,
        "diff_lo": lo,
        "diff_hi": hi,
        "p_holm": p_holm,
        "verdict": v if holm_ok else f"{v} (not after Holm)",
    }


def _contrast(a: str, b: str, diff: float, lo: float, hi: float) -> dict:
    return {
        "question": findings.STRONG_BASELINE,
        "a": a,
        "b": b,
        "diff_mean": diff,
        "diff_lo": lo,
        "diff_hi": hi,
        "p_holm": 0.5,
        "verdict": verdict(Interval(diff, lo, hi), than=b),
    }


def test_the_verdict_words_of_the_tables_read_as_a_claim_that_a_beats_b():
    assert findings.judged(verdict(Interval(0.05, 0.01, 0.09))) == "confirmed"
    assert findings.judged(verdict(Interval(0.05, 0.01, 0.09)) + " (not after Holm)") == "undetermined"
    assert findings.judged(verdict(Interval(-0.05, -0.09, -0.01))) == "refuted"
    assert findings.judged(verdict(Interval(0.0, -0.01, 0.01))) == "equivalent"
    assert findings.judged(verdict(Interval(0.0, -0.05, 0.05))) == "undetermined"
    assert findings.judged(verdict(Interval(0.0, -0.01, 0.01), than="mtl (preset)")) == "equivalent"


def test_an_arms_claim_follows_its_row_at_each_budget_with_its_numbers():
    arg = pd.DataFrame(
        [_arm("maml (preset)" + S60, 0.069, 0.029, 0.104, 0.0045), _arm("maml (preset)" + S300, 0.023, -0.002, 0.049)]
    )
    verdict60, why60 = findings.beats_pt(findings.BEATS_PT[0], arg, S60)
    assert verdict60 == "confirmed" and "maml (preset) − PT +6.9 [+2.9, +10.4] points, Holm p 0.0045" in why60
    assert findings.beats_pt(findings.BEATS_PT[0], arg, S300)[0] == "undetermined"
    assert findings.beats_pt(findings.BEATS_PT[1], arg, S60) is None  # no SUPMER arm: not judged


@pytest.mark.parametrize(
    ("mtl", "maml", "expected"),
    [
        ((0.06, 0.03, 0.09), (0.00, -0.01, 0.01), "confirmed"),  # beats PT; MAML equivalent to it
        ((0.06, 0.03, 0.09), (-0.04, -0.06, -0.02), "confirmed"),  # beats PT; MAML worse than it
        ((0.06, 0.03, 0.09), (0.00, -0.03, 0.03), "undetermined"),  # beats PT; MAML against it too wide
        ((0.06, 0.03, 0.09), (0.04, 0.01, 0.07), "refuted"),  # MAML beats MTL
        ((0.00, -0.01, 0.01), (0.00, -0.01, 0.01), "refuted"),  # MTL only equivalent to PT
        ((0.01, -0.02, 0.04), (0.00, -0.01, 0.01), "undetermined"),  # MTL against PT too wide
    ],
)
def test_mtl_is_a_strong_baseline_when_it_beats_pt_and_meta_learning_does_not_beat_it(mtl, maml, expected):
    arg = pd.DataFrame([_arm("mtl (preset)" + S60, *mtl)])
    contrasts = pd.DataFrame([_contrast("maml (preset)" + S60, "mtl (preset)" + S60, *maml)])
    got, why = findings.strong_baseline(arg, contrasts, S60)
    assert got == expected
    assert "mtl (preset) − PT " in why and "maml (preset) − mtl (preset) " in why  # both, without the budget


def test_without_a_meta_learning_arm_mtl_beating_pt_is_not_enough():
    arg = pd.DataFrame([_arm("mtl (preset)", 0.06, 0.03, 0.09)])
    got, why = findings.strong_baseline(arg, pd.DataFrame(), "")
    assert got == "undetermined" and "no meta-learning arm to compare with" in why


def _calibrated(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    """(search, trial id, config, validation Δ, target Δ) rows of the report's calibrated trials."""
    return pd.DataFrame(
        [
            {
                "base_method": "mtl",
                "search": s,
                "trial_id": t,
                "config": c,
                "val_arg": v,
                "val_delta": v,
                "target_diff": d,
            }
            for s, t, c, v, d in rows
        ]
    )


def test_sensitivity_is_friedmans_test_by_hand_with_a_checkpoint_two_searches_scored_counted_once():
    """3 configurations on 4 pairs, A best, B middle, C worst on every pair: rank sums 12, 8, 4;
    chi2 = 12 / (n k (k + 1)) sum R^2 - 3 n (k + 1) = 12 / 48 x 224 - 48 = 8, 2 degrees of
    freedom: p = exp(-8 / 2); Kendall's W = 8 / (4 x 2) = 1. Trial a2 is a1 again in the random
    search (same configuration and validation scores): one checkpoint. A pair only a1 has is left
    out (every checkpoint must be scored on a pair for the test to block on it)."""
    pairs = [("t1", 1), ("t1", 2), ("t2", 1), ("t2", 2)]
    scores = {
        "a1": {**{p: 0.8 + 0.01 * i for i, p in enumerate(pairs)}, ("t3", 1): 0.1},
        "b1": {p: 0.6 + 0.01 * i for i, p in enumerate(pairs)},
        "c1": {p: 0.4 - 0.01 * i for i, p in enumerate(pairs)},
    }
    calibrated = _calibrated(
        [
            ("tpe", "a1", '{"lr": 1}', 0.05, 0.04),
            ("tpe", "b1", '{"lr": 2}', 0.03, 0.01),
            ("tpe", "c1", '{"lr": 3}', 0.01, -0.02),
            ("random", "a2", '{"lr": 1}', 0.05, 0.04),
        ]
    )
    got = findings.sensitivity(calibrated, scores)
    assert len(got) == 1
    r = got.iloc[0]
    assert (r["method"], r["checkpoints"], r["pairs"]) == ("mtl", 3, 4)
    assert r["friedman_chi2"] == pytest.approx(8.0)
    assert r["p_value"] == pytest.approx(math.exp(-4.0))
    assert r["kendall_w"] == pytest.approx(1.0) and r["p_holm"] == pytest.approx(math.exp(-4.0))
    assert (r["diff_min"], r["diff_max"]) == (-0.02, 0.04)
    verdict_, why = findings.sensitive(got)
    assert verdict_ == "confirmed" and "3 configurations × 4 target pairs" in why and "−2.0 to +4.0 points" in why


def test_sensitivity_is_undetermined_when_configurations_do_not_differ_and_needs_three():
    pairs = [("t1", 1), ("t1", 2), ("t2", 1)]
    same = {t: {p: 0.5 for p in pairs} for t in ("a", "b", "c")}
    calibrated = _calibrated([("tpe", t, f'{{"lr": {i}}}', 0.01 * i, 0.0) for i, t in enumerate("abc")])
    got = findings.sensitivity(calibrated, same)
    assert got.iloc[0]["p_value"] == 1.0 and findings.sensitive(got)[0] == "undetermined"
    assert findings.sensitivity(calibrated.iloc[:2], same).empty  # two configurations: no test


def test_calibrated_scores_are_read_from_the_searches_kept_target_jobs(tmp_path):
    final = tmp_path / "sweep" / "final"
    final.mkdir(parents=True)
    key = {"tuning": {"steps": 60}}
    jobs = {
        "target-1.json": {"label": "calibrate 8d6be514 bb_intent_recognition, seed 100", "key": key, "value": 0.65},
        "target-2.json": {"label": "calibrate 8d6be514 bbc_topic, seed 13", "key": key, "value": 0.5},
        "target-3.json": {"label": "mtl (preset) bbc_topic, seed 13", "key": key, "value": 0.9},  # an arm's job
    }
    for name, record in jobs.items():
        (final / name).write_text(json.dumps(record))
    scores, steps = findings.calibrated_scores([tmp_path / "sweep", tmp_path / "absent"])
    assert scores == {"8d6be514": {("bb_intent_recognition", 100): 0.65, ("bbc_topic", 13): 0.5}} and steps == {60}


def test_the_findings_table_has_a_row_per_judged_finding_and_sensitivity_at_its_budget_only():
    arg = pd.DataFrame(
        [_arm("maml (preset)" + S60, 0.069, 0.029, 0.104), _arm("mtl (preset)" + S60, 0.066, 0.035, 0.098)]
    )
    sens = pd.DataFrame(
        [
            {
                "method": "mtl",
                "checkpoints": 8,
                "pairs": 15,
                "friedman_chi2": 17.0,
                "p_value": 0.015,
                "kendall_w": 0.17,
                "diff_min": -0.022,
                "diff_max": 0.064,
                "p_holm": 0.015,
            }
        ]
    )
    table = findings.findings(arg, pd.DataFrame(), sens, [S60, S300], S60)
    assert list(table["finding"]) == [
        "MAML beats PT",
        findings.MTL.finding,
        "the results are very sensitive to hyperparameters",
    ]
    assert list(table[f"verdict{S60}"]) == ["confirmed", "undetermined", "confirmed"]
    assert list(table[f"verdict{S300}"]) == ["not measured"] * 3  # no 300-step rows; calibration at 60
    text = findings.to_markdown(table, [S60, S300])
    assert "| finding | source | at 60 steps | at 300 steps |" in text and "**confirmed**: maml (preset)" in text
