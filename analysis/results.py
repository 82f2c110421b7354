"""Load a sweep's results into one tidy table, from its Tune directory or from MLflow.

A sweep directory (written by ``search/sweep.py``) holds:

- Tune's experiment (``experiment_state-*.json``) and one folder per trial with Tune's
  ``params.json`` (the config) and ``result.json`` (one JSON line per report), and kept
  ``checkpoint_*`` folders with the prompt (``prompt.safetensors``);
- ``promptinit-sweep.json``: the validated sweep config, the MLflow tracking URI, experiment id
  and parent run id;
- ``trials.json``: the search's finished trials (a search resumed without Tune's state ran its
  later trials in a new experiment, whose state lacks the earlier ones);
- ``arg_table.csv``: per method, its best prompt against PT on the target tasks (the statistics,
  the chosen trial, its validation objective and ARG, trial counts; ``analysis.tables.write_target_table``);
- ``target_scores.csv``: the per-pair test scores those statistics come from, one row per
  (method, target task, few-shot seed): the method's score, PT's and the number of test
  examples each rests on, so any table can recompute them (sweeps from before it have none:
  their tables say so);
- ``exports/<method>/``: the exported best prompts.

Trials come from Tune's public ``ExperimentAnalysis`` (status, resources) and the trial folders'
``result.json`` (the validation curve); when Ray is not importable or the experiment state is
missing, the folders alone are read (also when it is unreadable, with a ``FallbackWarning``).
``load_mlflow`` builds the same table from the sweep's MLflow runs (one child run per trial
under the sweep's parent run).

One row per trial; columns (``TRIAL_COLUMNS``): sweep, partition, trial_id, method, status
(finished | failed | running | pending), params (dict of the method's settings), one
``param/<name>`` column per setting, curve (list of ``{step, iteration, val, val_arg, time_s,
timestamp}``: ``val`` the search objective, ``timestamp`` the report's Unix time, NaN where not
recorded), objective (the sweep's ``search.objective``: ``delta`` or ``arg``), val (the objective at
the best report, by the objective), val_se (its standard error over the validation pairs), val_last
(the last report's), val_arg and val_arg_se (ARG at that best report), best_step, best_checkpoint
(folder or None; the kept checkpoint best by the objective), steps_done, total_steps,
stopped_early, reports, wall_s, cpu, gpu (per-trial resources), cpu_s, gpu_s,
resources_note, source (tune | mlflow), run_id.

``cpu``/``gpu`` are the trial's own reservation from Tune's experiment state; where that is not
available they come from the sweep config (``resources``) or the parent run's params, and
``resources_note`` says so and why (None when they are the trial's own). A GPU share that is
not known (``resources.gpu: auto`` is decided by the cluster at run time) is NaN, never 0, so
GPU hours show as unknown instead of as none. When a fallback is forced by a failure (Tune's
experiment state unreadable, a trial's resources missing from it), ``load_sweep`` also warns
once (``FallbackWarning``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from promptinit.errors import PromptinitError, read_json
from promptinit.spaces.space import SOURCES_KEY

META_FILE = "promptinit-sweep.json"  # search/sweep.py META_FILE
ARG_TABLE = "arg_table.csv"  # analysis.tables.write_target_table
TARGET_SCORES = "target_scores.csv"  # the per-pair scores behind it (same writer)
SCORE_COLUMNS = ["partition", "method", "task", "seed", "upstream_seed", "score", "pt", "n_test"]
EXPORTS = "exports"  # <sweep>/exports/<method>/: analysis.export.export_best
CHECKPOINT_PROMPT = "prompt.safetensors"  # trainables/trainable.py PROMPT_FILE
CHECKPOINT_STATE = "trial.json"  # trainables/trainable.py STATE_FILE
KEPT_FILE = "trials.json"  # the search's finished trials (search/phases/searcher.py KEPT_FILE)

# Metric names reported by the trainable (trainables/metrics.py); read, never imported, so
# the analysis runs without the platform's packages.
VAL_ARG = "val/arg"
VAL_ARG_SE = "val/arg_se"
VAL_DELTA = "val/delta"
VAL_DELTA_SE = "val/delta_se"
# ``search.objective`` -> the metric a sweep ranked its trials by and its SE (trainables/metrics.py
# OBJECTIVES); a sweep recorded before the setting existed (6 Dec 2026) ranked them by ARG.
OBJECTIVE_METRICS = {"arg": (VAL_ARG, VAL_ARG_SE), "delta": (VAL_DELTA, VAL_DELTA_SE)}
# A target row's chosen trial by the objective: in the search, its SE, re-scored on fresh seeds, its SE.
OBJECTIVE_VALUES = ("val", "val_se", "val_rescored", "val_rescored_se")
LEGACY_OBJECTIVE = "arg"
STEP = "upstream/step"
TOTAL_STEPS = "upstream/total_steps"
# A replayed trial's reports (trainables/replay.py) carry the trial-seconds of the trial they came
# from up to its last replayed report; added to Tune's time_total_s, the cost stays the computed one.
REPLAYED_SECONDS = "replay/trial_s"
TARGET_ARG = "target/arg"

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "promptinit.trial_id"
ROLE_TAG = "promptinit.role"
STOPPED_TAG = "stopped_early"
_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"

TRIAL_COLUMNS = [
    "sweep",
    "partition",
    "trial_id",
    "method",
    "status",
    "params",
    "curve",
    "objective",
    "val",
    "val_se",
    "val_last",
    "val_arg",
    "val_arg_se",
    "best_step",
    "best_checkpoint",
    "steps_done",
    "total_steps",
    "stopped_early",
    "reports",
    "wall_s",
    "cpu",
    "gpu",
    "cpu_s",
    "gpu_s",
    "resources_note",
    "source",
    "run_id",
]
# One row per (partition, method): ``scores`` the method's test score per (task, seed) (or per
# (task, seed, upstream seed)), ``baseline`` PT's per (task, seed), ``n_test`` the test examples
# per (task, seed) ({} where unknown); ``arg_mean`` and ``per_task`` (RG per task, mean over
# seeds) are computed from them, or read from an old record without them (``scores`` {}).
TARGET_COLUMNS = [
    "sweep",
    "partition",
    "method",
    "trial_id",
    "arg_mean",
    "n_seeds",
    "per_task",
    "scores",
    "baseline",
    "n_test",
    "val_arg",
    "val_arg_se",
    "val_arg_rescored",
    "val_arg_rescored_se",
    "objective",
    "val",
    "val_se",
    "val_rescored",
    "val_rescored_se",
    "trials",
    "finished",
    "settings",
    "test_per_seed",
]
_STATUS = {
    "TERMINATED": "finished",
    "ERROR": "failed",
    "RUNNING": "running",
    "PAUSED": "running",
    "PENDING": "pending",
    "FINISHED": "finished",
    "FAILED": "failed",
    "KILLED": "failed",
    "SCHEDULED": "pending",
}


class FallbackWarning(UserWarning):
    """Results were read from a fallback source because the primary one failed (the reason is
    also recorded in the table, e.g. column ``resources_note``)."""


@dataclass
class Sweep:
    """One sweep's results.

    Attributes:
        dir: the sweep directory (None when loaded from MLflow alone).
        name: the sweep's name.
        partition: its partition's name.
        config: the validated sweep config (plain values), when known.
        meta: ``promptinit-sweep.json`` (tracking URI, experiment and parent run ids).
        trials: the tidy trial table (``TRIAL_COLUMNS`` + ``param/<name>``).
        targets: per method, its best prompt's per-pair target scores and PT's (``TARGET_COLUMNS``).
    """

    dir: Path | None
    name: str
    partition: str
    config: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    trials: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRIAL_COLUMNS))
    targets: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TARGET_COLUMNS))

    @property
    def tracking_uri(self) -> str | None:
        return self.meta.get("tracking_uri")

    @property
    def parent_run_id(self) -> str | None:
        return self.meta.get("parent_run_id")

    @property
    def model(self) -> str | None:
        return self.config.get("model")


# --------------------------------------------------------------------------- helpers


def _num(value: Any) -> float:
    """A float, NaN for missing or non-numeric values."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def parse_value(text: str) -> Any:
    """An MLflow param string back to a plain value: int, float, bool, None or str."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def sweep_objective(config: Mapping[str, Any]) -> str:
    """The objective a sweep ranked its trials by (``search.objective`` of its config, or of its
    MLflow parent run's params); ``arg`` for a sweep recorded before the setting existed."""
    name = (config.get("search") or {}).get("objective") or config.get("search/objective") or LEGACY_OBJECTIVE
    if name not in OBJECTIVE_METRICS:
        raise PromptinitError(
            f"field 'search.objective': {name!r} is not one of {sorted(OBJECTIVE_METRICS)}; the sweep's record "
            "is from another promptinit version"
        )
    return str(name)


def _curve_and_summary(results: list[dict], trial_dir: Path | None, objective: str) -> dict[str, Any]:
    """Validation curve and final numbers from a trial's reports (Tune results); "best" is by the
    search objective (``sweep_objective``)."""
    metric, metric_se = OBJECTIVE_METRICS[objective]
    curve, best, best_ckpt = [], None, None
    for r in results:
        v = _num(r.get(metric))
        point = {
            "step": _num(r.get(STEP, r.get("training_iteration"))),
            "iteration": _num(r.get("training_iteration")),
            "val": v,
            "val_arg": _num(r.get(VAL_ARG)),
            "time_s": _trial_seconds(r),
            "timestamp": _num(r.get("timestamp")),
        }
        curve.append(point)
        if math.isfinite(v) and (best is None or v > _num(best.get(metric))):
            best = r
        name = r.get("checkpoint_dir_name")
        if name and trial_dir is not None and (trial_dir / name / CHECKPOINT_PROMPT).is_file() and math.isfinite(v):
            if best_ckpt is None or v > best_ckpt[0]:
                best_ckpt = (v, trial_dir / name)
    last = results[-1] if results else {}
    return {
        "curve": curve,
        "objective": objective,
        "val": _num(best.get(metric)) if best else math.nan,
        "val_se": _num(best.get(metric_se)) if best else math.nan,
        "val_last": _num(last.get(metric)),
        "val_arg": _num(best.get(VAL_ARG)) if best else math.nan,
        "val_arg_se": _num(best.get(VAL_ARG_SE)) if best else math.nan,
        "best_step": _num(best.get(STEP)) if best else math.nan,
        "best_checkpoint": str(best_ckpt[1]) if best_ckpt else None,
        "steps_done": _num(last.get(STEP)),
        "total_steps": _num(last.get(TOTAL_STEPS)),
        "reports": len(results),
        "wall_s": _trial_seconds(last) if last else 0.0,
    }


def _trial_seconds(report: Mapping[str, Any]) -> float:
    """A report's trial-seconds so far: Tune's ``time_total_s``, plus those of the trial its first
    reports were replayed from (``REPLAYED_SECONDS``)."""
    replayed = _num(report.get(REPLAYED_SECONDS))
    return _num(report.get("time_total_s")) + (replayed if math.isfinite(replayed) else 0.0)


def read_results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    out = []
    lines = [
        (n, line.strip())
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if line.strip()
    ]
    for i, (n, line) in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:  # the report being written right now (running sweep)
                continue
            raise PromptinitError(
                f"{path}: line {n}: not valid JSON ({err.msg}); the trial's reports are corrupt: "
                "restore the file or delete the trial's folder"
            ) from None
    return out


def _settings(config: Mapping[str, Any]) -> tuple[str, dict]:
    """The method and its searched settings; a searched number of source tasks counts as one."""
    method = config.get("method", "")
    settings = dict(config.get(method) or {})
    if config.get(SOURCES_KEY) is not None:
        settings[SOURCES_KEY] = config[SOURCES_KEY]
    return method, settings


def _row(
    *,
    sweep: str,
    partition: str,
    trial_id: str,
    config: Mapping[str, Any],
    status: str,
    summary: Mapping[str, Any],
    cpu: float,
    gpu: float,
    source: str,
    run_id: str | None = None,
    stopped: bool | None = None,
    resources_note: str | None = None,
) -> dict[str, Any]:
    method, settings = _settings(config)
    steps, total = summary.get("steps_done", math.nan), summary.get("total_steps", math.nan)
    if stopped is None:
        stopped = bool(status == "finished" and math.isfinite(steps) and math.isfinite(total) and steps < total)
    wall = summary.get("wall_s", math.nan)
    wall = 0.0 if not math.isfinite(wall) else wall
    row = {
        "sweep": sweep,
        "partition": partition,
        "trial_id": trial_id,
        "method": method,
        "status": status,
        "params": settings,
        **summary,
        "stopped_early": stopped,
        "cpu": cpu,
        "gpu": gpu,
        "cpu_s": cpu * wall if math.isfinite(cpu) else math.nan,
        "gpu_s": gpu * wall if math.isfinite(gpu) else math.nan,
        "resources_note": resources_note,
        "source": source,
        "run_id": run_id,
    }
    row["wall_s"] = wall
    return row


def trials_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The tidy table: ``TRIAL_COLUMNS`` plus one ``param/<name>`` column per setting."""
    df = pd.DataFrame(list(rows), columns=TRIAL_COLUMNS)
    names = sorted({k for p in df["params"] for k in (p or {})})
    for n in names:
        df[f"param/{n}"] = [(p or {}).get(n) for p in df["params"]]
    return df.sort_values(["method", "trial_id"], kind="stable").reset_index(drop=True)


def curves_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Validation curves in long form: sweep, partition, method, trial_id, objective, step, iteration,
    val (the objective), val_arg, time_s."""
    rows = [
        {
            "sweep": t.sweep,
            "partition": t.partition,
            "method": t.method,
            "trial_id": t.trial_id,
            "objective": t.objective,
            **point,
        }
        for t in trials.itertuples()
        for point in (t.curve or [])
    ]
    columns = ["sweep", "partition", "method", "trial_id", "objective", "step", "iteration", "val", "val_arg", "time_s"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- sweep directory


def read_meta(sweep_dir: Path) -> dict:
    """``promptinit-sweep.json`` of a sweep directory."""
    path = sweep_dir / META_FILE
    if not path.is_file():
        raise PromptinitError(
            f"{sweep_dir}: not a promptinit sweep directory ({META_FILE} missing); "
            "pass the folder search/sweep.py printed (<storage_path>/<name>)"
        )
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise PromptinitError(f"{path}: not a sweep record (a JSON object); restore it or rerun the sweep")
    return meta


_GPU_UNKNOWN = "resources.gpu is 'auto' (decided by the cluster at run time), so GPU hours are unknown (gpu_s NaN)"


PLACEMENT = "placement"  # trainables.trainable.PLACEMENT (not imported: that module needs Ray)


def _gpus_reported(results: Sequence[Mapping[str, Any]]) -> float | None:
    """The GPUs a trial held by its own reports (``trainables.trainable.PLACEMENT``: ``gpu_ids``,
    ``"0,1"`` or empty), when every report with a placement names as many; else None. A sweep
    with ``resources.gpu: auto`` records the count Ray gave only in Tune's state, which a trial
    kept across a fresh machine no longer has; its reports still say."""
    counts = {
        len([g for g in str(r[PLACEMENT].get("gpu_ids") or "").split(",") if g.strip()])
        for r in results
        if isinstance(r.get(PLACEMENT), Mapping)
    }
    return float(counts.pop()) if len(counts) == 1 else None


def _is_dir(folder: Any) -> bool:
    return folder is not None and Path(folder).is_dir()


def _config_resources(config: Mapping[str, Any]) -> tuple[float, float]:
    """(CPUs, GPUs) per trial from the sweep config; the config's defaults (1, auto) where missing."""
    res = config.get("resources") or {}
    cpu = _num(res.get("cpu", 1))  # search/phases/config.py Resources defaults
    gpu = res.get("gpu", "auto")
    return cpu, (math.nan if gpu == "auto" else _num(gpu))  # auto: decided by the cluster, unknown here


def _fallback_note(source: str, why: str, gpu: float) -> str:
    note = f"CPU/GPU per trial from {source} ({why})"
    return note + ("; " + _GPU_UNKNOWN if not math.isfinite(gpu) else "")


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def _read_tune(sweep_dir: Path) -> tuple[list[dict] | None, str | None, bool]:
    """Trials from Tune's experiment state: ``(trials or None, why not, whether that is a failure)``.

    Each trial: trial id, status, config, folder, cpu, gpu (None: not in the state) and
    ``resources_missing`` (why its resources could not be read, else None). ``None`` trials
    with a reason when there is no state, Ray is not importable (both expected: the folders
    are read instead) or the state is unreadable (a failure: being written, or from another
    Ray version).
    """
    if not any(sweep_dir.glob("experiment_state-*.json")):
        return None, "no Tune experiment state in the sweep directory", False
    try:
        from ray.tune import ExperimentAnalysis
    except ImportError:
        return None, "Ray is not importable here, so Tune's experiment state was not read", False
    try:
        analysis = ExperimentAnalysis(str(sweep_dir))
    except Exception as err:  # noqa: BLE001 - Tune raises many types for a state it cannot read; all mean this
        return None, f"Tune's experiment state is unreadable ({_error_text(err)})", True
    out = []
    for t in analysis.trials:
        cpu = gpu = missing = None
        try:
            # None when no request was recorded: the AttributeError below says so
            resources = dict(t.placement_group_factory.required_resources)  # type: ignore[attr-defined]
        except AttributeError as err:  # no resource request recorded (a stub, another Ray version)
            missing = f"Tune's experiment state has no resources for this trial ({_error_text(err)})"
        else:
            # A readable request without a key reserved none of it.
            cpu, gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        # The folder is looked up by name under the given directory, so a moved sweep still loads.
        folder = sweep_dir / Path(str(t.path)).name if getattr(t, "path", None) else None
        out.append(
            {
                "trial_id": t.trial_id,
                "status": str(t.status),
                "config": dict(t.config or {}),
                "folder": folder,
                "cpu": cpu,
                "gpu": gpu,
                "resources_missing": missing,
            }
        )
    return out, None, False


def _tune_trials(sweep_dir: Path) -> list[dict] | None:
    """(trial id, status, config, folder, cpu, gpu) from Tune's experiment state, or None."""
    return _read_tune(sweep_dir)[0]


def _folder_trials(sweep_dir: Path) -> list[dict]:
    """Trials from the trial folders alone (Tune's ``params.json`` / ``result.json``)."""
    out = []
    for params in sorted(sweep_dir.glob("*/params.json")):
        folder = params.parent
        try:
            config = json.loads(params.read_text())
        except json.JSONDecodeError as err:
            raise PromptinitError(
                f"{params}: not valid JSON ({err.msg}); the trial's config is unknown: restore the file "
                "or delete the trial's folder"
            ) from None
        results = read_results(folder)
        trial_id = results[-1].get("trial_id") if results else None
        if not trial_id:  # no report yet: the id from the folder name (``maml_3f2a1b0c`` or Tune's default)
            m = re.search(r"(?:^|_)([0-9a-f]{8})(?:_|$)", folder.name)
            trial_id = m.group(1) if m else folder.name
        if (folder / "error.txt").exists() or (folder / "error.pkl").exists():
            status = "ERROR"
        elif results and results[-1].get("done"):
            status = "TERMINATED"
        else:
            status = "RUNNING" if results else "PENDING"
        out.append(
            {
                "trial_id": trial_id,
                "status": status,
                "config": config,
                "folder": folder,
                "cpu": None,
                "gpu": None,
                "resources_missing": None,
            }
        )
    return out


def _kept_status(sweep_dir: Path) -> dict[str, str]:
    """Trial id -> Tune status of the search's finished trials in ``trials.json`` (``{}`` without it)."""
    path = sweep_dir / KEPT_FILE
    if not path.is_file():
        return {}
    kept = read_json(path)
    if not isinstance(kept, list) or not all(isinstance(t, dict) and "tune_trial_id" in t for t in kept):
        raise PromptinitError(
            f"{path}: expected a list of trials, each with 'tune_trial_id' (the sweep's searcher wrote it); restore it"
        )
    return {t["tune_trial_id"]: "ERROR" if t.get("state") == "FAIL" else "TERMINATED" for t in kept}


def _with_kept(sweep_dir: Path, found: list[dict] | None) -> list[dict]:
    """The trials of Tune's experiment state (or, without one, of the trial folders) and those of
    ``trials.json``: a search resumed without Tune's state (``rebuild``) ran its later trials in a
    new experiment whose state lacks the earlier ones, and a folder that holds only the kept files
    has no state at all. The finished trials' statuses come from ``trials.json``; a trial folder
    that is in neither is a trial lost unfinished when the search was rebuilt, and is left out."""
    kept = _kept_status(sweep_dir)
    in_state = {t["trial_id"] for t in found or []}
    folders = _folder_trials(sweep_dir) if found is None or kept else []
    if kept:
        folders = [{**t, "status": kept[t["trial_id"]]} for t in folders if t["trial_id"] in kept]
    return [*(found or []), *(t for t in folders if t["trial_id"] not in in_state)]


def pair_records(
    scores: Mapping[tuple, float], baseline: Mapping[tuple, float], n_test: Mapping[tuple, int] | None = None
) -> list[dict]:
    """Per-pair scores as plain records (``target_scores.csv`` rows, an export's ``target.scores``).

    Args:
        scores: the method's test score per ``(task, seed)`` or ``(task, seed, upstream_seed)``.
        baseline: PT's test score per ``(task, seed)``.
        n_test: test examples per ``(task, seed)`` (None where unknown).

    Returns:
        ``[{"task", "seed", "upstream_seed", "score", "pt", "n_test"}, ...]`` (upstream_seed None
        for one meta-trained prompt), sorted.
    """
    n_test = n_test or {}
    out = []
    for key in sorted(scores, key=lambda k: tuple(str(x) for x in k)):
        task, seed = key[0], int(key[1])
        out.append(
            {
                "task": task,
                "seed": seed,
                "upstream_seed": int(key[2]) if len(key) == 3 else None,
                "score": float(scores[key]),
                "pt": float(baseline[(task, seed)]),
                "n_test": None if n_test.get((task, seed)) is None else int(n_test[(task, seed)]),
            }
        )
    return out


_PAIR_FIELDS = (
    ("task", str, True),
    ("seed", int, True),
    ("upstream_seed", int, False),
    ("score", float, True),
    ("pt", float, True),
    ("n_test", int, False),
)  # name, type, required


def pairs_from_records(records: Iterable[Mapping[str, Any]], label: str) -> tuple[dict, dict, dict]:
    """``pair_records`` (or ``target_scores.csv`` rows, strings) back to ``(scores, baseline,
    n_test)``; ``label`` names the source in errors.

    Raises:
        PromptinitError: a required field that is missing, or a score that is not a finite number.
    """
    scores, baseline, n_test = {}, {}, {}
    for i, r in enumerate(records, start=1):
        v: dict[str, Any] = {}
        for name, kind, required in _PAIR_FIELDS:
            raw = r.get(name)
            try:
                if raw in (None, ""):
                    if required:
                        raise ValueError("missing")
                    v[name] = None
                else:
                    v[name] = int(float(raw)) if kind is int else kind(raw)
                    if kind is float and not math.isfinite(v[name]):
                        raise ValueError(f"{raw!r} is not finite")
            except (ValueError, TypeError) as err:
                raise PromptinitError(
                    f"{label}: pair {i}: field {name!r}: missing or not a number ({err}); the "
                    "scores are corrupt: restore them or rerun the target evaluation"
                ) from None
        task, seed, up = v["task"], v["seed"], v["upstream_seed"]
        scores[(task, seed) if up is None else (task, seed, up)] = v["score"]
        baseline[(task, seed)] = v["pt"]
        if v["n_test"] is not None:
            n_test[(task, seed)] = v["n_test"]
    return scores, baseline, n_test


def _read_scores(folder: Path) -> dict[tuple[str, str], list[dict]]:
    """``target_scores.csv``: (partition, method) -> its pair records ({} when the file is absent)."""
    path = folder / TARGET_SCORES
    if not path.is_file():
        return {}
    out: dict[tuple[str, str], list[dict]] = {}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault((r.get("partition") or "", r.get("method") or ""), []).append(r)
    return out


def _targets_from_table(sweep_dir: Path, sweep: str, partition: str, label: str | None = None) -> list[dict]:
    """Target rows from ``arg_table.csv`` and its per-pair ``target_scores.csv``.

    A table without the scores file (written before per-pair scores were kept) gives rows
    whose ``scores`` are empty: ARG as it was recorded, no intervals. ``label`` names the
    folder in errors (default its path).
    """
    path = sweep_dir / ARG_TABLE
    if not path.is_file():
        return []
    scores_label = label.replace(ARG_TABLE, TARGET_SCORES) if label else str(sweep_dir / TARGET_SCORES)
    pairs = _read_scores(sweep_dir)
    rows = []
    with path.open(newline="") as f:
        for line, r in enumerate(csv.DictReader(f), start=2):
            part = r.get("partition") or partition
            records = pairs.get((part, r["method"])) or pairs.get(("", r["method"])) or []
            if not records and r.get("arg_mean", "") == "":
                continue  # a method without a finished trial
            scores, baseline, n_test = pairs_from_records(records, f"{scores_label} ({r['method']})")
            per_seed, per_task = {}, {}
            field_name = "arg_per_seed"
            try:  # an old table: ARG per seed and RG per task, no per-pair scores
                per_seed = {int(k): float(v) for k, v in json.loads(r.get("arg_per_seed") or "{}").items()}
                for k, v in r.items():
                    if k and k.startswith("rg/") and v not in ("", None):
                        field_name = k
                        per_task[k[3:]] = float(v)
            except (ValueError, TypeError, AttributeError) as err:
                raise PromptinitError(
                    f"{label or path}: line {line}: field {field_name!r}: not a number ({err}); the table is corrupt: "
                    "restore it or rerun the target evaluation"
                ) from None
            settings = _json_field(r.get("settings"), f"{label or path}: line {line}: field 'settings'")
            rows.append(
                target_row(
                    sweep,
                    part,
                    r["method"],
                    r.get("trial_id", ""),
                    scores,
                    baseline,
                    n_test,
                    _num(r.get("arg_mean")),
                    len(per_seed),
                    per_task,
                    _num(r.get("val_arg")),
                    _num(r.get("val_arg_se")),
                    _num(r.get("trials")),
                    _num(r.get("finished")),
                    settings,
                    _num(r.get("val_arg_rescored")),
                    _num(r.get("val_arg_rescored_se")),
                    _flag(r.get("test_per_seed")),
                    objective=r.get("objective") or LEGACY_OBJECTIVE,
                    val={k: _num(r.get(k)) for k in OBJECTIVE_VALUES},
                )
            )
    return rows


def _json_field(text: str | None, where: str) -> dict:
    """A JSON object written into a CSV cell (empty: ``{}``).

    Raises:
        PromptinitError: the cell is not a JSON object (a corrupt table is an error, not "no settings").
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptinitError(
            f"{where}: not valid JSON ({err.msg}); rewrite the table with `promptinit report`"
        ) from None
    if not isinstance(value, dict):
        raise PromptinitError(f"{where}: expected a JSON object of settings, got {type(value).__name__}")
    return value


def _targets_from_exports(sweep_dir: Path, sweep: str, partition: str) -> list[dict]:
    rows = []
    for meta_path in sorted((sweep_dir / EXPORTS).glob("*/promptinit.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise PromptinitError(f"{meta_path}: not valid JSON ({err.msg}); re-export the method") from None
        target = meta.get("target") or (meta.get("metrics") or {}).get("target") or {}
        if not target:
            continue
        scores, baseline, n_test = pairs_from_records(target.get("scores") or [], f"{meta_path}: field 'target.scores'")
        per_seed = dict(target.get("per_seed") or {})  # an old export: ARG per seed, no per-pair scores
        validation = meta.get("validation") or (meta.get("metrics") or {}).get("validation") or {}
        rows.append(
            target_row(
                sweep,
                meta.get("partition") or (meta.get("extra") or {}).get("partition") or partition,
                meta.get("method", meta_path.parent.name),
                meta.get("trial_id") or (meta.get("extra") or {}).get("trial_id", ""),
                scores,
                baseline,
                n_test,
                _num(target.get("arg_mean")),
                len(per_seed),
                dict(target.get("per_task") or {}),
                _num(validation.get("arg")),
                _num(validation.get("arg_se")),
                math.nan,
                math.nan,
                dict(meta.get("hyperparameters") or {}),
                _num(validation.get("rescored_arg")),
                _num(validation.get("rescored_arg_se")),
            )
        )
    return rows


def target_row(
    sweep,
    partition,
    method,
    trial_id,
    scores,
    baseline,
    n_test,
    arg_mean,
    n_seeds,
    per_task,
    val_arg,
    val_arg_se,
    trials,
    finished,
    settings,
    val_arg_rescored=math.nan,
    val_arg_rescored_se=math.nan,
    test_per_seed=None,
    *,
    objective: str = LEGACY_OBJECTIVE,
    val: Mapping[str, float] | None = None,
) -> dict:
    """One target row (``TARGET_COLUMNS``), the shape every loader and ``tables.target_rows`` produce.

    With per-pair ``scores`` (keyed ``(task, seed[, upstream seed])``, PT's ``baseline`` keyed
    ``(task, seed)``), ARG, its per-task gains and the seed count are computed from the pairs;
    without them (an old table, MLflow metrics) the given ``arg_mean``, ``n_seeds`` and
    ``per_task`` are kept as recorded. ``test_per_seed``: whether each few-shot seed scored on its
    own test sample (``TuneConfig.test_per_seed``); None where not on record (before 5 Dec 2026).
    ``objective``: the search objective the method's choice was made by (``search.objective``);
    ``val``: the chosen trial's values of it by ``OBJECTIVE_VALUES`` name (in the search and
    re-scored on fresh seeds, each with its SE; the ARG columns' when the objective is ARG).
    """
    arg = (val_arg, val_arg_se, val_arg_rescored, val_arg_rescored_se)
    if scores:
        per_task, arg_mean, n_seeds = _pair_gains(scores, baseline)
    return {
        "sweep": sweep,
        "partition": partition,
        "method": method,
        "trial_id": trial_id or "",
        "arg_mean": arg_mean,
        "n_seeds": n_seeds,
        "per_task": per_task,
        "scores": dict(scores),
        "baseline": dict(baseline),
        "n_test": dict(n_test),
        "val_arg": val_arg,
        "val_arg_se": val_arg_se,
        "val_arg_rescored": val_arg_rescored,
        "val_arg_rescored_se": val_arg_rescored_se,
        "objective": objective,
        **_objective_values(objective, arg, val),
        "trials": trials,
        "finished": finished,
        "settings": dict(settings or {}),
        "test_per_seed": test_per_seed,
    }


def _pair_gains(scores: Mapping[tuple, float], baseline: Mapping[tuple, float]) -> tuple[dict[str, float], float, int]:
    """``(RG per task, ARG, few-shot seeds)`` from per-pair scores (tasks weigh equally, as in
    ``promptinit.stats.compare``)."""
    from promptinit.stats import relative_gain

    by_task: dict[str, list[float]] = {}
    for key, value in scores.items():
        by_task.setdefault(key[0], []).append(float(relative_gain(value, baseline[(key[0], key[1])])))
    per_task = {t: float(np.mean(v)) for t, v in sorted(by_task.items())}
    return per_task, float(np.mean(list(per_task.values()))), len({k[1] for k in scores})


def _objective_values(objective: str, arg: Iterable[float], val: Mapping[str, float] | None) -> dict[str, float]:
    """A target row's ``OBJECTIVE_VALUES``: ``val``'s finite ones, the ARG columns (``arg``, in
    that order) standing in when the objective is ARG, NaN for the rest."""
    out = dict.fromkeys(OBJECTIVE_VALUES, math.nan)
    if objective == "arg":
        out.update(zip(OBJECTIVE_VALUES, arg, strict=True))
    out.update({k: v for k, v in (val or {}).items() if v is not None and math.isfinite(v)})
    return out


def _flag(text: str | None) -> bool | None:
    """A CSV cell written from True / False / None (pandas writes None as empty)."""
    return {"True": True, "False": False}.get(str(text or "").strip())


def _partition_name(config: Mapping[str, Any]) -> str:
    p = str(config.get("partition") or "")
    return Path(p).stem if p.endswith((".yaml", ".yml")) else p


def _warn_fallbacks(
    d: Path, found: list[dict], fallbacks: dict[str, int], unsure: bool, gpus: Mapping[str, Any]
) -> None:
    """One warning for the trials whose resources come from the sweep config (``fallbacks``:
    why -> trials it affected, completed here from each trial's ``resources_missing``)."""
    for t in found:
        if t["resources_missing"]:
            fallbacks[t["resources_missing"]] = fallbacks.get(t["resources_missing"], 0) + 1
    if fallbacks:
        reasons = "; ".join(f"{n} of {len(found)} trials: {w}" for w, n in fallbacks.items())
        unknown = any(v is None for v in gpus.values())
        warnings.warn(
            f"{d}: {reasons}: their CPU/GPU come from the sweep config's resources"
            + (
                (" (resources.gpu auto: GPU hours unknown)" if unknown else " (GPUs: the trials' reports)")
                if unsure
                else ""
            )
            + "; see the trials table's column resources_note",
            FallbackWarning,
            stacklevel=4,
        )


def _resources_note(t: Mapping[str, Any], gpu_t: Any, gpu0: float, why: str | None) -> str | None:
    """The trials table's ``resources_note`` of trial ``t``: where its CPUs and GPUs (``gpu_t``;
    None: unknown) came from when Tune's state did not say; None when it did."""
    reported = (
        f"GPUs ({gpu_t:g}) from the trial's reports ({PLACEMENT})" if t["gpu"] is None and gpu_t is not None else ""
    )
    if t["cpu"] is None or gpu_t is None:
        return _fallback_note(
            f"the sweep config ({META_FILE}: config.resources)",
            t["resources_missing"] or why or "",
            gpu0 if gpu_t is None else gpu_t,
        ) + (f"; {reported}" if reported else "")
    return reported or None


def _trials_from_tune(d: Path, name: str, partition: str, config: Mapping[str, Any]) -> pd.DataFrame:
    """The trials of sweep folder ``d`` from Tune's files (its experiment state, else the trial
    folders); a trial whose resources are not on record takes the sweep config's, with a warning."""
    cpu0, gpu0 = _config_resources(config)
    found, why, failed = _read_tune(d)
    found = _with_kept(d, found)
    fallbacks: dict[str, int] = {}  # failure -> trials it affected
    if failed:  # statuses from the folders too
        fallbacks[f"{why}, so the trials were read from their folders"] = len(found)
    reports = {t["trial_id"]: read_results(t["folder"]) if _is_dir(t["folder"]) else [] for t in found}
    # GPUs per trial: Tune's record; with none and resources.gpu auto, what the trial's reports say
    unsure = not math.isfinite(gpu0)
    gpus = {
        t["trial_id"]: _gpus_reported(reports[t["trial_id"]]) if t["gpu"] is None and unsure else t["gpu"]
        for t in found
    }
    _warn_fallbacks(d, found, fallbacks, unsure, gpus)
    rows = []
    for t in found:
        folder = t["folder"] if _is_dir(t["folder"]) else None
        summary = _curve_and_summary(reports[t["trial_id"]], folder, sweep_objective(config))
        status = _STATUS.get(t["status"], t["status"].lower())
        if status == "pending" and summary["reports"]:  # the experiment state lags the trial folders
            status = "running"
        gpu_t = gpus[t["trial_id"]]
        note = _resources_note(t, gpu_t, gpu0, why)
        cpu = _num(t["cpu"]) if t["cpu"] is not None else cpu0
        gpu = _num(gpu_t) if gpu_t is not None else gpu0
        rows.append(
            _row(
                sweep=name,
                partition=partition,
                trial_id=t["trial_id"],
                config=t["config"],
                status=status,
                summary=summary,
                cpu=cpu,
                gpu=gpu,
                source="tune",
                resources_note=note,
            )
        )
    return trials_frame(rows)


def load_sweep(sweep_dir: str | Path, source: str = "tune") -> Sweep:
    """Load a sweep directory.

    Args:
        sweep_dir: the folder ``search/sweep.py`` wrote (``<storage_path>/<name>``).
        source: ``tune`` reads the trials from the directory; ``mlflow`` from the sweep's MLflow
            runs (its tracking URI and parent run are in ``promptinit-sweep.json``).

    Returns:
        The ``Sweep`` (trial table and target results).

    Raises:
        PromptinitError: not a sweep directory, or MLflow unreachable.
    """
    d = Path(sweep_dir).expanduser().resolve()
    if not d.is_dir():
        raise PromptinitError(f"{d}: no such sweep directory")
    meta = read_meta(d)
    config = dict(meta.get("config") or {})
    name = config.get("name") or d.name
    partition = _partition_name(config)
    targets = _targets_from_table(d, name, partition) or _targets_from_exports(d, name, partition)
    if targets and not partition:
        partition = targets[0]["partition"]
    if source == "mlflow":
        if not meta.get("tracking_uri") or not meta.get("parent_run_id"):
            raise PromptinitError(
                f"{d / META_FILE}: field 'parent_run_id': no MLflow run recorded; use the Tune results"
            )
        loaded = load_mlflow(meta["tracking_uri"], parent_run_id=meta["parent_run_id"])
        trials = loaded.trials
    elif source == "tune":
        trials = _trials_from_tune(d, name, partition, config)
    else:
        raise PromptinitError(f"field 'source': {source!r} is not tune or mlflow")
    return Sweep(d, name, partition, config, meta, trials, pd.DataFrame(targets, columns=TARGET_COLUMNS))


# --------------------------------------------------------------------------- MLflow

# MLflow retries an unreachable server 7 times with exponential backoff (minutes of silence);
# an analysis command should fail within seconds instead. A user's own settings win.
_PATIENCE = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


@contextmanager
def mlflow_patience():
    """Short MLflow HTTP retries and timeout for the duration of the block (unless set by the user)."""
    added = [k for k in _PATIENCE if k not in os.environ]
    os.environ.update({k: _PATIENCE[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def load_mlflow(tracking_uri: str, *, parent_run_id: str | None = None, experiment: str | None = None) -> Sweep:
    """Load a sweep from MLflow: its parent run's child runs (one per trial).

    Args:
        tracking_uri: the MLflow tracking URI (``sqlite:///.../mlflow.db``, ``http://...``).
        parent_run_id: the sweep's parent run; or
        experiment: an experiment name or id whose parent run (tag ``promptinit.role=sweep``,
            the latest when there are several) is used.

    Returns:
        A ``Sweep`` with ``dir=None``; its targets come from the parent run's ``arg_table.csv``
        and ``target_scores.csv`` artifacts (the per-pair scores), else from its
        ``target/arg/<method>`` metrics (means only: no intervals).
    """
    with mlflow_patience():
        return _load_mlflow(tracking_uri, parent_run_id, experiment)


def _load_mlflow(tracking_uri: str, parent_run_id: str | None, experiment: str | None) -> Sweep:
    """The sweep of ``load_mlflow``; an MLflow store error becomes a ``PromptinitError``."""
    from mlflow.exceptions import MlflowException

    if not (parent_run_id or experiment):
        raise PromptinitError("name the MLflow parent run (--parent) or the experiment (--experiment)")
    c = _client(tracking_uri)
    try:
        parent = _mlflow_parent(c, tracking_uri, parent_run_id, experiment)
        params = parent.data.params
        name = parent.info.run_name or params.get("name", "")
        partition = parent.data.tags.get("partition") or _partition_name(params)
        rows = _mlflow_trial_rows(c, parent, name, partition)
        targets = _mlflow_targets(c, parent, name, partition)
    except (MlflowException, OSError) as err:
        raise PromptinitError(f"MLflow {tracking_uri}: {' '.join(str(err).split())[:300]}") from None
    meta = {
        "tracking_uri": tracking_uri,
        "parent_run_id": parent.info.run_id,
        "experiment_id": parent.info.experiment_id,
    }
    config = {"name": name, "partition": partition, "model": parent.data.tags.get("model") or params.get("model")}
    return Sweep(None, name, partition, config, meta, trials_frame(rows), pd.DataFrame(targets, columns=TARGET_COLUMNS))


def _mlflow_parent(c, tracking_uri: str, parent_run_id: str | None, experiment: str | None):
    """The sweep's parent run: ``parent_run_id``, else the latest sweep run of ``experiment``."""
    if parent_run_id is not None:
        return c.get_run(parent_run_id)
    exp = c.get_experiment_by_name(experiment) or (c.get_experiment(experiment) if str(experiment).isdigit() else None)
    if exp is None:
        raise PromptinitError(f"MLflow {tracking_uri}: no experiment {experiment!r}")
    parents = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise PromptinitError(f"MLflow {tracking_uri}: experiment {experiment!r} has no sweep (parent) run")
    return parents[0]


def _mlflow_resources(params: Mapping[str, Any]) -> tuple[float, float, str]:
    """(CPUs, GPUs, resources note) per trial from the parent run's params."""
    cpu = _num(params.get("resources/cpu", 1))  # search.config.Resources defaults: 1 CPU, GPU auto
    gpu_param = params.get("resources/gpu", "auto")
    gpu = math.nan if gpu_param == "auto" else _num(gpu_param)
    note = _fallback_note(
        "the parent run's params resources/cpu, resources/gpu",
        "MLflow does not record a trial's own reservation",
        gpu,
    )
    return cpu, gpu, note


def _mlflow_trial_rows(c, parent, name: str, partition: str) -> list[dict[str, Any]]:
    """The trials rows of a parent run: one per child run (a trial each)."""
    children = c.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        max_results=10000,
    )
    cpu, gpu, resources_note = _mlflow_resources(parent.data.params)
    objective = sweep_objective(parent.data.params)
    return [_mlflow_trial_row(c, run, name, partition, cpu, gpu, resources_note, objective) for run in children]


def _mlflow_config(run) -> dict[str, Any]:
    """A child run's trial config (``{"method": m, m: {its settings}}``, plus the sources) from its params."""
    rp = run.data.params
    method = rp.get("method") or run.data.tags.get("method", "")
    config = {
        "method": method,
        method: {k.split("/", 1)[1]: parse_value(v) for k, v in rp.items() if k.startswith(method + "/")},
    }
    if SOURCES_KEY in rp:
        config[SOURCES_KEY] = parse_value(rp[SOURCES_KEY])
    return config


def _mlflow_results(c, run) -> list[dict[str, Any]]:
    """A child run's reports as Tune's result rows, one per step of its validation history (ARG and,
    where reported, the score difference, with their SEs)."""
    histories = {
        name: c.get_metric_history(run.info.run_id, name)
        for name in (VAL_ARG, VAL_ARG_SE, VAL_DELTA, VAL_DELTA_SE, "time_total_s", REPLAYED_SECONDS)
    }
    stamps = {m.step: m.timestamp / 1000 for m in histories[VAL_ARG]}  # ms -> Unix seconds, as Tune's timestamp
    values = {name: {m.step: m.value for m in h} for name, h in histories.items()}
    steps = sorted(set(values[VAL_ARG]) | set(values[VAL_DELTA]))
    return [
        {
            STEP: s,
            **{name: v.get(s) for name, v in values.items()},
            "training_iteration": i + 1,
            TOTAL_STEPS: run.data.metrics.get(TOTAL_STEPS),
            "timestamp": stamps.get(s),
        }
        for i, s in enumerate(steps)
    ]


def _mlflow_trial_row(
    c, run, name: str, partition: str, cpu: float, gpu: float, resources_note: str, objective: str
) -> dict[str, Any]:
    """The trials row of one child run."""
    tags = run.data.tags
    config = _mlflow_config(run)
    summary = _curve_and_summary(_mlflow_results(c, run), None, objective)
    if not math.isfinite(summary["wall_s"]) and run.info.end_time and run.info.start_time:
        summary["wall_s"] = (run.info.end_time - run.info.start_time) / 1000
    stopped = tags.get(STOPPED_TAG)
    return _row(
        sweep=name,
        partition=partition,
        trial_id=tags.get(TRIAL_TAG, run.info.run_id),
        config=config,
        status=_STATUS.get(run.info.status, run.info.status.lower()),
        summary=summary,
        cpu=cpu,
        gpu=gpu,
        source="mlflow",
        run_id=run.info.run_id,
        stopped=None if stopped is None else stopped == "true",
        resources_note=resources_note,
    )


def _mlflow_targets(c, parent, name: str, partition: str) -> list[dict]:
    import tempfile

    before = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "false"  # no progress bar for two small files
    try:
        # No table (the sweep has not reached its target evaluation): the parent's target metrics
        # (means only). A table that is there but cannot be fetched or read is an error
        # (MlflowException / OSError -> PromptinitError in _load_mlflow; a corrupt table in
        # _targets_from_table), not a silent switch to the coarser metrics.
        listed = {Path(f.path).name for f in c.list_artifacts(parent.info.run_id)}
        if ARG_TABLE in listed:
            with tempfile.TemporaryDirectory() as tmp:
                for artifact in (ARG_TABLE, TARGET_SCORES):
                    if artifact in listed:
                        c.download_artifacts(parent.info.run_id, artifact, tmp)
                rows = _targets_from_table(
                    Path(tmp), name, partition, label=f"MLflow run {parent.info.run_id} artifact {ARG_TABLE}"
                )
                if rows:
                    return rows
    finally:
        if before is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = before
    m = parent.data.metrics
    prefix = TARGET_ARG + "/"
    objective = sweep_objective(parent.data.params)
    metric, metric_se = OBJECTIVE_METRICS[objective]
    # Means only: the per-pair scores (and so the intervals) live in the table's artifacts.
    return [
        target_row(
            name,
            partition,
            k[len(prefix) :],
            "",
            {},
            {},
            {},
            v,
            0,
            {},
            _num(m.get(f"{VAL_ARG}/{k[len(prefix) :]}")),
            _num(m.get(f"{VAL_ARG_SE}/{k[len(prefix) :]}")),
            math.nan,
            math.nan,
            {},
            objective=objective,
            val={
                "val": _num(m.get(f"{metric}/{k[len(prefix) :]}")),
                "val_se": _num(m.get(f"{metric_se}/{k[len(prefix) :]}")),
            },
        )
        for k, v in sorted(m.items())
        if k.startswith(prefix)
    ]


STUDY_META = "promptinit-study.json"  # search/study.py META_FILE
STUDY_RESULT = "study.json"  # search/study.py RESULT_FILE


def preset_label(method: str) -> str:
    """A study's label for ``method``'s paper-preset arm (its table row and ``study.json`` key)."""
    return f"{method} (preset)"


def study_result(folder: str | Path) -> dict:
    """A study folder's ``study.json`` (its arms and sweeps); ``{}`` where there is none."""
    path = Path(folder) / STUDY_RESULT
    return read_json(path) if path.is_file() else {}


def is_study(folder: str | Path) -> bool:
    """Whether ``folder`` is a study's run folder (``search/study.py``)."""
    return (Path(folder) / STUDY_META).is_file()


def load_study(folder: str | Path, source: str = "tune") -> list[Sweep]:
    """A study's run folder as sweeps for ``promptinit report``.

    The first is the study itself: its target table (every arm against vocabulary-init PT on
    the same pairs), no trials. Then each search arm's sweep, its trials' ``method`` set to the
    arm's label and its targets left out (they are rows of the study's table); and per searched
    method, the paper defaults as a sweep of their own, the first trial of its first search
    (``points_to_evaluate``), so the best-so-far plot shows TPE, random search and the defaults.
    """
    folder = Path(folder)
    meta = read_json(folder / STUDY_META)
    config, partition = meta.get("config") or {}, str(meta.get("partition", ""))
    name = str(config.get("name", folder.name))
    targets = _targets_from_table(folder, name, partition) if (folder / ARG_TABLE).is_file() else []
    out = [
        Sweep(folder, name, partition, config, meta, trials_frame([]), pd.DataFrame(targets, columns=TARGET_COLUMNS))
    ]
    result = study_result(folder)
    defaults_done = set()
    for label, sub in (result.get("searches") or {}).items():
        if not (folder / sub / META_FILE).is_file():  # not started yet (or stopped before it wrote its record)
            continue
        s = load_sweep(folder / sub, source)
        method = s.config["methods"][0]  # a search arm's sweep searches one method
        trials = s.trials.assign(method=label)
        out.append(dataclasses.replace(s, trials=trials, targets=pd.DataFrame(columns=TARGET_COLUMNS)))
        first = _defaults_trial(trials, s.config, method) if method not in defaults_done else trials.iloc[:0]
        if len(first):
            defaults = f"{method} defaults"
            out.append(Sweep(s.dir, defaults, s.partition, {}, {}, first.assign(sweep=defaults, method=defaults)))
            defaults_done.add(method)
    return out


def arm_methods(folder: str | Path) -> dict[str, str]:
    """A study's arm labels (and its ``"<method> defaults"`` lines) -> the method that trains each.

    Read from ``study.json``'s typed arm records; a study written before those existed is read
    from each preset's recorded method and each search arm's own sweep config. A label is never
    parsed back into a method.
    """
    result = study_result(folder)
    if result.get("arm_records"):
        out = {str(r["label"]): str(r["method"]) for r in result["arm_records"]}
    else:
        out = {label: str(p["method"]) for label, p in (result.get("presets") or {}).items()}
        for label, sub in (result.get("searches") or {}).items():
            record = Path(folder) / sub / META_FILE
            if record.is_file():
                out[label] = str(read_json(record)["config"]["methods"][0])
    out.update({f"{m} defaults": m for m in set(out.values())})
    return out


def _defaults_trial(trials: pd.DataFrame, config: Mapping[str, Any], method: str) -> pd.DataFrame:
    """The sweep's trial at ``method``'s paper defaults (its ``points_to_evaluate`` point, the
    searched settings as the sweep's space moved them into range); no rows when none has them."""
    from promptinit.spaces import build_space

    search, budget = config.get("search") or {}, config.get("budget") or {}
    space = build_space([method], {method: (search.get("space") or {}).get(method) or {}}, budget.get("steps"))
    point = {k.split("/", 1)[1]: v for k, v in space.spaces[0].default_point().items()}
    # exact equality: a float round-trips through the trial's JSON record unchanged
    at_defaults = [all((p or {}).get(k, object()) == v for k, v in point.items()) for p in trials["params"]]
    return trials[at_defaults].head(1)
