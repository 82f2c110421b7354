"""Phase 1, check: everything that can be refused before Ray starts and before anything is written.

The sweep YAML (``config.load_sweep_config``), ``storage_path``, the model (it resolves and its
config loads), the partition's tasks (loaded, so a bad catalog entry is one line), a MetaPT pool
that would leak a held-out task, and with ``--resume`` the sweep folder (Tune's state, or without it
the kept finished trials a search is rebuilt from: ``rebuild``). A problem is one
``PromptinitError`` line naming the file, the field and the fix (exit code 2).
"""

from __future__ import annotations

import logging
import pickletools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptinit.errors import PromptinitError, read_json
from promptinit.search.phases.config import SweepConfig, check_model, check_storage, load_partition, load_sweep_config
from promptinit.search.phases.searcher import KEPT_FILE
from promptinit.search.phases.tracking import resolve_tracking_uri
from promptinit.tasks.task import Task

logger = logging.getLogger(__name__)

RECORD_FILE = "promptinit-sweep.json"  # parent run id, tracking URI, the validated config
TUNER_FILE = "tuner.pkl"  # written by Tune when a sweep starts; its presence means "resumable"
EXPERIMENT_STATE = "experiment_state-*.json"  # Tune's experiment snapshots
AFRESH = "start the sweep afresh under a new `name`"


@dataclass(frozen=True)
class Request:
    """What the command line asks for."""

    config: str  # the sweep YAML
    resume: bool = False  # continue the interrupted sweep of this config
    smoke: bool = False  # one trial per method, a few steps, one seed


@dataclass(frozen=True)
class TaskSets:
    """The partition's tasks, loaded: sources most similar to the targets first (a trial takes
    the first k), then the validation and target tasks the config uses."""

    source: tuple[Task, ...]
    validation: tuple[Task, ...]
    target: tuple[Task, ...]
    ranking: tuple[tuple[str, float], ...]  # (source, similarity to the targets); NaN without source_selection


@dataclass(frozen=True)
class Checked:
    """A sweep that passed every check.

    Attributes:
        cfg: the validated config.
        where: the config's file (errors and the MLflow tag name it).
        resume: continue the sweep in ``cfg.sweep_dir``.
        rebuild: resume without Tune's state, from the kept finished trials (``rebuild``).
        tracking_uri: MLflow's URI (``MLFLOW_TRACKING_URI``, the config's, or the sweep folder's sqlite).
        record: the resumed sweep's record (``promptinit-sweep.json``), ``{}`` for a new sweep.
        partition: the partition (names).
        tasks: its tasks, loaded.
        shared: other folders of kept job results the sweep reuses (a study's, for its searches).
    """

    cfg: SweepConfig
    where: str
    resume: bool
    tracking_uri: str
    record: dict
    partition: Any
    tasks: TaskSets
    shared: tuple[Path, ...] = ()
    rebuild: bool = False


def resumable_from(sweep_dir: Path) -> str | None:
    """What ``--resume`` would continue a sweep folder from: ``"tune"`` (Tune's state), ``"kept"``
    (no Tune state, the kept finished trials: ``rebuild``), or None (nothing to resume)."""
    if (sweep_dir / TUNER_FILE).is_file():
        return "tune"
    return "kept" if (sweep_dir / KEPT_FILE).is_file() and (sweep_dir / RECORD_FILE).is_file() else None


def sweep(request: Request) -> Checked:
    """Check the sweep a command line asks for (see the module docstring)."""
    cfg = load_sweep_config(request.config)
    return config(cfg.smoke() if request.smoke else cfg, request.config, request.resume)


def config(cfg: SweepConfig, where: str, resume: bool) -> Checked:
    """Check a validated sweep config (a study passes its search arms' configs here).

    Raises:
        PromptinitError: one line naming the file, the field and the fix.
    """
    check_storage(cfg, where)
    refuse_search_seed(cfg, where)
    found = resumable_from(cfg.sweep_dir)
    if resume and found is None:
        raise PromptinitError(
            f"{cfg.sweep_dir}: nothing to resume (no {TUNER_FILE}, nor {KEPT_FILE} beside {RECORD_FILE}); "
            "run without --resume"
        )
    if not resume and found is not None:
        raise PromptinitError(
            f"{where}: field 'name': a sweep already ran in {cfg.sweep_dir}; pass --resume to "
            "continue it, or change `name`"
        )
    uri = resolve_tracking_uri(cfg.tracking_uri, cfg.sweep_dir)
    rebuild = resume and found == "kept"
    record = {} if not resume else kept_record(cfg.sweep_dir) if rebuild else resumable(cfg.sweep_dir, uri)
    check_model(cfg, where)
    partition = load_partition(cfg)
    tasks = load_tasks(cfg, partition)
    check_metapt_pool(cfg, where, (*tasks.validation, *tasks.target))
    return Checked(cfg, where, resume, uri, record, partition, tasks, rebuild=rebuild)


def refuse_search_seed(cfg: SweepConfig, where: str) -> None:
    """Refuse target upstream seeds that hold the search's own ``seed``: meta-trained with it, the
    chosen configuration repeats the very run the search picked for its validation score (the
    winner's upward bias), so that seed would not be exchangeable with the others."""
    if cfg.seed in cfg.target.upstream_seeds:
        raise PromptinitError(
            f"{where}: field 'target.upstream_seeds': {cfg.target.upstream_seeds} holds the search's seed "
            f"{cfg.seed} (field 'seed'); its run is the one the search chose for its validation score, so it is "
            f"not exchangeable with fresh runs; list only seeds other than {cfg.seed}"
        )


def load_tasks(cfg: SweepConfig, partition: Any) -> TaskSets:
    """The partition's tasks as the config uses them; sources ranked by ``cfg.ranked_sources``
    (the one source-selection rule: a study's preset arms and its sweeps train on the same sources)."""
    from promptinit.tasks.catalog import load_task

    def load(names: Sequence[str]) -> tuple[Task, ...]:
        return tuple(load_task(t, cfg.catalog) for t in names)

    ranking = tuple(cfg.ranked_sources(partition))
    if cfg.source_selection is not None:
        logger.info(
            "sources by similarity to the targets: %s; trials use the first k of %s",
            ", ".join(f"{n} {s:.3f}" for n, s in ranking),
            list(cfg.source_selection.counts),
        )
    return TaskSets(
        load([name for name, _ in ranking]),
        load(cfg.validation.select(partition.validation, "validation")),
        load(cfg.target.select(partition.target, "target")),
        ranking,
    )


def check_metapt_pool(cfg: SweepConfig, where: str, heldout: Sequence[Task]) -> None:
    """Refuse a MetaPT pre-training pool that any trial could draw (``pool`` fixed or a choice)
    when it is a target or validation task's corpus."""
    if "metapt" not in cfg.methods:
        return
    from promptinit.methods import make_config

    param = cfg.space().space("metapt").params.get("pool")
    pools = getattr(param, "options", None) or [getattr(param, "value", make_config("metapt").pool)]
    refuse_leaky_pool(pools, where, heldout)


def refuse_leaky_pool(pools: Sequence[str], where: str, heldout: Sequence[Task]) -> None:
    """Refuse MetaPT ``pools`` (values of its ``pool`` setting) that hold a held-out task's corpus;
    the error starts with ``where``."""
    from promptinit.methods.metapt import Pool, check_pool_leakage, sentiment_pool

    if Pool.SENTIMENT.value in pools:
        try:
            check_pool_leakage([sentiment_pool(None, 0)], heldout)
        except PromptinitError as err:
            raise PromptinitError(f"{where}: {err}") from None


def trial_states(sweep_dir: Path) -> dict[str, tuple[str, dict | None]]:
    """Trial id -> (Tune status, last result), from the experiment state on disk.

    Returns ``{}`` only when Tune wrote no experiment state: the driver died before Tune's first
    snapshot, so no trial is on record.

    Raises:
        PromptinitError: an experiment state exists but cannot be read (corrupt, or written by
            another Ray version). Reading it as "no trials" would close every open MLflow run
            FAILED although their trials may have finished.
    """
    found = sorted(Path(sweep_dir).glob(EXPERIMENT_STATE))
    if not found:
        return {}
    import ray
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(sweep_dir))
        return {t.trial_id: (t.status, dict(t.last_result or {})) for t in analysis.trials}
    except Exception as err:  # noqa: BLE001 - Tune raises many types for a state it cannot read; all mean this
        newest = max(found, key=lambda p: p.stat().st_mtime)
        raise PromptinitError(
            f"{newest}: Tune's experiment state is unreadable ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}); the trials' outcomes are unknown. Read it with the Ray version "
            f"that wrote it (this is Ray {ray.__version__}), or start the sweep afresh under a new `name`"
        ) from None


def _complete_pickle(path: Path) -> bool:
    """Whether ``path`` holds a whole pickle (walks the opcodes without unpickling anything)."""
    try:
        data = path.read_bytes()
        for _ in pickletools.genops(data):
            pass
    except (OSError, ValueError, EOFError):  # missing, truncated, or a malformed opcode
        return False
    return bool(data)


def resumable(sweep_dir: Path, uri: str) -> dict:
    """What ``--resume`` needs, read and checked: the sweep's record (its MLflow parent run and
    tracking URI, the same URI as now), a complete Tune state, the sqlite store when the sweep
    logs to one in its folder, the Optuna study's file, and Tune's experiment state.

    Returns:
        The sweep's record.

    Raises:
        PromptinitError: one line naming the file and the field, and the fix.
    """
    path = sweep_dir / RECORD_FILE
    if not path.is_file():
        raise PromptinitError(
            f"{path}: missing (the sweep's MLflow parent run and tracking URI are recorded there); "
            f"this folder cannot be resumed; {AFRESH}"
        )
    record = _record(path)
    for key in ("parent_run_id", "tracking_uri"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise PromptinitError(
                f"{path}: field {key!r}: missing or not a string; this folder cannot be resumed; {AFRESH}"
            )
    if record["tracking_uri"] != uri:
        raise PromptinitError(
            f"{path}: field 'tracking_uri': this sweep logs to MLflow at {record['tracking_uri']!r}, "
            f"not {uri!r}; resume with the same MLFLOW_TRACKING_URI / tracking_uri"
        )
    if not _complete_pickle(sweep_dir / TUNER_FILE):
        raise PromptinitError(
            f"{sweep_dir / TUNER_FILE}: Tune's state is truncated or corrupt (an interrupted "
            f"write?); the sweep cannot be resumed; {AFRESH}"
        )
    _check_sqlite(
        uri,
        sweep_dir,
        f"{path}: field 'tracking_uri': the MLflow store {{db}} is missing, so the sweep's runs are gone; {AFRESH}",
    )
    # Tune's snapshot holds this URL: without the file the resumed searcher would start an empty study.
    _check_sqlite(
        str(record.get("optuna_storage", "")),
        None,
        f"{path}: field 'optuna_storage': the search's Optuna study {{db}} is missing "
        f"(Tune's searcher state points at it); {AFRESH}",
    )
    trial_states(sweep_dir)  # an unreadable experiment state is one line here, not after Ray started
    return record


def kept_record(sweep_dir: Path) -> dict:
    """What a resume without Tune's state needs, read and checked: the sweep's record and the kept
    finished trials, each with its folder (``rebuild.kept_trials``).

    Returns:
        The sweep's record.
    """
    from promptinit.search.phases.rebuild import kept_trials

    record = _record(sweep_dir / RECORD_FILE)
    kept_trials(sweep_dir)
    return record


def _record(path: Path) -> dict:
    record = read_json(path)
    if not isinstance(record, dict):
        raise PromptinitError(f"{path}: expected a JSON object (parent_run_id, tracking_uri, config); {AFRESH}")
    return record


def _check_sqlite(url: str, inside: Path | None, message: str) -> None:
    """Refuse a missing sqlite file behind ``url`` (only under ``inside`` when given)."""
    if not url.startswith("sqlite:///"):
        return
    db = Path(url.removeprefix("sqlite:///"))  # sqlite:////abs/path
    if db.is_absolute() and (inside is None or db.is_relative_to(inside)) and not db.is_file():
        raise PromptinitError(message.format(db=db))
