"""``promptinit.compiled``: compiled tuning passes equal eager ones to rounding, and run only
where they should (bf16/fp32 causal passes inside ``compiled.passes``; float64 never)."""
from __future__ import annotations

import pytest
import torch

from promptinit import compiled
from promptinit.batched import train_step
from promptinit.errors import PromptinitError
from promptinit.tasks.fewshot import sample_few_shot
from promptinit.tasks.task import Example
from tests.conftest import CAUSAL, SEQ2SEQ, keyword_task, tiny_backbone


def test_setting_is_off_by_default_and_refuses_other_values(monkeypatch):
    monkeypatch.delenv(compiled.ENV, raising=False)
    assert compiled.setting() == "off"
    monkeypatch.setenv(compiled.ENV, " ON ")
    assert compiled.setting() == "on"
    monkeypatch.setenv(compiled.ENV, "yes")
    with pytest.raises(PromptinitError, match="PROMPTINIT_COMPILE='yes' is not one of off, on"):
        compiled.setting()


@pytest.mark.parametrize("model,dtype", [(CAUSAL, "float64"), (SEQ2SEQ, "float32")])
def test_float64_and_seq2seq_passes_never_compile(model, dtype, monkeypatch):
    monkeypatch.setenv(compiled.ENV, "on")
    bb = tiny_backbone(model, dtype)
    with compiled.passes(bb) as on:
        assert not on and not compiled.active()


def test_passes_follow_the_setting_and_end_with_the_context(monkeypatch):
    bb = tiny_backbone(CAUSAL, "float32")
    monkeypatch.setenv(compiled.ENV, "off")
    with compiled.passes(bb) as on:
        assert not on
    monkeypatch.setenv(compiled.ENV, "on")
    with compiled.passes(bb) as on:
        assert on and compiled.active()
    assert not compiled.active()


@pytest.mark.parametrize("rows", [3, 1])
def test_compiled_training_step_equals_eager_to_rounding(rows, monkeypatch):
    """One batched training step (losses and prompt gradients of 2 problems of ``rows`` rows
    each, in one pass; a one-row problem's pass alone) with ``PROMPTINIT_COMPILE`` on and off;
    float32, so only rounding separates them (seen: gradients 3e-6 apart in relative norm)."""
    bb = tiny_backbone(CAUSAL, "float32")
    task = keyword_task()
    batches = [list(sample_few_shot(task, seed).train[:rows]) for seed in (13, 21)]
    inits = [bb.init_prompt("vocab", seed=s) for s in (0, 1)]

    def step(setting: str):
        monkeypatch.setenv(compiled.ENV, setting)
        prompts = [p.clone().requires_grad_(True) for p in inits]
        return train_step(bb, prompts, batches, rows_per_pass=2 * rows if rows > 1 else 1)

    eager_loss, eager_grad = step("off")
    loss, grad = step("on")
    assert loss == pytest.approx(eager_loss, rel=1e-5)
    for g, e in zip(grad, eager_grad, strict=True):
        assert float((g - e).norm() / e.norm()) < 1e-4
        assert e.norm() > 0


@pytest.mark.parametrize("rows", [3, 1])
def test_compiled_scoring_equals_eager_to_rounding(rows):
    """Option log-likelihoods of ``rows`` examples with per-row prompts (one row: padded with a
    copy, dropped from the key/value cache) with the prefix compiled and eager; float32 (seen:
    1e-5 apart on scores of -28 to -40)."""
    bb = tiny_backbone(CAUSAL, "float32")
    examples = list(sample_few_shot(keyword_task(), 13).test[:rows])
    prompts = torch.stack([bb.init_prompt("vocab", seed=s) for s in range(rows)])
    eager = bb.score_options(prompts, examples, batch_size=rows)
    with compiled.passes(bb, enabled=True) as on:
        assert on
        scores = bb.score_options(prompts, examples, batch_size=rows)
    for s, e in zip(scores, eager, strict=True):
        torch.testing.assert_close(s, e, rtol=1e-5, atol=1e-5)


def test_compiled_generation_decodes_as_eager():
    """Greedy generation reads the compiled prefix's key/value cache for its eager decoding
    steps: the same tokens as eager decoding (float32; 4 tokens a row, seen non-empty)."""
    bb = tiny_backbone(CAUSAL, "float32")
    examples = [Example(f"say {w} again =", w) for w in ("red", "blue", "green")]
    prompts = torch.stack([bb.init_prompt("vocab", seed=s) for s in range(3)])
    eager = bb.generate(prompts, examples, max_new_tokens=4, batch_size=3)
    with compiled.passes(bb, enabled=True):
        assert bb.generate(prompts, examples, max_new_tokens=4, batch_size=3) == eager


def test_compiled_graphs_are_cached_in_promptinits_cache_unless_the_user_chose_a_folder(monkeypatch, tmp_path):
    """Inductor writes its default folder into TORCHINDUCTOR_CACHE_DIR the first time anything asks
    it for its cache (a FLOP count before the first compilation did): that counts as unset."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir as inductor_default

    monkeypatch.setenv("PROMPTINIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(compiled.CACHE_ENV, raising=False)
    inductor_default()  # sets the variable to inductor's own default
    ours = str(tmp_path / "cache" / "inductor" / f"torch-{torch.__version__}")
    assert compiled.inductor_cache() == ours
    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path / "mine"))
    assert compiled.inductor_cache() == str(tmp_path / "mine")
