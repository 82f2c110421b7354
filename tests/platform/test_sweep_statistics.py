"""The tiny sweep, run the way a user runs it, keeps the per-pair target scores (method per
upstream seed, PT, test size) wherever it writes results, writes the table with 95 % CIs from
them, logs the same numbers to MLflow, reports the validation ARG with its standard error and
the re-scored one its choice rests on, prints progress after the search, and resumed after it
finished redoes nothing."""
from __future__ import annotations

import csv
import json
import math

import pytest

from tests.platform.conftest import results_of, run_sweep, sweep_env, tail, trial_dirs, write_sweep

pytestmark = pytest.mark.timeout(900)

TARGET = "bb_sports_understanding"  # configs/sweep/partitions/tiny-test.yaml
SEEDS = ("100", "13")
UPSTREAM = ("1", "2")  # configs/sweep/tiny-test.yaml target.upstream_seeds


def test_sweep_keeps_per_pair_scores_and_writes_the_interval_table(tmp_path, ray_tmp):
    from mlflow.tracking import MlflowClient

    from promptinit.analysis.results import load_sweep
    from promptinit.analysis.tables import arg_markdown, arg_table
    from promptinit.stats import compare
    from promptinit.tasks.catalog import load_task
    from promptinit.trainables.scoring import held_out_sizes

    # Two validation seeds, so the validation ARG has a standard error.
    config = write_sweep(tmp_path, "stats", validation={"seeds": [100, 13], "rescore_seeds": [21]})
    log = tmp_path / "sweep.log"
    assert run_sweep(config, env=sweep_env(ray_tmp), log=log) == 0, tail(log)
    sweep = tmp_path / "runs" / "stats"

    # Per-pair scores: each method's best prompt and PT on every target (task, seed), with the
    # number of test examples each score rests on.
    with (sweep / "target_scores.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert sorted((p["method"], p["task"], p["seed"], p["upstream_seed"]) for p in pairs) == sorted(
        (m, TARGET, s, u) for m in ("fomaml", "mtl") for s in SEEDS for u in UPSTREAM)
    # Each upstream seed is its own meta-training run: its scores are not the same run's twice.
    for m in ("fomaml", "mtl"):
        by_up = {u: sorted(float(p["score"]) for p in pairs if p["method"] == m and p["upstream_seed"] == u)
                 for u in UPSTREAM}
        assert len(by_up["1"]) == len(by_up["2"]) == 2
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
        c = compare({(TARGET, int(p["seed"]), int(p["upstream_seed"])): float(p["score"]) for p in rows},
                    {(TARGET, int(p["seed"])): float(p["pt"]) for p in rows})
        assert c.n_upstream == 2 and c.n_pairs == 2
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {method} |"))
        assert line.startswith(f"| {method} | {c.diff.fmt()} | ")
        assert ("better than PT" in line or "worse than PT" in line) == c.distinguishable
    loaded = load_sweep(sweep)
    assert arg_markdown(arg_table(loaded.targets)) == md

    # The export's target block carries the same pairs and numbers.
    for method in ("fomaml", "mtl"):
        target = json.loads((sweep / "exports" / method / "promptinit.json").read_text())["metrics"]["target"]
        assert {(p["seed"], p["upstream_seed"], p["score"], p["pt"]) for p in target["scores"]} == {
            (int(p["seed"]), int(p["upstream_seed"]), float(p["score"]), float(p["pt"]))
            for p in pairs if p["method"] == method}
        assert target["comparison"]["n_pairs"] == 2 and target["comparison"]["n_upstream"] == 2
        assert target["upstream_seeds"] == [1, 2] and "verdict" in target["comparison"]

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

    # The choice: each method's top 2 trials re-scored on the fresh seed 21; the chosen one has
    # the best re-scored objective (the default: the validation score difference Δ), and the
    # table and MLflow show its re-scored ARG beside the search's.
    with (sweep / "selection.csv").open() as f:
        selection = list(csv.DictReader(f))
    assert "fresh seeds 21" in (sweep / "selection.md").read_text()
    for method in ("fomaml", "mtl"):
        cands = [r for r in selection if r["method"] == method]
        assert 1 <= len(cands) <= 2 and [r["rank_in_search"] for r in cands] == [str(i + 1) for i in range(len(cands))]
        (chosen,) = [r for r in cands if r["chosen"] == "True"]
        assert chosen["objective"] == "delta"
        assert float(chosen["rescored"]) == max(float(r["rescored"]) for r in cands)
        assert chosen["trial_id"] == table.loc[method, "trial_id"]
        assert parent.data.metrics[f"val/arg_rescored/{method}"] == pytest.approx(table.loc[method, "val_arg_rescored"])
    assert {"selection.md", "selection.csv"} <= artifacts

    # Progress after the search: a line per finished job, with the time left.
    text = log.read_text()
    # upstream: 2 methods x 2 fresh seeds; target: (PT + 2 x 2) x 2 seeds = 10 problems of one task, cut
    # into 2 batched runs for the 2 workers (jobs.plan_runs)
    for phase, jobs in (("re-score", None), ("upstream", 4), ("target", 2)):
        lines = [ln for ln in text.splitlines() if ln.strip().startswith(f"{phase} [")]
        assert lines and ("left" in lines[0] or len(lines) == 1) and lines[-1].endswith("done"), text[-3000:]
        assert jobs is None or len(lines) == jobs

    # Resumed after it finished: every job after the search is kept, the table is the same.
    again = tmp_path / "resume.log"
    assert run_sweep(config, "--resume", env=sweep_env(ray_tmp), log=again) == 0, tail(again)
    text = again.read_text()
    assert not [ln for ln in text.splitlines() if ln.strip().startswith(("re-score [", "upstream [", "target ["))]
    for phase in ("re-score", "upstream", "target"):
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{phase}: ")]
        jobs = int(line.split()[1])
        assert f"({jobs} done before" in line
    assert (sweep / "arg_table.md").read_text() == md
