"""A fake sweep directory with known results, in the layout ``search/sweep.py`` writes.

Trial folders carry Tune's own files (``params.json``, ``result.json`` with one JSON line per
report, ``checkpoint_*`` folders with ``prompt.safetensors`` and ``trial.json``); the sweep's
``arg_table.{md,csv}``, ``target_scores.csv`` and ``exports/<method>/`` are written by the
platform's own writers (``analysis.write_target_table``, ``analysis.export_best``, the ones
``search/sweep.py`` calls), so a change of their layout shows up here.

Known numbers (hand-computed values are in the tests):

- maml: trials m1 (lr 0.1, 4 steps: val ARG 0.05 -> 0.20, 100 s), m2 (lr 0.2: 0.10 -> 0.30,
  200 s), m3 (lr 0.4, stopped early after one report: -0.10, 50 s), m4 (lr 0.3, failed after
  one report of 0.50, 30 s: never a result, but its time counts); target: PT scores 0.5 on every
  (task, seed), maml's relative gain per seed 100/13/21 is 0.15/0.25/0.35 on task_a and
  0.05/0.15/0.25 on task_b (scores 0.5 x (1 + RG)): ARG per seed {100: 0.10, 13: 0.20, 21: 0.30},
  per task {task_a: 0.25, task_b: 0.15}, ARG 0.20, difference 0.10 (10 points); best trial m2.
- mtl: trials t1 (batch 2: 0.00 -> 0.10, 60 s), t2 (batch 4: 0.05 -> 0.02, 40 s); target RG
  0.05/0.15/0.10 on task_a and -0.15/-0.05/-0.10 on task_b: ARG per seed {100: -0.05, 13: 0.05,
  21: 0.00}, per task {task_a: 0.10, task_b: -0.10}, ARG 0.0, difference 0.0; best trial t1.
- 16 test examples per score; resources: 1 CPU and 0.5 GPU per trial.
- The sweep's config has no ``search.objective`` (a sweep from before it: ranked by ARG), unless
  ``make_sweep(objective="delta")``: then every report also has ``val/delta`` = −(its val ARG), so
  the two objectives rank the trials and their reports in reverse (maml's best by Δ: m3, 0.10).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch

from promptinit.backbones import save_prompt

L, D = 4, 64  # tiny-llama: hidden size 64
SEEDS = [100, 13, 21]
TRIALS = {
    # trial id: (method, settings, val ARG per report, wall seconds, how it ended)
    "m1": ("maml", {"inner_lr": 0.1, "outer_lr": 0.5, "steps": 4}, [0.05, 0.20], 100.0, "finished"),
    "m2": ("maml", {"inner_lr": 0.2, "outer_lr": 0.3, "steps": 4}, [0.10, 0.30], 200.0, "finished"),
    "m3": ("maml", {"inner_lr": 0.4, "outer_lr": 0.2, "steps": 4}, [-0.10], 50.0, "stopped"),
    "m4": ("maml", {"inner_lr": 0.3, "outer_lr": 0.4, "steps": 4}, [0.50], 30.0, "failed"),
    "t1": ("mtl", {"lr": 0.3, "batch_size": 2, "steps": 4}, [0.00, 0.10], 60.0, "finished"),
    "t2": ("mtl", {"lr": 0.5, "batch_size": 4, "steps": 4}, [0.05, 0.02], 40.0, "finished"),
}
TARGETS = {  # method: (best trial, relative gain per (task, seed) over PT)
    "maml": ("m2", {("task_a", 100): 0.15, ("task_a", 13): 0.25, ("task_a", 21): 0.35,
                    ("task_b", 100): 0.05, ("task_b", 13): 0.15, ("task_b", 21): 0.25}),
    "mtl": ("t1", {("task_a", 100): 0.05, ("task_a", 13): 0.15, ("task_a", 21): 0.10,
                   ("task_b", 100): -0.15, ("task_b", 13): -0.05, ("task_b", 21): -0.10}),
}
PT = 0.5  # PT's test score on every target (task, seed)
N_TEST = 16  # test examples per score
FINGERPRINTS = {"src_a": "aaaa", "src_b": "bbbb", "val_a": "cccc", "task_a": "dddd", "task_b": "eeee"}
STEPS_PER_REPORT = 2


def checkpoint_prompt(trial_id: str, index: int) -> torch.Tensor:
    """The prompt stored in a trial's checkpoint ``index`` (distinct and reproducible)."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{trial_id}/{index}".encode()))
    return torch.randn(L, D, generator=g)


def make_sweep(root: Path, name: str = "fake", partition: str = "fake-part", tracking_uri: str | None = None,
               parent_run_id: str | None = None, scale: float = 1.0, objective: str | None = None) -> Path:
    """Write a finished fake sweep under ``root/name``; ``scale`` multiplies every target ARG; ``objective``
    (``search.objective``) None: a sweep recorded before the setting."""
    from promptinit.analysis import export_best, write_target_table

    sweep = root / name
    sweep.mkdir(parents=True)
    config = {
        "name": name, "model": "tiny-llama", "prompt_length": L, "dtype": "float32",
        "partition": f"/configs/partitions/{partition}.yaml", "catalog": None, "methods": ["maml", "mtl"],
        "resources": {"cpu": 1, "gpu": 0.5},
        "validation": {"seeds": [100], "tuning": {"steps": 2}}, "target": {"seeds": SEEDS, "tuning": {"steps": 2}},
    }
    if objective is not None:
        config["search"] = {"objective": objective}
    meta = {"parent_run_id": parent_run_id, "tracking_uri": tracking_uri, "experiment_id": "1", "config": config}
    (sweep / "promptinit-sweep.json").write_text(json.dumps(meta, indent=1))
    for trial_id, (method, settings, vals, wall, ended) in TRIALS.items():
        folder = sweep / f"{method}_{trial_id}"  # trainables.trainable.trial_dirname
        folder.mkdir()
        config_t = {"method": method, method: settings}
        (folder / "params.json").write_text(json.dumps(config_t))
        lines = []
        for i, v in enumerate(vals):
            step = (i + 1) * STEPS_PER_REPORT
            ckpt = f"checkpoint_{i:06d}"
            report_i = {"val/arg": v, "val/arg_se": 0.01 * (i + 1), "upstream/step": step,
                        "upstream/total_steps": settings["steps"]}
            if objective == "delta":
                report_i |= {"val/delta": -v, "val/delta_se": 0.005 * (i + 1)}
            save_prompt(checkpoint_prompt(trial_id, i), folder / ckpt / "prompt.safetensors")
            (folder / ckpt / "trial.json").write_text(json.dumps({"step": step, "method": method, "settings": settings,
                                                                  "report": report_i}))
            done = i == len(vals) - 1 and ended != "failed"
            lines.append(json.dumps({**report_i, "checkpoint_dir_name": ckpt, "done": done, "training_iteration": i + 1,
                                     "trial_id": trial_id, "time_total_s": wall * (i + 1) / len(vals),
                                     "config": config_t}))
        (folder / "result.json").write_text("\n".join(lines) + "\n")
        if ended == "failed":  # Tune writes the trial's exception here
            (folder / "error.txt").write_text("FloatingPointError: trial diverged at upstream step 2\n")
    rows = []
    for method, (trial_id, gains) in TARGETS.items():
        scores = {k: PT * (1 + scale * g) for k, g in gains.items()}
        baseline = {k: PT for k in gains}
        settings = TRIALS[trial_id][1]
        best_val = max(TRIALS[trial_id][2])
        n_trials = sum(1 for t in TRIALS.values() if t[0] == method)
        n_ok = sum(1 for t in TRIALS.values() if t[0] == method and t[4] != "failed")
        rows.append({"sweep": name, "partition": partition, "method": method, "trial_id": trial_id, "settings": settings,
                     "val_arg": best_val, "val_arg_se": 0.02, "trials": n_trials, "finished": n_ok, "scores": scores,
                     "baseline": baseline, "n_test": {k: N_TEST for k in gains}})
        if objective == "delta":  # the target rows keep ARG's choice; their val columns are its Δ
            rows[-1] |= {"objective": "delta", "val": -best_val, "val_se": 0.01, "val_rescored": -best_val / 2}
    table = write_target_table(rows, sweep)
    for row in rows:
        method, trial_id = row["method"], row["trial_id"]
        index = TRIALS[trial_id][2].index(row["val_arg"])
        export_best(sweep, method, checkpoint_prompt(trial_id, index), {
            "hyperparameters": row["settings"], "trial_id": trial_id, "model": "tiny-llama", "partition": partition,
            "partition_fingerprint": "ffff", "task_fingerprints": FINGERPRINTS,
            "target": {**table.records[(partition, method)], "seeds": SEEDS},
        })
    return sweep


@pytest.fixture
def fake_sweep(tmp_path) -> Path:
    return make_sweep(tmp_path / "runs")


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """One sqlite MLflow store for the session (creating its schema takes seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{path}"
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema once
    return uri

