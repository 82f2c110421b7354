"""Prompt tuning, the cached PT baseline, ARG arithmetic and the fine-tuning baseline."""
import pytest
import torch

import promptinit.evaluation as ev
from promptinit.evaluation import TuneConfig, average_relative_gain, pt_baseline, relative_gain, tune_prompt
from promptinit.tasks.fewshot import sample_few_shot
from tests.conftest import CAUSAL, keyword_task, tiny_backbone


def test_relative_gain_and_arg_by_hand():
    assert relative_gain(0.6, 0.5) == pytest.approx(0.2)
    assert relative_gain(0.3, 0.0) == pytest.approx(30.0)  # denominator clamped at 0.01
    base = {("a", 1): 0.5, ("b", 1): 0.8, ("a", 2): 0.4, ("b", 2): 1.0}
    meth = {("a", 1): 0.6, ("b", 1): 0.8, ("a", 2): 0.5, ("b", 2): 0.9}
    arg = average_relative_gain(meth, base)
    # seed 1: (0.2 + 0) / 2 = 0.1; seed 2: (0.25 - 0.1) / 2 = 0.075
    assert arg.per_seed == pytest.approx({1: 0.1, 2: 0.075})
    assert arg.mean == pytest.approx(0.0875)
    assert arg.std == pytest.approx(0.0125)
    assert arg.per_task == pytest.approx({"a": 0.225, "b": -0.05})
    assert str(arg) == "+8.7 ± 1.2"  # 8.75 rounds half to even
    with pytest.raises(ValueError, match="no PT baseline"):
        average_relative_gain({("c", 1): 0.5}, base)


def test_prompt_tuning_on_a_learnable_task_beats_chance():
    bb = tiny_backbone(CAUSAL, prompt_length=8)
    fs = sample_few_shot(keyword_task(), 13, test_size=100)
    res = tune_prompt(bb, fs, bb.init_prompt("vocab", seed=0), TuneConfig(steps=200, eval_every=50), progress=False)
    assert res.init_dev <= 0.7
    assert res.dev >= 0.9 and res.test >= 0.85
    assert res.best_step > 0 and len(res.curve) == 5


def test_pt_baseline_is_computed_once_and_then_read_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path))
    bb = tiny_backbone(CAUSAL)
    tasks = [keyword_task("kw1"), keyword_task("kw2", seed=1, words=("hot", "cold"))]
    cfg = TuneConfig(steps=4, eval_every=2, test_size=16)
    calls = []
    real = ev.tune_prompt
    monkeypatch.setattr(ev, "tune_prompt", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = pt_baseline(bb, tasks, (13, 21), cfg, progress=False)
    assert len(calls) == 4 and len(list((tmp_path / "baselines").glob("*.json"))) == 4
    second = pt_baseline(bb, tasks, (13, 21), cfg, progress=False)
    assert len(calls) == 4, "a cached baseline must not be tuned again"
    assert {k: v.test for k, v in first.items()} == {k: v.test for k, v in second.items()}
    pt_baseline(bb, tasks[:1], (13,), TuneConfig(steps=5, eval_every=5, test_size=16), progress=False)
    assert len(calls) == 5, "another tuning setting is another cache entry"


def test_finetune_baseline_trains_a_copy_and_leaves_the_frozen_model_alone():
    bb = tiny_backbone(CAUSAL)
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    fs = sample_few_shot(keyword_task(), 13, test_size=50)
    res = ev.finetune(bb, fs, TuneConfig(lr=1e-3, optimizer="adam", steps=60, eval_every=20), progress=False)
    assert res.dev >= res.init_dev and res.curve[-1]["train_loss"] < 2.0
    assert all(torch.equal(before[k], v) for k, v in bb.model.state_dict().items())
