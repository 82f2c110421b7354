"""Loaders against a real (tiny) Ray Tune run: Tune's own files and the platform's MLflow
callback give the same tidy table, and the export picks the best kept checkpoint."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest

from promptinit.analysis.results import FallbackWarning, load_mlflow, load_sweep, parse_value

ROOT = Path(__file__).resolve().parents[2]
# config -> validation ARG per report (2 upstream steps per report)
CONFIGS = [
    {"method": "maml", "maml": {"inner_lr": 0.1, "steps": 4}},
    {"method": "maml", "maml": {"inner_lr": 0.2, "steps": 4}},
    {"method": "mtl", "mtl": {"lr": 0.3, "batch_size": 2, "steps": 4}},
]
VALUES = {0.1: [0.1, 0.3], 0.2: [0.2, 0.1], 0.3: [0.0, 0.05]}


class FixedConfigs:
    """A Tune searcher that proposes the given configs in order (the platform proposes its
    ``{"method": m, m: {...}}`` configs through OptunaSearch the same way)."""

    def __new__(cls, configs):
        from ray.tune.search import Searcher

        class _Fixed(Searcher):
            def __init__(self, configs):
                super().__init__()
                self.configs = [dict(c) for c in configs]

            def set_search_properties(self, metric, mode, config, **spec):
                self._metric, self._mode = metric, mode
                return True

            def suggest(self, trial_id):
                return self.configs.pop(0) if self.configs else Searcher.FINISHED

            def on_trial_complete(self, trial_id, result=None, error=False):
                pass

        return _Fixed(configs)


def stub_trial(config):
    """Reports known values with a checkpoint holding a prompt, as trainables.train_prompt_init does."""
    import torch
    from ray import tune
    from safetensors.torch import save_file

    method = config["method"]
    key = config[method].get("inner_lr", config[method].get("lr"))
    for i, v in enumerate(VALUES[key]):
        with tempfile.TemporaryDirectory() as folder:
            save_file({"prompt_embeddings": torch.full((4, 64), float(10 * key + i))}, f"{folder}/prompt.safetensors")
            report = {"val/arg": v, "val/arg_se": 0.0, "val/delta": v / 2, "val/delta_se": 0.0,
                      "upstream/step": 2 * (i + 1), "upstream/total_steps": 4}
            Path(folder, "trial.json").write_text(json.dumps({"step": 2 * (i + 1), "report": report}))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from mlflow.tracking import MlflowClient
    from ray import tune

    from promptinit.search.phases.tracking import TrialRuns

    root = tmp_path_factory.mktemp("tune")
    uri = f"sqlite:///{root}/mlflow.db"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("real", artifact_location=(root / "artifacts").as_uri())
    parent = c.create_run(exp, run_name="real", tags={"promptinit.role": "sweep", "partition": "p"}).info.run_id
    c.log_param(parent, "resources/cpu", "1")
    c.log_param(parent, "resources/gpu", "0")
    c.log_param(parent, "search/objective", "delta")  # tracking.flat_params of the sweep config
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=80_000_000, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        tuner = tune.Tuner(
            tune.with_resources(stub_trial, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=FixedConfigs(CONFIGS), num_samples=len(CONFIGS), metric="val/delta", mode="max", reuse_actors=True),
            run_config=tune.RunConfig(name="real", storage_path=str(root), verbose=0,
                                      callbacks=[TrialRuns(uri, exp, parent)],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
        tuner.fit()
    finally:
        ray.shutdown()
    sweep = root / "real"
    # The repository's tiny partition: the export computes its task fingerprints from the catalog.
    config = {"name": "real", "model": "tiny-llama", "prompt_length": 4, "partition": "tiny",
              "resources": {"cpu": 1, "gpu": 0}, "search": {"objective": "delta"}}
    (sweep / "promptinit-sweep.json").write_text(json.dumps(
        {"parent_run_id": parent, "tracking_uri": uri, "experiment_id": exp, "config": config}))
    return sweep


def test_tune_files_and_mlflow_give_the_same_table(real_sweep):
    from promptinit.analysis.results import _tune_trials

    assert _tune_trials(real_sweep) is not None  # read through Tune's ExperimentAnalysis
    tune_t = load_sweep(real_sweep).trials.set_index("trial_id")
    ml = load_sweep(real_sweep, source="mlflow").trials.set_index("trial_id")
    assert len(tune_t) == len(CONFIGS) and sorted(tune_t.index) == sorted(ml.index)
    assert sorted(tune_t["method"]) == ["maml", "maml", "mtl"]
    for trial_id, row in tune_t.iterrows():
        other = ml.loc[trial_id]
        key = row.params.get("inner_lr", row.params.get("lr"))
        assert row.params == other.params  # MLflow's string params parsed back to numbers
        # the objective (val/delta = val ARG / 2 here) from both sources, and ARG at its best report
        assert row.objective == other.objective == "delta"
        assert row.val == pytest.approx(max(VALUES[key]) / 2) == other.val
        assert row.val_arg == pytest.approx(max(VALUES[key])) == other.val_arg
        assert [p["val"] for p in row.curve] == [v / 2 for v in VALUES[key]] == [p["val"] for p in other.curve]
        assert [p["val_arg"] for p in row.curve] == VALUES[key] == [p["val_arg"] for p in other.curve]
        assert [p["step"] for p in row.curve] == [2, 4] == [p["step"] for p in other.curve]
        assert row.status == other.status == "finished"
        assert row.wall_s == pytest.approx(other.wall_s) and row.cpu == 1.0 and row.gpu == 0.0
        assert row.best_checkpoint and Path(row.best_checkpoint).is_dir()
    assert (ml["run_id"].notna()).all() and (ml["source"] == "mlflow").all()
    by_parent = load_mlflow(json.loads((real_sweep / "promptinit-sweep.json").read_text())["tracking_uri"],
                            experiment="real")
    assert sorted(by_parent.trials["trial_id"]) == sorted(tune_t.index)


def test_report_and_export_on_a_real_tune_layout(real_sweep, tmp_path):
    import torch

    from promptinit.analysis.export import export_method
    from promptinit.analysis.report import write_report
    from promptinit.export import ModelInfo, load_export

    report = write_report([load_sweep(real_sweep)], tmp_path / "report", log_mlflow=False)
    assert (report.folder / "plots" / "arg_bars.png").is_file()  # validation ARG bars: no target results yet
    assert any("no target-task results" in n for n in report.notes)
    out = export_method(real_sweep, "maml", tmp_path / "maml", log_mlflow=False)
    ex = load_export(out, ModelInfo.from_name("tiny-llama", 4))
    # Best maml checkpoint: inner_lr 0.1, second report (val ARG 0.3): filled with 10 * 0.1 + 1.
    assert torch.allclose(ex.prompt, torch.full((4, 64), 2.0))
    validation = ex.metadata["metrics"]["validation"]
    assert ex.metadata["metrics"]["target"] is None
    assert (validation["objective"], validation["delta"], validation["arg"]) == ("delta", 0.15, 0.3)
    assert {"bb_strategyqa", "bb_sports_understanding", "bb_si_conversion"} <= set(ex.metadata["task_fingerprints"])
    assert ex.metadata["extra"]["partition"] == "tiny" and ex.metadata["extra"]["partition_data_fingerprint"]


def test_parse_value_restores_plain_types():
    assert parse_value("3e-05") == 3e-05 and parse_value("4") == 4 and isinstance(parse_value("4"), int)
    assert parse_value("adafactor") == "adafactor" and parse_value("True") is True and parse_value("None") is None
    assert math.isnan(parse_value("nan"))


# --------------------------------------------------------------------------- no silent fallbacks


def tune_state(sweep: Path, monkeypatch, resources: dict) -> None:
    """Tune's experiment state for the fake sweep, through a stand-in ``ExperimentAnalysis``:
    trial id -> its resource request (None: none recorded, as for a stub from another Ray)."""
    from types import SimpleNamespace

    tune = pytest.importorskip("ray.tune")
    from tests.analysis.conftest import TRIALS

    trials = []
    for tid, (method, settings, _, _, ended) in TRIALS.items():
        res = resources.get(tid)
        trials.append(SimpleNamespace(
            trial_id=tid, status="ERROR" if ended == "failed" else "TERMINATED", config={"method": method, method: settings},
            path=str(sweep / f"{method}_{tid}"),
            placement_group_factory=None if res is None else SimpleNamespace(required_resources=res)))

    class Analysis:
        def __init__(self, path):
            self.trials = trials

    (sweep / "experiment_state-2025-01-01_00-00-00.json").write_text("{}")
    monkeypatch.setattr(tune, "ExperimentAnalysis", Analysis)


def set_config_gpu(sweep: Path, gpu) -> None:
    meta = json.loads((sweep / "promptinit-sweep.json").read_text())
    meta["config"]["resources"]["gpu"] = gpu
    (sweep / "promptinit-sweep.json").write_text(json.dumps(meta))


def fallback_warnings(record) -> list[str]:
    from promptinit.analysis.results import FallbackWarning

    return [str(w.message) for w in record if issubclass(w.category, FallbackWarning)]


@pytest.mark.parametrize("config_gpu", [0.5, "auto"])
def test_trial_resources_missing_from_tune_are_taken_from_the_config_and_said_so(fake_sweep, monkeypatch, config_gpu):
    """A trial whose resources Tune did not record: CPU/GPU from the sweep config, a note in the
    table and one warning; with ``gpu: auto`` its GPU hours are unknown (NaN), never 0."""
    from promptinit.analysis import tables
    from promptinit.analysis.results import FallbackWarning

    set_config_gpu(fake_sweep, config_gpu)
    # Only t1's request is in the state (2 CPUs, a quarter GPU); every maml trial's is missing.
    tune_state(fake_sweep, monkeypatch, {"t1": {"CPU": 2.0, "GPU": 0.25}, "t2": {"CPU": 1.0}})
    with pytest.warns(FallbackWarning) as record:
        s = load_sweep(fake_sweep)
    (warning,) = fallback_warnings(record)
    assert "4 of 6 trials: Tune's experiment state has no resources for this trial" in warning
    assert "resources_note" in warning and str(fake_sweep) in warning
    t = s.trials.set_index("trial_id")
    assert t.loc["t1", "gpu"] == 0.25 and t.loc["t1", "gpu_s"] == 15.0 and t.loc["t1", "cpu_s"] == 120.0
    assert t.loc["t2", "gpu"] == 0.0 and not isinstance(t.loc["t2", "resources_note"], str)  # its own: no GPU
    for tid in ("m1", "m2", "m3", "m4"):
        note = t.loc[tid, "resources_note"]
        assert "from the sweep config" in note and "no resources for this trial" in note
        assert t.loc[tid, "cpu"] == 1.0
    cost = tables.cost_table(s.trials, s.targets).set_index("method")
    if config_gpu == "auto":
        assert math.isnan(t.loc["m2", "gpu"]) and math.isnan(t.loc["m2", "gpu_s"])
        assert "GPU hours are unknown" in t.loc["m2", "resources_note"] and "auto" in warning
        assert math.isnan(cost.loc["maml", "gpu_h"])  # unknown, not 0 GPU hours
        md = tables.cost_markdown(cost.reset_index()).splitlines()
        head, maml = md[0].split("|"), next(line for line in md if "| maml |" in line).split("|")
        assert maml[head.index(" GPU h ")].strip() == "n/a"  # the report says unknown, not 0
    else:
        assert t.loc["m2", "gpu"] == 0.5 and t.loc["m2", "gpu_s"] == 100.0
        assert "unknown" not in t.loc["m2", "resources_note"]
        assert cost.loc["maml", "gpu_h"] == pytest.approx(190 / 3600)


def test_with_gpu_auto_a_kept_trials_gpus_come_from_its_own_reports(fake_sweep, monkeypatch):
    """A trial kept across a fresh machine has no resources in Tune's state; with ``gpu: auto``
    its reports' placement (``gpu_ids``: "" on a CPU node, "0,1" on two GPUs) still says how many
    GPUs it held, so its GPU hours are known; a trial whose reports disagree or have no placement
    stays unknown."""
    set_config_gpu(fake_sweep, "auto")
    tune_state(fake_sweep, monkeypatch, {"t1": {"CPU": 2.0, "GPU": 0.25}, "t2": {"CPU": 1.0}})

    def place(trial: str, *gpu_ids: str) -> None:
        path = fake_sweep / f"maml_{trial}" / "result.json"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        placed = [{**r, "placement": {"device": "cpu", "gpu_ids": gpu_ids[min(i, len(gpu_ids) - 1)]}}
                  for i, r in enumerate(lines)]
        path.write_text("\n".join(json.dumps(r) for r in placed) + "\n")

    place("m1", "0", "0,1")  # its two reports disagree (a restart on other GPUs): unknown
    place("m2", "0,1")
    place("m3", "")  # one report, on a CPU node
    with pytest.warns(FallbackWarning):
        t = load_sweep(fake_sweep).trials.set_index("trial_id")
    assert t.loc["m3", "gpu"] == 0.0 and t.loc["m3", "gpu_s"] == 0.0
    assert t.loc["m2", "gpu"] == 2.0 and t.loc["m2", "gpu_s"] == 2 * t.loc["m2", "wall_s"] > 0
    assert "GPUs (2) from the trial's reports" in t.loc["m2", "resources_note"]
    for unknown in ("m1", "m4"):  # m4: no placement in its reports
        assert math.isnan(t.loc[unknown, "gpu"]) and "GPU hours are unknown" in t.loc[unknown, "resources_note"]


def test_unreadable_tune_state_falls_back_to_the_folders_and_says_so(fake_sweep):
    pytest.importorskip("ray.tune")
    from promptinit.analysis.results import FallbackWarning

    before = load_sweep(fake_sweep).trials  # the trial folders alone (no experiment state)
    (fake_sweep / "experiment_state-2025-01-01_00-00-00.json").write_text('{"trial_data": [[{"trial_id": "m1", "st')
    with pytest.warns(FallbackWarning) as record:
        s = load_sweep(fake_sweep)
    (warning,) = fallback_warnings(record)
    assert "6 of 6 trials: Tune's experiment state is unreadable (" in warning and "read from their folders" in warning
    assert list(s.trials["status"]) == list(before["status"]) and list(s.trials["gpu_s"]) == list(before["gpu_s"])
    assert all("experiment state is unreadable" in n for n in s.trials["resources_note"])


def test_folder_only_sweeps_note_where_resources_come_from_without_warning(fake_sweep):
    import warnings

    from promptinit.analysis.results import FallbackWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        s = load_sweep(fake_sweep)
    assert all(n.startswith("CPU/GPU per trial from the sweep config") and "no Tune experiment state" in n
               for n in s.trials["resources_note"])


def test_a_folder_cut_to_the_kept_files_lists_the_kept_trials_with_their_statuses(fake_sweep):
    """A search resumed without Tune's state keeps its finished trials in trials.json: without an
    experiment state, a trial folder not in it (lost unfinished, here t2) is left out, and the kept
    trials' statuses are the file's (m4 FAIL -> failed; m3, stopped by ASHA, finished)."""
    kept = [{"tune_trial_id": tid, "state": state} for tid, state in
            (("m1", "COMPLETE"), ("m2", "COMPLETE"), ("m3", "PRUNED"), ("m4", "FAIL"), ("t1", "COMPLETE"))]
    (fake_sweep / "trials.json").write_text(json.dumps(kept))
    results = fake_sweep / "maml_m1" / "result.json"  # its folder says unfinished; trials.json, finished
    results.write_text(results.read_text().replace('"done": true', '"done": false'))
    trials = load_sweep(fake_sweep).trials.set_index("trial_id")
    assert sorted(trials.index) == ["m1", "m2", "m3", "m4", "t1"]
    assert trials["status"].to_dict() == {"m1": "finished", "m2": "finished", "m3": "finished", "m4": "failed",
                                          "t1": "finished"}
    (fake_sweep / "trials.json").write_text(json.dumps({"m1": 1}))
    from promptinit.errors import PromptinitError

    with pytest.raises(PromptinitError, match=r"trials\.json: expected a list of trials"):
        load_sweep(fake_sweep)


def test_a_corrupt_report_line_is_an_error_but_a_half_written_last_one_is_not(fake_sweep):
    from promptinit.errors import PromptinitError

    path = fake_sweep / "maml_m2" / "result.json"
    good = path.read_text()
    path.write_text(good + '{"val/arg": 0.9, "upstream/st')  # the report being written right now
    assert load_sweep(fake_sweep).trials.set_index("trial_id").loc["m2", "val_arg"] == 0.30
    lines = good.splitlines()
    path.write_text("\n".join([lines[0], '{"val/arg": 0.9, "upstream/st', lines[1]]) + "\n")
    with pytest.raises(PromptinitError) as e:
        load_sweep(fake_sweep)
    assert f"{path}: line 2: not valid JSON" in str(e.value) and "\n" not in str(e.value)


def test_a_corrupt_trial_config_is_an_error_not_a_missing_trial(fake_sweep):
    from promptinit.errors import PromptinitError

    params = fake_sweep / "mtl_t2" / "params.json"
    params.write_text('{"method": "mtl", "mtl": {"lr"')
    with pytest.raises(PromptinitError) as e:
        load_sweep(fake_sweep)
    assert str(params) in str(e.value) and "not valid JSON" in str(e.value)


def test_corrupt_target_results_are_errors(fake_sweep):
    from promptinit.errors import PromptinitError

    scores = fake_sweep / "target_scores.csv"
    scores.write_text(scores.read_text().replace("task_a,13,,0.625", "task_a,13,,oops"))
    with pytest.raises(PromptinitError) as e:
        load_sweep(fake_sweep)
    assert f"{scores} (maml): pair 2: field 'score': missing or not a number" in str(e.value)
    table = fake_sweep / "arg_table.csv"
    table.unlink()  # the exports are read instead
    meta = fake_sweep / "exports" / "mtl" / "promptinit.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(PromptinitError) as e:
        load_sweep(fake_sweep)
    assert f"{meta}: not valid JSON" in str(e.value)


def test_mlflow_targets_fall_back_to_metrics_only_without_a_table(mlflow_store, tmp_path):
    """No ``arg_table.csv`` artifact: the parent's target metrics. One that cannot be read: an
    error (not a silent switch to the metrics). A missing GPU param: unknown, not 0."""
    from mlflow.tracking import MlflowClient

    from promptinit.errors import PromptinitError

    c = MlflowClient(tracking_uri=mlflow_store)
    exp = c.create_experiment(f"targets-{tmp_path.name}", artifact_location=(tmp_path / "art").as_uri())
    parent = c.create_run(exp, run_name="s", tags={"promptinit.role": "sweep", "partition": "p"}).info.run_id
    c.log_metric(parent, "target/arg/maml", 0.2)
    c.log_param(parent, "search/objective", "delta")
    c.log_metric(parent, "val/delta/maml", 0.04)
    c.log_metric(parent, "val/arg/maml", 0.1)
    child = c.create_run(exp, tags={"mlflow.parentRunId": parent, "promptinit.trial_id": "m1"}).info.run_id
    c.log_param(child, "method", "maml")
    s = load_mlflow(mlflow_store, parent_run_id=parent)
    assert list(s.targets["method"]) == ["maml"] and s.targets["arg_mean"].iloc[0] == pytest.approx(0.2)
    target = s.targets.iloc[0]
    assert (target["objective"], target["val"], target["val_arg"]) == ("delta", pytest.approx(0.04), pytest.approx(0.1))
    (row,) = s.trials.itertuples()
    assert math.isnan(row.gpu) and "GPU hours are unknown" in row.resources_note and row.cpu == 1.0
    (tmp_path / "arg_table.csv").write_text("method,partition,arg_mean,arg_std,arg_per_seed\nmaml,p,0.2,0.0,{oops\n")
    c.log_artifact(parent, str(tmp_path / "arg_table.csv"))
    with pytest.raises(PromptinitError) as e:
        load_mlflow(mlflow_store, parent_run_id=parent)
    assert f"MLflow run {parent} artifact arg_table.csv: line 2: field 'arg_per_seed'" in str(e.value)


def test_the_sweep_driver_reads_trial_states_of_a_real_tune_run(real_sweep):
    """``search.sweep.trial_states`` on Tune's own files (its unreadable-state errors are in
    tests/platform/test_trial_states.py): every trial with its status and last report."""
    from promptinit.search.phases.check import trial_states

    states = trial_states(real_sweep)
    assert len(states) == len(CONFIGS) and {s for s, _ in states.values()} == {"TERMINATED"}
    assert sorted(last["val/arg"] for _, last in states.values()) == sorted(v[-1] for v in VALUES.values())


def test_a_real_tune_run_gives_each_trials_own_resources_without_fallback(real_sweep):
    import warnings

    from promptinit.analysis.results import FallbackWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        t = load_sweep(real_sweep).trials
    assert not t["resources_note"].map(lambda n: isinstance(n, str)).any()  # read from Tune's state
    assert list(t["cpu"]) == [1.0] * len(CONFIGS) and list(t["gpu"]) == [0.0] * len(CONFIGS)
