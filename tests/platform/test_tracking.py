"""The MLflow callback and the driver's clean-up, on a local sqlite store (no Ray, no server)."""
from __future__ import annotations

import pickle
from types import SimpleNamespace


from promptinit.search.phases import tracking
from promptinit.trainables import metrics as M


def trial(tid: str, method: str = "maml", **last):
    return SimpleNamespace(trial_id=tid, config={"method": method, method: {"inner_lr": 3e-5, "steps": 4}},
                           last_result=last, num_failures=0, error_file=None)


def report(step: int, total: int, arg: float) -> dict:
    return {M.VAL_ARG: arg, M.STEP: step, M.TOTAL_STEPS: total, M.NODE_ID: "n1", "training_iteration": step // 2,
            "config": {"method": "maml"}, "trial_id": "x", "done": False}


def test_child_runs_get_params_metrics_and_a_terminal_status(store):
    uri, exp, parent = store
    cb = tracking.TrialRuns(uri, exp, parent)
    ok, stopped, broken = trial("a"), trial("b"), trial("c", "mtl")
    for t in (ok, stopped, broken):
        cb.on_trial_start(0, [], t)
    for step in (2, 4):
        cb.on_trial_result(0, [], ok, report(step, 4, 0.1 * step))
    cb.on_trial_result(0, [], stopped, report(2, 4, -0.5))
    ok.last_result, stopped.last_result = report(4, 4, 0.4), report(2, 4, -0.5)
    cb.on_trial_complete(0, [], ok)
    cb.on_trial_complete(0, [], stopped)
    cb.on_trial_recover(0, [], broken)
    assert cb.client.get_run(cb.run_id(broken)).info.status == "RUNNING"  # retried: still open
    cb.on_trial_error(0, [], broken)

    runs = {r.data.tags[tracking.TRIAL_TAG]: r for r in tracking.child_runs(uri, exp, parent)}
    assert set(runs) == {"a", "b", "c"}
    assert runs["a"].info.status == "FINISHED" and runs["a"].data.tags[tracking.STOPPED_TAG] == "false"
    assert runs["b"].info.status == "FINISHED" and runs["b"].data.tags[tracking.STOPPED_TAG] == "true"
    assert runs["c"].info.status == "FAILED"
    assert runs["a"].data.params == {"method": "maml", "maml/inner_lr": "3e-05", "maml/steps": "4"}
    assert set(runs["a"].data.metrics) == {M.VAL_ARG, M.STEP, M.TOTAL_STEPS, "training_iteration"}
    history = cb.client.get_metric_history(runs["a"].info.run_id, M.VAL_ARG)
    assert [(m.step, round(m.value, 6)) for m in history] == [(2, 0.2), (4, 0.4)]


def test_a_resumed_trial_continues_its_own_run(store):
    uri, exp, parent = store
    cb = tracking.TrialRuns(uri, exp, parent)
    t = trial("a")
    cb.on_trial_start(0, [], t)
    first = cb.run_id(t)
    # The driver dies; Tune restores the callback from the pickled experiment state.
    restored = pickle.loads(pickle.dumps(cb))
    restored.set_state(cb.get_state())
    restored.on_trial_start(0, [], t)
    assert restored.run_id(t) == first
    fresh = tracking.TrialRuns(uri, exp, parent)  # even without the saved state: found by tag
    assert fresh.run_id(t) == first
    assert len(tracking.child_runs(uri, exp, parent)) == 1


def test_close_open_children_after_a_driver_kill(store):
    uri, exp, parent = store
    cb = tracking.TrialRuns(uri, exp, parent)
    for tid in ("done", "cut", "err", "live", "ghost"):
        cb.on_trial_start(0, [], trial(tid))
    states = {"done": ("TERMINATED", report(4, 4, 0.1)), "cut": ("TERMINATED", report(2, 4, 0.1)),
              "err": ("ERROR", None), "live": ("RUNNING", report(2, 4, 0.0))}
    closed = tracking.close_open_children(uri, exp, parent, states, keep_running=["live"])
    runs = {r.data.tags[tracking.TRIAL_TAG]: r for r in tracking.child_runs(uri, exp, parent)}
    assert sorted(closed.values()) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert runs["done"].info.status == "FINISHED" and runs["done"].data.tags[tracking.STOPPED_TAG] == "false"
    assert runs["cut"].data.tags[tracking.STOPPED_TAG] == "true"
    assert runs["err"].info.status == "FAILED"
    assert runs["ghost"].info.status == "FAILED"  # never recorded by Tune
    assert runs["ghost"].data.tags[tracking.ORPHAN_TAG] == "true" and tracking.ORPHAN_TAG not in runs["err"].data.tags
    assert runs["live"].info.status == "RUNNING"  # Tune continues it


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.resolve_tracking_uri("http://yaml:5000", tmp_path) == "http://yaml:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking.resolve_tracking_uri("http://yaml:5000", tmp_path) == "http://env:5000"


def test_experiments_are_marked_model_training_so_the_mlflow_ui_opens_on_their_runs(tmp_path):
    """MLflow 3's UI opens an untagged experiment on its GenAI "Overview/Traces" page; the tag
    ``mlflow.experimentKind: custom_model_development`` ("Machine learning") opens the runs table.
    An experiment made before promptinit set the tag gets it when a sweep reuses it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.experiment_id(uri, "fresh", tmp_path)
    c = tracking.client(uri)
    assert c.get_experiment(exp).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = c.create_experiment("old")
    assert tracking.EXPERIMENT_KIND_TAG not in c.get_experiment(old).tags
    assert tracking.experiment_id(uri, "old", tmp_path) == old
    assert c.get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_the_ui_link_opens_the_runs_table():
    """The parameter the MLflow 3.17 UI reads to open an experiment on its runs (checked in headless Chromium)."""
    assert tracking.ui_link("7") == "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
