"""Sweeps on more than one Ray node, through `ray job submit`, and the cluster launcher config."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.platform.conftest import (
    PYTHON, ROOT, free_port, kill_ray_under, results_of, run_sweep, sweep_env, tail, trial_dirs, write_sweep,
)


def test_cluster_yaml_validates_against_rays_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))  # what `ray up` runs (defaults filled in, then checked)
    # What the sweep needs from the cluster: GPU workers that scale, the project installed,
    # shared storage for Tune's storage_path, and the MLflow server for the driver.
    workers = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    assert any(v["max_workers"] > v.get("min_workers", 0) and v["resources"].get("GPU", 0) >= 1
               for v in workers.values())
    setup = "\n".join(config["setup_commands"])
    assert "./install.sh" in setup and "git clone" in setup and "efs" in setup.lower()
    assert "MLFLOW_TRACKING_URI" in "\n".join(config["head_setup_commands"] + config["setup_commands"])


@pytest.mark.ray_cluster
@pytest.mark.timeout(600)
def test_trials_run_on_both_nodes_of_a_two_node_cluster(tmp_path, ray_tmp, monkeypatch):
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway loopback cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 100_000_000})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=100_000_000)
        cluster.wait_for_nodes()
        node_ids = {n.node_id for n in cluster.list_all_nodes()}
        assert len(node_ids) == 2
        config = write_sweep(tmp_path, "nodes")
        log = tmp_path / "sweep.log"
        env = sweep_env(ray_tmp, RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="disabled")
        rc = run_sweep(config, env=env, log=log)
        assert rc == 0, tail(log)
        sweep = tmp_path / "runs" / "nodes"
        reported = {r["node_id"] for d in trial_dirs(sweep) for r in results_of(d)}
        assert reported == node_ids, tail(log)
        assert (sweep / "arg_table.md").exists()
    finally:
        cluster.shutdown()


@pytest.mark.ray_cluster
@pytest.mark.timeout(600)
def test_ray_job_submit_runs_the_sweep(tmp_path, ray_tmp):
    # Ray >= 2.50 turns token auth on for `ray start --head`; the test gives the head and the
    # CLI the same token through the environment, as a user would with RAY_AUTH_TOKEN.
    env = sweep_env(ray_tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env['PATH']}"  # `python` in the job = the venv's
    ray = str(Path(PYTHON).parent / "ray")
    dashboard = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dashboard,
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port(),
             "--node-manager-port": free_port(), "--object-manager-port": free_port()}
    start = [ray, "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
             "--include-dashboard=true", "--num-cpus=2", "--object-store-memory=150000000",
             f"--temp-dir={ray_tmp}", "--disable-usage-stats", *[f"{k}={v}" for k, v in ports.items()]]
    try:
        r = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        config = write_sweep(tmp_path, "job")
        submit = [ray, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", str(ROOT),
                  "--", "python", "search/sweep.py", "--config", str(config)]
        r = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-5000:]
        assert "succeeded" in out, out[-3000:]
        sweep = tmp_path / "runs" / "job"
        assert len(trial_dirs(sweep)) == 4
        assert (sweep / "arg_table.md").exists() and (sweep / "mlflow.db").exists()
    finally:
        kill_ray_under(ray_tmp)  # this head's processes only, by pid (never `ray stop`)


def _project_setup(config: dict) -> str:
    return next(c for c in config["setup_commands"] if "git clone" in c)


def test_every_node_installs_the_same_pinned_commit(tmp_path):
    """Nodes the autoscaler starts later check out the pinned commit, never the newest one, and
    install the locked stack; the placeholder commit stops `ray up` with a one-line error."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    setup = _project_setup(config)
    assert "git pull" not in setup and "./install.sh" in setup

    def git(*args, cwd):
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    origin, work = tmp_path / "origin.git", tmp_path / "work"
    git("init", "--quiet", "--bare", str(origin), cwd=tmp_path)
    git("clone", "--quiet", str(origin), str(work), cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", "pinned", cwd=work)
    git("push", "--quiet", "origin", "HEAD", cwd=work)
    pinned = git("rev-parse", "HEAD", cwd=work)

    def start_node(name: str, commit: str) -> subprocess.CompletedProcess:
        cmd = (setup.replace("https://github.com/promptinit/promptinit.git", str(origin))
               .replace("PYTHON=python3 ./install.sh", "echo installed")
               .replace("COMMIT=0000000000000000000000000000000000000000;", f"COMMIT={commit};"))
        home = tmp_path / name
        home.mkdir()
        return subprocess.run(["bash", "-c", cmd], env={**os.environ, "HOME": str(home)},
                              capture_output=True, text=True, timeout=60)

    first = start_node("node1", pinned)
    assert first.returncode == 0 and "installed" in first.stdout, first.stderr
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", "newer", cwd=work)
    git("push", "--quiet", "origin", "HEAD", cwd=work)  # pushed between the two node starts
    assert start_node("node2", pinned).returncode == 0
    for node in ("node1", "node2"):
        assert git("rev-parse", "HEAD", cwd=tmp_path / node / "promptinit") == pinned
    unset = start_node("node3", "0000000000000000000000000000000000000000")
    assert unset.returncode == 2 and unset.stderr.strip().count("\n") == 0
    assert "COMMIT" in unset.stderr and not (tmp_path / "node3" / "promptinit").exists()
