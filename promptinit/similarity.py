"""Task similarity from tuned prompts (Qin et al. 2023, appendix A.7).

Each task's tuned prompt P [L, d] spans a subspace of the embedding space; its top-k right
singular vectors V_k [k, d] are an orthonormal basis of that subspace. Two tasks are similar
when their subspaces overlap: the score is the mean squared cosine of the principal angles
between them,

    sim(a, b) = ||V_a V_b^T||_F^2 / k,

which is 1 for identical subspaces and 0 for orthogonal ones. ``select_sources`` turns the
scores into a partition option: keep the k candidate source tasks most similar to the target
tasks, so the choice of sources becomes one more dimension a sweep can search.

References:
    Qin et al., "Learning to Initialize: Can Meta Learning Improve Cross-task Generalization
    in Prompt Tuning?", ACL 2023, appendix A.7.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from promptinit.errors import PromptinitError

if TYPE_CHECKING:
    from promptinit.tasks.partitions import Partition

DEFAULT_RANK = 4  # singular vectors kept per prompt


def prompt_subspace(prompt: torch.Tensor, k: int = DEFAULT_RANK, center: bool = False) -> torch.Tensor:
    """Orthonormal basis [k, d] of the top-k right singular vectors of a prompt [L, d].

    Args:
        prompt: the tuned prompt.
        k: subspace rank (capped at min(L, d)).
        center: subtract the mean prompt vector first (compares directions of variation
            rather than the prompt's offset from the origin).

    Returns:
        The basis, one row per singular vector (float64).
    """
    if prompt.dim() != 2:
        raise PromptinitError(f"a prompt must be [L, d], got shape {list(prompt.shape)}")
    if k < 1:
        raise PromptinitError(f"field 'k': subspace rank {k} must be >= 1")
    P = prompt.detach().to("cpu", torch.float64)
    if center:
        P = P - P.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(P, full_matrices=False)
    return vh[: min(k, vh.shape[0])]


def subspace_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between two subspaces.

    Args:
        a: orthonormal basis [k_a, d].
        b: orthonormal basis [k_b, d].

    Returns:
        ``||a b^T||_F^2 / min(k_a, k_b)`` in [0, 1].
    """
    if a.shape[1] != b.shape[1]:
        raise PromptinitError(
            f"subspaces of different widths {a.shape[1]} and {b.shape[1]} (prompts of different models?)"
        )
    overlap = (a.to(torch.float64) @ b.to(torch.float64).T).pow(2).sum().item()
    return float(min(max(overlap / min(a.shape[0], b.shape[0]), 0.0), 1.0))


def prompt_similarity(a: torch.Tensor, b: torch.Tensor, k: int = DEFAULT_RANK, center: bool = False) -> float:
    """Similarity of two prompts [L, d]: ``subspace_similarity`` of their top-k subspaces."""
    return subspace_similarity(prompt_subspace(a, k, center), prompt_subspace(b, k, center))


def similarity_matrix(
    prompts: Mapping[str, torch.Tensor], k: int = DEFAULT_RANK, center: bool = False
) -> tuple[list[str], np.ndarray]:
    """Pairwise similarity of every task's prompt.

    Args:
        prompts: task name -> tuned prompt [L, d].
        k: subspace rank.
        center: see ``prompt_subspace``.

    Returns:
        ``(names, S)`` with ``S[i, j] = sim(names[i], names[j])``, symmetric, ones on the diagonal.
    """
    names = list(prompts)
    bases = [prompt_subspace(prompts[n], k, center) for n in names]
    S = np.eye(len(names))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            S[i, j] = S[j, i] = subspace_similarity(bases[i], bases[j])
    return names, S


def rank_sources(
    targets: Sequence[str],
    candidates: Sequence[str],
    prompts: Mapping[str, torch.Tensor],
    k: int = DEFAULT_RANK,
    center: bool = False,
) -> list[tuple[str, float]]:
    """Candidate source tasks ordered by mean similarity to the target tasks (best first).

    Ties are broken by name, so the order is deterministic. Candidates that are also targets
    are left out (a partition never shares tasks between source and target).

    Returns:
        ``[(candidate, score), ...]``.
    """
    if not targets:
        raise PromptinitError("field 'targets': name at least one target task")
    pool = [c for c in dict.fromkeys(candidates) if c not in set(targets)]
    missing = [t for t in [*targets, *pool] if t not in prompts]
    if missing:
        raise PromptinitError(
            f"no tuned prompt for task {missing[0]!r} ({len(missing)} missing); tune one with "
            f"`promptinit tune --task {missing[0]} --out DIR/{missing[0]}.safetensors`"
        )
    target_bases = [prompt_subspace(prompts[t], k, center) for t in targets]
    scored = []
    for c in pool:
        basis = prompt_subspace(prompts[c], k, center)
        scored.append((c, float(np.mean([subspace_similarity(basis, tb) for tb in target_bases]))))
    return sorted(scored, key=lambda cs: (-cs[1], cs[0]))


def select_sources(
    targets: Sequence[str],
    candidates: Sequence[str],
    prompts: Mapping[str, torch.Tensor],
    k: int,
    *,
    rank: int = DEFAULT_RANK,
    center: bool = False,
) -> list[str]:
    """The ``k`` candidate source tasks most similar to the target tasks.

    Args:
        targets: target task names.
        candidates: candidate source task names.
        prompts: task name -> tuned prompt [L, d] for every target and candidate.
        k: how many sources to keep.
        rank: subspace rank of each prompt.
        center: see ``prompt_subspace``.

    Returns:
        The chosen sources, most similar first.

    Raises:
        PromptinitError: ``k`` out of range, or a task without a prompt.
    """
    ranked = rank_sources(targets, candidates, prompts, rank, center)
    if not 1 <= k <= len(ranked):
        raise PromptinitError(
            f"field 'k': {k} sources asked, but there are {len(ranked)} candidates; use 1..{len(ranked)}"
        )
    return [c for c, _ in ranked[:k]]


def restrict_sources(
    partition: Partition,
    prompts: Mapping[str, torch.Tensor],
    k: int,
    *,
    rank: int = DEFAULT_RANK,
    center: bool = False,
) -> Partition:
    """A partition whose sources are its ``k`` sources most similar to its targets.

    The targets and validation tasks are unchanged, so results stay comparable across ``k``;
    the name gets a ``-top<k>`` suffix.
    """
    chosen = select_sources(partition.target, partition.source, prompts, k, rank=rank, center=center)
    return partition.model_copy(update={"name": f"{partition.name}-top{k}", "source": tuple(chosen)})


def load_task_prompts(folder: str | Path) -> dict[str, torch.Tensor]:
    """Tuned prompts of a folder: ``<task>.safetensors`` files (``promptinit tune --out``) or
    export folders ``<task>/adapter_model.safetensors``; the task name is the file or folder name."""
    from promptinit.backbones import load_prompt

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PromptinitError(f"{root}: no such folder of task prompts")
    prompts = {p.stem: load_prompt(p) for p in sorted(root.glob("*.safetensors"))}
    for sub in sorted(p for p in root.iterdir() if (p / "adapter_model.safetensors").is_file()):
        prompts[sub.name] = load_prompt(sub / "adapter_model.safetensors")
    if not prompts:
        raise PromptinitError(f"{root}: no prompts (<task>.safetensors files or export folders)")
    return prompts
