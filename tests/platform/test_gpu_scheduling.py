"""Trials and jobs land on the GPU workers, as cluster.yaml and ``resources.gpu`` promise, shown
without a GPU: a two-node Ray cluster whose worker declares two GPUs it does not have (what
``ray start --num-gpus 2`` does, here through ``ray.cluster_utils.Cluster``) and whose head has
none runs the tiny sweep with ``resources.gpu: 0.25``. Every trial (its ``placement`` reports)
and every kept job (``<sweep>/final/*.json``, field ``ran``) must have run on the worker, with
Ray's GPU in ``CUDA_VISIBLE_DEVICES``, at most 8 at once (2 GPUs / 0.25; 10 upstream jobs are
asked for together) and 4 per GPU; where torch sees no CUDA device, each says so in one
warning line and ran on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptinit.trainables.trainable import PLACEMENT
from tests.platform.conftest import results_of, run_sweep, sweep_env, tail, trial_dirs, write_sweep

GPUS, SHARE = 2, 0.25  # the worker's declared GPUs; resources.gpu per trial and per job
UPSTREAM_SEEDS = [1, 2, 3, 4, 5]  # 2 methods x 5 seeds = 10 upstream jobs asked for at once, more than 8 fit
NO_CUDA = "but torch sees no CUDA device: running on the CPU"  # the warning's tail (jobs.py, trainable.py)


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """Most of ``spans`` (start, end) running at one instant; one that ends as another starts does not overlap it."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # at a tie, -1 sorts first
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_max_overlap():
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2
    assert max_overlap([(0, 5), (1, 2), (1.5, 3)]) == 3
    assert max_overlap([]) == 0


def trial_runs(sweep: Path) -> list[dict]:
    """One record per run of a trial: its ``placement`` report, from its start to its last report."""
    runs: dict[tuple, dict] = {}
    for folder in trial_dirs(sweep):
        for result in results_of(folder):
            p = result[PLACEMENT]
            run = runs.setdefault((folder.name, p["started"]), {**p, "where": folder.name})
            run["reported"] = max(run["reported"], p["reported"])
    for r in runs.values():
        r["ended"], r["gpu_ids"] = r.pop("reported"), [g for g in r["gpu_ids"].split(",") if g]
    return list(runs.values())


def job_runs(final: Path) -> list[dict]:
    """One record per Ray task of the phases after the search: the problems of a batched run share its ``ran``."""
    runs: dict[str, dict] = {}
    for path in sorted(final.glob("*.json")):
        ran = json.loads(path.read_text()).get("ran")
        if ran is not None:
            gpus = [g for g in ran["gpu_ids"].split(",") if g]
            runs.setdefault(json.dumps(ran, sort_keys=True), {**ran, "gpu_ids": gpus, "where": path.name})
    return list(runs.values())


@pytest.mark.ray_cluster
@pytest.mark.timeout(600)
def test_trials_and_jobs_run_on_the_gpu_worker_at_most_eight_at_once(tmp_path, ray_tmp, monkeypatch):
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway loopback cluster
    # The head takes CPU work but, with no GPU, nothing that asks for one; the worker's 4 CPUs
    # fit 16 jobs of 0.25 CPU, so its 2 GPUs are what bounds them (8 at once).
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "object_store_memory": 100_000_000},
    )
    try:
        worker = cluster.add_node(num_cpus=4, num_gpus=GPUS, object_store_memory=100_000_000)
        cluster.wait_for_nodes()
        gpu_node = worker.node_id
        assert gpu_node != cluster.head_node.node_id
        config = write_sweep(
            tmp_path,
            "gpu",
            resources={"cpu": 0.25, "gpu": SHARE},
            budget={"num_samples": 2},  # one trial per method (their paper defaults come first)
            search={"top_k": 1},
            target={"upstream_seeds": UPSTREAM_SEEDS},
        )
        log = tmp_path / "sweep.log"
        env = sweep_env(ray_tmp, RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="disabled")
        rc = run_sweep(config, env=env, log=log)
        assert rc == 0, tail(log)
    finally:
        cluster.shutdown()

    sweep = tmp_path / "runs" / "gpu"
    trials, jobs = trial_runs(sweep), job_runs(sweep / "final")
    targets = sorted((sweep / "final").glob("target-*.json"))
    upstream = list((sweep / "final").glob("upstream-*.json"))
    assert len(trial_dirs(sweep)) == 2 and len(upstream) == 2 * len(UPSTREAM_SEEDS) > GPUS / SHARE, tail(log)
    assert len(targets) == 2 * (1 + 2 * len(UPSTREAM_SEEDS)), tail(log)  # (PT + each upstream run) x 2 seeds
    assert all("ran" in json.loads(p.read_text()) for p in targets)
    everything = trials + jobs
    for r in everything:
        assert r["node"] == gpu_node, r  # never the head: it has no GPU
        assert len(r["gpu_ids"]) == 1 and r["gpu_ids"][0] in {str(i) for i in range(GPUS)}, r
        assert r["cuda_visible_devices"] == r["gpu_ids"][0], r
        assert r["device"] in ("cpu", "cuda") and r["started"] <= r["ended"], r
    spans = [(r["started"], r["ended"]) for r in everything]
    assert 2 <= max_overlap(spans) <= int(GPUS / SHARE), spans  # GPUs shared, never more than they hold
    for gpu in range(GPUS):
        on_it = [(r["started"], r["ended"]) for r in everything if r["gpu_ids"] == [str(gpu)]]
        assert max_overlap(on_it) <= int(1 / SHARE), (gpu, on_it)
    # Where torch sees no CUDA device, one warning line per trial run and per job, and the CPU.
    lines = log.read_text(errors="replace").splitlines()
    for kind, runs in (("trial", trials), ("job", jobs)):
        warned = [line for line in lines if f"Ray gave this {kind} GPU" in line and NO_CUDA in line]
        assert len(warned) == sum(r["device"] == "cpu" for r in runs), (kind, warned, runs)
