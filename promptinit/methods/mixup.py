"""SUPMER's curriculum task augmentation: mixup of final hidden states with soft targets.

Each SUPMER meta-task has a query set and an "aug" query set of the same format drawn from
another cluster. The outer loss is taken on their mixture:

    h = λ h_q + (1 - λ) h_aug,        target = λ y_q + (1 - λ) y_aug
    λ ~ Beta(α, α b),  α = 1,  b = (m^s - 1) / (m - 1),  m = 2

where s is an exponential moving average (decay 0.5) of the batch mean of
(1 + cos(g_query, ψ(g_support))) / 2 (``qry_spt_similarity``). s starts at 0, so early tasks
are barely mixed; as the query gradient comes to agree with the (regularised) support
gradient, s and b grow and the mean λ = 1 / (1 + b) falls towards 1/2: harder, more mixed
query sets (a curriculum). All schedules here are pure functions of their arguments.

Choices made here (DESIGN.md and the paper leave them open):

- **Which hidden states, for a causal model.** SUPMER mixes T5 *encoder* outputs; a causal
  model has no encoder. We mix the *final hidden states at the positions that predict the
  target tokens* (``Backbone.target_hidden``: for a causal model the last input position,
  which predicts the first answer token, and the answer positions after it; for seq2seq the
  decoder states), then project the mixture through the LM head. These are the states the
  loss reads, they have attended to the whole input, and mixing them is the causal analogue
  of mixing a representation of the whole example. Mixing the whole sequences instead is
  not defined for inputs of different lengths. The same rule is used for seq2seq models, so
  the two families share one code path.
- **Targets of different token lengths.** Query example i is paired with aug example i of
  the same task. Their target positions are aligned from the first answer token: position j
  of the query target is mixed with position j of the aug target while both exist. Where the
  query target is longer, its extra positions keep their own hidden state and hard target
  (weight 1); the aug target's extra positions are dropped. Each example's loss is the mean
  over its query-target positions, each task's loss the mean over its examples, exactly as
  ``promptinit.methods.inner.task_losses`` (so λ = 1 reproduces the plain query loss). With a
  word-piece tokenizer (SmolLM2: " yes", " maybe", " no", " A" ... " F" are one token each)
  every SUPMER answer is one token plus end-of-sequence, so both targets have the same length
  and every position is mixed; the rule matters for character-level tokenizers and for
  other task formats.
- **Soft targets** are applied to the log-likelihood: the token loss is
  ``-(λ log p(y_q) + (1 - λ) log p(y_aug))``, the cross-entropy with the mixed one-hot target.
- **One λ per task** (per query batch, as the released code), drawn from the method's
  seeded generator (``random.Random.betavariate``), so a checkpoint replays it.
- **s = 0.** Beta(α, 0) is degenerate; b = 0 returns λ = 1 exactly (no mixing, and the aug
  forward pass is skipped). For s > 0, b > 0 and λ is sampled. (The released code adds 1e-7
  to b instead, which gives λ ≈ 1 - 1e-7 at s = 0.)
- **Ablations**: ``curriculum="fixed"`` uses the same λ for every task; ``"none"`` never mixes
  (the aug sets are still drawn, so the sampler's stream is the same in every mode).

Reference:
    Pan et al. 2023, "Self-Supervised Meta-Prompt Learning with Meta-Gradient Regularization
    for Few-shot Generalization" (SUPMER), sec. 3.2, and its released code (``model/meta.py``:
    ``get_alpha``, ``get_mixup_loss``).
"""
from __future__ import annotations

import random
from enum import Enum
from typing import Sequence

import torch
import torch.nn.functional as F

from promptinit.backbones import Backbone
from promptinit.backbones.backbone import _upcast
from promptinit.errors import PromptinitError
from promptinit.methods.inner import TaskBatch


class Curriculum(str, Enum):
    BETA = "beta"  # λ ~ Beta(α, α b(s)): the SUPMER curriculum
    FIXED = "fixed"  # λ = fixed_lambda for every task (ablation)
    NONE = "none"  # no mixup (ablation)


def curriculum_b(s: float, m: float = 2.0) -> float:
    """b = (m^s - 1) / (m - 1): 0 at s = 0, 1 at s = 1 (m > 1)."""
    if m <= 1:
        raise PromptinitError(f"field 'mixup_m': {m} must be > 1 (b = (m^s - 1) / (m - 1))")
    return (m**s - 1) / (m - 1)


def sample_lambda(rng: random.Random, s: float, alpha: float = 1.0, m: float = 2.0) -> float:
    """One mixup coefficient λ ~ Beta(α, α b(s)); exactly 1 when b = 0 (s = 0).

    Args:
        rng: the method's generator (advanced only when b > 0).
        s: the curriculum state in [0, 1].
        alpha: α of the Beta distribution.
        m: the base of b.

    Returns:
        λ in (0, 1].
    """
    b = curriculum_b(s, m)
    if b <= 0:
        return 1.0
    return rng.betavariate(alpha, alpha * b)


def draw_lambdas(rng: random.Random, n: int, mode: str, s: float, alpha: float = 1.0, m: float = 2.0,
                 fixed: float = 0.5) -> list[float]:
    """λ for each of ``n`` tasks under curriculum ``mode`` (beta | fixed | none)."""
    mode = Curriculum(mode)
    if mode is Curriculum.NONE:
        return [1.0] * n
    if mode is Curriculum.FIXED:
        return [float(fixed)] * n
    return [sample_lambda(rng, s, alpha, m) for _ in range(n)]


def ema(s: float, value: float, decay: float = 0.5) -> float:
    """s <- decay s + (1 - decay) value."""
    return decay * s + (1 - decay) * value


def qry_spt_similarity(g_query: torch.Tensor, g_support: torch.Tensor) -> torch.Tensor:
    """(1 + mean over prompt rows of cos(g_query, g_support)) / 2 per task.

    Args:
        g_query: [T, L, d] query gradients at the adapted prompts.
        g_support: [T, L, d] the (regularised) support gradients.

    Returns:
        [T] in [0, 1] (detached).
    """
    cos = F.cosine_similarity(g_query.detach(), g_support.detach().to(g_query.dtype), dim=-1)
    return (1 + cos.mean(-1)) / 2


def mixed_task_losses(backbone: Backbone, prompt: torch.Tensor, query: TaskBatch, aug: TaskBatch | None = None,
                      lambdas: torch.Tensor | Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task loss on the mixed query (see the module docstring) and the mean hidden state.

    Args:
        backbone: the frozen model.
        prompt: [L, d], or [T, L, d] one per task (row t serves both sets of task t).
        query: the query examples of T tasks.
        aug: the aug query examples, example i paired with query example i (same owners);
            None: no mixing.
        lambdas: [T] mixing weights (weight of the query); ignored without ``aug``.

    Returns:
        ``(losses [T], h_mean [T, d])``: each task's mean loss (differentiable in ``prompt``)
        and the detached mean of the (mixed) hidden states over its target positions.
        Without ``aug`` the losses equal ``task_losses(backbone, prompt, query)``.
    """
    per_prompt = prompt[query.owner] if prompt.dim() == 3 else prompt
    h, labels, rows = backbone.target_hidden(per_prompt, query.batch)
    B = len(query.batch)
    tok_owner = query.owner[rows]
    if aug is not None:
        if aug.owner.shape != query.owner.shape or not torch.equal(aug.owner, query.owner):
            raise PromptinitError(
                "mixup: the aug query set must pair one example with each query example, task by task"
            )
        lam = torch.as_tensor(lambdas, dtype=h.dtype, device=h.device)
        if lam.shape != (query.n_tasks,):
            raise PromptinitError(f"mixup: {tuple(lam.shape)} lambdas for {query.n_tasks} tasks")
        aug_prompt = prompt[aug.owner] if prompt.dim() == 3 else prompt
        h_a, labels_a, rows_a = backbone.target_hidden(aug_prompt, aug.batch)
        # position of each target token within its example, aligned from the first answer token
        count_q = torch.bincount(rows, minlength=B)
        count_a = torch.bincount(rows_a, minlength=B)
        start_q = torch.cumsum(count_q, 0) - count_q
        start_a = torch.cumsum(count_a, 0) - count_a
        j = torch.arange(len(rows), device=rows.device) - start_q[rows]
        paired = j < count_a[rows]
        idx = torch.where(paired, start_a[rows] + j, torch.zeros_like(j)).clamp(max=max(len(rows_a) - 1, 0))
        w = torch.where(paired, lam[tok_owner], torch.ones_like(lam[tok_owner]))
        h = w[:, None] * h + (1 - w[:, None]) * h_a[idx]
        logp = torch.log_softmax(_upcast(backbone.project(h)), dim=-1)
        lp_q = logp.gather(1, labels[:, None]).squeeze(1)
        lp_a = logp.gather(1, labels_a[idx][:, None]).squeeze(1)
        w = w.to(lp_q.dtype)
        tok = -(w * lp_q + (1 - w) * lp_a)
    else:
        # the same operations, in the same order, as Backbone.loss + task_losses
        logp = torch.log_softmax(_upcast(backbone.project(h)), dim=-1).gather(1, labels[:, None]).squeeze(1)
        tok = -logp
    nll = torch.zeros(B, dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
    count = torch.zeros(B, dtype=tok.dtype, device=tok.device).index_add(0, rows, torch.ones_like(tok))
    per = nll / count.clamp(min=1)
    T = query.n_tasks
    sums = torch.zeros(T, dtype=per.dtype, device=per.device).index_add(0, query.owner, per)
    counts = torch.bincount(query.owner, minlength=T).to(per.dtype)
    hd = h.detach()
    h_sum = torch.zeros(T, hd.shape[-1], dtype=hd.dtype, device=hd.device).index_add(0, tok_owner, hd)
    h_cnt = torch.bincount(tok_owner, minlength=T).clamp(min=1).to(hd.dtype)
    return sums / counts, h_sum / h_cnt[:, None]
