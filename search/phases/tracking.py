"""MLflow: one parent run per sweep, one child run per trial, and no run left RUNNING.

Why our own Tune ``Callback`` and not ``ray.air.integrations.mlflow.MLflowLoggerCallback``:
the Ray callback keeps its trial -> run map only in memory (``setup()`` resets it and it has
no ``get_state``), so after a driver kill and ``--resume`` a continued trial opens a second
run and the first stays RUNNING forever; it cannot tag ASHA-stopped trials; and it logs every
result key (config copies, strings) as metrics. ``TrialRuns`` below keeps the map in Tune's
callback state (checkpointed with the experiment) and, as a fallback, finds a trial's run by
its ``promptinit.trial_id`` tag, so a resumed trial continues its own run.

Terminal status: ``on_trial_complete`` (finished, or stopped by ASHA: tag
``stopped_early=true``) -> FINISHED; ``on_trial_error`` (raised, NaN, out of retries) ->
FAILED; ``on_trial_recover`` (will be retried) keeps the run RUNNING. The driver closes what a
killed driver left open (``close_open_children``) and ends the parent run in ``finally``.

Optuna: the searcher (``searcher.StudySearcher``) keeps its study in ``<sweep>/optuna.db`` (sqlite, study
name = sweep name), so ``optuna-dashboard sqlite:///<sweep>/optuna.db`` shows every trial's
parameters, value and intermediate values, during the sweep and after; ``--resume`` continues
the same study and closes the trials a killed driver left open, as it does with the runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ray import tune

from promptinit.trainables import metrics as M

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "promptinit.trial_id"
SWEEP_TAG = "promptinit.sweep_dir"
ROLE_TAG = "promptinit.role"  # "sweep" (parent) or "trial" (child)
STOPPED_TAG = "stopped_early"
ORPHAN_TAG = "orphaned"  # a run whose trial the resumed sweep no longer knows (see close_open_children)
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
RUN_STATES = ("RUNNING", "SCHEDULED")  # states that are not terminal
_RESULT_METRICS = ("training_iteration", "time_total_s", "time_this_iter_s")


def resolve_tracking_uri(configured: str | None, sweep_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the sweep YAML's ``tracking_uri``, else a sqlite
    file in the sweep directory (MLflow 3 disables the file store)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{Path(sweep_dir).resolve()}/mlflow.db"


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# The MLflow UI (3.x) opens an experiment without this tag on its GenAI "Overview/Traces" page;
# "custom_model_development" ("Machine learning" in the UI) opens the runs table, where sweeps live.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def ui_link(experiment: str, host: str = "http://127.0.0.1:5000") -> str:
    """The experiment's page in the MLflow UI (``mlflow ui``'s default host), on its runs table:
    MLflow 3.17's UI opens on the GenAI Overview unless the URL (or the browser's last choice)
    says ``workflowType=machine_learning``."""
    return f"{host}/#/experiments/{experiment}?workflowType=machine_learning"


def experiment_id(uri: str, name: str, sweep_dir: Path) -> str:
    """The id of experiment ``name``, created when missing and marked as a model-training
    experiment (local stores keep artifacts in the sweep directory instead of ``./mlruns`` of
    whatever the working directory is)."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
        location = (Path(sweep_dir).resolve() / "mlartifacts").as_uri() if local else None
        return c.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # an experiment made before promptinit set the tag
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return exp.experiment_id


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested trial config as MLflow params: ``{"maml/inner_lr": "3e-05", ...}``."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_params(v, f"{key}/"))
        else:
            out[key] = str(v)[:MAX_PARAM_CHARS]
    return out


def _numeric(result: Mapping[str, Any]) -> dict[str, float]:
    # Our metrics carry a slash; Tune's own bookkeeping values are kept for the time axis.
    return {
        k: float(v)
        for k, v in result.items()
        if ("/" in k or k in _RESULT_METRICS) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def log_dict(
    run_id: str,
    uri: str,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    step: int = 0,
) -> None:
    """Log metrics, params and tags to a run in one request."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client(uri).log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


def target_metrics(table) -> dict[str, float]:
    """The parent run's target metrics, the numbers of the sweep's ARG table: per method, the
    difference with PT, ARG and P(>PT) with the bounds of their 95 % intervals, and the Wilcoxon
    p-value (values that are NaN in the table, e.g. bounds with one seed per task, are left out).

    Args:
        table: ``analysis.TargetTable.table`` (one row per method; fractions).

    Returns:
        ``{"target/diff/maml": ..., "target/diff_lo/maml": ..., "target/diff_hi/maml": ..., ...}``.
    """
    import math

    out: dict[str, float] = {}
    for r in table.to_dict("records"):
        m = r["method"]
        for name, column in ((M.TARGET_DIFF, "diff"), (M.TARGET_ARG, "arg"), (M.TARGET_P_IMPROVE, "p_improve")):
            for suffix, part in (("", "mean"), ("_lo", "lo"), ("_hi", "hi")):
                out[f"{name}{suffix}/{m}"] = r[f"{column}_{part}"]
        out[f"{M.TARGET_P_VALUE}/{m}"] = r["p_value"]
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def child_runs(uri: str, experiment: str, parent_run_id: str) -> list:
    """Every child run of a sweep's parent run."""
    return client(uri).search_runs(
        [experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10000
    )


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:500]
    return "trial errored"


def create_child(uri: str, experiment: str, parent_run_id: str, trial_id: str, config: Mapping[str, Any]) -> str:
    """A new child run for Tune trial ``trial_id`` (tagged with it), its config logged as params."""
    method = config.get("method", "")
    run = client(uri).create_run(
        experiment,
        run_name=f"{method}-{trial_id}",
        tags={PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial", "method": method},
    )
    log_dict(run.info.run_id, uri, params=flat_params(config))
    return run.info.run_id


def log_result(run_id: str, uri: str, result: Mapping[str, Any]) -> None:
    """One Tune report in a trial's run: its numeric metrics at the report's upstream step (and, as
    tags, the node it came from and the trial a replayed report was replayed from)."""
    log_dict(
        run_id,
        uri,
        metrics=_numeric(result),
        tags={k: str(result[k]) for k in (M.NODE_ID, M.REPLAY_OF) if k in result},
        step=int(result.get(M.STEP, result.get("training_iteration", 0))),
    )


class TrialRuns(tune.Callback):
    """A Tune callback that mirrors every trial into a child run of the sweep's parent run.

    Args:
        tracking_uri: where the runs go.
        experiment_id: the MLflow experiment of the sweep.
        parent_run_id: the sweep's parent run.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._client = None

    # Tune pickles callbacks into the experiment state; the client holds a DB engine.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self):
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    def get_state(self) -> dict:
        return {"runs": dict(self._runs)}

    def set_state(self, state: dict) -> None:
        self._runs.update(state.get("runs", {}))

    def _find(self, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def run_id(self, trial) -> str:
        """The trial's child run: known, found by tag (after a resume), or created now."""
        rid = self._runs.get(trial.trial_id) or self._find(trial.trial_id)
        if rid is None:
            rid = create_child(self.tracking_uri, self.experiment_id, self.parent_run_id, trial.trial_id, trial.config)
        self._runs[trial.trial_id] = rid
        return rid

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        rid = self.run_id(trial)
        if self.client.get_run(rid).info.status != "RUNNING":  # errored before, resumed now
            self.client.update_run(rid, status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        log_result(self.run_id(trial), self.tracking_uri, result)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        # Tune retries the trial from its last checkpoint: same run, still RUNNING.
        self.client.set_tag(self.run_id(trial), "num_failures", str(trial.num_failures))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        rid = self.run_id(trial)
        self.client.set_tag(rid, STOPPED_TAG, str(stopped_early(trial.last_result)).lower())
        self.client.set_terminated(rid, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        rid = self.run_id(trial)
        self.client.set_tag(rid, "error", _error_line(trial))
        self.client.set_terminated(rid, "FAILED")


def stopped_early(last_result: Mapping[str, Any] | None) -> bool:
    """Whether a completed trial ended before its planned steps (ASHA stopped it)."""
    last = last_result or {}
    return M.STEP in last and M.TOTAL_STEPS in last and last[M.STEP] < last[M.TOTAL_STEPS]


def close_open_children(
    uri: str,
    experiment: str,
    parent_run_id: str,
    trial_states: Mapping[str, tuple[str, Mapping[str, Any] | None]],
    keep_running: Iterable[str] = (),
) -> dict[str, str]:
    """End the parent's child runs that are still RUNNING although their trial is over.

    Called on ``--resume`` before Tune continues (a killed driver left runs open) and after
    the search as a last guard.

    Args:
        uri: tracking URI.
        experiment: experiment id.
        parent_run_id: the sweep's parent run.
        trial_states: trial id -> (Tune status, last result): ``TERMINATED`` -> FINISHED
            (tagged ``stopped_early`` when it ended before its planned steps), ``ERROR`` ->
            FAILED.
        keep_running: trial ids Tune will continue; their runs stay open.

    Returns:
        run id -> the status it was given.
    """
    c = client(uri)
    keep = set(keep_running)
    closed = {}
    for run in child_runs(uri, experiment, parent_run_id):
        if run.info.status not in RUN_STATES:
            continue
        trial_id = run.data.tags.get(TRIAL_TAG, "")
        if trial_id in keep:
            continue
        status, last = trial_states.get(trial_id, ("UNKNOWN", None))
        if status == "TERMINATED":
            c.set_tag(run.info.run_id, STOPPED_TAG, str(stopped_early(last)).lower())
            closed[run.info.run_id] = "FINISHED"
        else:
            # ERROR, or a trial Tune never recorded: the driver died after the trial started but
            # before Tune's next experiment snapshot, so the resumed search re-proposes it as a
            # new trial (the searcher state is from that snapshot too).
            c.set_tag(run.info.run_id, "closed_by", f"sweep driver (trial status {status})")
            if status == "UNKNOWN":
                c.set_tag(run.info.run_id, ORPHAN_TAG, "true")
            closed[run.info.run_id] = "FAILED"
        c.set_terminated(run.info.run_id, closed[run.info.run_id])
    return closed
