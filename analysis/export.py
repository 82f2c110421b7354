"""Export a sweep's best prompt of one method as a PEFT folder (``promptinit export``).

The best prompt is the kept checkpoint with the highest validation objective (the sweep's
``search.objective``: the score difference to PT, or ARG for sweeps recorded before it) among the
method's trials; on a tie the trial the sweep scored on the targets wins, so the exported target
metrics belong to it. The sweep's own export (written at the end of its run) is of the trial its
re-score on fresh seeds chose (selection.md), which need not be the highest in the search: pass
``--trial`` to export that one here.
The export carries the validation metrics of that checkpoint, the target metrics the sweep
measured for it (when it is the one the sweep scored), the sweep config's model and tuning
settings, and the fingerprints of every task of the partition.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from promptinit.analysis.results import (
    CHECKPOINT_PROMPT,
    CHECKPOINT_STATE,
    EXPORTS,
    OBJECTIVE_METRICS,
    VAL_ARG,
    VAL_ARG_SE,
    VAL_DELTA,
    VAL_DELTA_SE,
    Sweep,
    load_sweep,
    read_results,
    sweep_objective,
)
from promptinit.errors import PromptinitError

SUPMER = "supmer"
PSI_KEY = "psi"  # where a SUPMER method's state dict keeps ψ_φ's tensors (promptinit.methods.supmer.SUPMER.state_dict)


@dataclass(frozen=True)
class Best:
    """A method's best checkpoint in a sweep."""

    method: str
    trial_id: str
    checkpoint: Path
    objective: str  # the sweep's search.objective (analysis.results.sweep_objective)
    value: float  # the checkpoint's validation objective
    params: dict
    report: dict  # the trainable's report saved with the checkpoint


def _checkpoints(trial_dir: Path, metric: str) -> list[tuple[float, Path, dict]]:
    """(validation ``metric``, folder, report) of every kept checkpoint of a trial, from Tune's result.json."""
    out = []
    for r in read_results(trial_dir):  # a corrupt report is an error, not a silently dropped checkpoint
        name, value = r.get("checkpoint_dir_name"), r.get(metric)
        if (
            name
            and isinstance(value, (int, float))
            and math.isfinite(value)
            and (trial_dir / name / CHECKPOINT_PROMPT).is_file()
        ):
            out.append((float(value), trial_dir / name, r))
    return out


def best_checkpoint(sweep: Sweep, method: str, trial_id: str | None = None) -> Best:
    """The checkpoint to export for ``method`` (optionally within one trial).

    Raises:
        PromptinitError: the method has no trial with a kept checkpoint.
    """
    t = sweep.trials
    methods = sorted(set(t["method"]))
    if method not in methods:
        raise PromptinitError(
            f"{sweep.dir}: no trials of method {method!r}; methods in this sweep: {', '.join(methods) or 'none'}"
        )
    rows = t[(t["method"] == method) & (t["status"] != "failed")]
    if trial_id is not None:
        rows = t[(t["method"] == method) & (t["trial_id"] == trial_id)]
        if rows.empty:
            raise PromptinitError(f"{sweep.dir}: no trial {trial_id!r} of method {method!r}")
    scored = sweep.targets[sweep.targets["method"] == method]
    evaluated = set(scored["trial_id"])
    objective = sweep_objective(sweep.config)
    candidates: list[Any] = []
    for r in rows.itertuples():
        ckpt = r.best_checkpoint
        if not ckpt:
            continue
        trial_dir = Path(ckpt).parent
        for value, folder, report in _checkpoints(trial_dir, OBJECTIVE_METRICS[objective][0]):
            # Highest validation objective; on a tie the trial the sweep evaluated on the targets,
            # then the earlier checkpoint.
            candidates.append(((value, r.trial_id in evaluated, -len(candidates)), r, folder, report))
    if not candidates:
        raise PromptinitError(
            f"{sweep.dir}: method {method!r} has no finished trial with a kept checkpoint; "
            "wait for a trial to report, or resume the sweep"
        )
    (value, _, _), row, folder, report = max(candidates, key=lambda c: c[0])
    state_file = folder / CHECKPOINT_STATE
    saved = json.loads(state_file.read_text()).get("report", {}) if state_file.is_file() else {}
    return Best(method, row.trial_id, folder, objective, value, dict(row.params or {}), {**report, **saved})


def psi_from_checkpoint(folder: Path) -> dict[str, torch.Tensor] | None:
    """SUPMER's ψ_φ tensors from a method checkpoint (``state["psi"]``, a dict of tensors).

    Returns:
        The tensors, or None when the checkpoint records that the trial trained no ψ
        (``psi`` is None and the method's config has ``use_mgr: false``); the export then
        says so in ``extra.psi`` (see ``psi_note``).

    Raises:
        PromptinitError: the checkpoint is missing or unreadable, it is not a SUPMER checkpoint
            (no ``psi`` field), or its ψ is missing or malformed although ``use_mgr`` is on: a
            SUPMER prompt is tuned downstream with its ψ, so exporting it without is refused.
    """
    from promptinit.methods.checkpoint import STATE, read_checkpoint

    folder = Path(folder)
    where = f"{folder / STATE}: field '{PSI_KEY}'"
    fix = "export another trial's checkpoint (promptinit export --trial ID)"
    try:
        state = read_checkpoint(folder)
    except PromptinitError as err:
        raise PromptinitError(f"{where}: cannot read SUPMER's ψ_φ for the export ({err}); {fix}") from None
    if not isinstance(state, Mapping) or PSI_KEY not in state:
        raise PromptinitError(
            f"{where}: missing, so this is not a SUPMER checkpoint (method "
            f"{state.get('method') if isinstance(state, Mapping) else None!r}); {fix}"
        )
    psi = state[PSI_KEY]
    if psi is None:
        config = state["config"] if isinstance(state.get("config"), Mapping) else {}
        if config.get("use_mgr", True) is False:
            return None  # the trial trained no ψ: nothing to export (recorded by psi_note)
        raise PromptinitError(f"{where}: empty although the trial's use_mgr is on (a corrupt checkpoint); {fix}")
    if not (isinstance(psi, Mapping) and psi and all(isinstance(v, torch.Tensor) for v in psi.values())):
        raise PromptinitError(f"{where}: not a non-empty dict of tensors (a corrupt checkpoint); {fix}")
    return {str(k): v for k, v in psi.items()}


PSI_NOTE = "not exported: the trial ran with use_mgr false, so it trained no ψ_φ (plain inner SGD)"


def psi_note(method: str, psi: Mapping[str, torch.Tensor] | None) -> dict[str, str]:
    """``{"psi": why}`` for a SUPMER export without ψ_φ (goes into the export's ``extra``), else ``{}``."""
    return {"psi": PSI_NOTE} if method == SUPMER and psi is None else {}


def _task_fingerprints(sweep: Sweep, method: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Task -> content fingerprint for every task of the partition, and partition facts."""
    assert sweep.dir is not None  # load_sweep reads a folder
    # The sweep's own export already computed them (loading tasks can take a while).
    for meta_path in [
        sweep.dir / EXPORTS / method / "promptinit.json",
        *sorted((sweep.dir / EXPORTS).glob("*/promptinit.json")),
    ]:
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError:
                continue
            if meta.get("task_fingerprints"):
                facts = {k: meta[k] for k in ("partition", "partition_fingerprint") if k in meta}
                facts.update(
                    {k: v for k, v in (meta.get("extra") or {}).items() if k in ("partition", "partition_fingerprint")}
                )
                return dict(meta["task_fingerprints"]), facts
    from promptinit.tasks.catalog import load_task
    from promptinit.tasks.partitions import load_partition

    cfg = sweep.config
    partition = load_partition(cfg["partition"], cfg.get("catalog"))
    tasks = {n: load_task(n, cfg.get("catalog")) for n in partition.tasks}
    facts = {
        "partition": partition.name,
        "partition_fingerprint": partition.fingerprint,
        "partition_data_fingerprint": partition.data_fingerprint(tasks, cfg.get("catalog")),
    }
    return {n: t.fingerprint for n, t in tasks.items()}, facts


def _target_record(sweep: Sweep, method: str, trial_id: str) -> dict | None:
    """The target comparison of ``method``'s trial ``trial_id`` as the sweep's table has it, or
    None when the sweep did not score that trial on the targets."""
    match = sweep.targets[(sweep.targets["method"] == method) & (sweep.targets["trial_id"] == trial_id)]
    if not len(match):
        return None
    from promptinit.analysis.tables import target_record, target_rows

    cfg = sweep.config
    (row,) = target_rows(match.iloc[:1])
    target = {
        **target_record(row),
        "arg_mean": row["arg_mean"],
        "per_task": row["per_task"],
        "seeds": (cfg.get("target") or {}).get("seeds"),
        "tuning": (cfg.get("target") or {}).get("tuning"),
    }
    if not row["scores"]:
        target["note"] = "no per-pair scores: the sweep predates them, so its comparison with PT has no interval"
    return target


def export_method(
    sweep_dir: str | Path, method: str, out: str | Path, *, trial_id: str | None = None, log_mlflow: bool = True
) -> Path:
    """Export ``method``'s best prompt of a sweep to ``out`` (and log it to the sweep's MLflow run).

    Args:
        sweep_dir: the sweep directory.
        method: the upstream method.
        out: the export folder (replaced as a whole if it exists).
        trial_id: export this trial's best checkpoint instead of the method's best.
        log_mlflow: log the folder as artifacts ``exports/<method>`` of the sweep's parent run.

    Returns:
        The export folder.
    """
    from promptinit.backbones import load_prompt
    from promptinit.export import ModelInfo, export_prompt

    sweep = load_sweep(sweep_dir)
    assert sweep.dir is not None  # load_sweep reads a folder
    cfg = sweep.config
    if not cfg.get("model"):
        raise PromptinitError(
            f"{sweep.dir}: field 'config.model': missing in promptinit-sweep.json; cannot tell the model"
        )
    best = best_checkpoint(sweep, method, trial_id)
    info = ModelInfo.from_name(cfg["model"], cfg.get("prompt_length"))
    shape = (info.prompt_length, info.hidden_size) if info.prompt_length else None
    prompt = load_prompt(best.checkpoint / CHECKPOINT_PROMPT, expected_shape=shape)
    fingerprints, facts = _task_fingerprints(sweep, method)
    metrics = _export_metrics(sweep, method, best)
    extra = _export_extra(sweep, best, facts)
    psi = psi_from_checkpoint(best.checkpoint) if method == SUPMER else None
    extra.update(psi_note(method, psi))
    folder = export_prompt(
        prompt,
        info,
        out,
        method=method,
        hyperparameters=best.params,
        metrics=metrics,
        model_name=cfg["model"],
        task_fingerprints=fingerprints,
        psi_state=psi,
        extra=extra,
    )
    if log_mlflow and sweep.tracking_uri and sweep.parent_run_id:
        log_export(sweep.tracking_uri, sweep.parent_run_id, folder, method, best)
    return folder


def _finite(v: Any) -> bool:
    """Whether ``v`` is a finite number (JSON has no NaN; an SE is NaN with one validation pair)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _export_metrics(sweep: Sweep, method: str, best: Best) -> dict[str, Any]:
    """The export's metrics: the checkpoint's validation, and its target comparison when the sweep scored it."""
    cfg = sweep.config

    def reported(name: str) -> float | None:
        v = best.report.get(name)
        return v if _finite(v) else None

    validation = {
        "objective": best.objective,
        "arg": reported(VAL_ARG),
        "arg_se": reported(VAL_ARG_SE),
        "delta": reported(VAL_DELTA),
        "delta_se": reported(VAL_DELTA_SE),
        "step": best.report.get("upstream/step"),
        "seeds": (cfg.get("validation") or {}).get("seeds"),
        "tuning": (cfg.get("validation") or {}).get("tuning"),
        "report": {
            k: v
            for k, v in best.report.items()
            if ("/" in k or k in ("training_iteration", "time_total_s")) and _finite(v)
        },
    }
    target = _target_record(sweep, method, best.trial_id)
    metrics: dict[str, Any] = {"validation": validation, "target": target}
    if target is None:
        metrics["target_note"] = "the sweep did not score this checkpoint on the target tasks"
    return metrics


def _export_extra(sweep: Sweep, best: Best, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The export's extra facts: the trial and checkpoint, the model settings, the partition, the sweep."""
    assert sweep.dir is not None  # load_sweep reads a folder
    cfg = sweep.config
    return {
        "trial_id": best.trial_id,
        "checkpoint": str(best.checkpoint.relative_to(sweep.dir)),
        "prompt_length": cfg.get("prompt_length"),
        "dtype": cfg.get("dtype"),
        **facts,
        "sweep": {
            "name": sweep.name,
            "dir": str(sweep.dir),
            "mlflow_parent_run": sweep.parent_run_id,
            "tracking_uri": sweep.tracking_uri,
        },
    }


def log_export(uri: str, parent_run_id: str, folder: Path, method: str, best: Best) -> None:
    """Log an export folder as artifacts ``exports/<method>`` of the sweep's parent run."""
    from mlflow.tracking import MlflowClient

    from promptinit.analysis.results import mlflow_patience

    try:
        with mlflow_patience():
            c = MlflowClient(tracking_uri=uri)
            c.log_artifacts(parent_run_id, str(folder), artifact_path=f"exports/{method}")
            c.set_tag(
                parent_run_id,
                f"promptinit.export.{method}",
                f"{folder} (trial {best.trial_id}, {OBJECTIVE_METRICS[best.objective][0]} {best.value:.4g})",
            )
    except Exception as err:  # noqa: BLE001 - any store / network error becomes one line
        raise PromptinitError(
            f"exported to {folder}, but logging it to MLflow run {parent_run_id} at {uri} failed "
            f"({' '.join(str(err).split())[:200]}); rerun with --no-mlflow to skip logging"
        ) from None


def export_best(sweep_dir: str | Path, method: str, prompt: torch.Tensor, info: Mapping[str, Any]) -> Path:
    """The sweep's end-of-run export of one method's best prompt, PEFT-loadable.

    Writes ``<sweep>/exports/<method>/`` from the ``info`` dict ``search/sweep.py`` builds
    (hyperparameters, model, prompt_length, task_fingerprints, validation, target, trial_id,
    checkpoint, partition, ...). A SUPMER export also carries ψ_φ, read from the checkpoint.

    Returns:
        The export folder.
    """
    from promptinit.export import ModelInfo, export_prompt

    info = dict(info)
    model = info.pop("model")
    hyperparameters = info.pop("hyperparameters", {})
    fingerprints = info.pop("task_fingerprints", {})
    metrics = {"validation": info.pop("validation", None), "target": info.pop("target", None)}
    psi = None
    if method == SUPMER:
        if not info.get("checkpoint") or not Path(str(info["checkpoint"])).is_dir():
            raise PromptinitError(
                f"{Path(sweep_dir) / EXPORTS / method}: field 'checkpoint': {info.get('checkpoint')!r} is not a local "
                "checkpoint folder, and a SUPMER export needs the ψ_φ stored there; export it from the sweep "
                "directory with `promptinit export --method supmer`"
            )
        psi = psi_from_checkpoint(Path(str(info["checkpoint"])))
        info.update(psi_note(method, psi))
    return export_prompt(
        prompt,
        ModelInfo.from_name(model, info.get("prompt_length")),
        Path(sweep_dir) / EXPORTS / method,
        method=method,
        hyperparameters=hyperparameters,
        metrics=metrics,
        model_name=model,
        task_fingerprints=fingerprints,
        psi_state=psi,
        extra=info,
    )
