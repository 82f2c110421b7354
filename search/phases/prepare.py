"""Phase 2, prepare: the sweep folder, MLflow's parent run, Ray, and what every later phase shares.

The first phase that writes: ``<sweep>/promptinit-sweep.json`` (the parent run, the tracking URI,
the validated config), the MLflow experiment (a model-training experiment, so the UI opens on
its runs) and the parent run (new, or reopened on ``--resume``; on a resume without Tune's state,
``rebuild``, new when the store lost it), then ``ray.init``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptinit.errors import PromptinitError, read_json
from promptinit.files import atomic_write_json
from promptinit.search.phases import tracking
from promptinit.search.phases.check import RECORD_FILE, Checked
from promptinit.search.phases.config import SweepConfig, config_dict
from promptinit.search.phases.jobs import Runner
from promptinit.search.phases.searcher import optuna_storage_url
from promptinit.tasks.task import Task

logger = logging.getLogger(__name__)

FINAL_DIR = "final"  # <sweep>/final/: finished jobs' results, retrained upstream checkpoints
AUTO_GPU_FRACTION = 0.25  # resources.gpu: auto -> this share of a GPU per trial when GPUs exist
# Every report carries a checkpoint, so Tune snapshots the experiment often; that is what makes
# --resume lose little, and the experiment state is small, so its warning about it is noise.
SYNC_WARNING_ENV = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"


@dataclass(frozen=True)
class Context:
    """What every phase after this one needs.

    Attributes:
        backbone: ``BackboneConfig`` fields (plain values: they travel to Ray workers).
        source: the source tasks, most similar to the targets first.
        seed: the methods' seed (the search's upstream seed).
        runner: runs and keeps the jobs of the phases after the search.
        dtype: the dtype ``auto`` resolves to on this node (recorded in exports).
        cpu: CPUs per trial and per job.
        gpu: GPUs per trial and per job.
    """

    backbone: dict
    source: tuple[Task, ...]
    seed: int
    runner: Runner
    dtype: str
    cpu: float
    gpu: float


@dataclass(frozen=True)
class Run:
    """The sweep's MLflow parent run."""

    uri: str
    experiment: str
    parent: str


@dataclass(frozen=True)
class Prepared:
    ctx: Context
    run: Run


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: ``ray job stop`` and schedulers send it; unwinding through ``finally``
    closes the MLflow runs (FAILED) instead of leaving them RUNNING; ``--resume`` continues."""
    raise KeyboardInterrupt(f"signal {signum}")


def out_of_memory(err: BaseException) -> str | None:
    """What to do when Ray's memory monitor killed a worker (``ray.exceptions.OutOfMemoryError``
    in ``err``'s chain: Tune does not count it as a trial's failure and ends the whole run), or
    None for another error. Everything finished is kept, so the advice is ``--resume``."""
    from ray.exceptions import OutOfMemoryError

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OutOfMemoryError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    return (
        f"Ray's memory monitor killed a worker ({first}); finished trials, kept jobs and checkpoints "
        "are kept: free memory on the node, or lower budget.max_concurrent_trials (or raise "
        "resources.cpu so fewer run at once), then run again with --resume"
    )


def connect_ray(cfg: SweepConfig) -> None:
    """``ray.init()``: the cluster of ``RAY_ADDRESS`` or of the submitted job, else a local Ray
    sized by the config's ``ray`` block. Workers import ``promptinit.trainables`` from the
    installed package."""
    import ray

    if ray.is_initialized():  # a caller (tests, notebooks, a study) connected already
        return
    os.environ.setdefault(SYNC_WARNING_ENV, "0")
    kwargs: dict[str, Any] = {}
    if not os.environ.get("RAY_ADDRESS"):
        kwargs = {k: v for k, v in cfg.ray.model_dump().items() if v is not None}
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)  # ray.init installed its own; ours closes the runs


def trial_resources(cfg: SweepConfig) -> tuple[float, float]:
    """(CPUs, GPUs) per trial; ``gpu: auto`` shares GPUs when the cluster has any."""
    import ray

    gpu = cfg.resources.gpu
    if gpu == "auto":
        gpu = AUTO_GPU_FRACTION if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        if not gpu and os.environ.get("RAY_ADDRESS"):  # a cluster, maybe one whose GPU workers start later
            logger.warning(
                "resources.gpu: auto found no GPU on the cluster now, so trials and jobs ask for none; an "
                "autoscaling cluster whose GPU workers start later would run them there unscheduled on GPU "
                "0 (docs/cluster.md); set resources.gpu to a fraction such as 0.25 for a GPU cluster"
            )
    return cfg.resources.cpu, float(gpu)


def context(cfg: SweepConfig, source: tuple[Task, ...], shared: Sequence[Path] = ()) -> Context:
    """Connect to Ray and build the shared context (the runner keeps jobs in ``<sweep>/final`` and
    reuses those kept in the ``shared`` folders)."""
    from promptinit.backbones import BackboneConfig
    from promptinit.backbones.backbone import resolve_dtype

    connect_ray(cfg)
    cpu, gpu = trial_resources(cfg)
    backbone = BackboneConfig(
        cfg.model,
        prompt_length=cfg.prompt_length,
        dtype=cfg.dtype,
        attn_implementation=cfg.attn_implementation,
        max_input_tokens=cfg.max_input_tokens,
    )
    dtype = str(resolve_dtype(backbone.dtype, backbone.resolved_device()))  # `auto` as this node resolves it
    runner = Runner(cfg.sweep_dir / FINAL_DIR, cpu, gpu, shared=shared)
    rekeyed = runner.rekey()
    if rekeyed:
        logger.info(
            "%s: %d kept jobs re-keyed by their checkpoint's name instead of its absolute path", runner.folder, rekeyed
        )
    return Context(
        dataclasses.asdict(backbone),
        source,
        cfg.seed,
        runner,
        dtype,
        cpu,
        gpu,
    )


def sweep(checked: Checked) -> Prepared:
    """Create (or reopen) the sweep's folder and MLflow parent run, then connect to Ray."""
    cfg = checked.cfg
    cfg.sweep_dir.mkdir(parents=True, exist_ok=True)
    uri = checked.tracking_uri
    experiment = tracking.experiment_id(uri, cfg.name, cfg.sweep_dir)
    if checked.rebuild:
        parent = _rebuilt_parent(checked, experiment)
    else:
        parent = _reopen(checked) if checked.resume else _new_parent(checked, experiment)
    logger.info(
        "sweep %s: %s\nMLflow: %s (experiment %r, parent run %s); with `mlflow ui`: %s",
        cfg.name,
        cfg.sweep_dir,
        uri,
        cfg.name,
        parent,
        tracking.ui_link(experiment),
    )
    return Prepared(context(cfg, checked.tasks.source, checked.shared), Run(uri, experiment, parent))


def _reopen(checked: Checked) -> str:
    from mlflow.exceptions import MlflowException

    parent = checked.record["parent_run_id"]
    try:
        tracking.client(checked.tracking_uri).update_run(parent, status="RUNNING")
    except MlflowException as err:
        raise PromptinitError(
            f"{checked.cfg.sweep_dir / RECORD_FILE}: field 'parent_run_id': MLflow run {parent} at "
            f"{checked.tracking_uri} cannot be reopened ({' '.join(str(err).split())[:200]}); resume with the "
            "tracking store this sweep logged to"
        ) from None
    return parent


def _rebuilt_parent(checked: Checked, experiment: str) -> str:
    """A sweep resumed without Tune's state (``rebuild``): its recorded parent run when this store
    still has it (runs of trials that had not finished are closed FAILED, tagged orphaned); else a
    new parent run with the kept trials replayed as its child runs."""
    from mlflow.exceptions import MlflowException

    from promptinit.search.phases.rebuild import kept_trials, replay_runs
    from promptinit.search.phases.searcher import TUNE_TRIAL_ATTR

    cfg, uri, parent = checked.cfg, checked.tracking_uri, checked.record.get("parent_run_id")
    kept = kept_trials(cfg.sweep_dir)
    if parent and checked.record.get("tracking_uri") == uri:
        try:
            tracking.client(uri).update_run(parent, status="RUNNING")
        except MlflowException:  # the store lost it (a sqlite file that stayed behind): a new one
            pass
        else:
            ended = {t[TUNE_TRIAL_ATTR]: ("ERROR" if t["state"] == "FAIL" else "TERMINATED", None) for t in kept}
            tracking.close_open_children(uri, experiment, parent, ended)  # the others: lost, orphaned
            return parent
    parent = _new_parent(checked, experiment)
    replay_runs(uri, experiment, parent, cfg.sweep_dir, kept)
    logger.info("resume: MLflow parent run %s is new; the %d kept trials replayed as its child runs", parent, len(kept))
    return parent


def _new_parent(checked: Checked, experiment: str) -> str:
    cfg, uri = checked.cfg, checked.tracking_uri
    record_file = cfg.sweep_dir / RECORD_FILE
    _close_earlier_attempt(record_file, uri)
    c = tracking.client(uri)
    parent = c.create_run(
        experiment,
        run_name=cfg.name,
        tags={
            tracking.ROLE_TAG: "sweep",
            tracking.SWEEP_TAG: str(cfg.sweep_dir),
            "partition": checked.partition.name,
            "model": cfg.model,
            "config_file": checked.where,
        },
    ).info.run_id
    tracking.log_dict(parent, uri, params=tracking.flat_params(config_dict(cfg)))
    atomic_write_json(
        record_file,
        {
            "parent_run_id": parent,
            "tracking_uri": uri,
            "experiment_id": experiment,
            "config": config_dict(cfg),
            "optuna_storage": optuna_storage_url(cfg.sweep_dir),
            "optuna_study": cfg.name,
        },
        indent=1,
    )
    return parent


def _close_earlier_attempt(record_file: Path, uri: str) -> None:
    """An earlier attempt that died before Tune saved anything left its parent run RUNNING: close it.

    Only a run the store no longer has is skipped; any other MLflow error (auth, network) is raised.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        record = read_json(record_file) if record_file.is_file() else {}
    except PromptinitError:  # unreadable: it is replaced
        return
    if not isinstance(record, dict) or not record.get("parent_run_id") or record.get("tracking_uri") != uri:
        return
    c = tracking.client(uri)
    try:
        status = c.get_run(record["parent_run_id"]).info.status
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return  # the run is gone from the store: nothing to close
    if status == "RUNNING":
        c.set_terminated(record["parent_run_id"], "FAILED")
