"""The Ray Tune function trainable: one trial = one upstream method + one hyperparameter set.

The trial runs the method in chunks of ``steps_per_report`` outer steps. After each chunk it
scores the current prompt on the partition's *validation* tasks (downstream prompt tuning
from the prompt, test score vs the PT baseline: ``val/arg`` and its standard error over the
(task, seed) pairs ``val/arg_se``; the target tasks are never touched here) and reports with
a checkpoint (prompt + method state), so ASHA can stop it between chunks and a restarted
trial resumes from its last report. A trial a sibling sweep already ran (the same identity:
inputs, config and code) is replayed from that sweep's reports instead (``trainables.replay``).
Each report also says where the trial runs (``placement``: the Ray node, its GPUs,
``CUDA_VISIBLE_DEVICES``, the torch device), as the later jobs do.

Everything the trials share (source and validation tasks, the PT baseline scores, model
settings) reaches them once through ``tune.with_parameters``; the PT baseline is computed
before the trials start, never per trial.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ray import tune

from promptinit.errors import PromptinitError
from promptinit.fingerprints import digest
from promptinit.spaces.space import trial_settings, trial_sources
from promptinit.trainables import metrics as M
from promptinit.trainables.replay import (
    COPIED_FROM,
    IDENTITY,
    STATE_FILE,
    Original,
    Report,
    copy_of,
    find_original,
    replayed,
)
from promptinit.trainables.scoring import PROMPT_FILE

# In every report: where this run of the trial is placed, the facts the phases after the search
# keep for their jobs (``jobs.Ran``): {"node", "gpu_ids", "cuda_visible_devices", "device",
# "started", "reported"} (the last two wall-clock Unix seconds: the run's start, this report).
PLACEMENT = "placement"


@dataclass(frozen=True)
class Shared:
    """Inputs every trial of a sweep shares (put in Ray's object store once).

    Attributes:
        backbone: ``BackboneConfig`` fields.
        source_tasks: the partition's source tasks (the methods' meta-training data).
        validation_tasks: the partition's validation tasks (the search objective).
        validation_seeds: few-shot seeds of the validation score.
        validation_tuning: ``TuneConfig`` fields of the (cheap) validation tuning.
        baseline: PT test score per (validation task, seed) under that tuning.
        steps_per_report: outer steps between two reports (one ASHA rung unit).
        seed: the methods' seed (the same for every trial, so trials differ only by settings).
        method_kwargs: extra ``build_method`` arguments per method (hook for SUPMER / MetaPT data).
        code: the fingerprint of the code that computes a trial's reports (``jobs.code_fingerprint``).
        replay_from: sibling sweep folders whose trials this sweep's trials replay when they are
            the same trial (``trainables.replay``); empty: every trial is computed.
    """

    backbone: dict
    source_tasks: tuple
    validation_tasks: tuple
    validation_seeds: tuple[int, ...]
    validation_tuning: dict
    baseline: dict
    steps_per_report: int
    seed: int = 0
    method_kwargs: dict = field(default_factory=dict)
    code: str = ""
    replay_from: tuple[str, ...] = ()

    def identity(self, config: Mapping[str, Any], dtype: str) -> str:
        """A trial's identity: a digest of everything that decides its reports (these inputs, the
        trial's config, the code, and ``dtype``, what the backbone's dtype resolves to on the node:
        ``auto`` is bfloat16 on one CPU and float32 on another), not of where its sweep or its files are."""
        return digest(
            self.code,
            self.backbone,
            dtype,
            [t.fingerprint for t in self.source_tasks],
            [t.fingerprint for t in self.validation_tasks],
            list(self.validation_seeds),
            self.validation_tuning,
            sorted([str(k), v] for k, v in self.baseline.items()),
            self.steps_per_report,
            self.seed,
            self.method_kwargs,
            dict(config),
        )


def _check_finite(values: Mapping[str, float], prompt, step: int) -> None:
    # A diverged trial must end FAILED, not report NaN forever (ASHA would keep it running).
    bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"trial diverged at upstream step {step}: {bad}; lower the learning rates or clip gradients"
        )
    if not bool(prompt.detach().isfinite().all()):
        raise FloatingPointError(f"trial diverged at upstream step {step}: the prompt holds NaN/inf values")


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _node_dtype(backbone: dict) -> str:
    """The dtype the backbone's ``dtype`` resolves to on this node (``auto``: bfloat16 where the
    CPU or GPU computes it natively, else float32)."""
    from promptinit.backbones import BackboneConfig
    from promptinit.backbones.backbone import resolve_dtype

    config = BackboneConfig(**backbone)
    return str(resolve_dtype(config.dtype, config.resolved_device()))


def _placement() -> dict[str, Any]:
    """Where this run of the trial is placed (``trainables.placement``: node, GPUs,
    ``CUDA_VISIBLE_DEVICES``, torch device) and its wall-clock start (Unix seconds)."""
    from promptinit.trainables.placement import placement

    return {**placement("trial"), "node": _node_id(), "started": time.time()}


def release_memory() -> int:
    """Collect garbage and hand the heap's free pages back to the OS (glibc's ``malloc_trim``);
    returns 1 when memory was returned, 0 when none was or the C library has no such call.

    Tune reuses a trial's actor for the next trial, and glibc keeps what a trial freed: on study
    v2's MTL search (16 sources, 7 Dec) each actor's resident memory grew from 5-6 GB to 8-9 GB
    with its second trial, toward Ray's out-of-memory kill at 95 % of the node; ``malloc_trim(0)``
    on the live actors returned 9.2 -> 3.2 GB and 7.9 -> 2.5 GB (nothing was leaked, only kept)."""
    gc.collect()
    try:
        return int(ctypes.CDLL(None).malloc_trim(0))
    except AttributeError:  # not glibc (macOS, musl): the allocator returns memory its own way
        return 0


def train_prompt_init(config: dict[str, Any], *, shared: Shared) -> None:
    """Run one trial: build the method, train it in chunks, report ``val/arg`` with checkpoints.

    Args:
        config: the trial's config from ``spaces.SweepSpace``:
            ``{"method": "maml", "maml": {"inner_lr": ..., "steps": ..., ...}}``.
        shared: the sweep's shared inputs (given by ``tune.with_parameters``).

    Raises:
        FloatingPointError: a metric or the prompt became NaN/inf (the trial is marked FAILED).
    """
    from promptinit.evaluation import TuneConfig
    from promptinit.trainables.scoring import grad_transform_of, tuned_scores, validation_metrics

    method_name, settings = trial_settings(config)
    total = int(settings["steps"])
    state = {
        "method": method_name,
        "settings": settings,
        IDENTITY: shared.identity(config, _node_dtype(shared.backbone)),
    }
    release_memory()  # what the actor's previous trial freed
    placement = _placement()
    step, carried, load = _start(shared.replay_from, state, total)
    if step >= total:
        return
    backbone, method = _build(config, shared, load)
    tuning = TuneConfig(**shared.validation_tuning)
    while step < total and not _stopped(method):
        cpu0 = time.process_time()
        means, done, seconds = _chunk(method, min(shared.steps_per_report, total - step), step)
        step += done
        t1 = time.perf_counter()
        # SUPMER's ψ also acts on downstream tuning, as it will on the target tasks.
        scores = tuned_scores(
            backbone, method.prompt, shared.validation_tasks, shared.validation_seeds, tuning, grad_transform_of(method)
        )
        report = {
            **means,
            **validation_metrics(scores, shared.baseline),
            M.STEP: step,
            M.TOTAL_STEPS: total,
            M.SECONDS_PER_STEP: seconds,
            M.VALIDATION_SECONDS: time.perf_counter() - t1,
            M.CPU_SECONDS: time.process_time() - cpu0,
            M.NODE_ID: placement["node"],
            PLACEMENT: {**placement, "reported": time.time()},
            **({M.REPLAYED_SECONDS: carried} if carried else {}),
        }
        _check_finite({M.VAL_ARG: report[M.VAL_ARG]}, method.prompt, step)
        release_memory()  # what the validation's batched tuning freed
        _report(report, {**state, "step": step}, partial(_write_method, method, method_name, step))


def _build(config: dict[str, Any], shared: Shared, load: Callable[[Any], object] | None) -> tuple[Any, Any]:
    """The trial's backbone and method, its state loaded by ``load`` (None: a new method)."""
    from promptinit.backbones import Backbone, BackboneConfig
    from promptinit.methods import build_method

    method_name, settings = trial_settings(config)
    backbone = Backbone(BackboneConfig(**shared.backbone))
    method = build_method(
        method_name,
        backbone,
        trial_sources(config, shared.source_tasks),
        settings,
        seed=shared.seed,
        **shared.method_kwargs.get(method_name, {}),
    )
    if load is not None:
        load(method)
    return backbone, method


def _start(folders: tuple[str, ...], state: dict, total: int) -> tuple[int, float, Callable[[Any], object] | None]:
    """Where a trial starts: its upstream step, the replayed trial-seconds its reports carry, and
    what loads the method's state (None: a new method). A restarted trial goes on from its own
    checkpoint; a new one, or one restarted from a replayed checkpoint without the method's
    state, replays what a sibling sweep's trial with its identity reported (``_replay``)."""
    from promptinit.methods.checkpoint import load_checkpoint

    step, carried, has_state = _restored()
    if has_state:
        return step, carried, _restore
    step, carried, resume_from = _replay(folders, state, step, total, carried)
    if resume_from is not None:
        return step, carried, partial(load_checkpoint, folder=resume_from)
    if 0 < step < total:
        raise PromptinitError(
            f"trial checkpoint at upstream step {step} was replayed from a trial that is gone and holds no "
            "method state to go on from; delete the trial's folder to compute it afresh"
        )
    return step, carried, None


def _restored() -> tuple[int, float, bool]:
    """A restarted trial's (failure, --resume) checkpoint: its step (0 for a new trial), the replayed
    trial-seconds its reports carry, and whether it holds the method's state (a checkpoint a
    replay copied from a trial that kept only its prompt does not)."""
    from promptinit.methods.checkpoint import STATE

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0, 0.0, False
    with checkpoint.as_directory() as folder:
        doc = json.loads((Path(folder) / STATE_FILE).read_text())
        has_state = (Path(folder) / STATE).is_file()
    return int(doc["step"]), float(doc["report"].get(M.REPLAYED_SECONDS, 0.0)), has_state


def _replay(
    folders: tuple[str, ...], state: dict, after: int, total: int, carried: float
) -> tuple[int, float, Path | None]:
    """Report the reports after upstream step ``after`` of a sibling sweep's trial with this
    trial's identity (``trainables.replay``); returns the step reached, the replayed
    trial-seconds the next reports carry, and the checkpoint to go on training from."""
    original = find_original(folders, state[IDENTITY]) if folders else None
    if original is None:
        return after, carried, None
    reports, resume = original.plan(after, total)
    if reports:
        print(f"replaying {len(reports)} reports of {original.trial} (the same trial: inputs, config and code)")
    for r in reports:
        _report_replayed(r, original, state)
    last = resume or (reports[-1] if reports else None)
    if last is None:
        return after, carried, None
    return last.step, last.seconds, resume.checkpoint if resume else None


def _report_replayed(r: Report, original: Original, state: dict) -> None:
    """One replayed report, with a copy of the original's checkpoint where it kept one."""
    values = replayed(r, original)
    if r.checkpoint is None:
        tune.report(values)
        return
    copied = {**state, "step": r.step, COPIED_FROM: copy_of(r.checkpoint, original)}
    _report(values, copied, partial(shutil.copytree, r.checkpoint, dirs_exist_ok=True))


def _restore(method) -> None:
    """Load a restarted trial's method state from its checkpoint."""
    from promptinit.methods.checkpoint import load_checkpoint

    checkpoint = tune.get_checkpoint()
    with checkpoint.as_directory() as folder:
        load_checkpoint(method, folder)


def _stopped(method) -> bool:
    """MetaPT's early stopping ended the run."""
    return bool(getattr(method, "stopped", False))


def _chunk(method, steps: int, step: int) -> tuple[dict[str, float], int, float]:
    """Up to ``steps`` outer steps from ``step``: (mean of each step metric, steps done, seconds per step)."""
    sums: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    done = 0
    for done in range(1, steps + 1):
        out = {k: float(v) for k, v in method.step().items()}
        _check_finite(out, method.prompt, step + done)
        for k, v in out.items():
            sums[k] += v
        if _stopped(method):
            break
    return {k: v / done for k, v in sums.items()}, done, (time.perf_counter() - t0) / done


def _write_method(method, method_name: str, step: int, folder: Path) -> None:
    """The method's checkpoint (prompt + state) in ``folder``."""
    from promptinit.backbones import save_prompt
    from promptinit.methods.checkpoint import save_checkpoint

    save_checkpoint(method, folder)
    save_prompt(method.prompt, folder / PROMPT_FILE, {"method": method_name, "step": str(step)})


def _report(report: dict, state: dict, fill: Callable[[Path], object]) -> None:
    """``tune.report`` with a checkpoint: ``fill`` writes its files, then the trial's state and
    the report itself go in ``trial.json``."""
    with tempfile.TemporaryDirectory(prefix="promptinit-ckpt-") as folder:
        fill(Path(folder))
        (Path(folder) / STATE_FILE).write_text(json.dumps({**state, "report": report}, indent=1, default=str))
        # Tune copies the folder to the trial's storage before report() returns.
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))


def trial_dirname(trial) -> str:
    """Short trial folder names (``maml_3f2a1b0c``) instead of Tune's config-string ones."""
    return f"{trial.config.get('method', 'trial')}_{trial.trial_id}"


def make_trainable(shared: Shared, cpu: float, gpu: float):
    """``train_prompt_init`` bound to the sweep's shared inputs and per-trial resources.

    Args:
        shared: the sweep's shared inputs (placed in the object store once).
        cpu: CPUs per trial.
        gpu: GPUs per trial; a fraction lets several small trials share one GPU.
    """
    trainable = tune.with_parameters(train_prompt_init, shared=shared)
    return tune.with_resources(trainable, {"cpu": cpu, "gpu": gpu})
