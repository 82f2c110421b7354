"""Phase 5, upstream: each chosen configuration meta-trained with every upstream seed.

The target interval then covers the variance of meta-training itself. Every seed trains afresh
for as many outer steps as the chosen checkpoint had (its schedule still spans the configured
``steps``); the search's own checkpoint serves the selection only, and its ``seed`` is refused as
an upstream seed (``check.refuse_search_seed``), so the seeds are exchangeable. Each run is a job
kept in ``<sweep>/final/upstream/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from promptinit.fingerprints import digest
from promptinit.search.phases.jobs import UPSTREAM_DIR, Job, Runner
from promptinit.search.phases.prepare import Context
from promptinit.search.phases.searching import Candidate

Checkpoints = dict[tuple[str, int], Any]  # (arm, upstream seed) -> checkpoint (tune.Checkpoint or folder)


def run(
    ctx: Context,
    chosen: Mapping[str, Candidate],
    seeds: Sequence[int],
    title: str = "upstream",
) -> Checkpoints:
    """``{(arm, upstream seed): checkpoint}`` for every arm of ``chosen`` and every seed.

    Args:
        ctx: the sweep's context.
        chosen: arm -> its configuration (a sweep's arms are its methods).
        seeds: upstream seeds.
        title: the logged lines' title.
    """
    from promptinit.trainables.scoring import needs_restore

    out: Checkpoints = {}
    jobs = [train(ctx, arm, c, u) for arm, c in chosen.items() for u in seeds]
    for job, value in zip(jobs, ctx.runner.run("upstream", jobs, title=title), strict=True):
        whole = needs_restore(job.kwargs["method"].name)
        folder = located(ctx.runner, value, whole) or Path(value)
        out[(job.owner[0], job.kwargs["method"].seed)] = str(folder)
        if whole:
            keep_psi(folder)
    return out


def located(runner: Runner, value: Any, whole: bool = False) -> Path | None:
    """Where the kept run a record names is on this machine: the recorded folder, or the folder of
    its name in this runner's or a shared runner's ``upstream/`` (a record written in another
    checkout names that checkout's absolute path; the name is the digest of what the run trained).
    None when no usable one is there (``usable``)."""
    name = Path(str(value)).name
    for folder in (Path(str(value)), *(f / UPSTREAM_DIR / name for f in (runner.folder, *runner.shared))):
        if usable(folder, whole):
            return folder
    return None


PSI_DTYPE = torch.bfloat16
PSI_NOTE = "SUPMER's psi from state.json's field 'psi', in bfloat16 (trained in float32; relative error <= 2^-8)"


def keep_psi(folder: Path) -> Path | None:
    """Write SUPMER's ψ beside a kept run's prompt as ``psi.safetensors`` (floating tensors in
    bfloat16), so the run folder can keep its result without the method's state: ψ is 5.4 MB in
    float32 per SmolLM2 run and its optimizer state 10.7 MB; in bfloat16 2.7 MB (a study's 15 MB
    budget holds 3 seeds). Rewritten from the whole checkpoint whenever that is there (a run
    trained again replaces it); a folder already cut to its prompt and ψ is left as it is. None
    when the run trained no ψ (``use_mgr: false``)."""
    from safetensors.torch import save

    from promptinit.export import PSI
    from promptinit.files import atomic_write
    from promptinit.methods.checkpoint import STATE, TENSORS, read_checkpoint

    kept = folder / PSI
    if not (folder / STATE).is_file():
        return kept if kept.is_file() else None
    if kept.is_file() and kept.stat().st_mtime >= (folder / TENSORS).stat().st_mtime:
        return kept  # written from this checkpoint already: not read again (16 MB) on every resume
    psi = read_checkpoint(folder).get("psi")
    if not psi:
        return None
    tensors = {k: (v.to(PSI_DTYPE) if v.is_floating_point() else v).contiguous() for k, v in psi.items()}
    atomic_write(kept, save(tensors, metadata={"note": PSI_NOTE}))
    return kept


def train(ctx: Context, arm: str, c: Candidate, seed: int) -> Job:
    """The job that meta-trains ``c``'s configuration afresh with upstream ``seed``."""
    from promptinit.spaces import trial_sources
    from promptinit.trainables.scoring import MethodSpec, needs_restore, train_job

    sources = trial_sources(c.config, ctx.source)
    key = {
        "backbone": ctx.backbone,
        "method": c.method,
        "settings": dict(c.settings),
        "steps": c.step,
        "upstream_seed": seed,
        "sources": [t.fingerprint for t in sources],
    }
    folder = ctx.runner.folder / UPSTREAM_DIR / f"{arm}-seed{seed}-{digest(key, ctx.runner.code)}"
    method = MethodSpec(c.method, dict(c.settings), tuple(sources), seed)
    return Job(
        f"{arm} upstream seed {seed} ({c.step} steps)",
        train_job,
        dict(backbone=ctx.backbone, method=method, steps=c.step, folder=str(folder)),
        key,
        (arm, seed),
        valid=lambda value: located(ctx.runner, value, needs_restore(c.method)) is not None,
    )


def usable(value: Any, whole: bool = False) -> bool:
    """Whether a kept upstream checkpoint can still start downstream tuning: its prompt is there,
    and with ``whole`` (a method tuned downstream with its own state, SUPMER's ψ) the method's
    checkpoint too. A folder cut to its prompt (``rebuild.portable_files``) serves every other
    method; for that one the run is trained again."""
    from promptinit.methods.checkpoint import STATE
    from promptinit.trainables.scoring import PROMPT_FILE

    folder = Path(value)
    return (folder / PROMPT_FILE).is_file() and (not whole or (folder / STATE).is_file())


def build_caches(ctx: Context, chosen: Mapping[str, Candidate]) -> None:
    """Build once every arm whose method has expensive on-disk caches (corpora, clusters), so the
    upstream seeds running side by side read them instead of computing them together."""
    from promptinit.spaces import ALL_SPACES
    from promptinit.trainables.scoring import prepare_job

    sources = [t.fingerprint for t in ctx.source]
    jobs = [
        Job(
            f"prepare {arm}",
            prepare_job,
            dict(
                backbone=ctx.backbone, name=c.method, settings=dict(c.settings), source_tasks=ctx.source, seed=ctx.seed
            ),
            {"backbone": ctx.backbone, "prepare": c.method, "settings": dict(c.settings), "sources": sources},
        )
        for arm, c in chosen.items()
        if ALL_SPACES[c.method].prepare
    ]
    if jobs:
        ctx.runner.run("prepare", jobs)
