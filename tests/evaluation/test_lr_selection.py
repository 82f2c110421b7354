"""Downstream learning-rate selection (Qin et al. 2023: best of 0.5, 0.4, 0.3, 0.2 on dev).

A list of learning rates tunes every problem once per lr and keeps the run with the best dev
score; the references are separate single-lr ``tune_prompt`` runs (float64, both families).
"""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import promptinit.batched as batched
import promptinit.evaluation as ev
from promptinit.batched import TuneProblem, tune_prompts
from promptinit.errors import PromptinitError
from promptinit.evaluation import TuneConfig, TuneResult, pt_baseline, tune_prompt
from promptinit.fingerprints import digest
from promptinit.paths import CACHE_ENV
from promptinit.tasks.fewshot import FewShot, sample_few_shot
from promptinit.tuning import choose_lr
from tests.conftest import CAUSAL, SEQ2SEQ, keyword_task, tiny_backbone
from tests.evaluation.test_batched import TOL, assert_same_result

STEPS = dict(steps=6, eval_every=2, batch_size=4)


def biased(task_name: str, seed: int) -> FewShot:
    """A few-shot draw whose train set holds one label only and whose dev set mostly that label.

    The tiny T5 ranks the same option first for every input; trained on one label, it flips
    to that label only with a large enough lr (measured: adafactor, 6 steps: lr 1.0 flips at
    step 6, dev 0.2 -> 0.8; lr 0.01-0.3 never do), so the lrs' dev scores differ on both
    families and the choice is not always the first lr.
    """
    fs = sample_few_shot(keyword_task(task_name), seed, test_size=16)
    yes = [ex for ex in fs.dev if ex.target == "yes"]
    no = [ex for ex in fs.dev if ex.target == "no"]
    return dataclasses.replace(fs, train=tuple(ex for ex in fs.train if ex.target == "yes"), dev=tuple(yes + no[:4]))


def reference(bb, problem: TuneProblem, config: TuneConfig) -> tuple[int, list[TuneResult]]:
    """Qin et al.'s loop: a separate float-lr ``tune_prompt`` per lr, the first best dev kept."""
    runs = [tune_prompt(bb, problem.fewshot, problem.init, dataclasses.replace(config, lr=lr),
                        grad_transform=problem.grad_transform, progress=False) for lr in config.lr]
    best = max(range(len(runs)), key=lambda i: (runs[i].dev, -i))
    return best, runs


def assert_chosen(got: TuneResult, config: TuneConfig, best: int, runs: list[TuneResult]) -> None:
    """``got`` is the reference's chosen run, and records the choice."""
    assert got.lr == config.lr[best]
    assert_same_result(got, runs[best])
    assert [c["lr"] for c in got.lr_search] == list(config.lr)
    assert [c["dev"] for c in got.lr_search] == pytest.approx([r.dev for r in runs], abs=TOL)
    assert [c["best_step"] for c in got.lr_search] == [r.best_step for r in runs]


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_a_list_of_lrs_keeps_the_best_dev_run_of_separate_float_runs(model, monkeypatch):
    """Three problems of two tasks in one batched call: two choose among lrs (one with its own
    config, one with the shared config), one has a single lr; each equals its reference.

    Best dev per lr seen: tiny-llama kw1 0.80 / 0.85 / 0.80 (lr 0.1 kept), kw2 0.47 / 0.625
    (0.3 kept); tiny-t5 kw1 0.2 / 0.2 / 0.8 (1.0 kept), kw2 0.5 / 0.5 (a tie: 0.03 kept).
    """
    bb = tiny_backbone(model, "float64")
    own = TuneConfig(lr=[0.3, 0.1, 1.0], **STEPS)
    shared = TuneConfig(lr=(0.03, 0.3), **STEPS)
    problems = [TuneProblem(biased("kw1", 13), bb.init_prompt("vocab", seed=13), own),
                TuneProblem(sample_few_shot(keyword_task("kw2", seed=1, words=("hot", "cold")), 21, test_size=16),
                            bb.init_prompt("vocab", seed=1), None, grad_transform=lambda g: 0.5 * g),
                TuneProblem(biased("kw3", 21), bb.init_prompt("vocab", seed=2), TuneConfig(lr=0.3, **STEPS))]
    rows = []  # prompts per training step: every (problem, lr) run shares the step's passes
    real = batched.train_step
    monkeypatch.setattr(batched, "train_step", lambda bb_, prompts, *a: rows.append(len(prompts)) or
                        real(bb_, prompts, *a))
    got = tune_prompts(bb, problems, shared, progress=False)
    assert rows[0] == 3 + 2 + 1 and len(rows) == STEPS["steps"]

    chosen = []
    for g, p in zip(got[:2], problems[:2]):
        best, runs = reference(bb, p, p.config or shared)
        assert_chosen(g, p.config or shared, best, runs)
        chosen.append(best)
    single = tune_prompt(bb, problems[2].fewshot, problems[2].init, problems[2].config, progress=False)
    assert_same_result(got[2], single)
    assert got[2].lr == 0.3 and got[2].lr_search == []
    assert chosen[0] != 0, "the case must make a later lr win on dev"
    # tune_prompt with the list: the same choice (its runs one after the other)
    best, runs = reference(bb, problems[0], own)
    assert_chosen(tune_prompt(bb, problems[0].fewshot, problems[0].init, own, progress=False), own, best, runs)


def _result(dev: float) -> TuneResult:
    return TuneResult("t", 13, "accuracy", 0.5, dev, math.nan, 2)


def test_choose_lr_keeps_the_earlier_lr_on_a_tie():
    config = TuneConfig(lr=[0.5, 0.4, 0.3, 0.2])
    kept = choose_lr(config, [_result(d) for d in (0.6, 0.8, 0.8, 0.7)])
    assert kept.lr == 0.4 and kept.dev == 0.8
    assert [c["dev"] for c in kept.lr_search] == [0.6, 0.8, 0.8, 0.7]
    assert choose_lr(config, [_result(0.5)] * 4).lr == 0.5
    with pytest.raises(ValueError, match="3 runs for the 4 learning rates"):
        choose_lr(config, [_result(0.5)] * 3)


@pytest.mark.parametrize("path", ["batched", "tune_prompt"])
def test_equal_dev_scores_keep_the_earlier_lr_in_the_list(path, monkeypatch):
    """Every dev score is made 0.5: every lr ties, and the list's order alone decides."""
    bb = tiny_backbone(CAUSAL, "float64")
    fs = sample_few_shot(keyword_task(), 13, test_size=8)
    init = bb.init_prompt("vocab", seed=0)
    real_many, real_one = batched.evaluate_many, ev.evaluate
    monkeypatch.setattr(batched, "evaluate_many", lambda bb_, items, **k: [
        0.5 if exs is fs.dev else s for (_, exs, _), s in zip(items, real_many(bb_, items, **k))])
    monkeypatch.setattr(ev, "evaluate", lambda bb_, p, exs, *a: 0.5 if exs is fs.dev else real_one(bb_, p, exs, *a))
    for lrs in ([0.3, 0.1], [0.1, 0.3]):
        config = TuneConfig(lr=lrs, steps=2, eval_every=1, batch_size=4)
        if path == "batched":
            (got,) = tune_prompts(bb, [TuneProblem(fs, init)], config, progress=False)
        else:
            got = tune_prompt(bb, fs, init, config, progress=False)
        assert got.lr == lrs[0] and [c["dev"] for c in got.lr_search] == [0.5, 0.5]
        assert got.best_step == 0 and torch.equal(got.prompt, init)  # nothing beat the initial prompt


def test_a_float_lr_gives_the_results_and_cache_key_of_before_lr_lists():
    """Pinned from the code before lr lists (git 9289e48): float64 tiny-llama, keyword task,
    seed 13, lr 0.3, 6 steps. A change of the tiny models' builder changes these numbers."""
    assert ev._tuning_key(TuneConfig()) == {"lr": 0.3, "optimizer": "adafactor", "batch_size": 8, "steps": 3000,
                                            "eval_every": 50, "eval_batch_size": 32, "test_size": 200,
                                            "patience": None}
    assert digest(ev._tuning_key(TuneConfig())) == "d01e8db3e25ef91a"
    assert TuneConfig(lr=1).lr == 1 and isinstance(TuneConfig(lr=1).lr, int)  # kept as given: same key
    keys = {digest(ev._tuning_key(TuneConfig(lr=lr))) for lr in (0.3, [0.3], [0.3, 0.2], [0.2, 0.3])}
    assert len(keys) == 4, "a list is another cache entry than any float, and its order is part of it"

    bb = tiny_backbone(CAUSAL, "float64")
    fs = sample_few_shot(keyword_task(), 13, test_size=16)
    init = bb.init_prompt("vocab", seed=0)
    cfg = TuneConfig(lr=0.3, steps=6, eval_every=2, batch_size=4, test_size=16)
    one = tune_prompt(bb, fs, init, cfg, progress=False)
    (many,) = tune_prompts(bb, [TuneProblem(fs, init)], cfg, progress=False)
    for res in (one, many):
        assert (res.dev, res.test, res.best_step) == (0.6875, 0.5625, 6)
        assert [c["dev"] for c in res.curve] == [0.5, 0.5, 0.5625, 0.6875]
        # pinned before lr lists existed; float64 training differs across machines' kernels by
        # ~1.5e-9 here (-8.530107655141304 on the 2-core CI kind), far below any change of behaviour
        assert float(res.prompt.sum()) == pytest.approx(-8.5301076566561, abs=1e-7)
        assert res.lr == 0.3 and res.lr_search == []
    listed = tune_prompt(bb, fs, init, dataclasses.replace(cfg, lr=[0.3]), progress=False)
    assert torch.equal(listed.prompt, one.prompt) and listed.test == one.test
    assert listed.lr_search == [{"lr": 0.3, "dev": one.dev, "best_step": 6, "steps": 6}]


@pytest.mark.parametrize("lr,problem", [
    ([], "an empty list"), ((), "an empty list"), ([0.3, -0.1], "must be > 0"), (0, "must be > 0"),
    ([0.3, 0.2, 0.3], "lists 0.3 twice"), ([1, 1.0], "lists 1.0 twice"), (["0.3"], "is not a number"),
    ("0.3", "is not a number"), ([0.3, None], "is not a number"), (True, "is not a number"),
    ([math.nan], "must be > 0 and finite"), (math.inf, "must be > 0 and finite"),
])
def test_bad_learning_rates_name_the_field_and_the_fix(lr, problem):
    with pytest.raises(PromptinitError, match="field 'lr'") as err:
        TuneConfig(lr=lr)
    assert problem in str(err.value) and "[0.5, 0.4, 0.3, 0.2]" in str(err.value)


def test_a_list_is_stored_as_a_hashable_tuple_of_floats():
    cfg = TuneConfig(lr=[0.5, 1, 0.25])
    assert cfg.lr == (0.5, 1.0, 0.25) and cfg.lrs == cfg.lr and cfg.selects_lr
    assert [c.lr for c in cfg.candidates()] == [0.5, 1.0, 0.25] and hash(cfg) == hash(TuneConfig(lr=(0.5, 1, 0.25)))
    assert TuneConfig().lrs == (0.3,) and TuneConfig().candidates() == [TuneConfig()] and not TuneConfig().selects_lr
    assert TuneConfig(**dataclasses.asdict(cfg)) == cfg  # as Ray jobs rebuild it from plain fields


def test_finetune_refuses_a_list():
    with pytest.raises(PromptinitError, match="field 'lr': finetune takes one learning rate"):
        ev.finetune(tiny_backbone(CAUSAL), sample_few_shot(keyword_task(), 13, test_size=8),
                    TuneConfig(lr=[1e-4, 1e-3], optimizer="adam"), progress=False)


def test_the_pt_baseline_cache_records_the_chosen_lr(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    bb = tiny_backbone(CAUSAL, "float64")
    task = keyword_task()
    listed = TuneConfig(lr=[0.03, 1.0], steps=2, eval_every=1, batch_size=4, test_size=8)
    first = pt_baseline(bb, [task], (13,), listed, progress=False)[("keyword", 13)]
    pt_baseline(bb, [task], (13,), TuneConfig(lr=1.0, steps=2, eval_every=1, batch_size=4, test_size=8),
                progress=False)
    files = sorted((tmp_path / "baselines").glob("*.json"))
    assert len(files) == 2, "a list and a float are separate cache entries"
    stored = [json.loads(f.read_text()) for f in files]
    assert any(s["lr"] == first.lr and s["lr_search"] == first.lr_search for s in stored)
    assert first.lr in (0.03, 1.0) and [c["lr"] for c in first.lr_search] == [0.03, 1.0]
    again = pt_baseline(bb, [task], (13,), listed, progress=False)[("keyword", 13)]
    assert (again.lr, again.lr_search, again.test) == (first.lr, first.lr_search, first.test)  # read from disk


def test_the_cli_takes_several_lrs_and_prints_the_choice(tmp_path, capsys):
    from promptinit.backbones import Backbone, BackboneConfig, load_prompt
    from promptinit.cli import main
    from promptinit.tasks.catalog import load_task
    from tests.test_cli import KEYWORD_ENTRY, keyword_rows, write_catalog

    cat = write_catalog(tmp_path, KEYWORD_ENTRY, keyword_rows())
    out = tmp_path / "best.safetensors"
    assert main(["tune", "--model", CAUSAL, "--catalog", str(cat), "--task", "keyword", "--prompt-length", "4",
                 "--dtype", "float64", "--steps", "4", "--eval-every", "2", "--test-size", "16", "--seed", "13",
                 "--lr", "0.03", "1.0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    bb = Backbone(BackboneConfig(CAUSAL, prompt_length=4, dtype="float64", device="cpu"))
    fs = sample_few_shot(load_task("keyword", cat), 13, test_size=16)
    ref = tune_prompt(bb, fs, bb.init_prompt("vocab", seed=13),
                      TuneConfig(lr=[0.03, 1.0], steps=4, eval_every=2, test_size=16), progress=False)
    assert f"lr {ref.lr:g} chosen on dev (best dev per lr: 0.03: {100 * ref.lr_search[0]['dev']:.1f}, " \
           f"1: {100 * ref.lr_search[1]['dev']:.1f})" in printed, printed
    torch.testing.assert_close(load_prompt(out, (4, bb.hidden_size)), ref.prompt.float())  # saved as float32


@pytest.mark.parametrize("argv,option", [
    (["tune", "--task", "keyword", "--lr", "0.3", "0.3"], "option '--lr'"),
    (["upstream", "--method", "mtl", "--partition", "none", "--tune-lr", "0.3", "-1"], "option '--tune-lr'"),
])
def test_a_bad_lr_list_on_the_command_line_names_the_option(argv, option, capsys):
    from promptinit.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and "[0.5, 0.4, 0.3, 0.2]" in err, err


def test_one_lr_on_the_command_line_is_a_float():
    from promptinit.commands.tune import lr_value

    assert lr_value([0.3]) == 0.3 and lr_value(0.3) == 0.3  # a single lr: its results and cache key as before
    assert lr_value([0.5, 0.4]) == [0.5, 0.4]


def test_halving_rungs_by_hand():
    from promptinit.tuning import halving_rungs

    four = TuneConfig(lr=[0.5, 0.4, 0.3, 0.2], steps=60, eval_every=10, lr_halving=True)
    assert halving_rungs(four) == {20: 2, 40: 1}  # 4x20 + 2x20 + 1x20 = 140 run-steps of 240
    assert halving_rungs(dataclasses.replace(four, lr=[0.5, 0.3])) == {30: 1}
    assert halving_rungs(dataclasses.replace(four, lr=[0.5, 0.4, 0.3])) == {20: 2, 40: 1}
    assert halving_rungs(dataclasses.replace(four, eval_every=25)) == {25: 2, 50: 1}  # moved up to an evaluation
    assert halving_rungs(dataclasses.replace(four, steps=20, eval_every=20)) == {}  # no evaluation before the end
    assert halving_rungs(dataclasses.replace(four, lr_halving=False)) == {}
    assert halving_rungs(dataclasses.replace(four, lr=0.3)) == {}


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_halving_stops_the_trailing_lrs_at_each_rung_and_chooses_among_the_rest(model):
    """4 lrs, 8 steps evaluated every 2: rungs {4: 2, 6: 1}. Each lr's run equals its own
    single-lr run up to where it stopped (its best dev is that run's best up to that step),
    the runs stopped at a rung trail the ones that went on, and the choice is the run that
    went to the end: 4x4 + 2x2 + 1x2 = 22 run-steps instead of 32."""
    bb = tiny_backbone(model, "float64")
    config = TuneConfig(lr=[1.0, 0.3, 0.1, 0.01], steps=8, eval_every=2, batch_size=4, lr_halving=True)
    problem = TuneProblem(biased("halve", 3), bb.init_prompt("vocab", seed=3))
    got = tune_prompts(bb, [problem], config, progress=False)[0]
    steps = [c["steps"] for c in got.lr_search]
    assert sorted(steps) == [4, 4, 6, 8] and sum(steps) == 22
    for c in got.lr_search:
        alone = tune_prompts(bb, [problem], dataclasses.replace(config, lr=c["lr"], lr_halving=False), progress=False)[0]
        assert c["dev"] == pytest.approx(max(p["dev"] for p in alone.curve if p["step"] <= c["steps"]), abs=TOL)
    by_steps = sorted(got.lr_search, key=lambda c: c["steps"])
    assert max(c["dev"] for c in by_steps[:2]) <= min(c["dev"] for c in by_steps[2:]) + TOL
    assert got.lr == by_steps[-1]["lr"] or got.dev == pytest.approx(by_steps[-1]["dev"], abs=TOL)
    assert tune_prompt(bb, problem.fewshot, problem.init, config, progress=False).lr_search == got.lr_search
