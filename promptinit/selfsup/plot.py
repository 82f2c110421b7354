"""A 2-D picture of the clusters (PCA or t-SNE), written as a PNG without pyplot state."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from promptinit.errors import PromptinitError
from promptinit.selfsup.clustering import Clusters

PROJECTIONS = ("pca", "tsne")


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """[N, D] -> [N, 2] with scikit-learn PCA or t-SNE."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(embeddings)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(embeddings) - 1) // 3)))
        return TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(embeddings)
    raise PromptinitError(f"option '--projection': {method!r} is not one of {', '.join(PROJECTIONS)}")


def plot_clusters(
    clusters: Clusters,
    path: str | Path,
    method: str = "pca",
    max_points: int = 4000,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Scatter the sentence embeddings in 2-D, coloured by cluster, cluster ids at their means.

    Args:
        clusters: embeddings and labels.
        path: the PNG to write (parent folders are created).
        method: ``pca`` or ``tsne``.
        max_points: a seeded subsample keeps t-SNE and the file small.
        seed: subsample and projection seed.
        title: figure title (default: K and the projection).

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display needed

    rng = np.random.default_rng(seed)
    n = len(clusters.labels)
    idx = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    xy = project_2d(clusters.embeddings[idx], method, seed)
    labels = clusters.labels[idx]
    fig = Figure(figsize=(8, 8), dpi=100)
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], c=labels % 20, cmap="tab20", s=4, alpha=0.6, linewidths=0)
    for c in np.unique(labels):
        cx, cy = xy[labels == c].mean(0)
        ax.annotate(
            str(c),
            (cx, cy),
            fontsize=7,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0},
        )
    ax.set_title(title or f"{clusters.k} clusters, {len(idx)} of {n} sentences ({method.upper()})")
    ax.set_xticks([])
    ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
