"""The tiny sweep, run the way a user runs it, keeps the per-pair target scores (method, PT, test
size) wherever it writes results, writes the table with 95 % CIs from them, logs the same
numbers to MLflow, and reports the validation ARG with its standard error."""
from __future__ import annotations

import csv
import json
import math

import pytest

from tests.platform.conftest import results_of, run_sweep, sweep_env, tail, trial_dirs, write_sweep

pytestmark = pytest.mark.timeout(900)

TARGET = "bb_sports_understanding"  # configs/sweep/partitions/tiny-test.yaml
SEEDS = ("100", "13")


def test_sweep_keeps_per_pair_scores_and_writes_the_interval_table(tmp_path, ray_tmp):
    from mlflow.tracking import MlflowClient

    from analysis.results import load_sweep
    from analysis.tables import arg_markdown, arg_table
    from promptinit.stats import compare
    from promptinit.tasks.catalog import load_task
    from trainables.scoring import held_out_sizes

    # Two validation seeds, so the validation ARG has a standard error.
    config = write_sweep(tmp_path, "stats", validation={"seeds": [100, 13]})
    log = tmp_path / "sweep.log"
    assert run_sweep(config, env=sweep_env(ray_tmp), log=log) == 0, tail(log)
    sweep = tmp_path / "runs" / "stats"

    # Per-pair scores: each method's best prompt and PT on every target (task, seed), with the
    # number of test examples each score rests on.
    with (sweep / "target_scores.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert sorted((p["method"], p["task"], p["seed"]) for p in pairs) == sorted(
        (m, TARGET, s) for m in ("fomaml", "mtl") for s in SEEDS)
    sizes = held_out_sizes([load_task(TARGET)], [100, 13], 16)
    assert {int(p["n_test"]) for p in pairs} == set(sizes.values()) and all(0 < n <= 16 for n in sizes.values())
    pt = {p["seed"]: float(p["pt"]) for p in pairs if p["method"] == "mtl"}
    assert pt == {p["seed"]: float(p["pt"]) for p in pairs if p["method"] == "fomaml"}  # one PT baseline

    # The table: its cells are promptinit.stats.compare of those pairs; reading the sweep back
    # gives the same table (what `promptinit report` prints).
    md = (sweep / "arg_table.md").read_text()
    assert "Δ vs PT, points [95 % CI]" in md and "±" not in md
    for method in ("fomaml", "mtl"):
        rows = [p for p in pairs if p["method"] == method]
        c = compare({(TARGET, int(p["seed"])): float(p["score"]) for p in rows},
                    {(TARGET, int(p["seed"])): float(p["pt"]) for p in rows})
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {method} |"))
        assert line.startswith(f"| {method} | {c.diff.fmt()} | ")
        assert ("no difference" in line) == (not c.distinguishable)
    loaded = load_sweep(sweep)
    assert arg_markdown(arg_table(loaded.targets)) == md

    # The export's target block carries the same pairs and numbers.
    for method in ("fomaml", "mtl"):
        target = json.loads((sweep / "exports" / method / "promptinit.json").read_text())["metrics"]["target"]
        assert {(p["seed"], p["score"], p["pt"]) for p in target["scores"]} == {
            (int(p["seed"]), float(p["score"]), float(p["pt"])) for p in pairs if p["method"] == method}
        assert target["comparison"]["n_pairs"] == 2 and "verdict" in target["comparison"]

    # The trials report val/arg_se (two validation pairs), never the old val/arg_std.
    for folder in trial_dirs(sweep):
        for report in results_of(folder):
            assert math.isfinite(report["val/arg_se"]) and report["val/arg_se"] >= 0
            assert "val/arg_std" not in report

    # MLflow (the sweep's own sqlite store): the table's numbers on the parent run, its files as
    # artifacts, val/arg_se on every child; the MLflow loader rebuilds the same table.
    meta = json.loads((sweep / "promptinit-sweep.json").read_text())
    client = MlflowClient(meta["tracking_uri"])
    parent = client.get_run(meta["parent_run_id"])
    table = arg_table(loaded.targets).set_index("method")
    for method in ("fomaml", "mtl"):
        assert parent.data.metrics[f"target/diff/{method}"] == pytest.approx(table.loc[method, "diff_mean"])
        assert parent.data.metrics[f"target/diff_lo/{method}"] == pytest.approx(table.loc[method, "diff_lo"])
        assert parent.data.metrics[f"target/diff_hi/{method}"] == pytest.approx(table.loc[method, "diff_hi"])
        assert parent.data.metrics[f"target/arg/{method}"] == pytest.approx(table.loc[method, "arg_mean"])
        assert parent.data.metrics[f"target/p_value/{method}"] == pytest.approx(table.loc[method, "p_value"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"arg_table.md", "arg_table.csv", "target_scores.csv"} <= artifacts
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert children and all("val/arg_se" in r.data.metrics for r in children)
    from_mlflow = load_sweep(sweep, source="mlflow")
    assert arg_markdown(arg_table(from_mlflow.targets)) == md
