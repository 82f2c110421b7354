"""The trainable reports the validation objective with its uncertainty: ``val/arg`` and
``val/arg_se`` (standard error over the validation (task, seed) pairs), checked against a hand
computation on known scores; the sweep's parent-run metrics are the table's numbers."""
from __future__ import annotations

import math
import types

import pytest
import torch

import promptinit.trainables.scoring as scoring
import promptinit.trainables.trainable as trainable
from promptinit.trainables import metrics as M

BASELINE = {("a", 100): 0.50, ("a", 13): 0.40, ("b", 100): 0.20, ("b", 13): 0.25}
SCORES = {("a", 100): 0.60, ("a", 13): 0.40, ("b", 100): 0.30, ("b", 13): 0.20}
# Relative gains: 0.2, 0.0, 0.5, -0.2 -> mean 0.125; deviations 0.075, -0.125, 0.375, -0.325;
# squares 0.005625 + 0.015625 + 0.140625 + 0.105625 = 0.2675; / 3 = 0.0891667; sd 0.298608;
# SE = sd / 2 = 0.149304 pooled. Every task has 2 seeds, so the SE is the stratified one: task a's
# gains 0.2, 0.0 (variance 0.02), task b's 0.5, -0.2 (variance 0.245) ->
# sqrt(0.02 / 2 + 0.245 / 2) / 2 tasks = sqrt(0.1325) / 2 = 0.182003.
HAND_ARG, HAND_SE = 0.125, math.sqrt(0.02 / 2 + 0.245 / 2) / 2
# Differences: task a 0.1, 0.0 (mean 0.05, variance 0.005), task b 0.1, -0.05 (mean 0.025,
# variance 0.01125) -> mean over tasks 0.0375; SE sqrt(0.005 / 2 + 0.01125 / 2) / 2.
HAND_DELTA, HAND_DELTA_SE = 0.0375, math.sqrt(0.005 / 2 + 0.01125 / 2) / 2


def test_arg_standard_error_by_hand():
    assert scoring.arg_standard_error(SCORES, BASELINE) == pytest.approx(HAND_SE, rel=1e-12)
    # one seed on task b: the within-task spread is not measurable there -> pooled over the 3 pairs
    three = {k: v for k, v in SCORES.items() if k != ("b", 13)}
    # gains 0.2, 0.0, 0.5: mean 7/30; squared deviations 1/900 + 49/900 + 64/900 = 114/900
    pooled = math.sqrt(114 / 900 / 2) / math.sqrt(3)
    assert scoring.arg_standard_error(three, BASELINE) == pytest.approx(pooled, rel=1e-12)
    assert math.isnan(scoring.arg_standard_error({("a", 100): 0.6}, BASELINE))  # one pair: no spread to measure
    # PT clamped at 0.01 as in ARG: RG (0.1 - 0.0) / 0.01 = 10 and (0.5 - 0.5) / 0.5 = 0 -> sd sqrt(50), SE 5
    assert scoring.arg_standard_error({("z", 1): 0.1, ("y", 1): 0.5}, {("z", 1): 0.0, ("y", 1): 0.5}) == pytest.approx(5.0)


def test_score_difference_and_its_standard_error_by_hand():
    delta, se = scoring.difference_against(SCORES, BASELINE)
    assert delta == pytest.approx(HAND_DELTA, rel=1e-12) and se == pytest.approx(HAND_DELTA_SE, rel=1e-12)
    # PT near 0 blows ARG's SE up (5.0 above); the difference stays in score points: 0.1 and 0.0
    delta, se = scoring.difference_against({("z", 1): 0.1, ("y", 1): 0.5}, {("z", 1): 0.0, ("y", 1): 0.5})
    assert delta == pytest.approx(0.05) and se == pytest.approx(0.05)


class _Method:
    """Stands in for a promptinit method: one outer step, a 4 x 8 prompt."""

    prompt = torch.zeros(4, 8)

    def step(self) -> dict:
        return {M.META_QUERY_LOSS: 1.0}


def test_the_trainable_reports_val_arg_and_its_standard_error(monkeypatch):
    import promptinit.backbones as backbones
    import promptinit.methods as methods
    import promptinit.methods.checkpoint as checkpoint

    reports = []
    fake_tune = types.SimpleNamespace(
        get_checkpoint=lambda: None,
        report=lambda metrics, checkpoint=None: reports.append(metrics),
        Checkpoint=types.SimpleNamespace(from_directory=lambda folder: folder),
    )
    monkeypatch.setattr(trainable, "tune", fake_tune)
    monkeypatch.setattr(trainable, "_node_id", lambda: "node")
    monkeypatch.setattr(trainable, "_node_dtype", lambda backbone: "float32")
    monkeypatch.setattr(backbones, "Backbone", lambda config: object())
    monkeypatch.setattr(backbones, "BackboneConfig", lambda **kw: kw)
    monkeypatch.setattr(methods, "build_method", lambda *a, **kw: _Method())
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda method, folder: None)
    monkeypatch.setattr(scoring, "tuned_scores", lambda *a, **kw: dict(SCORES))  # the validation scores

    shared = trainable.Shared(backbone={}, source_tasks=(), validation_tasks=(), validation_seeds=(100, 13),
                              validation_tuning={"steps": 1}, baseline=dict(BASELINE), steps_per_report=1)
    trainable.train_prompt_init({"method": "mtl", "mtl": {"steps": 2}}, shared=shared)
    assert len(reports) == 2
    for report in reports:
        assert report[M.VAL_ARG] == pytest.approx(HAND_ARG, rel=1e-12)
        assert report[M.VAL_ARG_SE] == pytest.approx(HAND_SE, rel=1e-12)
        assert report[M.VAL_DELTA] == pytest.approx(HAND_DELTA, rel=1e-12)
        assert report[M.VAL_DELTA_SE] == pytest.approx(HAND_DELTA_SE, rel=1e-12)
        assert "val/arg_std" not in report


def test_parent_run_metrics_are_the_tables_numbers(tmp_path):
    from promptinit.analysis import write_target_table
    from promptinit.search.phases.tracking import target_metrics

    baseline = {(t, s): 0.5 for t in ("a", "b") for s in (1, 2, 3)}
    scores = {k: 0.55 + 0.01 * k[1] for k in baseline}
    one_seed = {("a", 1): 0.6}
    table = write_target_table([
        {"partition": "p", "method": "maml", "scores": scores, "baseline": baseline},
        {"partition": "p", "method": "mtl", "scores": one_seed, "baseline": {("a", 1): 0.5}},
        {"partition": "p", "method": "reptile", "trials": 1, "finished": 0},
    ], tmp_path).table.set_index("method")
    got = target_metrics(table.reset_index())
    for name, column in (("diff", "diff"), ("arg", "arg"), ("p_improve", "p_improve")):
        for suffix, part in (("", "mean"), ("_lo", "lo"), ("_hi", "hi")):
            assert got[f"target/{name}{suffix}/maml"] == table.loc["maml", f"{column}_{part}"]
    assert got["target/p_value/maml"] == table.loc["maml", "p_value"]
    assert got["target/diff/mtl"] == pytest.approx(0.1) and "target/diff_lo/mtl" not in got  # one seed: no bounds
    assert not [k for k in got if k.endswith("/reptile")]  # no finished trial: nothing to log
