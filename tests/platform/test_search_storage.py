"""The sweep's searcher and its Optuna study file, without starting Ray: ``search.algorithm``
picks the sampler and nothing else, the study lives in an RDB file that ``optuna.load_study``
(what ``optuna-dashboard`` uses) reads, and a searcher restored from an older Tune snapshot
settles the trials the file holds beyond it. The end-to-end checks (a real sweep, a killed and
resumed one) are in ``test_sweep.py``."""
from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.samplers import RandomSampler, TPESampler
from optuna.trial import TrialState

from promptinit.errors import PromptinitError
from promptinit.search.phases import searcher as tracking
from promptinit.search.phases.config import load_sweep_config
from promptinit.search.phases.searching import searcher_for
from tests.platform.conftest import write_sweep

VAL = "val/delta"  # the default objective (search.objective: delta)


def _config(tmp_path, name: str, **search):
    return load_sweep_config(write_sweep(tmp_path, name, search={"seed": 0, **search}))


def _searcher(cfg):
    cfg.sweep_dir.mkdir(parents=True, exist_ok=True)
    return searcher_for(cfg), tracking.optuna_storage_url(cfg.sweep_dir)


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("algorithm, sampler", [("tpe", TPESampler), ("random", RandomSampler)])
def test_search_algorithm_picks_the_sampler_and_keeps_the_defaults_first(tmp_path, algorithm, sampler):
    cfg = _config(tmp_path, f"alg-{algorithm}", algorithm=algorithm)
    assert cfg.search.algorithm == algorithm
    searcher, url = _searcher(cfg)
    assert type(searcher.study.sampler) is sampler
    defaults = cfg.space().points_to_evaluate()
    assert len(defaults) == 2  # one per method of tiny-test.yaml
    # The enqueued defaults are in the file (what the dashboard shows), and are proposed first.
    study = optuna.load_study(study_name=cfg.name, storage=url)
    assert study.metric_names == [VAL]  # optuna-dashboard plots "val/delta", not "Objective 0"
    assert [t.user_attrs[tracking.DEFAULTS_ATTR] for t in study.trials] == defaults
    assert {t.state for t in study.trials} == {TrialState.WAITING}
    proposed = [_flat(searcher.suggest(tid)) for tid in ("t0", "t1")]
    for got, want in zip(proposed, defaults):
        assert want.items() <= got.items()
    study = optuna.load_study(study_name=cfg.name, storage=url)
    assert [t.user_attrs[tracking.TUNE_TRIAL_ATTR] for t in study.trials] == ["t0", "t1"]


def test_the_objective_setting_is_the_metric_the_study_learns_from(tmp_path):
    for objective, metric in (("delta", "val/delta"), ("arg", "val/arg")):
        cfg = _config(tmp_path, f"objective-{objective}", objective=objective)
        searcher, url = _searcher(cfg)
        assert searcher.metric == metric
        assert optuna.load_study(study_name=cfg.name, storage=url).metric_names == [metric]


def test_search_algorithm_is_tpe_by_default(tmp_path):
    assert _config(tmp_path, "default").search.algorithm == "tpe"


@pytest.mark.parametrize("given, expected", [({}, 10), ({"startup_trials": 3}, 3)])
def test_tpe_models_results_after_startup_trials(tmp_path, given, expected):
    """`search.startup_trials` is TPE's n_startup_trials (Optuna's default 10 when not given):
    with a study's 6-trial budgets, 10 would leave TPE sampling exactly like random search."""
    searcher, _ = _searcher(_config(tmp_path, f"startup-{expected}", **given))
    assert searcher.study.sampler._n_startup_trials == expected  # noqa: SLF001 - a test reads what TPE was given


def test_bad_search_algorithm_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(PromptinitError, match=r"field 'search\.algorithm': .*'tpe' or 'random'.*'grid'"):
        _config(tmp_path, "bad", algorithm="grid")


def test_fresh_study_drops_a_study_an_earlier_attempt_left(tmp_path):
    url = f"sqlite:///{tmp_path / tracking.OPTUNA_DB}"
    old = optuna.create_study(study_name="s", storage=url, direction="maximize")
    old.enqueue_trial({"x": 1})
    old.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={
        "x": optuna.distributions.FloatDistribution(0, 1)}, value=0.1))
    tracking.drop_study(url, "s")
    with pytest.raises(KeyError):
        optuna.load_study(study_name="s", storage=url)


@pytest.mark.parametrize("algorithm", ["tpe", "random"])
def test_restored_searcher_settles_trials_the_file_holds_beyond_its_snapshot(tmp_path, algorithm):
    """Tune's flow on ``--resume``: the searcher pickled at the start (``tuner.pkl``) is unpickled
    and ``restore``d from its newest snapshot. Here the snapshot is taken after t0 was proposed
    (paper default 1); then t1 is proposed (default 2) and t0 finishes before the "kill"."""
    cfg = _config(tmp_path, "restore", algorithm=algorithm)
    searcher, url = _searcher(cfg)
    at_start = pickle.dumps(searcher)
    defaults = cfg.space().points_to_evaluate()
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {VAL: 0.1, "training_iteration": 1})
    snapshot = tmp_path / "searcher-state.pkl"
    searcher.save(str(snapshot))
    searcher.suggest("t1")  # after the snapshot: the resumed sweep will not know it
    searcher.on_trial_complete("t0", {VAL: 0.3, "training_iteration": 2})  # Tune: the last report comes only here

    resumed = pickle.loads(at_start)
    resumed.restore(str(snapshot))
    study = optuna.load_study(study_name=cfg.name, storage=url)
    t0, t1, again = study.trials
    assert (t0.state, t0.value, t0.intermediate_values) == (TrialState.COMPLETE, 0.3, {1: 0.1, 2: 0.3})
    assert t1.state == TrialState.FAIL and t1.user_attrs == {tracking.TUNE_TRIAL_ATTR: "t1", tracking.ORPHAN_ATTR: True,
                                                             tracking.DEFAULTS_ATTR: defaults[1]}
    assert (again.state, again.user_attrs[tracking.DEFAULTS_ATTR]) == (TrialState.WAITING, defaults[1])  # enqueued again

    # Tune runs t0 again from its checkpoint: its reports and completion leave the study as it was.
    resumed.on_trial_result("t0", {VAL: 0.9, "training_iteration": 2})
    resumed.on_trial_complete("t0", {VAL: 0.9, "training_iteration": 3})
    # The resumed sweep proposes default 2 again, under its new Tune trial.
    assert defaults[1].items() <= _flat(resumed.suggest("t2")).items()
    resumed.on_trial_complete("t2", {VAL: 0.2, "training_iteration": 1})
    study = optuna.load_study(study_name=cfg.name, storage=url)
    assert [(t.user_attrs[tracking.TUNE_TRIAL_ATTR], t.state, t.value) for t in study.trials] == [
        ("t0", TrialState.COMPLETE, 0.3), ("t1", TrialState.FAIL, None), ("t2", TrialState.COMPLETE, 0.2)]


def test_resume_refuses_a_sweep_whose_study_file_is_gone(tmp_path):
    import json

    from promptinit.search.phases.check import RECORD_FILE as META_FILE, TUNER_FILE, resumable as check_resumable

    sweep = tmp_path / "runs" / "gone"
    sweep.mkdir(parents=True)
    uri = "http://127.0.0.1:5000"
    (sweep / META_FILE).write_text(json.dumps({"parent_run_id": "p", "tracking_uri": uri,
                                               "optuna_storage": tracking.optuna_storage_url(sweep)}))
    (sweep / TUNER_FILE).write_bytes(pickle.dumps({}))
    missing = r"field 'optuna_storage': the search's Optuna study .*optuna\.db is missing"
    with pytest.raises(PromptinitError, match=missing):
        check_resumable(sweep, uri)
    optuna.create_study(study_name="gone", storage=tracking.optuna_storage_url(sweep))
    assert check_resumable(sweep, uri)["parent_run_id"] == "p"
