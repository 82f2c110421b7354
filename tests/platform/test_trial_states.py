"""``search.sweep.trial_states`` and the driver's clean-up of its MLflow runs when Tune's
experiment state cannot be read: an error, or open runs left open with the reason on the
parent run and in one warning, never every open run guessed FAILED (no Ray is started)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import promptinit.search.sweep as sweep
from promptinit.search.phases import check, prepare
from promptinit.search.phases.prepare import Run
from types import SimpleNamespace
from promptinit.errors import PromptinitError
from promptinit.search.phases import tracking
from tests.platform.conftest import write_sweep

STATE_NAME = "experiment_state-2025-01-01_00-00-00.json"


def unreadable_state(folder):
    """An experiment state cut off mid-write (the driver was killed while Tune saved it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_NAME).write_text('{"trial_data": [[{"trial_id": "a", "status": "TERM')


def start_children(uri, exp, parent, *trial_ids):
    cb = tracking.TrialRuns(uri, exp, parent)
    for tid in trial_ids:
        cb.on_trial_start(0, [], SimpleNamespace(trial_id=tid, config={"method": "mtl", "mtl": {"lr": 0.3}},
                                                 last_result={}, num_failures=0, error_file=None))


def test_no_experiment_state_means_no_trial_on_record(tmp_path):
    assert check.trial_states(tmp_path) == {}


def test_an_unreadable_experiment_state_is_one_line_naming_the_file_and_the_fix(tmp_path):
    unreadable_state(tmp_path)
    with pytest.raises(PromptinitError) as e:
        check.trial_states(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / STATE_NAME) in msg and "unreadable" in msg and "JSONDecodeError" in msg
    assert "start the sweep afresh under a new `name`" in msg and "Ray version" in msg


def test_unreadable_state_leaves_open_runs_open_and_says_why_on_the_parent(store, tmp_path):
    uri, exp, parent = store
    start_children(uri, exp, parent, "a", "b")
    unreadable_state(tmp_path)
    reason = sweep.close_runs(Run(uri, exp, parent), tmp_path, "FINISHED")
    assert reason.startswith("2 child runs left open: ") and STATE_NAME in reason
    c = tracking.client(uri)
    run = c.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags[sweep.RUNS_LEFT_OPEN_TAG] == reason
    children = tracking.child_runs(uri, exp, parent)
    assert sorted(r.info.status for r in children) == ["RUNNING", "RUNNING"]  # not guessed FAILED
    assert not any(tracking.ORPHAN_TAG in r.data.tags for r in children)


def test_without_an_experiment_state_open_runs_are_closed_as_before(store, tmp_path):
    uri, exp, parent = store
    start_children(uri, exp, parent, "a")
    assert sweep.close_runs(Run(uri, exp, parent), tmp_path, "FAILED") is None
    (child,) = tracking.child_runs(uri, exp, parent)
    assert child.info.status == "FAILED" and child.data.tags[tracking.ORPHAN_TAG] == "true"
    run = tracking.client(uri).get_run(parent)
    assert run.info.status == "FAILED" and sweep.RUNS_LEFT_OPEN_TAG not in run.data.tags


@pytest.mark.parametrize("search_fails", [False, True], ids=["search-finished", "search-raised-it"])
def test_the_driver_warns_once_when_it_cannot_close_the_runs(tmp_path, monkeypatch, capsys, search_fails):
    """``search/sweep.py``: the parent run is still closed; the user reads one warning line (and,
    when the search itself failed on the same state, its error line after it, exit code 2)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = write_sweep(tmp_path, "unreadable")

    def fake_phases(checked, prepared):
        run = prepared.run
        start_children(run.uri, run.experiment, run.parent, "a")
        unreadable_state(checked.cfg.sweep_dir)
        if search_fails:
            check.trial_states(checked.cfg.sweep_dir)  # what the --resume path does first
        return SimpleNamespace(table=SimpleNamespace(text=""))

    monkeypatch.setattr(prepare, "context", lambda cfg, source, shared=(): None)  # no Ray: the phases are faked
    monkeypatch.setattr(sweep, "run_phases", fake_phases)
    code = sweep.main(["--config", str(config)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sweep:")]  # not MLflow's logs
    warnings = [line for line in err if line.startswith("sweep: warning:")]
    assert len(warnings) == 1, err
    assert "1 child runs left open" in warnings[0] and sweep.RUNS_LEFT_OPEN_TAG in warnings[0]
    if search_fails:
        assert code == 2 and len(err) == 2 and err[1].startswith("sweep: error: ") and STATE_NAME in err[1]
        assert "see the error below" in warnings[0] and STATE_NAME not in warnings[0]  # said once, below
    else:
        assert code == 0 and len(err) == 1 and STATE_NAME in warnings[0]
    sweep_dir = tmp_path / "runs" / "unreadable"
    uri = tracking.resolve_tracking_uri(None, sweep_dir)
    (parent,) = tracking.client(uri).search_runs(
        [tracking.experiment_id(uri, "unreadable", sweep_dir)], filter_string=f"tags.`{tracking.ROLE_TAG}` = 'sweep'")
    assert parent.info.status == ("FAILED" if search_fails else "FINISHED")
    assert STATE_NAME in parent.data.tags[sweep.RUNS_LEFT_OPEN_TAG]
    (child,) = tracking.child_runs(uri, parent.info.experiment_id, parent.info.run_id)
    assert child.info.status == "RUNNING"
