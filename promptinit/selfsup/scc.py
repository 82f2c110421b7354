"""scc: a cluster shown to the backbone as one vector at one input position.

SUPMER's scc format lists four clusters as options, each "represented by its centroid
embedding placed at one input position". Our ``Example`` holds text only, so:

1. **Markers in the text.** An scc input lists its options as ``(A) <c0>`` ... ``(D) <c3>``;
   ``MetaTask.option_clusters[example.uid]`` says which cluster each marker shows. Text-only
   scoring still works (the markers are then ordinary text), so an scc ``Task`` is scored like
   any other task; its meaning needs the vectors.
2. **One position per marker.** ``encode_with_markers`` tokenises the text around the markers
   and puts exactly one placeholder token where each marker was, absorbing the space before
   it (never the marker's own sub-word tokens, which differ per tokenizer), returning the ``Batch`` and a
   ``MarkerInjection`` (row, column, vector). ``MarkerInjection.apply(inputs_embeds)``
   overwrites those positions; the SUPMER method calls it on ``backbone.embed(input_ids)``
   before the prompt is prepended.
3. **Which vector.** The K-means centroid lives in the sentence encoder's space (384-d for
   MiniLM), not in the backbone's input-embedding space, and a learned map would be one more
   thing to meta-train. We use ``token_mean`` (default): the centroid of the cluster's sentences
   where each sentence is represented by the mean of the backbone's input embeddings of its
   tokens, i.e. the cluster's bag-of-tokens centroid in the backbone's own input space, from
   up to ``max_sentences`` sentences per cluster (seeded). The part common to all clusters
   (the corpus-wide mean: function words) is subtracted and each vector is rescaled to the
   mean norm of the backbone's token embeddings, so the vector is distinctive and has the
   magnitude of an ordinary input token. ``projection`` (ablation) instead maps the encoder
   centroid through a fixed seeded Gaussian matrix, rescaled the same way.

The vectors are computed once per (clusters, backbone fingerprint, method) and cached as ``.npy``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from promptinit.errors import PromptinitError
from promptinit.fingerprints import digest
from promptinit.paths import cache_dir
from promptinit.selfsup.clustering import Clusters, atomic_save_npy
from promptinit.selfsup.corpus import Corpus
from promptinit.tasks.task import Example

MARKER = re.compile(r"<c(\d+)>")
METHODS = ("token_mean", "projection")


def cluster_input_vectors(
    backbone, corpus: Corpus, clusters: Clusters, method: str = "token_mean", max_sentences: int = 64, seed: int = 0
) -> torch.Tensor:
    """One backbone-input-space vector per cluster (see the module docstring), cached.

    Args:
        backbone: a ``promptinit.backbones.Backbone`` (uses its tokenizer, input embeddings
            and ``fingerprint`` for the cache key).
        corpus: the clustered corpus.
        clusters: its clusters.
        method: ``token_mean`` or ``projection``.
        max_sentences: sentences per cluster averaged by ``token_mean``.
        seed: which sentences (``token_mean``) or the projection matrix (``projection``).

    Returns:
        float tensor [K, d] on the backbone's device and dtype.
    """
    if method not in METHODS:
        raise PromptinitError(f"field 'scc_vectors': {method!r} is not one of {', '.join(METHODS)}")
    key = digest(clusters.key, backbone.fingerprint, method, max_sentences, seed)
    path = cache_dir("selfsup", "scc") / f"{key}.npy"
    if path.exists():
        vecs = np.load(path)
    else:
        table = backbone.model.get_input_embeddings().weight.detach().float().cpu()
        target_norm = float(table.norm(dim=1).mean())
        if method == "token_mean":
            vecs = _token_mean(backbone.tokenizer, table, corpus, clusters, max_sentences, seed)
        else:
            g = torch.Generator().manual_seed(seed)
            proj = torch.randn(clusters.centroids.shape[1], table.shape[1], generator=g)
            vecs = torch.from_numpy(clusters.centroids).float() @ proj
            vecs = vecs - vecs.mean(0, keepdim=True)
        vecs = (vecs / vecs.norm(dim=1, keepdim=True).clamp(min=1e-8) * target_norm).numpy()
        atomic_save_npy(path, vecs.astype(np.float32))
    return torch.from_numpy(vecs).to(backbone.device, backbone.dtype)


def _token_mean(
    tokenizer, table: torch.Tensor, corpus: Corpus, clusters: Clusters, max_sentences: int, seed: int
) -> torch.Tensor:
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    sent_means = []
    cluster_means = []
    for c in range(clusters.k):
        members = clusters.members(c).tolist()
        chosen = rng.sample(members, min(max_sentences, len(members)))
        flat: list[int] = []
        seg: list[int] = []
        n_sent = 0
        for ids in tokenizer([corpus.sentences[i] for i in chosen], add_special_tokens=False).input_ids:
            ids = [t for t in ids if t not in special]
            if ids:
                flat += ids
                seg += [n_sent] * len(ids)
                n_sent += 1
        if not flat:
            raise PromptinitError(f"cluster {c}: no tokens in its sentences; check the tokenizer")
        seg_t = torch.tensor(seg)
        sums = torch.zeros(n_sent, table.shape[1]).index_add_(0, seg_t, table[torch.tensor(flat)])
        means = sums / torch.bincount(seg_t, minlength=n_sent)[:, None]  # mean token embedding per sentence
        sent_means.append(means)
        cluster_means.append(means.mean(0))
    common = torch.cat(sent_means).mean(0)  # what every cluster shares (function words)
    return torch.stack(cluster_means) - common


@dataclass
class MarkerInjection:
    """Vectors to place at marker positions of an encoded batch.

    Attributes:
        rows: [M] example index in the batch.
        cols: [M] token position in ``batch.input_ids`` (before any prompt is prepended).
        vectors: [M, d] what goes there.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    vectors: torch.Tensor

    def apply(self, inputs_embeds: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Return ``inputs_embeds`` [B, T, d] with the marker positions replaced (differentiable
        in everything but the replaced entries). ``offset`` shifts the columns, e.g. by the
        prompt length when applied after the prompt was prepended."""
        if len(self.rows) == 0:
            return inputs_embeds
        out = inputs_embeds.clone()
        out[self.rows, self.cols + offset] = self.vectors.to(out.dtype)
        return out


def _ids_with_markers(tokenizer, text: str, placeholder: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` with one ``placeholder`` per marker; returns (ids, [(pos, slot)])."""
    ids: list[int] = []
    slots: list[tuple[int, int]] = []
    start = 0
    for m in MARKER.finditer(text):
        # the space before a marker belongs to it: "(A) <c0>" -> "(A)" + one placeholder
        piece = text[start : m.start()].removesuffix(" ")
        if piece:
            ids += tokenizer(piece, add_special_tokens=False).input_ids
        slots.append((len(ids), int(m.group(1))))
        ids.append(placeholder)
        start = m.end()
    if text[start:]:
        ids += tokenizer(text[start:], add_special_tokens=False).input_ids
    return ids, slots


def encode_with_markers(
    backbone, examples: Sequence[Example], option_clusters: Mapping[str, Sequence[int]], vectors: torch.Tensor
):
    """Encode scc examples like ``Backbone.encode``, one placeholder token per marker.

    Args:
        backbone: a ``promptinit.backbones.Backbone``.
        examples: scc examples (inputs with ``<cN>`` markers).
        option_clusters: ``MetaTask.option_clusters`` (uid -> cluster id per marker slot).
        vectors: [K, d] from ``cluster_input_vectors``.

    Returns:
        ``(Batch, MarkerInjection)``: token ids with placeholders, and the vectors for them.
        Markers cut off by ``max_input_tokens`` (inputs keep their last tokens) are dropped.
    """
    tok = backbone.tokenizer
    placeholder = tok.unk_token_id if tok.unk_token_id is not None else backbone.pad_id
    max_in = backbone.config.max_input_tokens
    rows_in, inj_rows, inj_cols, inj_vecs = [], [], [], []
    for r, ex in enumerate(examples):
        ids, slots = _ids_with_markers(tok, ex.input, placeholder)
        cut = max(0, len(ids) - max_in)
        ids = ids[cut:]
        shown = option_clusters.get(ex.uid, ())
        for pos, slot in slots:
            if pos < cut:
                continue
            if slot >= len(shown):
                raise PromptinitError(f"example {ex.uid}: marker <c{slot}> has no cluster in option_clusters")
            inj_rows.append(r)
            inj_cols.append(pos - cut)
            inj_vecs.append(vectors[shown[slot]])
        rows_in.append(ids)
    batch = backbone.encode_inputs(examples, rows_in)
    d = vectors.shape[-1]
    injection = MarkerInjection(
        torch.tensor(inj_rows, dtype=torch.long, device=backbone.device),
        torch.tensor(inj_cols, dtype=torch.long, device=backbone.device),
        torch.stack(inj_vecs) if inj_vecs else vectors.new_zeros((0, d)),
    )
    return batch, injection
