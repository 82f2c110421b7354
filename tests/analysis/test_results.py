"""Loaders against a real (tiny) Ray Tune run: Tune's own files and the platform's MLflow
callback give the same tidy table, and the export picks the best kept checkpoint."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest

from analysis.results import load_mlflow, load_sweep, parse_value

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
            report = {"val/arg": v, "val/arg_std": 0.0, "upstream/step": 2 * (i + 1), "upstream/total_steps": 4}
            Path(folder, "trial.json").write_text(json.dumps({"step": 2 * (i + 1), "report": report}))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from mlflow.tracking import MlflowClient
    from ray import tune

    from search.tracking import TrialRuns

    root = tmp_path_factory.mktemp("tune")
    uri = f"sqlite:///{root}/mlflow.db"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("real", artifact_location=(root / "artifacts").as_uri())
    parent = c.create_run(exp, run_name="real", tags={"promptinit.role": "sweep", "partition": "p"}).info.run_id
    c.log_param(parent, "resources/cpu", "1")
    c.log_param(parent, "resources/gpu", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=80_000_000, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        tuner = tune.Tuner(
            tune.with_resources(stub_trial, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=FixedConfigs(CONFIGS), num_samples=len(CONFIGS), metric="val/arg", mode="max", reuse_actors=True),
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
              "resources": {"cpu": 1, "gpu": 0}}
    (sweep / "promptinit-sweep.json").write_text(json.dumps(
        {"parent_run_id": parent, "tracking_uri": uri, "experiment_id": exp, "config": config}))
    return sweep


def test_tune_files_and_mlflow_give_the_same_table(real_sweep):
    from analysis.results import _tune_trials

    assert _tune_trials(real_sweep) is not None  # read through Tune's ExperimentAnalysis
    tune_t = load_sweep(real_sweep).trials.set_index("trial_id")
    ml = load_sweep(real_sweep, source="mlflow").trials.set_index("trial_id")
    assert len(tune_t) == len(CONFIGS) and sorted(tune_t.index) == sorted(ml.index)
    assert sorted(tune_t["method"]) == ["maml", "maml", "mtl"]
    for trial_id, row in tune_t.iterrows():
        other = ml.loc[trial_id]
        key = row.params.get("inner_lr", row.params.get("lr"))
        assert row.params == other.params  # MLflow's string params parsed back to numbers
        assert row.val_arg == pytest.approx(max(VALUES[key])) == other.val_arg
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

    from analysis.export import export_method
    from analysis.report import write_report
    from promptinit.export import ModelInfo, load_export

    report = write_report([load_sweep(real_sweep)], tmp_path / "report", log_mlflow=False)
    assert (report.folder / "plots" / "arg_bars.png").is_file()  # validation ARG bars: no target results yet
    assert any("no target-task results" in n for n in report.notes)
    out = export_method(real_sweep, "maml", tmp_path / "maml", log_mlflow=False)
    ex = load_export(out, ModelInfo.from_name("tiny-llama", 4))
    # Best maml checkpoint: inner_lr 0.1, second report (val ARG 0.3): filled with 10 * 0.1 + 1.
    assert torch.allclose(ex.prompt, torch.full((4, 64), 2.0))
    assert ex.metadata["metrics"]["target"] is None and ex.metadata["metrics"]["validation"]["arg"] == 0.3
    assert {"bb_strategyqa", "bb_sports_understanding", "bb_si_conversion"} <= set(ex.metadata["task_fingerprints"])
    assert ex.metadata["extra"]["partition"] == "tiny" and ex.metadata["extra"]["partition_data_fingerprint"]


def test_parse_value_restores_plain_types():
    assert parse_value("3e-05") == 3e-05 and parse_value("4") == 4 and isinstance(parse_value("4"), int)
    assert parse_value("adafactor") == "adafactor" and parse_value("True") is True and parse_value("None") is None
    assert math.isnan(parse_value("nan"))
