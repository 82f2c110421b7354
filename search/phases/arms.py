"""Where an arm's downstream tuning starts: a checkpoint's prompt, or the method itself.

Shared by the phases that tune from upstream checkpoints (select, target) and by a study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptinit.search.phases.jobs import Start, checkpoint_key
from promptinit.search.phases.prepare import Context
from promptinit.search.phases.searching import Candidate


def checkpoint_path(checkpoint: Any) -> str:
    """Where a checkpoint (a ``tune.Checkpoint`` or a ``train_job`` folder) lives."""
    return str(checkpoint if isinstance(checkpoint, (str, Path)) else checkpoint.path)


def checkpoint_prompt(checkpoint: Any) -> Any:
    """The prompt stored in a checkpoint."""
    from promptinit.backbones import load_prompt
    from promptinit.trainables.scoring import PROMPT_FILE, checkpoint_folder

    with checkpoint_folder(checkpoint) as folder:
        return load_prompt(Path(folder) / PROMPT_FILE)


def start_from(ctx: Context, candidate: Candidate, checkpoint: Any, upstream_seed: int) -> Start:
    """Tuning from ``checkpoint`` of ``candidate``'s configuration: its prompt, or for a method
    whose ψ acts downstream too (SUPMER) the whole method restored from the checkpoint."""
    from promptinit.spaces import trial_sources
    from promptinit.trainables.scoring import MethodSpec, needs_restore

    key = {
        "method": candidate.method,
        "settings": dict(candidate.settings),
        "checkpoint": checkpoint_key(checkpoint_path(checkpoint)),
        "upstream_seed": upstream_seed,
    }
    if needs_restore(candidate.method):
        sources = tuple(trial_sources(candidate.config, ctx.source))
        return Start(
            {"method": MethodSpec(candidate.method, dict(candidate.settings), sources, upstream_seed, checkpoint)}, key
        )
    return Start({"init": checkpoint_prompt(checkpoint)}, key)
