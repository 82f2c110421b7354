"""Batched multi-prompt tuning and scoring equal the one-by-one runs (float64, both families)."""
from __future__ import annotations

import math
import random
import sys

import pytest
import torch

import promptinit.batched as batched
from promptinit.batched import TuneProblem, evaluate_many, tune_prompts
from promptinit.errors import PromptinitError
from promptinit.evaluation import TuneConfig, evaluate, evaluate_init, pt_baseline, tune_prompt
from promptinit.methods.mgr import MetaGradRegulariser
from promptinit.paths import CACHE_ENV
from promptinit.tasks.fewshot import sample_few_shot
from promptinit.tasks.task import Example, Metric, Task, TaskKind
from tests.conftest import CAUSAL, SEQ2SEQ, keyword_task, tiny_backbone

TOL = 1e-9


def echo_task(name: str = "echo", n: int = 160, seed: int = 0) -> Task:
    """A generation task (greedy decoding, token F1): answer the input's last word."""
    rng = random.Random(seed)
    words = ("red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "car", "boat")
    examples, seen = [], set()
    while len(examples) < n:
        ws = rng.sample(words, 3)
        text = f"say the last word: {' '.join(ws)} ="
        if text not in seen:
            seen.add(text)
            examples.append(Example(text, ws[-1]))
    return Task(name, TaskKind.GENERATION, Metric.TOKEN_F1, tuple(examples))


def _prompt(bb, seed: int, length: int) -> torch.Tensor:
    """A sampled-vocabulary prompt of ``length`` vectors (the backbone's L is 4)."""
    parts = [bb.init_prompt("vocab", seed=seed + i) for i in range(math.ceil(length / 4))]
    return torch.cat(parts)[:length].clone()


def _problems(bb) -> list[TuneProblem]:
    """Different tasks (two classification, one generation), prompt lengths 4 and 6, step
    counts, learning rates, optimisers, eval schedules, patience and gradient transforms (one
    reading each batch's hidden states); one problem takes the run's shared config."""
    kw1 = keyword_task("kw1")
    kw2 = keyword_task("kw2", seed=1, words=("hot", "cold"), labels=("warm", "chilly"))
    echo = echo_task()
    fs = lambda task, seed: sample_few_shot(task, seed, test_size=20)  # noqa: E731
    return [
        TuneProblem(fs(kw1, 13), _prompt(bb, 0, 4), TuneConfig(lr=0.3, batch_size=4, steps=6, eval_every=2)),
        TuneProblem(fs(kw1, 21), _prompt(bb, 10, 6), TuneConfig(lr=0.1, batch_size=3, steps=4, eval_every=3)),
        TuneProblem(fs(kw2, 13), _prompt(bb, 20, 4),
                    TuneConfig(lr=0.05, optimizer="adam", batch_size=5, steps=7, eval_every=2, patience=2)),
        TuneProblem(fs(echo, 100), _prompt(bb, 30, 6), TuneConfig(lr=0.5, optimizer="sgd", batch_size=4, steps=3,
                                                                  eval_every=2), grad_transform=lambda g: 0.5 * g),
        TuneProblem(fs(kw2, 21), _prompt(bb, 40, 4), None),
        # SUPMER's ψ with its gate on each batch's hidden states (the context of split passes adds up)
        TuneProblem(fs(kw1, 42), _prompt(bb, 50, 4), TuneConfig(lr=0.3, batch_size=5, steps=4, eval_every=2),
                    grad_transform=MetaGradRegulariser(bb.hidden_size, rank=8, dtype=torch.float64).as_grad_transform()),
    ]


SHARED = dict(lr=0.2, batch_size=2, steps=5, eval_every=2)


def assert_same_result(got, ref) -> None:
    assert (got.task, got.seed, got.metric) == (ref.task, ref.seed, ref.metric)
    assert got.init_dev == pytest.approx(ref.init_dev, abs=TOL)
    assert got.dev == pytest.approx(ref.dev, abs=TOL)
    assert got.test == pytest.approx(ref.test, abs=TOL)
    assert got.best_step == ref.best_step
    assert [c["step"] for c in got.curve] == [c["step"] for c in ref.curve]
    for a, b in zip(got.curve, ref.curve):
        assert a["dev"] == pytest.approx(b["dev"], abs=TOL)
        assert (math.isnan(a["train_loss"]) and math.isnan(b["train_loss"])) or \
            abs(a["train_loss"] - b["train_loss"]) < TOL
    assert got.prompt.shape == ref.prompt.shape
    torch.testing.assert_close(got.prompt, ref.prompt, rtol=0, atol=TOL)


@pytest.fixture(scope="module", params=[CAUSAL, SEQ2SEQ])
def separate(request):
    """The backbone, the problems and their one-by-one ``tune_prompt`` results."""
    bb = tiny_backbone(request.param, "float64")
    problems = _problems(bb)
    shared = TuneConfig(**SHARED)
    refs = [tune_prompt(bb, p.fewshot, p.init, p.config or shared, grad_transform=p.grad_transform, progress=False)
            for p in problems]
    return bb, problems, refs


@pytest.mark.parametrize("rows_per_pass", [0, 3, 4096], ids=["measured", "3-rows", "one-pass"])
def test_tune_prompts_equals_separate_tune_prompt_runs(separate, rows_per_pass):
    """3 rows per pass splits a problem's batch over passes; 4096 puts a whole step in one pass
    per prompt length; 0 uses the measured rule."""
    bb, problems, refs = separate
    inits = [p.init.clone() for p in problems]
    got = tune_prompts(bb, problems, TuneConfig(**SHARED, rows_per_pass=rows_per_pass), progress=False)
    assert len(got) == len(refs)
    for g, r in zip(got, refs):
        assert_same_result(g, r)
    assert all(torch.equal(p.init, i) for p, i in zip(problems, inits))  # inits untouched
    # the run exercised what it claims: an early stop and an evaluation at a last step off the schedule
    assert got[2].curve[-1]["step"] < 7, got[2].curve
    assert got[1].curve[-1]["step"] == 4 and [c["step"] for c in got[1].curve] == [0, 3, 4]


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_scoring_with_a_prompt_per_row_equals_one_prompt_at_a_time(model):
    bb = tiny_backbone(model, "float64")
    labelled = list(sample_few_shot(keyword_task(labels=("very good", "bad")), 13, test_size=8).test)
    generated = list(sample_few_shot(echo_task(), 13, test_size=8).test)
    prompts = torch.stack([_prompt(bb, 7 * i, 4) for i in range(len(labelled))])
    rows = bb.score_options(prompts, labelled, batch_size=3)  # rows of one pass carry different prompts
    for i, ex in enumerate(labelled):
        (alone,) = bb.score_options(prompts[i], [ex])
        torch.testing.assert_close(rows[i], alone, rtol=0, atol=TOL)
    texts = bb.generate(prompts, generated, max_new_tokens=6, batch_size=3)
    assert texts == [bb.generate(prompts[i], [ex], max_new_tokens=6)[0] for i, ex in enumerate(generated)]


def test_per_row_prompts_must_match_the_examples():
    bb = tiny_backbone(CAUSAL)
    examples = list(sample_few_shot(keyword_task(), 13, test_size=4).test)
    with pytest.raises(ValueError, match="one row per example"):
        bb.predict(torch.zeros(len(examples) + 1, 4, bb.hidden_size), examples)


@pytest.mark.parametrize("model", [CAUSAL, SEQ2SEQ])
def test_evaluate_many_equals_evaluate_of_each_item(model):
    """Items of different prompt lengths, tasks and kinds (options / generation) in shared passes."""
    bb = tiny_backbone(model, "float64")
    kw = sample_few_shot(keyword_task(), 13, test_size=12)
    echo = sample_few_shot(echo_task(), 13, test_size=12)
    items = [(_prompt(bb, 0, 4), kw.dev, "accuracy"), (_prompt(bb, 5, 6), kw.test, "accuracy"),
             (_prompt(bb, 9, 4), echo.test, "token_f1"), (_prompt(bb, 13, 4), kw.test, "macro_f1")]
    for rows in (5, 0):
        got = evaluate_many(bb, items, rows_per_pass=rows)
        assert got == pytest.approx([evaluate(bb, p, exs, m) for p, exs, m in items], abs=TOL)


def test_pt_baseline_tunes_only_the_missing_pairs_in_one_batched_run(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    bb = tiny_backbone(CAUSAL, "float64")
    tasks = [keyword_task("kw1"), keyword_task("kw2", seed=1, words=("hot", "cold"))]
    cfg = TuneConfig(steps=4, eval_every=2, batch_size=4, test_size=16)
    runs = []
    real = batched.tune_prompts
    monkeypatch.setattr(batched, "tune_prompts", lambda bb_, probs, *a, **k: runs.append(len(probs)) or
                        real(bb_, probs, *a, **k))
    first = pt_baseline(bb, tasks, (13,), cfg, progress=False)
    both = pt_baseline(bb, tasks, (13, 21), cfg, progress=False)
    assert runs == [2, 2], "one batched run per call, of the (task, seed) pairs not yet on disk"
    assert list(both) == [("kw1", 13), ("kw1", 21), ("kw2", 13), ("kw2", 21)]
    assert all(both[k].test == first[k].test for k in first)
    # the pass size changes the speed, not the result: it is no part of the cache key
    again = pt_baseline(bb, tasks, (13, 21), TuneConfig(steps=4, eval_every=2, batch_size=4, test_size=16,
                                                         rows_per_pass=3), progress=False)
    assert runs == [2, 2] and {k: r.test for k, r in again.items()} == {k: r.test for k, r in both.items()}
    for task in tasks:
        ref = tune_prompt(bb, sample_few_shot(task, 21, test_size=16), bb.init_prompt("vocab", seed=21), cfg,
                          progress=False)
        assert both[(task.name, 21)].test == pytest.approx(ref.test, abs=TOL)
        assert both[(task.name, 21)].best_step == ref.best_step


def test_evaluate_init_equals_tune_prompt_per_task_and_seed(tmp_path, monkeypatch):
    """The init's problems and the missing baselines run as one batched computation."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    bb = tiny_backbone(CAUSAL, "float64")
    tasks = [keyword_task("kw1"), echo_task()]
    cfg = TuneConfig(lr=0.2, steps=3, eval_every=2, batch_size=4, test_size=12)
    init = _prompt(bb, 3, 4)
    transform = lambda g: 0.7 * g  # noqa: E731
    runs = []
    real = batched.tune_prompts
    monkeypatch.setattr(batched, "tune_prompts", lambda bb_, probs, *a, **k: runs.append(len(probs)) or
                        real(bb_, probs, *a, **k))
    arg, results, baseline = evaluate_init(bb, init, tasks, (13, 21), cfg, grad_transform=transform, progress=False)
    assert runs == [8]  # 4 baselines + 4 from init
    assert len(list((tmp_path / "baselines").glob("*.json"))) == 4
    for task in tasks:
        for seed in (13, 21):
            fs = sample_few_shot(task, seed, test_size=12)
            assert_same_result(results[(task.name, seed)],
                               tune_prompt(bb, fs, init, cfg, grad_transform=transform, progress=False))
            ref = tune_prompt(bb, fs, bb.init_prompt("vocab", seed=seed), cfg, progress=False)
            assert baseline[(task.name, seed)].test == pytest.approx(ref.test, abs=TOL)
    evaluate_init(bb, init, tasks, (13, 21), cfg, progress=False)
    assert runs == [8, 4], "the baselines are read from disk the second time"


def test_progress_bar_counts_problem_steps_and_active_problems(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # tqdm draws bars only on a terminal
    bb = tiny_backbone(CAUSAL)
    fs = sample_few_shot(keyword_task(), 13, test_size=8)
    probs = [TuneProblem(fs, _prompt(bb, 0, 4), TuneConfig(steps=2, eval_every=2, batch_size=2)),
             TuneProblem(fs, _prompt(bb, 1, 4), TuneConfig(steps=4, eval_every=2, batch_size=2))]
    tune_prompts(bb, probs, progress=True)
    err = capsys.readouterr().err
    assert "tune 2 prompts" in err and "6/6" in err and "active=1/2" in err, err


def test_rows_per_pass_setting_is_checked():
    with pytest.raises(PromptinitError, match="rows_per_pass"):
        TuneConfig(rows_per_pass=-1)
    with pytest.raises(PromptinitError, match="rows_per_pass"):
        TuneConfig(rows_per_pass=2.5)


def test_trial_scoring_tunes_its_problems_batched_with_the_separate_runs_results():
    """trainables.scoring.tuned_scores (validation inside trials, target scoring) runs its
    (task, seed) problems batched; each score equals a separate tune_prompt run (float64)."""
    from promptinit.trainables.scoring import tuned_scores

    bb = tiny_backbone(CAUSAL, dtype="float64")
    tasks = [keyword_task("kw1"), keyword_task("kw2", seed=1, words=("hot", "cold"))]
    cfg = TuneConfig(steps=4, eval_every=2, test_size=16, lr=0.3)
    init = bb.init_prompt("vocab", seed=5)
    scores = tuned_scores(bb, init, tasks, (13, 21), cfg)
    for task in tasks:
        for seed in (13, 21):
            alone = tune_prompt(bb, sample_few_shot(task, seed, test_size=16), init, cfg, progress=False)
            assert scores[(task.name, seed)] == alone.test
