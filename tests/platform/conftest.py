"""Helpers of the platform tests: sweep YAMLs in temporary folders, the sweep script run the
way a user runs it, a real MLflow tracking server, and cleanup of every process a test starts.

Each test gets its own Ray temp dir (``RAY_TMPDIR``), storage path and MLflow experiment;
processes are ended by their own ids (never ``ray stop``, which would stop other users' Ray).
"""
from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY_TEST = ROOT / "configs" / "sweep" / "tiny-test.yaml"
SWEEP = ROOT / "search" / "sweep.py"
PYTHON = sys.executable


def pytest_configure(config):
    config.addinivalue_line("markers", "ray_cluster: starts extra Ray nodes or a Ray head (multi-node, job submit)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_update(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = v
    return out


def write_sweep(folder: Path, name: str, **changes: Any) -> Path:
    """A copy of ``tiny-test.yaml`` with ``changes``, storage in ``folder``; returns its path."""
    raw = yaml.safe_load(TINY_TEST.read_text())
    raw["partition"] = str((TINY_TEST.parent / raw["partition"]).resolve())
    raw = deep_update(raw, {"name": name, "storage_path": str(folder / "runs"), **changes})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def short_tmp() -> Path:
    # Ray's socket paths must stay under ~107 characters: pytest's tmp_path is too long.
    return Path(tempfile.mkdtemp(prefix="pi-ray-", dir="/tmp"))


def sweep_env(ray_tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(RAY_TMPDIR=str(ray_tmp), PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0", **extra)
    return env


def start_sweep(config: Path, *args: str, env: dict[str, str], log: Path, script: Path = SWEEP) -> subprocess.Popen:
    """Start ``python search/sweep.py --config CONFIG`` (or another ``script``) in its own process group."""
    out = log.open("wb")
    return subprocess.Popen([PYTHON, str(script), "--config", str(config), *args], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL, grace: float = 5) -> None:
    """End a process this test started and all its descendants, by pid."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def run_sweep(config: Path, *args: str, env: dict[str, str], log: Path, timeout: float = 400,
              script: Path = SWEEP) -> int:
    """Run the sweep script (or ``script``) to the end; the exit code. Kills its process group on timeout."""
    proc = start_sweep(config, *args, env=env, log=log, script=script)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail(f"sweep timed out after {timeout} s; log tail:\n{tail(log)}")


def tail(log: Path, n: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def kill_ray_under(ray_tmp: Path) -> None:
    """Kill processes of the Ray instance whose temp dir is ``ray_tmp`` (by pid, SIGKILL)."""
    import psutil

    key = str(ray_tmp)
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            # Ray's agents rename themselves (ray::DashboardAgent); they still carry the
            # RAY_TMPDIR the test gave them.
            if f"{key}/" in " ".join(p.info["cmdline"] or []) or p.environ().get("RAY_TMPDIR") == key:
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass


@pytest.fixture
def ray_tmp():
    """A short private Ray temp dir; whatever Ray left running under it is killed afterwards."""
    folder = short_tmp()
    yield folder
    kill_ray_under(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server():
    """A real ``mlflow server`` on a free loopback port with a sqlite store in a temp dir."""
    import urllib.request

    folder = short_tmp()
    port = free_port()
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start:\n{tail(folder / 'server.log')}")
            time.sleep(1)
        yield uri
    finally:
        kill_tree(proc, signal.SIGTERM)  # the server's uvicorn and huey workers too
        shutil.rmtree(folder, ignore_errors=True)


def mlflow_runs(uri: str, experiment: str) -> tuple[Any, list]:
    """(parent run, child runs) of the sweep logged to experiment ``experiment``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("promptinit.role") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def trial_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "result.json").exists())


def results_of(trial_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def keep_only_portable_files(folder: Path) -> None:
    """Delete from a sweep or study folder all but its portable files (``rebuild.portable_files``):
    what a fresh machine has of a run whose results were committed as they arrived."""
    from promptinit.search.phases.rebuild import portable_files

    keep = {p.resolve() for p in portable_files(folder)}
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and path.resolve() not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    left = [p.name for p in folder.rglob("*") if p.suffix in (".pkl", ".db") or p.name.startswith("experiment_state")]
    assert not left, left


@pytest.fixture(scope="module")
def database(tmp_path_factory, request):
    """One sqlite MLflow store per test module (creating MLflow's tables takes seconds)."""
    from promptinit.search.phases import tracking

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    return uri, tracking.experiment_id(uri, request.module.__name__.rsplit(".", 1)[-1], folder)


@pytest.fixture
def store(database):
    """``(uri, experiment id, parent run id)``: a fresh sweep parent run in the module's store."""
    from promptinit.search.phases import tracking

    uri, exp = database
    parent = tracking.client(uri).create_run(exp, run_name="sweep", tags={tracking.ROLE_TAG: "sweep"}).info.run_id
    return uri, exp, parent
