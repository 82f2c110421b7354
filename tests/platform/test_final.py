"""After the search (the select, upstream and target phases of ``promptinit.search.phases``): a method meta-trained afresh with the search's seed is
the search's own run, another upstream seed is another run, and finished jobs are kept on disk
(``--resume`` redoes nothing) while every job prints its progress."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import keyword_task, tiny_backbone
from tests.methods.conftest import CHEAP, source_tasks

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["mtl", "fomaml"])
def test_train_job_is_the_searchs_run_for_its_seed_and_another_run_for_another(name, tmp_path):
    from promptinit.backbones import load_prompt
    from promptinit.methods import build_method
    from promptinit.trainables.scoring import PROMPT_FILE, MethodSpec, restore_method, train_job

    bb = tiny_backbone()
    tasks = source_tasks()
    settings = {**CHEAP[name], "steps": 10}
    straight = build_method(name, bb, tasks, settings, seed=0)
    for _ in range(4):  # the search's checkpoint at step 4 of a 10-step schedule
        straight.step()
    backbone = dataclasses.asdict(bb.config)
    method = MethodSpec(name, settings, tuple(tasks), seed=0)
    same = train_job(backbone, method, 4, str(tmp_path / "s0"))
    other = train_job(backbone, dataclasses.replace(method, seed=1), 4, str(tmp_path / "s1"))
    assert torch.equal(load_prompt(Path(same) / PROMPT_FILE), straight.prompt.detach().cpu())
    assert not torch.equal(load_prompt(Path(other) / PROMPT_FILE), straight.prompt.detach().cpu())
    restored = restore_method(bb, dataclasses.replace(method, checkpoint=same))
    assert torch.equal(restored.prompt, straight.prompt) and restored.state_dict().keys() == straight.state_dict().keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0", "s1"]  # no half-written folder left


def _count_and_score(tasks, seeds, calls: str, tag: str = ""):
    Path(calls, f"{tasks[0].name}-{tag}-{os.getpid()}-{len(os.listdir(calls))}").touch()
    return {(t.name, s): 0.5 + 0.01 * s for t in tasks for s in seeds}


def test_runner_keeps_finished_jobs_and_logs_progress(tmp_path, ray_tmp, caplog):
    import logging

    import ray

    from promptinit.search.phases.jobs import Job, Runner, scores_of

    calls = tmp_path / "calls"
    calls.mkdir()
    tasks = [keyword_task(f"t{i}", n=40) for i in range(3)]

    def jobs(tag=""):
        return [Job(f"PT {t.name}", _count_and_score, dict(tasks=[t], seeds=[1, 2], calls=str(calls), tag=tag),
                    {"task": t.fingerprint, "tag": tag}) for t in tasks]

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80_000_000, log_to_driver=False,
             _temp_dir=str(ray_tmp), runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # _count_and_score
    caplog.set_level(logging.INFO, logger="promptinit")
    try:
        first = Runner(tmp_path / "final", cpu=1, gpu=0, code="c1").run("target", jobs())
        out = "\n".join(caplog.messages)
        caplog.clear()
        assert len(list(calls.iterdir())) == 3
        assert [scores_of(v) for v in first] == [{(t.name, 1): 0.51, (t.name, 2): 0.52} for t in tasks]
        lines = [ln for ln in out.splitlines() if ln.strip().startswith("target [")]
        assert len(lines) == 3 and "left" in lines[0] and lines[-1].endswith("done")

        again = Runner(tmp_path / "final", cpu=1, gpu=0, code="c1").run("target", jobs())
        assert again == first and len(list(calls.iterdir())) == 3  # kept: nothing recomputed
        assert "3 done before" in "\n".join(caplog.messages)
        # A runner that shares this folder (a study's search sharing the study's) reuses them and says where.
        elsewhere = Runner(tmp_path / "other", cpu=1, gpu=0, code="c1", shared=[tmp_path / "final"])
        assert elsewhere.run("target", jobs()) == first and len(list(calls.iterdir())) == 3
        assert f"(3 done before, kept in {tmp_path / 'other'} or {tmp_path / 'final'})" in caplog.text
        # Another job description, or other code, is another result.
        Runner(tmp_path / "final", cpu=1, gpu=0, code="c1").run("target", jobs(tag="x"))
        Runner(tmp_path / "final", cpu=1, gpu=0, code="c2").run("target", jobs())
        assert len(list(calls.iterdir())) == 9
        # A runner that shares another's folder reuses its results (read only); its own folder stays empty.
        shared = Runner(tmp_path / "other", cpu=1, gpu=0, code="c1", shared=[tmp_path / "final"]).run("target", jobs())
        assert shared == first and len(list(calls.iterdir())) == 9 and not list((tmp_path / "other").glob("*"))
    finally:
        ray.shutdown()


def test_the_choice_is_the_best_rescored_candidate_not_the_best_searched():
    from promptinit.search.phases.searching import Candidate
    from promptinit.search.phases.select import choose, selection_rows

    def cand(trial, searched, rescored, step, fresh_arg=0.0):
        return Candidate("maml", trial, None, 0.0, {"upstream/step": step, "val/delta": searched, "val/delta_se": 0.05},
                         {}, {}, rescored={"val/delta": rescored, "val/delta_se": 0.02, "val/arg": fresh_arg})

    cands = {"maml": [cand("a", 0.30, 0.01, 6, 0.9), cand("b", 0.20, 0.08, 4), cand("c", 0.10, 0.08, 2)],
             "mtl": [cand("d", 0.05, -0.02, 6)]}
    chosen = choose(cands, "delta")
    assert {m: c.trial_id for m, c in chosen.items()} == {"maml": "b", "mtl": "d"}  # tie b/c: the search's order
    assert choose(cands, "arg")["maml"].trial_id == "a"  # by the re-scored ARG instead
    rows = selection_rows(cands, chosen, "delta")
    assert [(r["trial_id"], r["rank_in_search"], r["step"], r["chosen"]) for r in rows] == [
        ("a", 1, 6, False), ("b", 2, 4, True), ("c", 3, 2, False), ("d", 1, 6, True)]
    assert (rows[1]["objective"], rows[1]["val"], rows[1]["val_se"], rows[1]["rescored"], rows[1]["rescored_se"]) == (
        "delta", 0.20, 0.05, 0.08, 0.02)


def test_candidates_do_not_depend_on_the_order_tune_lists_trials_and_checkpoints():
    """Ties of val/arg are common (a few test examples): they go to the earlier checkpoint and
    the smaller trial id, so a resumed sweep (which lists results in another order) keeps the
    same candidates and checkpoints."""
    from types import SimpleNamespace

    from promptinit.search.phases.searching import TrialCounts, best_trials

    def result(tid, reports):
        ckpts = [(f"{tid}-ck{step}", {"val/delta": d, "val/arg": -d, "upstream/step": step, "trial_id": tid})
                 for step, d in reports]
        return SimpleNamespace(config={"method": "mtl", "mtl": {"lr": 0.3}}, error=None, best_checkpoints=ckpts)

    results = [result("b", [(2, 0.5), (4, 0.5)]), result("a", [(4, 0.5), (2, 0.5)]), result("c", [(2, 0.1)])]
    for order in (results, results[::-1]):
        cands, counts = best_trials(order, ["mtl"], 2, "delta")
        assert [(c.trial_id, c.checkpoint) for c in cands["mtl"]] == [("a", "a-ck2"), ("b", "b-ck2")]
        assert counts == {"mtl": TrialCounts(3, 3)}
        assert cands["mtl"][0].val_arg == -0.5  # the ARG it reported rides along
    cands, _ = best_trials(results, ["mtl"], 2, "arg")  # ranked by val/arg instead: c (-0.1) first
    assert [c.trial_id for c in cands["mtl"]] == ["c", "a"]


def test_plan_runs_cuts_each_tasks_problems_to_keep_every_worker_busy():
    """The demo's target phase: 3 tasks x 33 problems on 2 workers. Whole tasks as 3 runs would
    finish at 2 x 35 (one worker idles through the third); two runs per task finish at 56
    (costs 19 19 19 18 18 18 longest-first), four at >= 61.5: two per task is the cut."""
    from promptinit.search.phases.jobs import plan_runs

    assert plan_runs([33, 33, 33], workers=2) == [[17, 16], [17, 16], [17, 16]]
    assert plan_runs([33, 33, 33], workers=3) == [[33], [33], [33]]  # one run per task and worker
    assert plan_runs([5, 0], workers=4) == [[2, 2, 1], []]  # finish 4 (cost 2 + 2); five runs of 1: 6
    for sizes, workers, most in [([300, 7, 1], 8, 40), ([12], 1, 5), ([1, 1], 16, 128)]:
        cut = plan_runs(sizes, workers, most)
        assert [sum(c) for c in cut] == sizes and all(0 < n <= most for c in cut for n in c)
        assert cut == plan_runs(sizes, workers, most)  # deterministic


def test_time_left_counts_the_jobs_running_in_parallel():
    """cpu-v2's 300-step round: 16 runs of about 39 minutes on 2 workers. When the first finishes,
    15 are left: about 7.5 rounds of 39 minutes (293 min), not 15 x 39 (the estimate once logged
    586 min, then 274 a few seconds later when the second run ended)."""
    from promptinit.search.phases.jobs import time_left

    assert time_left([39 * 60], 15, workers=2) == 39 * 60 * 7.5
    assert time_left([100, 300], 1, workers=2) == 200  # the last job: one mean job time
    assert time_left([60], 4, workers=8) == 60  # more workers than jobs: all at once


def test_batched_runs_stay_short_enough_for_a_stop_to_lose_little():
    """At most 2,400 problem-steps per batched run: cpu-v2's 300-step tuning (30 problems per
    task left, 2 workers) runs as 4 runs of 8, 8, 7, 7 per task, not 1 of 30 (2.3 CPU-hours on
    bb_intent_recognition); short runs are bounded by MAX_PROBLEMS."""
    from promptinit.search.phases.jobs import MAX_PROBLEMS, plan_runs, run_size_limit

    assert run_size_limit({"steps": 300}) == 8
    assert run_size_limit({"steps": 60}) == 40
    assert run_size_limit({"steps": 20}) == 120  # the demo's target runs hold 33 or fewer
    assert run_size_limit({"steps": 10}) == MAX_PROBLEMS
    assert run_size_limit({}) == 1  # TuneConfig's 3,000 steps: one problem per run
    cut = plan_runs([30, 30, 30, 30], workers=2, most=run_size_limit({"steps": 300}))
    assert cut == [[8, 8, 7, 7]] * 4


def test_run_scores_batches_a_tasks_problems_and_keeps_each_one(tmp_path, ray_tmp, caplog):
    """Scores kept one file per problem: a second owner added later computes only its own
    problems (as a study adding an arm, or --resume), and every score equals the problem's
    own unbatched run to rounding."""
    import logging

    import ray

    from promptinit.evaluation import TuneConfig, tune_prompt
    from promptinit.search.phases.jobs import PT_START, Runner, Start, problems_for, run_scores
    from promptinit.tasks.fewshot import sample_few_shot

    bb = tiny_backbone()
    backbone = dataclasses.asdict(bb.config)
    tasks = [keyword_task(f"t{i}", n=60, seed=i) for i in range(2)]
    tuning = dict(lr=0.3, batch_size=4, steps=4, eval_every=2, eval_batch_size=8, test_size=10, rows_per_pass=16)
    init = bb.init_prompt("vocab", seed=7)
    arm = Start({"init": init}, {"arm": "a"})
    cache = tmp_path / "cache"
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80_000_000, log_to_driver=False,
             _temp_dir=str(ray_tmp), runtime_env={"env_vars": {"PROMPTINIT_CACHE": str(cache)}})
    caplog.set_level(logging.INFO, logger="promptinit")
    try:
        runner = Runner(tmp_path / "final", cpu=1, gpu=0, code="c1")
        pt = problems_for("PT", ("pt", None), tasks, [1, 2], PT_START)
        first = run_scores(runner, "target", backbone, tuning, pt)
        assert "target: 4 problems in 2 batched runs" in caplog.text  # a run per task on 2 workers
        caplog.clear()
        both = run_scores(runner, "target", backbone, tuning, pt + problems_for("arm", ("a", 0), tasks, [1, 2], arm))
        assert "target: 8 problems in 2 batched runs (4 done before" in caplog.text  # only the arm's ran
        assert both[("pt", None)] == first[("pt", None)]
        assert sorted(both) == [("a", 0), ("pt", None)] and len(list((tmp_path / "final").iterdir())) == 8
    finally:
        ray.shutdown()
    cfg = TuneConfig(**tuning)
    for t in tasks:
        for s in (1, 2):
            own = tune_prompt(bb, sample_few_shot(t, s, test_size=10), init, cfg)
            assert both[("a", 0)][(t.name, s)] == pytest.approx(own.test, abs=1e-6)
            pt_own = tune_prompt(bb, sample_few_shot(t, s, test_size=10), bb.init_prompt("vocab", seed=s), cfg)
            assert both[("pt", None)][(t.name, s)] == pytest.approx(pt_own.test, abs=1e-6)
