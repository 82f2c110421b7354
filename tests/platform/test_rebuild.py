"""A search rebuilt from its kept finished trials (``rebuild``), without starting Ray: the
searcher's ``trials.json`` rebuilds its Optuna study in a new file, a rebuilt random search does
not draw the kept trials' points again, and ASHA's rungs replayed from the kept trials decide a
new trial as the scheduler that saw them live does. The end-to-end check (a sweep killed, its
folder cut to the portable files, resumed) is in ``test_sweep.py``."""
from __future__ import annotations

import copy
import json
import pickle
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler

from promptinit.errors import PromptinitError
from promptinit.search.phases import check
from promptinit.search.phases import searcher as S
from promptinit.search.phases.config import load_sweep_config
from promptinit.search.phases.rebuild import KeptASHA, kept_trials, portable_files
from promptinit.search.phases.searching import searcher_for
from tests.platform.conftest import write_sweep

VAL = "val/delta"


def _cfg(tmp_path, name="rebuilt", algorithm="random"):
    cfg = load_sweep_config(write_sweep(tmp_path, name, search={"seed": 0, "algorithm": algorithm}))
    cfg.sweep_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def _trial_folder(cfg, tid: str, method: str = "maml") -> None:
    folder = cfg.sweep_dir / f"{method}_{tid}"
    (folder / "checkpoint_000000").mkdir(parents=True)
    for name in ("prompt.safetensors", "trial.json", "tensors.safetensors", "state.json"):
        (folder / "checkpoint_000000" / name).write_bytes(b"x")
    (folder / "params.json").write_text("{}")
    (folder / "params.pkl").write_bytes(b"pickle")
    (folder / "result.json").write_text(json.dumps({"trial_id": tid, "config": {"method": method}}) + "\n")


def test_kept_trials_rebuild_the_study_on_a_machine_without_its_file(tmp_path):
    """t0 (paper default 1) completes, t1 (default 2) is still running at the "kill", t2 (random)
    is pruned and t3 (random) fails. trials.json keeps t0, t2 and t3; the rebuilt study holds them
    as they were, enqueues default 2 again and then draws a point none of the kept trials had."""
    cfg = _cfg(tmp_path)
    first = searcher_for(cfg)
    defaults = cfg.space().points_to_evaluate()
    for tid in ("t0", "t1", "t2", "t3"):
        first.suggest(tid)
    first.on_trial_result("t0", {VAL: 0.1, "training_iteration": 1})
    first.on_trial_complete("t0", {VAL: 0.3, "training_iteration": 2})
    first.on_trial_result("t2", {VAL: -0.2, "training_iteration": 1})
    first.on_trial_complete("t2", None)  # stopped with no value: PRUNED
    first.on_trial_complete("t3", None, error=True)
    kept = json.loads((cfg.sweep_dir / S.KEPT_FILE).read_text())
    assert [k[S.TUNE_TRIAL_ATTR] for k in kept] == ["t0", "t2", "t3"]
    before = {t.user_attrs[S.TUNE_TRIAL_ATTR]: t for t in first.study.trials if S.TUNE_TRIAL_ATTR in t.user_attrs}

    (cfg.sweep_dir / S.OPTUNA_DB).unlink()  # a machine without the study's file
    rebuilt = searcher_for(cfg, kept)
    trials = optuna.load_study(study_name=cfg.name, storage=S.optuna_storage_url(cfg.sweep_dir)).trials
    for t, tid in zip(trials, ("t0", "t2", "t3")):
        was = before[tid]
        assert (t.state, t.value, t.params, t.distributions, t.intermediate_values, t.user_attrs) == (
            was.state, was.value, was.params, was.distributions, was.intermediate_values, was.user_attrs)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING]
    assert trials[3].user_attrs[S.DEFAULTS_ATTR] == defaults[1]  # t1's default, lost with it: enqueued again
    assert defaults[1].items() <= _flat(rebuilt.suggest("t4")).items()
    rebuilt.suggest("t5")
    new = rebuilt.study.trials[-1].params
    # The sampler's seed moved on by the kept trials: a rebuilt random search seeded as the first
    # would draw t2's point (its first draw) again here.
    assert new != before["t2"].params and new != before["t3"].params
    same_seed = searcher_for(cfg)  # the first seed again (a fresh study): defaults, then t2's point
    for tid in ("u0", "u1", "u2"):
        same_seed.suggest(tid)
    assert same_seed.study.trials[2].params == before["t2"].params


@pytest.mark.parametrize("algorithm", ["random", "tpe"])
@pytest.mark.parametrize("pickled_before_reseed", [False, True])
def test_a_searcher_resumed_from_tunes_snapshot_draws_no_point_again(tmp_path, algorithm, pickled_before_reseed):
    """Tune resumes the searcher it pickled as the search started (tuner.pkl) and hands it the
    state of its last snapshot. That searcher's sampler is the start's: drawing from it again
    proposes the first process's points again (the v2 study's MTL search ran one point three
    times over two resumes, 6-7 Dec). Its restore moves the seed on by the trials asked so far;
    a searcher pickled before it had ``reseed`` takes a fresh seed from the OS."""
    cfg = _cfg(tmp_path, algorithm=algorithm)
    first = searcher_for(cfg)
    if pickled_before_reseed:
        del first.__dict__["reseed"]
    pickled = pickle.dumps(first)  # tuner.pkl: the searcher as the search started
    for tid in ("t0", "t1", "t2", "t3"):  # the two paper defaults, then two draws
        first.suggest(tid)
    first.on_trial_complete("t0", {VAL: 0.3, "training_iteration": 2})
    state = tmp_path / "searcher-state.json"
    first.save(str(state))
    drawn = [t.params for t in first.study.trials]

    resumed = pickle.loads(pickled)
    resumed.restore(str(state))
    resumed.suggest("t4")
    resumed.suggest("t5")
    new = [t.params for t in resumed.study.trials[4:]]
    assert len(new) == 2 and not any(p in drawn for p in new), (new, drawn)
    if not pickled_before_reseed:  # seeded past the 4 trials asked: the same on every resume
        again = S.make_sampler(algorithm, cfg.search.seed, cfg.search.startup_trials, asked=4)
        assert type(resumed.sampler) is type(again) and resumed.sampler is resumed.study.sampler
    stale = pickle.loads(pickled)  # the start's sampler, as the resume used it before
    stale.suggest("u0")
    assert stale.study.trials[-1].params == drawn[2]  # t2's point, drawn again


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _live(asha, histories: dict[str, list[float]]) -> None:
    for tid in histories:
        asha.on_trial_add(None, SimpleNamespace(trial_id=tid))
    for step in range(1, max(map(len, histories.values())) + 1):
        for tid, values in histories.items():
            if step <= len(values):
                asha.on_trial_result(None, SimpleNamespace(trial_id=tid),
                                     {"training_iteration": step, VAL: values[step - 1]})


@pytest.mark.parametrize("mode", ["max", "min"])
def test_asha_replayed_from_kept_trials_decides_as_the_scheduler_that_saw_them(mode, tmp_path):
    """Four trials ran (two stopped at the first rung, one at the second); a new trial's report at
    each rung, over a grid of values, gets the same decision from ASHA rebuilt from the kept
    trials' intermediate values, and from ASHA as Tune restores it (pickled at the search's start,
    then handed the restored trials, whose folders hold their reports), as from the ASHA that saw
    the trials live. Plain ASHA restored so decided otherwise (the v2 study's MTL TPE search let a
    trial past its first rung at 0.6 points, below every earlier trial there, 7 Dec)."""
    histories = {"a": [0.1, 0.2, 0.3, 0.5], "b": [0.4, 0.45, 0.5, 0.6], "c": [0.0], "d": [0.2, 0.1]}
    kwargs = dict(time_attr="training_iteration", max_t=8, grace_period=1, reduction_factor=2)
    live = ASHAScheduler(**kwargs)
    live.set_search_properties(VAL, mode)
    _live(live, histories)
    kept = [{S.TUNE_TRIAL_ATTR: tid, "intermediate_values": {str(i + 1): v for i, v in enumerate(values)}}
            for tid, values in histories.items()]
    rebuilt = KeptASHA(kept, **kwargs)
    rebuilt.set_search_properties(VAL, mode)
    plain = ASHAScheduler(**kwargs)
    plain.set_search_properties(VAL, mode)
    restored = pickle.loads(pickle.dumps(KeptASHA([], **kwargs)))  # tuner.pkl's ASHA
    restored.set_search_properties(VAL, mode)
    for tid, values in histories.items():  # Tune adds each restored trial, its folder named
        folder = tmp_path / f"mtl_{tid}"
        folder.mkdir()
        rows = [{"training_iteration": i + 1, VAL: v} for i, v in enumerate(values)]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        restored.on_trial_add(None, SimpleNamespace(trial_id=tid, relative_logdir=folder.name, path=str(folder)))
    decisions: dict[str, list] = {"live": [], "rebuilt": [], "restored": [], "plain": []}
    for step in (1, 2, 4):
        for value in (-0.1, 0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65):
            for name, asha in (("live", live), ("rebuilt", rebuilt), ("restored", restored), ("plain", plain)):
                a = copy.deepcopy(asha)
                trial = SimpleNamespace(trial_id="new")
                a.on_trial_add(None, trial)
                decisions[name].append(a.on_trial_result(None, trial, {"training_iteration": step, VAL: value}))
    assert decisions["rebuilt"] == decisions["live"] == decisions["restored"]
    assert "STOP" in decisions["live"] and decisions["plain"] != decisions["live"]  # the replay is what decides


def test_resume_reads_the_kept_trials_when_tune_state_is_gone(tmp_path):
    cfg = _cfg(tmp_path, "kept")
    where = str(tmp_path / "kept.yaml")
    with pytest.raises(PromptinitError, match=r"nothing to resume \(no tuner\.pkl, nor trials\.json beside "
                                              r"promptinit-sweep\.json\)"):
        check.config(cfg, where, resume=True)
    (cfg.sweep_dir / check.RECORD_FILE).write_text(json.dumps({"parent_run_id": "p", "tracking_uri": "u"}))
    (cfg.sweep_dir / S.KEPT_FILE).write_text(json.dumps([{S.TUNE_TRIAL_ATTR: "abc", "state": "COMPLETE"}]))
    with pytest.raises(PromptinitError, match=r"trials\.json: field 'tune_trial_id': trial abc has no folder"):
        check.config(cfg, where, resume=True)
    _trial_folder(cfg, "abc")
    checked = check.config(cfg, where, resume=True)
    assert checked.rebuild and checked.record["parent_run_id"] == "p"
    with pytest.raises(PromptinitError, match="field 'name': a sweep already ran"):
        check.config(cfg, where, resume=False)
    (cfg.sweep_dir / S.KEPT_FILE).write_text(json.dumps({"trials": []}))
    with pytest.raises(PromptinitError, match=r"trials\.json: expected a list of trials"):
        kept_trials(cfg.sweep_dir)


def test_portable_files_are_results_and_kept_trials_without_pickles_or_optimizer_state(tmp_path):
    """A sweep folder (here inside a study's) travels as its records, tables and exports, its kept
    jobs, and its kept trials' results; a MAML checkpoint as its prompt and report, a SUPMER one
    whole (its ψ, which downstream tuning restores, lives in the method's state); no Tune state."""
    study = tmp_path / "study"
    cfg = load_sweep_config(write_sweep(tmp_path, "portable", storage_path=str(study / "sweeps")))
    sweep = cfg.sweep_dir
    sweep.mkdir(parents=True)
    for name in (check.RECORD_FILE, "arg_table.md", "arg_table.csv", "experiment_state-2026.json", "tuner.pkl",
                 "optuna.db", "mlflow.db"):
        (sweep / name).write_text("{}")
    (sweep / S.KEPT_FILE).write_text(json.dumps([{S.TUNE_TRIAL_ATTR: tid, "state": "COMPLETE"} for tid in ("abc", "def")]))
    _trial_folder(cfg, "abc")
    _trial_folder(cfg, "def", method="supmer")
    _trial_folder(cfg, "running")  # not finished: not in trials.json
    (sweep / "exports" / "maml").mkdir(parents=True)
    (sweep / "exports" / "maml" / "adapter_model.safetensors").write_bytes(b"x")
    upstream = sweep / "final" / "upstream" / "maml-seed1-1234"
    upstream.mkdir(parents=True)
    for name in ("prompt.safetensors", "tensors.safetensors", "state.json"):
        (upstream / name).write_bytes(b"x")
    (sweep / "final" / "upstream-1234.json").write_text(json.dumps({"key": {"method": "maml"}, "value": str(upstream)}))
    (sweep / "final" / "target-1.json").write_text("{}")
    (study / "study.json").write_text("{}")
    (study / "final").mkdir()
    (study / "final" / "target-2.json").write_text("{}")
    names = sorted(str(p.relative_to(study)) for p in portable_files(study))
    trial = ["params.json", "result.json"]
    assert names == sorted(["study.json", "final/target-2.json", *(f"sweeps/portable/{f}" for f in [
        check.RECORD_FILE, S.KEPT_FILE, "arg_table.md", "arg_table.csv", "exports/maml/adapter_model.safetensors",
        "final/upstream-1234.json", "final/target-1.json", "final/upstream/maml-seed1-1234/prompt.safetensors",
        *(f"maml_abc/{f}" for f in trial),
        *(f"maml_abc/checkpoint_000000/{f}" for f in ("prompt.safetensors", "trial.json")),
        *(f"supmer_def/{f}" for f in trial),
        *(f"supmer_def/checkpoint_000000/{f}" for f in (
            "prompt.safetensors", "trial.json", "tensors.safetensors", "state.json"))])])


def test_a_kept_upstream_run_cut_to_its_prompt_serves_every_method_but_supmer(tmp_path):
    """Kept upstream runs travel as their prompt (``portable_files``); SUPMER's downstream tuning
    restores the method (its ψ), so its run is usable only whole, and is trained again otherwise."""
    from promptinit.search.phases.upstream import usable

    folder = tmp_path / "maml-seed1-1234"
    assert not usable(str(folder))
    folder.mkdir()
    (folder / "prompt.safetensors").write_bytes(b"x")
    assert usable(str(folder)) and not usable(str(folder), whole=True)
    (folder / "state.json").write_text("{}")
    assert usable(str(folder), whole=True)


def test_a_kept_supmer_run_travels_as_its_prompt_and_its_psi_in_bfloat16(tmp_path):
    """SUPMER's kept upstream run keeps its ψ apart (``keep_psi``): every ψ tensor to bfloat16's
    rounding (relative error <= 2^-8), integers exact, read back from a real checkpoint; the run
    travels as its prompt, report and ψ, not its optimizer states; a folder cut to those is
    trained again (downstream tuning restores the method) and keeps its ψ file as it came."""
    import torch
    from safetensors.torch import load_file

    from promptinit.methods.checkpoint import save_checkpoint
    from promptinit.search.phases.upstream import keep_psi, usable

    g = torch.Generator().manual_seed(0)
    psi = {"U1": torch.randn(64, 64, generator=g) * 0.07, "b1": torch.randn(64, generator=g) * 1e-3,
           "h_count": torch.tensor(7)}
    state = {"prompt": torch.randn(8, 64, generator=g), "psi": psi,
             "psi_optimizer": {"state": {0: {"exp_avg": torch.randn(64, 64, generator=g)}}}}
    study = tmp_path / "study"
    run = study / "final" / "upstream" / "supmer-seed1-99"
    save_checkpoint(SimpleNamespace(state_dict=lambda: state), run)
    for name in ("prompt.safetensors", "trial.json"):
        (run / name).write_bytes(b"x")
    (study / "final" / "upstream-99.json").write_text(json.dumps({"key": {"method": "supmer"}, "value": str(run)}))
    assert keep_psi(run) == run / "psi.safetensors"
    kept = load_file(str(run / "psi.safetensors"))
    assert set(kept) == set(psi) and kept["U1"].dtype == torch.bfloat16 and kept["h_count"].item() == 7
    for name in ("U1", "b1"):
        error = (kept[name].float() - psi[name]).abs() / psi[name].abs()
        assert 0 < error.max() <= 2**-8, name
    names = sorted(p.name for p in portable_files(study) if p.parent == run)
    assert names == ["prompt.safetensors", "psi.safetensors", "trial.json"]
    for name in ("tensors.safetensors", "state.json"):
        (run / name).unlink()
    assert usable(str(run)) and not usable(str(run), whole=True)
    before = (run / "psi.safetensors").read_bytes()
    assert keep_psi(run) == run / "psi.safetensors" and (run / "psi.safetensors").read_bytes() == before
    plain = tmp_path / "no-mgr"
    save_checkpoint(SimpleNamespace(state_dict=lambda: {**state, "psi": None}), plain)
    assert keep_psi(plain) is None and not (plain / "psi.safetensors").exists()


def test_a_run_read_back_by_another_spelling_of_its_folder_keys_the_same_target_problems(tmp_path):
    """A study's search whose choice is the preset's configuration reuses the preset's upstream
    runs, and reads them back from its chosen.json as ``<sweep>/../../final/upstream/<run>``: its
    target problems must be the preset's (one key per folder), not tuned again at the end budget."""
    import torch

    from promptinit.backbones import save_prompt
    from promptinit.search.phases.arms import start_from
    from promptinit.search.phases.searching import Candidate
    from promptinit.trainables.scoring import PROMPT_FILE

    run = tmp_path / "study" / "final" / "upstream" / "maml-seed1-1234"
    run.mkdir(parents=True)
    save_prompt(torch.zeros(2, 4), run / PROMPT_FILE)
    (tmp_path / "study" / "sweeps" / "study-maml-tpe").mkdir(parents=True)
    choice = Candidate("maml", "t0", None, 0.0, {"upstream/step": 2}, {"inner_lr": 3e-5}, {})
    direct = start_from(None, choice, run, 1)
    again = start_from(None, choice, tmp_path / "study" / "sweeps" / "study-maml-tpe" / "../../final/upstream" / run.name, 1)
    assert again.key == direct.key and direct.key["checkpoint"] == "upstream/maml-seed1-1234"  # no machine's path


def test_kept_jobs_keyed_by_an_absolute_path_are_re_keyed_and_found_in_another_checkout(tmp_path):
    """Records written before keys named checkpoints by name get the new key and file name once;
    a kept upstream run recorded under another checkout's path is found here under its name."""
    import torch

    from promptinit.backbones import save_prompt
    from promptinit.fingerprints import digest
    from promptinit.search.phases.jobs import Runner
    from promptinit.search.phases.upstream import located
    from promptinit.trainables.scoring import PROMPT_FILE

    final = tmp_path / "study" / "final"
    final.mkdir(parents=True)
    runner = Runner(final, 1, 0, code="c0de")
    old = {"task": "t", "seed": 100, "checkpoint": "/elsewhere/runs/study/final/upstream/maml-seed1-1234"}
    trial = {"task": "t", "seed": 13, "checkpoint": "/elsewhere/runs/study/sweeps/s-maml-tpe/maml_ab12/checkpoint_000003"}
    pt = {"task": "t", "seed": 100}
    for key in (old, trial, pt):
        (final / f"target-{digest(key, 'c0de')}.json").write_text(json.dumps({"key": key, "value": {"test": 0.5}}))
    (final / "target-notmine.json").write_text(json.dumps({"key": old, "value": {}}))  # another code's name
    assert runner.rekey() == 2 and runner.rekey() == 0
    for key in ({**old, "checkpoint": "upstream/maml-seed1-1234"}, {**trial, "checkpoint": "s-maml-tpe/maml_ab12/checkpoint_000003"}, pt):
        record = json.loads((final / f"target-{digest(key, 'c0de')}.json").read_text())
        assert record == {"key": key, "value": {"test": 0.5}}
    assert len(list(final.glob("target-*.json"))) == 4
    run = final / "upstream" / "maml-seed1-1234"
    assert located(runner, old["checkpoint"]) is None
    run.mkdir(parents=True)
    save_prompt(torch.zeros(2, 4), run / PROMPT_FILE)
    assert located(runner, old["checkpoint"]) == run and located(runner, str(run)) == run
    assert located(runner, old["checkpoint"], whole=True) is None  # SUPMER's needs its method's state
    elsewhere = Runner(tmp_path / "sweep" / "final", 1, 0, code="c0de", shared=[final])  # a search reusing it
    assert located(elsewhere, old["checkpoint"]) == run


def test_a_store_that_kept_the_runs_goes_on_with_the_same_parent_run(tmp_path, store):
    """A rebuilt sweep whose MLflow store survived (a server): the recorded parent run goes on; a
    kept trial's run left open by the kill is closed FINISHED, a lost trial's FAILED and orphaned."""
    from promptinit.search.phases import tracking
    from promptinit.search.phases.prepare import _rebuilt_parent

    uri, exp, parent = store
    cfg = _cfg(tmp_path, "kept-runs")
    (cfg.sweep_dir / S.KEPT_FILE).write_text(json.dumps([{S.TUNE_TRIAL_ATTR: "abc", "state": "COMPLETE"}]))
    _trial_folder(cfg, "abc")
    runs = {tid: tracking.create_child(uri, exp, parent, tid, {"method": "maml"}) for tid in ("abc", "lost")}
    record = {"parent_run_id": parent, "tracking_uri": uri}
    checked = check.Checked(cfg, "kept-runs.yaml", True, uri, record, None, None, rebuild=True)
    assert _rebuilt_parent(checked, exp) == parent
    c = tracking.client(uri)
    assert c.get_run(parent).info.status == "RUNNING"
    kept, lost = (c.get_run(runs[tid]) for tid in ("abc", "lost"))
    assert kept.info.status == "FINISHED" and lost.info.status == "FAILED"
    assert lost.data.tags.get(tracking.ORPHAN_TAG) == "true" and tracking.ORPHAN_TAG not in kept.data.tags


def test_the_listing_commits_job_records_whose_names_hold_spaces(tmp_path):
    """`python -m promptinit.search.phases.rebuild <folder> | git add -f --pathspec-from-file=-`
    (the documented commit) adds `final/validation PT-<key>.json` whole; `git add -f $(...)`
    would split its name and add nothing."""
    import subprocess
    import sys

    study = tmp_path / "runs" / "study"
    (study / "sweeps" / "s" / "final").mkdir(parents=True)
    (study / "study.json").write_text("{}")
    (study / "sweeps" / "s" / "final" / "validation PT-0123.json").write_text('{"value": 0.5}')
    listed = subprocess.run(
        [sys.executable, "-m", "promptinit.search.phases.rebuild", str(study)],
        capture_output=True, text=True, check=True,
    ).stdout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-f", "--pathspec-from-file=-"], input=listed, text=True, check=True)
    staged = subprocess.run([*git, "diff", "--cached", "--name-only"], capture_output=True, text=True).stdout
    assert staged.splitlines() == ["runs/study/study.json", "runs/study/sweeps/s/final/validation PT-0123.json"]
