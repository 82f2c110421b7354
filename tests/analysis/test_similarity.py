"""Task similarity from prompt subspaces (Qin et al. A.7) and similarity-based source selection."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from promptinit.errors import PromptinitError
from promptinit.similarity import (
    load_task_prompts, prompt_similarity, prompt_subspace, restrict_sources, select_sources, similarity_matrix,
    subspace_similarity,
)

D = 32


def in_span(basis: torch.Tensor, L: int = 8, seed: int = 0, noise: float = 0.0) -> torch.Tensor:
    """A prompt [L, D] whose rows are random combinations of ``basis`` rows (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, basis.shape[0], generator=g, dtype=torch.float64) @ basis + noise * torch.randn(
        L, D, generator=g, dtype=torch.float64)


def axes(*idx: int) -> torch.Tensor:
    return torch.eye(D, dtype=torch.float64)[list(idx)]


def test_identical_prompts_score_one():
    p = torch.randn(8, D)
    assert prompt_similarity(p, p, k=4) == pytest.approx(1.0, abs=1e-12)
    assert prompt_similarity(p, 3.0 * p, k=4) == pytest.approx(1.0, abs=1e-12)  # same subspace, other scale


def test_orthogonal_subspaces_score_zero():
    a, b = in_span(axes(0, 1, 2, 3), seed=1), in_span(axes(4, 5, 6, 7), seed=2)
    assert prompt_similarity(a, b, k=4) == pytest.approx(0.0, abs=1e-12)


def test_score_is_mean_squared_cosine_of_principal_angles():
    from scipy.linalg import subspace_angles

    # span(e0, e1) vs span(e0, e2): angles 0 and 90 degrees -> (1 + 0) / 2.
    assert prompt_similarity(in_span(axes(0, 1), seed=1), in_span(axes(0, 2), seed=2), k=2) == pytest.approx(0.5)
    a, b = torch.randn(8, D, dtype=torch.float64), torch.randn(8, D, dtype=torch.float64)
    Va, Vb = prompt_subspace(a, 3), prompt_subspace(b, 3)
    reference = float(np.mean(np.cos(subspace_angles(Va.T.numpy(), Vb.T.numpy())) ** 2))
    assert subspace_similarity(Va, Vb) == pytest.approx(reference, abs=1e-10)


def test_similarity_matrix_is_symmetric_with_unit_diagonal():
    prompts = {f"t{i}": torch.randn(8, D) for i in range(4)}
    names, S = similarity_matrix(prompts, k=3)
    assert names == list(prompts)
    assert np.allclose(S, S.T) and np.allclose(np.diag(S), 1.0)
    assert ((S >= 0) & (S <= 1)).all()


def test_select_sources_picks_the_planted_similar_tasks():
    shared = axes(0, 1, 2, 3)
    prompts = {
        "target_a": in_span(shared, seed=1, noise=0.05), "target_b": in_span(shared, seed=2, noise=0.05),
        "similar_1": in_span(shared, seed=3, noise=0.1), "similar_2": in_span(shared, seed=4, noise=0.1),
    }
    for i in range(4):
        prompts[f"other_{i}"] = in_span(axes(*range(4 + 4 * i, 8 + 4 * i)), seed=10 + i, noise=0.1)
    candidates = ["other_0", "similar_2", "other_1", "other_2", "similar_1", "other_3"]
    assert set(select_sources(["target_a", "target_b"], candidates, prompts, k=2, rank=4)) == {"similar_1", "similar_2"}

    from promptinit.tasks.partitions import Partition

    part = Partition(name="p", source=tuple(candidates), target=("target_a", "target_b"), validation=("v",))
    small = restrict_sources(part, prompts, k=2, rank=4)
    assert set(small.source) == {"similar_1", "similar_2"}
    assert small.target == part.target and small.validation == part.validation and small.name == "p-top2"


def test_select_sources_errors_name_the_problem():
    prompts = {"t": torch.randn(8, D), "a": torch.randn(8, D)}
    with pytest.raises(PromptinitError, match="field 'k'"):
        select_sources(["t"], ["a"], prompts, k=2)
    with pytest.raises(PromptinitError, match="no tuned prompt for task 'b'"):
        select_sources(["t"], ["a", "b"], prompts, k=1)


def test_heat_map_png_and_prompt_folder(tmp_path):
    from PIL import Image

    from promptinit.analysis.plots import similarity_heatmap
    from promptinit.backbones import save_prompt

    for name in ("x", "y", "z"):
        save_prompt(torch.randn(8, D), tmp_path / "prompts" / f"{name}.safetensors")
    prompts = load_task_prompts(tmp_path / "prompts")
    assert sorted(prompts) == ["x", "y", "z"]
    names, S = similarity_matrix(prompts, k=2)
    path = similarity_heatmap(names, S, tmp_path / "sim.png")
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
