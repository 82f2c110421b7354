"""Phase 5, upstream: each chosen configuration meta-trained with every upstream seed.

The target interval then covers the variance of meta-training itself. Every seed trains afresh
for as many outer steps as the chosen checkpoint had (its schedule still spans the configured
``steps``); the search's own checkpoint serves the selection only, and its ``seed`` is refused as
an upstream seed (``check.refuse_search_seed``), so the seeds are exchangeable. Each run is a job
kept in ``<sweep>/final/upstream/``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from promptinit.fingerprints import digest
from promptinit.search.phases.jobs import Job
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
    out: Checkpoints = {}
    jobs = [train(ctx, arm, c, u) for arm, c in chosen.items() for u in seeds]
    for job, folder in zip(jobs, ctx.runner.run("upstream", jobs, title=title), strict=True):
        out[(job.owner[0], job.kwargs["method"].seed)] = folder
    return out


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
    folder = ctx.runner.folder / "upstream" / f"{arm}-seed{seed}-{digest(key, ctx.runner.code)}"
    method = MethodSpec(c.method, dict(c.settings), tuple(sources), seed)
    return Job(
        f"{arm} upstream seed {seed} ({c.step} steps)",
        train_job,
        dict(backbone=ctx.backbone, method=method, steps=c.step, folder=str(folder)),
        key,
        (arm, seed),
        valid=functools.partial(usable, whole=needs_restore(c.method)),
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
