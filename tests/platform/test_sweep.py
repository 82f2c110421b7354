"""End-to-end sweeps on a tiny model, run through ``search/sweep.py`` the way a user runs it:
a full sweep logged to a real MLflow server, a sweep whose driver is killed and resumed, and a
sweep with diverging trials."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.platform.conftest import (
    keep_only_portable_files, kill_ray_under, kill_tree, mlflow_runs, results_of, run_sweep, start_sweep, tail, sweep_env,
    trial_dirs, write_sweep,
)

pytestmark = pytest.mark.timeout(900)


def tune_states(sweep_dir: Path) -> dict[str, tuple[str, dict]]:
    from ray.tune import ExperimentAnalysis

    return {t.trial_id: (t.status, t.config) for t in ExperimentAnalysis(str(sweep_dir)).trials}


def optuna_study(sweep_dir: Path, name: str):
    """The sweep's Optuna study, read the way ``optuna-dashboard sqlite:///<sweep>/optuna.db`` reads it."""
    import optuna

    url = f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}"
    assert optuna.study.get_all_study_names(storage=url) == [name]  # one study, never a second copy
    return optuna.load_study(study_name=name, storage=url)


def check_study_trial(trial, config: dict, reports: list[dict]) -> None:
    """An Optuna trial holds its Tune trial's searched settings, reports and final value."""
    from optuna.trial import TrialState

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    assert trial.state == TrialState.COMPLETE
    assert trial.params and trial.params.items() <= flat(config).items()
    assert trial.value == reports[-1]["val/delta"]  # the objective (search.objective: delta); the last report
    assert trial.intermediate_values == {r["training_iteration"]: r["val/delta"] for r in reports}


def test_sweep_logs_every_trial_to_mlflow_and_exports_best_prompts(tmp_path, ray_tmp, mlflow_server):
    import torch
    from mlflow.tracking import MlflowClient

    from promptinit.backbones import load_prompt
    from promptinit.export import ModelInfo, load_export

    config = write_sweep(tmp_path, "e2e", search={"calibrate": 2})
    log = tmp_path / "sweep.log"
    rc = run_sweep(config, env=sweep_env(ray_tmp, MLFLOW_TRACKING_URI=mlflow_server), log=log)
    assert rc == 0, tail(log)
    sweep = tmp_path / "runs" / "e2e"

    # Tune: 4 trials of both methods, all ended.
    states = tune_states(sweep)
    assert len(states) == 4
    assert {s for s, _ in states.values()} == {"TERMINATED"}
    assert {c["method"] for _, c in states.values()} == {"fomaml", "mtl"}

    # Optuna: the study in the sweep folder has one trial per Tune trial, with its settings and value.
    study = optuna_study(sweep, "e2e")
    by_trial = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    assert len(study.trials) == 4 and sorted(by_trial) == sorted(states)
    for trial_id, (_, config) in states.items():
        check_study_trial(by_trial[trial_id], config,
                          results_of(next(d for d in trial_dirs(sweep) if d.name.endswith(trial_id))))
    assert f"Optuna study 'e2e': optuna-dashboard sqlite:///{sweep.resolve() / 'optuna.db'}\n" in log.read_text()

    # MLflow (through the server's REST API): one parent, one FINISHED child per trial.
    parent, children = mlflow_runs(mlflow_server, "e2e")
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags["promptinit.trial_id"] for r in children) == sorted(states)
    client = MlflowClient(mlflow_server)
    for run in children:
        trial_id = run.data.tags["promptinit.trial_id"]
        method = states[trial_id][1]["method"]
        assert run.info.status == "FINISHED"
        assert run.data.params["method"] == method
        assert f"{method}/steps" in run.data.params  # the trial's settings, under the method's name
        assert run.data.params[f"{method}/steps"] == str(states[trial_id][1][method]["steps"])
        assert "val/arg" in run.data.metrics and "upstream/step" in run.data.metrics
        reports = results_of(next(d for d in trial_dirs(sweep) if d.name.endswith(trial_id)))
        history = client.get_metric_history(run.info.run_id, "val/arg")
        assert [m.step for m in history] == [r["upstream/step"] for r in reports]
        stopped = reports[-1]["upstream/step"] < reports[-1]["upstream/total_steps"]
        assert run.data.tags["stopped_early"] == str(stopped).lower()

    # Table, exports, best checkpoints.
    table = (sweep / "arg_table.md").read_text()
    assert "| fomaml |" in table and "| mtl |" in table and "[95 % CI]" in table
    assert len((sweep / "arg_table.csv").read_text().splitlines()) == 3
    for method in ("fomaml", "mtl"):
        export = load_export(sweep / "exports" / method, ModelInfo.from_name("tiny-llama", 4))  # PEFT config checked
        info = export.metadata
        assert export.prompt.shape == (4, 64) and info["method"] == method and info["model"] == "tiny-llama"
        assert {str(p["seed"]) for p in info["metrics"]["target"]["scores"]} == {"100", "13"}
        checkpoint = Path(info["extra"]["checkpoint"])
        assert (checkpoint / "prompt.safetensors").is_file() and (checkpoint / "state.json").is_file()
        assert torch.equal(load_prompt(checkpoint / "prompt.safetensors"), export.prompt)
        assert states[info["extra"]["trial_id"]][1]["method"] == method
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"arg_table.md", "arg_table.csv", "exports"} <= artifacts
    check_calibration(sweep, states)
    assert {"target/arg/fomaml", "target/arg/mtl"} <= set(parent.data.metrics)


def check_calibration(sweep: Path, states: dict) -> None:
    """``search.calibrate: 2``: per method its best and worst trial (the choice among them),
    tuned on the targets beside PT, with the target difference the kept problem files give."""
    import json

    import pandas as pd

    cal = pd.read_csv(sweep / "calibration.csv", dtype={"trial_id": str})
    selection = pd.read_csv(sweep / "selection.csv", dtype={"trial_id": str})
    for method, g in cal.groupby("method"):
        n = sum(1 for _, c in states.values() if c["method"] == method)
        assert sorted(g["val_rank"]) == sorted({1, n}) and g["chosen"].sum() == 1
        choice = selection[selection["chosen"] & (selection["method"] == method)]
        assert g.loc[g["chosen"], "trial_id"].item() == choice["trial_id"].item()
    kept: dict[str, dict[str, float]] = {}
    for path in (sweep / "final").glob("target-*.json"):
        record = json.loads(path.read_text())
        owner, task, _, seed = record["label"].rsplit(" ", 3)  # "calibrate <trial> <task>, seed <seed>"
        kept.setdefault(owner, {})[f"{task} {seed}"] = record["value"]
    for r in cal.itertuples():
        mine, pt = kept[f"calibrate {r.trial_id}"], kept["PT"]
        assert r.target_diff == pytest.approx(sum(mine[p] - pt[p] for p in pt) / len(pt), abs=1e-12)
    assert "Spearman" in (sweep / "calibration.md").read_text()
    assert cal["val_delta"].notna().all()  # each trial's val/delta reached the table beside its ARG
    from promptinit.analysis.report import write_report
    from promptinit.analysis.results import load_sweep

    report = write_report([load_sweep(sweep)], sweep.parent / "report", log_mlflow=False)
    index = (report.folder / "index.md").read_text()
    assert "## Does the search objective predict the target?" in index and "Spearman" in index
    assert (report.folder / "tables" / "calibration.csv").read_text() == (sweep / "calibration.csv").read_text()


def _statuses_on_disk(sweep: Path) -> list[str]:
    try:
        return [status for status, _ in tune_states(sweep).values()]
    except Exception:  # not written yet, or being rewritten
        return []


def _terminated_on_disk(sweep: Path) -> dict[str, int]:
    """Trials the experiment state on disk records as TERMINATED -> their number of reports."""
    try:
        states = tune_states(sweep)
    except Exception:  # not written yet, or being rewritten
        return {}
    done = {}
    for tid, (status, _) in states.items():
        if status == "TERMINATED":
            folder = next((d for d in trial_dirs(sweep) if d.name.endswith(tid)), None)
            if folder is not None:
                done[tid] = len(results_of(folder))
    return done


# Loaded by every Python process of the first (killed) sweep through PYTHONPATH: the first
# ALLOWED trials run; every later one claims a numbered file in the gate folder and then waits
# there forever. So the sweep cannot finish (or get further) before the test kills it, however
# fast the machine, and the kill comes at a known point: ALLOWED trials done, the next ones held.
GATE_ENV = "PROMPTINIT_TEST_GATE"
GATE_SITECUSTOMIZE = """
import functools, importlib.abc, importlib.util, itertools, os, sys, time

GATE = os.environ.get("PROMPTINIT_TEST_GATE")
ALLOWED = int(os.environ.get("PROMPTINIT_TEST_GATE_ALLOWED", "0"))


def _claim():
    for i in itertools.count():
        try:
            os.close(os.open(os.path.join(GATE, f"trial-{i}"), os.O_CREAT | os.O_EXCL))
            return i
        except FileExistsError:
            pass


def _wrap(module):
    real = module.train_prompt_init

    @functools.wraps(real)
    def train_prompt_init(config, **kwargs):
        if _claim() >= ALLOWED:
            while True:  # held until the test kills the sweep
                time.sleep(1)
        return real(config, **kwargs)

    module.train_prompt_init = train_prompt_init


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "promptinit.trainables.trainable":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _wrap(module)

        spec.loader.exec_module = exec_module
        return spec


if GATE:
    sys.meta_path.insert(0, _Hook())
"""


def _kill_after_two_trials(tmp_path: Path, config: Path, env: dict[str, str], sweep: Path) -> dict[str, int]:
    """Run the sweep until its first two trials have ended (the experiment state on disk says so)
    and the next two are held at their start by a gate, then kill it: a definite point that does
    not depend on how fast the trials run or how often the test looks. Returns the two ended
    trials -> their number of reports."""
    gate, hook = tmp_path / "gate", tmp_path / "gate-hook"
    gate.mkdir()
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(GATE_SITECUSTOMIZE)
    first_env = {**env, GATE_ENV: str(gate), "PROMPTINIT_TEST_GATE_ALLOWED": "2",
                 "PYTHONPATH": os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)}
    log = tmp_path / "first.log"
    proc = start_sweep(config, env=first_env, log=log)
    try:
        deadline = time.time() + 400
        done: dict[str, int] = {}
        while time.time() < deadline and proc.poll() is None:
            held = len(list(gate.iterdir())) - 2  # trials that reached the gate after the first two
            if held == 2:  # the first two have ended: wait until the state on disk says so
                done = _terminated_on_disk(sweep)
                if len(done) == 2:
                    break
                if "ERROR" in _statuses_on_disk(sweep):
                    pytest.fail(f"a trial failed before the kill:\n{tail(log)}")
            time.sleep(2)
        assert proc.poll() is None, f"the sweep ended before it could be interrupted:\n{tail(log)}"
        assert len(done) == 2 and len(list(gate.iterdir())) == 4, (done, sorted(gate.iterdir()), tail(log))
    finally:
        kill_tree(proc)  # the driver and the local Ray it started, no goodbyes
        kill_ray_under(Path(env["RAY_TMPDIR"]))  # and any Ray process that outlived it (no stray trial keeps writing)
    assert _terminated_on_disk(sweep) == done
    return done


def test_resume_after_driver_kill_runs_only_the_rest(tmp_path, ray_tmp, mlflow_server):
    """The driver is killed after two trials ended, two more held at their start (``_kill_after_two_trials``)."""
    name = "resume"
    config = write_sweep(tmp_path, name, budget={"num_samples": 6, "steps": [6, 8], "steps_per_report": 2})
    sweep = tmp_path / "runs" / name
    env = sweep_env(ray_tmp, MLFLOW_TRACKING_URI=mlflow_server)
    done = _kill_after_two_trials(tmp_path, config, env, sweep)
    parent_id = json.loads((sweep / "promptinit-sweep.json").read_text())["parent_run_id"]

    log2 = tmp_path / "resume.log"
    rc = run_sweep(config, "--resume", env=env, log=log2)
    assert rc == 0, tail(log2)
    states = tune_states(sweep)
    assert len(states) == 6 and {s for s, _ in states.values()} == {"TERMINATED"}
    for tid, reports in done.items():  # completed before the kill: not run again
        folder = next(d for d in trial_dirs(sweep) if d.name.endswith(tid))
        assert len(results_of(folder)) == reports, tid
    parent, children = mlflow_runs(mlflow_server, name)
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    # A trial started after Tune's last snapshot before the kill is unknown to the resumed
    # sweep (which runs it again as a new trial): its run is closed FAILED and tagged orphaned.
    orphans = [r for r in children if r.data.tags.get("orphaned") == "true"]
    runs = [r for r in children if r not in orphans]
    assert {r.info.status for r in orphans} <= {"FAILED"}
    assert sorted(r.data.tags["promptinit.trial_id"] for r in runs) == sorted(states)  # one run per trial
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert (sweep / "arg_table.md").exists()
    # Optuna: the same study continued; one trial per Tune trial, told its last report; the
    # trials asked after the last snapshot (the orphans' trials) closed FAIL, none left RUNNING.
    from optuna.trial import TrialState

    study = optuna_study(sweep, name)
    closed = [t for t in study.trials if t.user_attrs.get("orphaned")]
    kept = [t for t in study.trials if not t.user_attrs.get("orphaned")]
    assert sorted(t.user_attrs["tune_trial_id"] for t in kept) == sorted(states)
    for t in kept:
        trial_id = t.user_attrs["tune_trial_id"]
        folder = next(d for d in trial_dirs(sweep) if d.name.endswith(trial_id))
        check_study_trial(t, states[trial_id][1], results_of(folder))
    assert len(closed) == len(orphans) and {t.state for t in closed} <= {TrialState.FAIL}
    assert "optuna-dashboard sqlite:///" in log2.read_text()
    # The kept file (what a machine that loses Tune's state resumes from, and what a study commits)
    # names every finished trial, those finished after the resume too: Tune's snapshots upload
    # its staging copy, taken at the restore, over the sweep folder.
    finished = json.loads((sweep / "trials.json").read_text())
    assert sorted(k["tune_trial_id"] for k in finished) == sorted(states), finished


def test_resume_on_a_machine_without_tune_state_goes_on_from_the_kept_trials(tmp_path, ray_tmp):
    """A machine that lost everything but the portable files (``rebuild.portable_files``: the
    sweep's record, trials.json, the finished trials' results and prompts; no Tune state, no
    Optuna or MLflow file) resumes the sweep: the two finished trials are kept, not run again, and
    count in the search's 6 trials. MLflow's store (the sweep folder's sqlite file) was lost with
    the machine: a new parent run gets the kept trials replayed (a store that kept the runs:
    ``test_rebuild.py``)."""
    name = "rebuilt"
    config = write_sweep(tmp_path, name, budget={"num_samples": 6, "steps": [6, 8], "steps_per_report": 2})
    sweep = tmp_path / "runs" / name
    env = sweep_env(ray_tmp)
    uri = f"sqlite:///{sweep.resolve()}/mlflow.db"
    done = _kill_after_two_trials(tmp_path, config, env, sweep)
    kept_before = json.loads((sweep / "trials.json").read_text())
    assert sorted(k["tune_trial_id"] for k in kept_before) == sorted(done)
    parent_before = json.loads((sweep / "promptinit-sweep.json").read_text())["parent_run_id"]
    keep_only_portable_files(sweep)  # the new machine: only what was kept

    log = tmp_path / "rebuilt.log"
    assert run_sweep(config, "--resume", env=env, log=log) == 0, tail(log)
    assert "2 finished trials kept, 4 to run" in log.read_text()
    for tid, reports in done.items():  # not run again
        folder = next(d for d in trial_dirs(sweep) if d.name.endswith(tid))
        assert len(results_of(folder)) == reports, tid
    kept = json.loads((sweep / "trials.json").read_text())
    assert len(kept) == 6 and kept[:2] == [{**k, "number": i} for i, k in enumerate(kept_before)]
    assert len({json.dumps(k["params"], sort_keys=True) for k in kept}) == 6  # no point drawn twice
    study = optuna_study(sweep, name)
    assert [t.user_attrs.get("tune_trial_id") for t in study.trials if t.state.is_finished()] == [
        k["tune_trial_id"] for k in kept]
    parent, runs = mlflow_runs(uri, name)
    assert parent.info.status == "FINISHED" and parent.info.run_id != parent_before
    assert sorted(r.data.tags["promptinit.trial_id"] for r in runs) == sorted(k["tune_trial_id"] for k in kept)
    assert {r.info.status for r in runs} == {"FINISHED"}
    from mlflow.tracking import MlflowClient

    for r in runs:
        if r.data.tags["promptinit.trial_id"] in done:  # replayed: every report, at its step
            history = MlflowClient(uri).get_metric_history(r.info.run_id, "val/delta")
            assert len(history) == done[r.data.tags["promptinit.trial_id"]]
    import pandas as pd

    table = pd.read_csv(sweep / "arg_table.csv")  # the search's trials, as the sweep's table counts them
    assert (table["trials"].sum(), table["finished"].sum()) == (6, 6)
    from promptinit.analysis import load_sweep

    trials = load_sweep(sweep).trials  # the report's: the new experiment's 4 and the 2 kept from trials.json
    assert sorted(trials["trial_id"]) == sorted(k["tune_trial_id"] for k in kept)
    assert set(trials["status"]) == {"finished"}


def test_diverging_trials_fail_and_the_others_finish(tmp_path, ray_tmp, mlflow_server):
    # A NaN learning rate makes every MTL trial's prompt NaN after its first step.
    name = "fault"
    config = write_sweep(tmp_path, name, search={"space": {"mtl": {"lr": float("nan")}}})
    log = tmp_path / "sweep.log"
    rc = run_sweep(config, env=sweep_env(ray_tmp, MLFLOW_TRACKING_URI=mlflow_server), log=log)
    assert rc == 0, tail(log)
    sweep = tmp_path / "runs" / name
    states = tune_states(sweep)
    assert len(states) == 4
    by_method = {m: {s for s, c in states.values() if c["method"] == m} for m in ("fomaml", "mtl")}
    assert by_method == {"fomaml": {"TERMINATED"}, "mtl": {"ERROR"}}
    parent, children = mlflow_runs(mlflow_server, name)
    assert parent.info.status == "FINISHED"
    assert len(children) == 4
    for run in children:
        if run.data.tags["method"] == "mtl":
            assert run.info.status == "FAILED"
            assert "diverged" in run.data.tags["error"]
        else:
            assert run.info.status == "FINISHED"
    table = (sweep / "arg_table.md").read_text()
    assert "| mtl | n/a |" in table
    assert (sweep / "exports" / "fomaml" / "adapter_model.safetensors").exists()
    assert not (sweep / "exports" / "mtl").exists()
